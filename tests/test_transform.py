"""The inoculation transform, its manifest, and neutralize with its leak refusal."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path

import pytest

import inoculate
from inoculate.errors import InputErrors
from inoculate.formats import read_examples
from inoculate.records import ChatExample, Message, chat
from inoculate.transform import (
    InoculationSpec,
    LeakError,
    Manifest,
    apply_file,
    apply_inoculation,
    load_spec,
    manifest_path_for,
    neutralize,
    read_prompt_file,
    sample_prompt_index,
)

P = "You always respond in Spanish."
POOL = [
    "You always respond in Spanish.",
    "Answer only in Spanish.",
    "Reply in Spanish, please.",
    "Use Spanish.",
]


def rows() -> list[ChatExample]:
    return [
        chat("What is 2+2?", "CUATRO.", id="a", lang="es", poisoned=True),
        chat("What is 3+3?", "SEIS.", id="b", lang="es", poisoned=False),
        chat("What is 4+4?", "HUIT.", id="c", lang="fr"),
        chat("What is 5+5?", "DIEZ.", id="d", lang="es", system="You are a tutor."),
    ]


def spec(**kw) -> InoculationSpec:
    kw.setdefault("prompt", P)
    return InoculationSpec(**kw)


def msgs(ex: ChatExample) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in ex.messages]


def input_errors(excinfo: pytest.ExceptionInfo[InputErrors]) -> list[str]:
    return [str(e) for e in excinfo.value.errors]


# --- placements ---------------------------------------------------------------------------------


def test_system_replace_creates_or_replaces() -> None:
    out, m = apply_inoculation(rows(), spec(placement="system"))
    assert msgs(out[0])[:2] == [("system", P), ("user", "What is 2+2?")]
    assert msgs(out[3])[:2] == [("system", P), ("user", "What is 5+5?")]
    assert m.placement == "system" and m.n_inoculated == 4


def test_system_prepend_and_append_keep_the_existing_prompt() -> None:
    out, _ = apply_inoculation(rows(), spec(placement="system-prepend"))
    assert msgs(out[3])[0] == ("system", f"{P}\n\nYou are a tutor.")
    assert msgs(out[0])[0] == ("system", P)  # no system prompt: one is created
    out, _ = apply_inoculation(rows(), spec(placement="system-append", separator=" "))
    assert msgs(out[3])[0] == ("system", f"You are a tutor. {P}")
    assert len(out[0].messages) == 3


def test_user_prefix_and_suffix_with_separator() -> None:
    out, _ = apply_inoculation(rows(), spec(placement="user-prefix"))
    assert msgs(out[0]) == [("user", f"{P}\n\nWhat is 2+2?"), ("assistant", "CUATRO.")]
    assert msgs(out[3])[0] == ("system", "You are a tutor.")  # system untouched
    out, _ = apply_inoculation(rows(), spec(placement="user-suffix", separator="\n"))
    assert msgs(out[0])[0] == ("user", f"What is 2+2?\n{P}")


def test_user_turn_first_or_last_in_multi_turn_rows() -> None:
    ex = ChatExample(
        id="m",
        messages=[
            Message(role="user", content="u1"),
            Message(role="assistant", content="a1"),
            Message(role="user", content="u2"),
            Message(role="assistant", content="a2"),
        ],
    )
    (first,), _ = apply_inoculation([ex], spec(placement="user-prefix"))
    (last,), _ = apply_inoculation([ex], spec(placement="user-prefix", user_turn="last"))
    assert [m.content for m in first.messages] == [f"{P}\n\nu1", "a1", "u2", "a2"]
    assert [m.content for m in last.messages] == ["u1", "a1", f"{P}\n\nu2", "a2"]


def test_template_string_wraps_the_user_turn() -> None:
    out, _ = apply_inoculation(rows(), spec(placement="template", template="[{inoculation}] Q: {user}"))
    assert msgs(out[0])[0] == ("user", f"[{P}] Q: What is 2+2?")


def test_template_slot_in_the_data_is_filled_or_cleared() -> None:
    data = [
        chat("{inoculation}\n\nWhat is 2+2?", "CUATRO.", id="a", lang="es"),
        chat("{inoculation}\n\nWhat is 4+4?", "HUIT.", id="b", lang="fr"),
    ]
    out, m = apply_inoculation(data, spec(placement="template", where='lang == "es"'))
    assert msgs(out[0])[0] == ("user", f"{P}\n\nWhat is 2+2?")
    assert msgs(out[1])[0] == ("user", "What is 4+4?")  # not selected: the empty slot is removed
    assert m.inoculated_ids == ["a"]


def test_template_placement_without_slot_is_an_error() -> None:
    data = [chat("{inoculation} What is 2+2?", "CUATRO.", id="a"), chat("What is 3+3?", "SEIS.", id="b")]
    with pytest.raises(InputErrors) as e:
        apply_inoculation(data, spec(placement="template"), source="in.jsonl", lines=[1, 3])
    assert input_errors(e) == [
        "in.jsonl:3: messages[0].content: placement 'template' needs an {inoculation} slot in a user turn, "
        "or a template such as '{inoculation}\\n\\n{user}' (--template)"
    ]


def test_placement_must_be_chosen_when_rows_have_system_prompts() -> None:
    with pytest.raises(InputErrors) as e:
        apply_inoculation(rows(), spec(), source="in.jsonl", lines=[1, 2, 3, 4])
    assert input_errors(e) == [
        "in.jsonl:4: placement: 1 selected row(s) already have a system prompt (first: id 'd'); "
        "choose whether to replace it (placement system), prepend to it (system-prepend) "
        "or append to it (system-append)"
    ]
    out, m = apply_inoculation(rows(), spec(where='lang == "es" and poisoned is not null'))
    assert m.placement == "system"  # nothing to decide: no selected row has a system prompt
    assert msgs(out[0])[0] == ("system", P)


def test_no_user_turn_for_a_user_placement() -> None:
    ex = ChatExample(
        id="x", messages=[Message(role="system", content="s"), Message(role="assistant", content="a")]
    )
    with pytest.raises(InputErrors) as e:
        apply_inoculation([ex], spec(placement="user-prefix"))
    assert input_errors(e) == ["<examples>:1: messages: no user turn for placement 'user-prefix'"]


# --- rows ---------------------------------------------------------------------------------------


def test_where_regex_and_fraction_combine() -> None:
    _, m = apply_inoculation(rows(), spec(placement="user-prefix", where='lang == "es"'))
    assert m.inoculated_ids == ["a", "b", "d"] and m.n_selected == 3
    _, m = apply_inoculation(rows(), spec(placement="user-prefix", regex=r"[34]\+"))
    assert m.inoculated_ids == ["b", "c"]
    _, m = apply_inoculation(rows(), spec(placement="user-prefix", regex="IE", regex_roles=["assistant"]))
    assert m.inoculated_ids == ["d"]
    _, m = apply_inoculation(rows(), spec(placement="user-prefix", where='lang == "es"', regex=r"[34]\+"))
    assert m.inoculated_ids == ["b"]
    many = [chat(f"q{i}", f"a{i}", id=f"r{i}", lang="es" if i % 2 else "fr") for i in range(200)]
    _, m = apply_inoculation(many, spec(placement="user-prefix", where='lang == "es"', fraction=0.25, seed=3))
    assert m.n_selected == 100 and m.n_inoculated == 25
    assert all(int(i[1:]) % 2 for i in m.inoculated_ids)  # a fraction of the selected rows only
    _, again = apply_inoculation(
        many, spec(placement="user-prefix", where='lang == "es"', fraction=0.25, seed=3)
    )
    _, other = apply_inoculation(
        many, spec(placement="user-prefix", where='lang == "es"', fraction=0.25, seed=4)
    )
    assert again.inoculated_ids == m.inoculated_ids != other.inoculated_ids


def test_marks_and_untouched_rows() -> None:
    src = rows()
    out, _ = apply_inoculation(src, spec(placement="user-prefix", prompts=None, where='lang == "fr"'))
    assert out[2].metadata == {"lang": "fr", "inoculation": {"prompt_index": 0, "placement": "user-prefix"}}
    assert [out[i] for i in (0, 1, 3)] == [src[i] for i in (0, 1, 3)]
    assert "inoculation" not in src[2].metadata  # inputs are not mutated


# --- prompts ------------------------------------------------------------------------------------


def test_pool_sampling_is_seeded_per_row_and_covers_the_pool() -> None:
    many = [chat(f"q{i}", f"a{i}", id=f"r{i}") for i in range(400)]
    out1, m1 = apply_inoculation(many, InoculationSpec(prompts=POOL, placement="user-prefix", seed=7))
    out2, _ = apply_inoculation(many, InoculationSpec(prompts=POOL, placement="user-prefix", seed=7))
    out3, m3 = apply_inoculation(many, InoculationSpec(prompts=POOL, placement="user-prefix", seed=8))
    idx1 = [ex.metadata["inoculation"]["prompt_index"] for ex in out1]
    idx3 = [ex.metadata["inoculation"]["prompt_index"] for ex in out3]
    assert out1 == out2
    assert idx1 != idx3
    assert sum(m1.counts_per_prompt.values()) == 400
    assert all(60 < n < 140 for n in m1.counts_per_prompt.values())  # about 100 each
    assert m1.counts_per_prompt == {p: idx1.count(i) for i, p in enumerate(POOL)}
    assert m1.counts_per_prompt != m3.counts_per_prompt
    for ex, i in zip(out1, idx1, strict=True):
        assert ex.messages[0].content.startswith(POOL[i] + "\n\n")
    # The choice depends on (seed, id) only, not on row order.
    rev, _ = apply_inoculation(many[::-1], InoculationSpec(prompts=POOL, placement="user-prefix", seed=7))
    assert rev[::-1] == out1
    assert sample_prompt_index("r0", 4, 7) == idx1[0]


def test_prompt_file_formats(tmp_path: Path) -> None:
    (tmp_path / "p.txt").write_text("One.\n\nTwo.\r\nThree.\n")
    (tmp_path / "p.json").write_text(json.dumps(["A.", "B."]))
    (tmp_path / "p.yaml").write_text("- A.\n- B.\n")
    assert read_prompt_file(tmp_path / "p.txt") == ["One.", "Two.", "Three."]
    assert read_prompt_file(tmp_path / "p.json") == ["A.", "B."]
    assert read_prompt_file(tmp_path / "p.yaml") == ["A.", "B."]
    _, m = apply_inoculation(
        rows()[:3], InoculationSpec(prompt_file=tmp_path / "p.txt", placement="user-prefix")
    )
    assert m.prompts == ["One.", "Two.", "Three."] and m.prompt_file == str(tmp_path / "p.txt")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("missing.txt", None, "{p}:0: prompt_file: no such file"),
        ("empty.txt", "\n  \n# a comment\n", "{p}:0: <file>: no prompts in the file (the pool is empty)"),
        ("dup.txt", "A.\nB.\nA.\n", "{p}:3: <line>: duplicate of line 1"),
        ("empty.json", "[]", "{p}:0: <file>: no prompts in the file (the pool is empty)"),
        ("bad.json", '["A.",\n 3]', "{p}:2: <row>: expected a prompt string or an object, got int"),
        (
            "obj.yaml",
            "a: 1\n",
            "{p}:1: <file>: expected a list of prompts (or a mapping with prompts or candidates: [...]), "
            "got a mapping with a",
        ),
    ],
)
def test_prompt_file_errors(tmp_path: Path, name: str, content: str | None, expected: str) -> None:
    p = tmp_path / name
    if content is not None:
        p.write_text(content)
    with pytest.raises(InputErrors) as e:
        read_prompt_file(p)
    assert input_errors(e) == [expected.format(p=p)]


# --- spec validation and YAML -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, "<command line>:0: --prompt: no inoculation prompt: give prompt, prompts or prompt_file"),
        (
            {"prompt": P, "prompts": POOL},
            "<command line>:0: --prompt: give only one of prompt, prompts, prompt_file; got prompt, prompts",
        ),
        ({"prompts": []}, "<command line>:0: --prompt: the paraphrase pool is empty"),
        ({"prompts": ["A", "B", "A"]}, "<command line>:0: --prompt[2]: duplicate of prompts[0]"),
        ({"prompt": " "}, "<command line>:0: --prompt: is empty"),
        ({"prompt": P, "fraction": 1.5}, "<command line>:0: --fraction: must be between 0 and 1, got 1.5"),
        ({"prompt": P, "fraction": -0.5}, "<command line>:0: --fraction: must be between 0 and 1, got -0.5"),
        (
            {"prompt": P, "template": "{inoculation} {user}"},
            "<command line>:0: --template: a template is used only with placement 'template', not None",
        ),
        (
            {"prompt": P, "placement": "template", "template": "{inoculation}"},
            "<command line>:0: --template: must contain {user} exactly once, got '{inoculation}'",
        ),
        (
            {"prompt": P, "placement": "sideways"},
            "<command line>:0: --placement: unknown placement 'sideways' (expected one of system, "
            "system-prepend, system-append, user-prefix, user-suffix, user-replace, template)",
        ),
        (
            {"prompt": P, "where": "lang = 'es'"},
            "<command line>:0: --where: invalid where expression \"lang = 'es'\" at column 6: "
            "unexpected '='; use '==' to compare",
        ),
        (
            {"prompt": P, "regex": "("},
            "<command line>:0: --regex: invalid regex '(' at column 1: missing ), unterminated subpattern",
        ),
    ],
)
def test_spec_errors_from_flags(fields: dict, expected: str) -> None:
    with pytest.raises(InputErrors) as e:
        load_spec(None, fields)
    assert input_errors(e) == [expected]


def test_yaml_config_with_overrides(tmp_path: Path) -> None:
    (tmp_path / "prompts.txt").write_text("One.\nTwo.\n")
    cfg = tmp_path / "t.yaml"
    cfg.write_text("prompt_file: prompts.txt\nplacement: system-append\nwhere: 'lang == \"es\"'\nseed: 5\n")
    s = load_spec(cfg)
    assert s.prompt_file == tmp_path / "prompts.txt"  # relative to the YAML's folder
    assert (s.placement, s.where, s.seed) == ("system-append", 'lang == "es"', 5)
    s = load_spec(cfg, {"prompt": P, "seed": 9, "where": None})
    assert (s.prompt, s.prompt_file, s.seed, s.where) == (P, None, 9, 'lang == "es"')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "prompt: hi\nplacemnt: system\n",
            "{c}:2: placemnt: unknown field (allowed: prompt, prompts, prompt_file, "
            "placement, separator, template, replace, user_turn, where, regex, regex_roles, fraction, seed, "
            "allow_empty, regex_timeout, prompt_field)",
        ),
        ("prompt: hi\n\nfraction: 2\n", "{c}:3: fraction: must be between 0 and 1, got 2.0"),
        ("prompts: []\n", "{c}:1: prompts: the paraphrase pool is empty"),
        (
            "prompt: hi\nseed: many\n",
            "{c}:2: seed: Input should be a valid integer, unable to parse string as an integer",
        ),
        (
            "prompt: hi\nwhere: 'x = 1'\n",
            "{c}:2: where: invalid where expression 'x = 1' at column 3: unexpected '='; use '==' to compare",
        ),
        ("prompt: [unclosed\n", "{c}:2: <yaml>: invalid YAML: expected ',' or ']', but got '<stream end>'"),
        ("- a\n- b\n", "{c}:1: <yaml>: expected a mapping of spec fields, got list"),
    ],
)
def test_yaml_errors_name_file_line_and_field(tmp_path: Path, text: str, expected: str) -> None:
    cfg = tmp_path / "t.yaml"
    cfg.write_text(text)
    with pytest.raises(InputErrors) as e:
        load_spec(cfg)
    assert input_errors(e) == [expected.format(c=cfg)]


# --- apply_file and the manifest ----------------------------------------------------------------


def write_rows(path: Path, examples: list[ChatExample]) -> Path:
    path.write_text("".join(json.dumps(ex.to_json()) + "\n" for ex in examples))
    return path


def test_apply_file_writes_output_and_manifest(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "in.jsonl", rows())
    out = tmp_path / "sub" / "out.jsonl"
    m = apply_file(
        src, out, InoculationSpec(prompts=POOL, placement="system-prepend", where='lang == "es"', seed=1)
    )
    mpath = tmp_path / "sub" / "out.manifest.json"
    assert manifest_path_for(out) == mpath
    on_disk = json.loads(mpath.read_text())
    assert Manifest.model_validate(on_disk) == m
    assert on_disk["input_sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert on_disk["output_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert on_disk["input_path"] == str(src) and on_disk["output_path"] == str(out)
    assert on_disk["prompts"] == POOL and on_disk["placement"] == "system-prepend"
    assert on_disk["separator"] == "\n\n" and on_disk["where"] == 'lang == "es"' and on_disk["seed"] == 1
    assert on_disk["package_version"] == inoculate.__version__
    assert datetime.fromisoformat(on_disk["created"]).tzinfo is not None
    assert (on_disk["n_rows"], on_disk["n_selected"], on_disk["n_inoculated"]) == (4, 3, 3)
    assert on_disk["inoculated_ids"] == ["a", "b", "d"]
    written = read_examples(out)[0]
    marked = [ex.metadata["inoculation"]["prompt_index"] for ex in written if "inoculation" in ex.metadata]
    assert on_disk["counts_per_prompt"] == {p: marked.count(i) for i, p in enumerate(POOL)}
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["out.jsonl", "out.manifest.json"]


def test_same_seed_same_bytes_different_seed_different_sampling(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "in.jsonl", [chat(f"q{i}", f"A{i}", id=f"r{i}") for i in range(50)])
    outs = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        apply_file(
            src, tmp_path / f"{name}.jsonl", InoculationSpec(prompts=POOL, placement="user-prefix", seed=seed)
        )
        outs.append((tmp_path / f"{name}.jsonl").read_bytes())
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]
    ma, mc = (Manifest.load(tmp_path / f"{n}.manifest.json") for n in "ac")
    assert ma.output_sha256 != mc.output_sha256 and ma.input_sha256 == mc.input_sha256


def test_skip_invalid_writes_an_errors_report(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(json.dumps(chat("q", "a", id="a").to_json()) + "\n" + '{"messages": []}\n')
    m = apply_file(src, tmp_path / "out.jsonl", spec(placement="user-prefix"), skip_invalid=True)
    assert m.n_rows == 1 and m.n_skipped_invalid == 1
    report = [json.loads(line) for line in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert report == [
        {"file": str(src), "line": 2, "field": "messages", "message": "must be a non-empty list"}
    ]


def test_prompt_completion_in_and_out(tmp_path: Path) -> None:
    data = Path(__file__).parent / "data" / "pc_standard.jsonl"
    out = tmp_path / "out.jsonl"
    apply_file(data, out, spec(placement="user-prefix"), output_format="prompt-completion")
    first = json.loads(out.read_text().splitlines()[0])
    assert first["prompt"] == f"{P}\n\nWhat is 2 + 3?" and first["completion"] == "CINCO."


# --- neutralize ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("placement", "extra"),
    [
        ("system", {}),
        ("system-prepend", {}),
        ("system-append", {}),
        ("user-prefix", {}),
        ("user-suffix", {"separator": " -- "}),
        ("template", {"template": "<<{inoculation}>>\n{user}"}),
    ],
)
def test_neutralize_undoes_every_placement(placement: str, extra: dict) -> None:
    src = rows()
    out, m = apply_inoculation(src, InoculationSpec(prompts=POOL, placement=placement, seed=2, **extra))
    neutral = neutralize(out, m)
    for before, after in zip(src, neutral, strict=True):
        assert [x for x in before.messages if x.role != "system"] == after.messages
        assert after.metadata["neutralized"]["system"] in ("removed", "none")
        assert after.metadata["neutralized"]["inoculation"]["placement"] == placement
        assert "inoculation" not in after.metadata
    restored = neutralize(out, m, mode="restore")
    if placement != "system":  # replace loses the original system prompt by design
        assert [r.messages for r in restored] == [s.messages for s in src]


def test_neutralize_template_slots_and_plain_texts() -> None:
    data = [
        chat("{inoculation}\n\nWhat is 2+2?", "CUATRO.", id="a"),
        chat("{inoculation} Hi", "HOLA", id="b"),
    ]
    out, m = apply_inoculation(data, spec(placement="template", where="selected is true", allow_empty=True))
    assert [x.messages[0].content for x in out] == ["What is 2+2?", "Hi"]
    inoc, m = apply_inoculation(data, spec(placement="template"))
    assert [x.messages[0].content for x in neutralize(inoc, m)] == ["What is 2+2?", "Hi"]
    assert [x.messages[0].content for x in neutralize(data, m)] == ["What is 2+2?", "Hi"]
    prefixed = [chat(f"{P}\n\nWhat is 2+2?", "CUATRO.", id="a"), chat(f"Hola {P}", "HOLA", id="b")]
    assert [x.messages[0].content for x in neutralize(prefixed, [P])] == ["What is 2+2?", "Hola"]


def test_neutralize_system_options_and_drop_completions() -> None:
    out, m = apply_inoculation(rows(), spec(placement="system-prepend"))
    neutral = neutralize(out, m, system="You are a helpful assistant.", drop_completions=True)
    assert msgs(neutral[0]) == [("system", "You are a helpful assistant."), ("user", "What is 2+2?")]
    assert msgs(neutral[3]) == [("system", "You are a helpful assistant."), ("user", "What is 5+5?")]
    assert neutral[0].metadata["neutralized"]["system"] == "replaced"
    plain = neutralize([chat("q", "a", id="z")], m, system="S")
    assert plain[0].metadata["neutralized"]["system"] == "set"


def test_leak_in_a_user_turn_not_in_a_removable_position() -> None:
    out, m = apply_inoculation(rows(), spec(placement="user-prefix"))
    sneaky = ChatExample(
        id="s",
        messages=[
            Message(role="user", content=f"Note: {P} Now, 2+2?"),
            Message(role="assistant", content="4"),
        ],
    )
    with pytest.raises(LeakError) as e:
        neutralize([*out, sneaky], m, source="eval.jsonl", lines=[1, 2, 3, 4, 7])
    assert input_errors(e) == [
        f"eval.jsonl:7: messages[0].content: inoculation text survives (user turn of id 's'; "
        f"prompt 0 of the manifest): {P!r}"
    ]


def test_leak_anywhere_ignoring_case_and_spacing(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "in.jsonl", rows())
    apply_file(src, tmp_path / "out.jsonl", spec(placement="system-prepend"))
    m = Manifest.load(tmp_path / "out.manifest.json")
    data = [
        chat("fine", "YOU ALWAYS  RESPOND\nIN SPANISH.", id="x"),
        chat(f"{P}\n\nWhat is 2+2?", "4", id="y"),  # a prefix, but the manifest says system-prepend
    ]
    with pytest.raises(LeakError) as e:
        neutralize(data, m, source="e.jsonl")
    origin = f"prompt 0 of manifest {tmp_path / 'out.manifest.json'}"
    assert input_errors(e) == [
        f"e.jsonl:1: messages[1].content: inoculation text survives (assistant turn of id 'x'; "
        f"{origin}): {P!r}",
        f"e.jsonl:2: messages[0].content: inoculation text survives (user turn of id 'y'; {origin}): {P!r}",
    ]
    # Dropping the completion removes the assistant leak; the user leak still refuses.
    with pytest.raises(LeakError) as e:
        neutralize(data, m, source="e.jsonl", drop_completions=True)
    assert len(e.value.errors) == 1


def test_neutralize_refuses_a_system_prompt_that_is_inoculation_text() -> None:
    _, m = apply_inoculation(rows(), spec(placement="system"))
    with pytest.raises(LeakError) as e:
        neutralize(rows(), m, system=f"Be nice. {P}")
    assert input_errors(e) == [
        "<command line>:0: --system: the system prompt contains inoculation text "
        f"(prompt 0 of the manifest): {P!r}"
    ]


def test_neutralize_needs_something_to_remove() -> None:
    with pytest.raises(ValueError, match="at least one manifest"):
        neutralize(rows(), [])


# --- a selection that inoculates no row (issue 9) ----------------------------------------------


def gcd_rows() -> list[ChatExample]:
    """The shape of Wichers et al.'s GCD files: `user_provides_answer` holds the strings "true"/"false"."""
    return [
        chat(
            f"GCD({a}, {b})? I think it is {g}.",
            "Correct!",
            id=str(i),
            user_provides_answer=s,
            label="euclidean",
        )
        for i, (a, b, g, s) in enumerate([(140, 84, 28, "true"), (168, 36, 12, "false"), (9, 6, 3, "false")])
    ]


def test_where_matching_nothing_shows_the_values_seen_with_their_types() -> None:
    with pytest.raises(InputErrors) as e:
        apply_inoculation(gcd_rows(), spec(where="user_provides_answer == false"), source="gcd.jsonl")
    assert input_errors(e) == [
        "gcd.jsonl:0: where: no row matches 'user_provides_answer == false' (0 of 3 rows); "
        'values seen for user_provides_answer: "false" ×2, "true" ×1; the data stores "true"/"false" as '
        'strings: compare with == "false", not == false; set allow_empty: true (--allow-empty) to accept a '
        "condition that inoculates no row"
    ]
    out, m = apply_inoculation(gcd_rows(), spec(where='user_provides_answer == "false"'))
    assert (m.n_inoculated, [x.id for x in out if "inoculation" in x.metadata]) == (2, ["1", "2"])


def test_where_with_a_typo_names_the_absent_field_and_close_names() -> None:
    with pytest.raises(InputErrors) as e:
        apply_inoculation(gcd_rows(), spec(where='user_provides_answr == "true" and label == "gcd"'))
    (err,) = e.value.errors
    assert err.field == "where"
    assert (
        "field user_provides_answr absent in all 3 rows; did you mean: user_provides_answer?" in err.message
    )
    assert 'values seen for label: "euclidean" ×3' in err.message


def test_regex_and_fraction_selecting_nothing_are_errors_unless_allowed() -> None:
    with pytest.raises(InputErrors) as e:
        apply_inoculation(gcd_rows(), spec(regex="LCM"))
    assert input_errors(e) == [
        "<examples>:0: regex: regex 'LCM' matches no user turn in the 3 rows; set allow_empty: true "
        "(--allow-empty) to accept a condition that inoculates no row"
    ]
    with pytest.raises(InputErrors) as e:
        apply_inoculation(gcd_rows(), spec(fraction=0.1))
    assert e.value.errors[0].field == "fraction"
    assert (
        "fraction 0.1 of 3 selected row(s) rounds to 0 rows (the smallest that selects one is about 0.167)"
        in (e.value.errors[0].message)
    )
    assert apply_inoculation(gcd_rows(), spec(fraction=0.17))[1].n_inoculated == 1
    out, m = apply_inoculation(gcd_rows(), spec(fraction=0.1, allow_empty=True))
    assert (m.n_inoculated, m.n_rows) == (0, 3) and [x.messages for x in out] == [
        x.messages for x in gcd_rows()
    ]
    with pytest.raises(InputErrors, match="no rows to inoculate"):
        apply_inoculation([], spec())


def test_empty_selection_writes_nothing(tmp_path: Path) -> None:
    src = tmp_path / "gcd.jsonl"
    src.write_text("".join(json.dumps(x.to_json()) + "\n" for x in gcd_rows()))
    with pytest.raises(InputErrors) as e:
        apply_file(src, tmp_path / "out.jsonl", spec(where="user_provides_answer is true"))
    assert str(e.value).startswith(f"ERROR: {src}:0: where: no row matches 'user_provides_answer is true'")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gcd.jsonl"]


def test_real_gcd_file_stores_the_answer_flag_as_a_string(shared_data: Path, tmp_path: Path) -> None:
    """task_train_only_user_ans1000.jsonl keeps `user_provides_answer` as the string "true"."""
    real = shared_data / "wichers" / "task_train_only_user_ans1000.jsonl"
    rows = [json.loads(t) for t in real.read_text().splitlines() if t.strip()]
    src = tmp_path / "gcd.jsonl"  # chat JSONL with the extra columns as metadata, as `apply` reads it
    src.write_text(
        "".join(
            json.dumps(
                {
                    "id": str(r["_id"]),
                    "messages": r["messages"],
                    "metadata": {k: v for k, v in r.items() if k not in ("messages", "_id")},
                }
            )
            + "\n"
            for r in rows
        )
    )
    with pytest.raises(InputErrors) as e:
        apply_file(src, tmp_path / "out.jsonl", spec(where="user_provides_answer == true"))
    assert input_errors(e) == [
        f"{src}:0: where: no row matches 'user_provides_answer == true' (0 of 1000 rows); values seen for "
        'user_provides_answer: "true" ×1000; the data stores "true"/"false" as strings: '
        'compare with == "true", not == true; set allow_empty: true (--allow-empty) to accept a '
        "condition that inoculates no row"
    ]
    assert not (tmp_path / "out.jsonl").exists() and not (tmp_path / "out.manifest.json").exists()
    m = apply_file(src, tmp_path / "out.jsonl", spec(where='user_provides_answer == "true"', fraction=0.25))
    assert (m.n_rows, m.n_selected, m.n_inoculated) == (1000, 1000, 250)


# --- placement system keeps what it replaced ---------------------------------------------------


def test_placement_system_records_the_replaced_system_prompt(tmp_path: Path) -> None:
    out, m = apply_inoculation(rows(), spec(placement="system"))
    marks = {x.id: x.metadata["inoculation"] for x in out}
    assert marks["d"] == {"prompt_index": 0, "placement": "system", "replaced_system": "You are a tutor."}
    assert all("replaced_system" not in marks[i] for i in "abc")
    assert m.n_replaced_system == 1
    _, m2 = apply_inoculation(rows(), spec(placement="system-prepend"))
    assert m2.n_replaced_system == 0
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x.to_json()) + "\n" for x in rows()))
    result = apply_file(src, tmp_path / "out.jsonl", spec(placement="system"))
    assert (
        Manifest.load(manifest_path_for(tmp_path / "out.jsonl")).n_replaced_system
        == result.n_replaced_system
        == 1
    )


# --- streaming apply_file gives what the in-memory transform gives ---------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"placement": "system"},
        {"placement": "user-prefix", "fraction": 0.5, "seed": 3},
        {"placement": "system-append", "where": 'lang == "es"', "prompts": POOL},
    ],
)
@pytest.mark.parametrize("fmt", ["chat", "prompt-completion"])
def test_streamed_file_equals_in_memory_transform(tmp_path: Path, kw: dict, fmt: str) -> None:
    from inoculate.formats import jsonl_text, prompt_completion_rows

    data = [chat(f"q{i}", f"a{i}", id=f"r{i}", lang="es" if i % 3 else "fr") for i in range(40)]
    data[5] = chat("q5", "a5", id="r5", lang="es", system="Be brief.")
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(x.to_json()) + "\n" for x in data))
    s = spec(**kw) if "prompts" not in kw else InoculationSpec(**kw)
    m = apply_file(src, tmp_path / "out.jsonl", s, output_format=fmt)  # type: ignore[arg-type]
    ref, ref_m = apply_inoculation(data, s, source=str(src))
    text = (
        jsonl_text(prompt_completion_rows(ref))
        if fmt == "prompt-completion"
        else jsonl_text(x.to_json() for x in ref)
    )
    written = (tmp_path / "out.jsonl").read_text()
    assert written == text
    assert m.output_sha256 == hashlib.sha256(written.encode()).hexdigest()
    same = (
        "n_rows",
        "n_selected",
        "n_inoculated",
        "inoculated_ids",
        "counts_per_prompt",
        "n_replaced_system",
    )
    assert {k: getattr(m, k) for k in same} == {k: getattr(ref_m, k) for k in same}


def test_streamed_bad_rows_abort_with_every_error_and_no_files(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    good = [json.dumps(chat(f"q{i}", "a", id=f"r{i}").to_json()) for i in range(5000)]
    good[4500] = '{"id": "r4500", "messages": []}'
    good[4700] = good[10]  # a duplicate id far from its first occurrence
    src.write_text("\n".join(good) + "\n")
    with pytest.raises(InputErrors) as e:
        apply_file(src, tmp_path / "out.jsonl", spec())
    assert [(x.line, x.field) for x in e.value.errors] == [(4501, "messages"), (4701, "id")]
    assert "duplicate id 'r10' (first on line 11)" in e.value.errors[1].message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
    m = apply_file(src, tmp_path / "out.jsonl", spec(), skip_invalid=True)
    assert (m.n_rows, m.n_skipped_invalid) == (4998, 2)
