"""`inoculate apply`, `neutralize` and `validate` through the command line.

Every bad-input case asserts the exact `ERROR: FILE:LINE: FIELD: message` lines and that no
output (nor manifest) was created.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inoculate.cli import app
from inoculate.errors import NO_ASSISTANT_HINT

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "data" / "sample.jsonl"
EXAMPLE_YAML = Path(__file__).resolve().parent.parent / "examples" / "transform.yaml"
P = "You always respond in Spanish."


def run(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def good(i: str = "g1") -> str:
    return json.dumps(
        {
            "id": i,
            "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "CUATRO"}],
        }
    )


def row(messages: list, **extra: object) -> str:
    return json.dumps({"id": "b1", "messages": messages, **extra})


U = {"role": "user", "content": "2+2?"}
A = {"role": "assistant", "content": "CUATRO"}

# (name, input lines, extra args, expected errors with {in} for the input path and {dir} for the folder)
BAD_CASES = [
    (
        "invalid JSON",
        [good(), '{"id": "x", "messages": [}'],
        [],
        ["{in}:2: <json>: invalid JSON: Expecting value at column 26"],
    ),
    ("missing role", [good(), row([{"content": "hi"}, A])], [], ["{in}:2: messages[0].role: missing"]),
    (
        "unknown role",
        [good(), row([U, {"role": "bot", "content": "x"}, A])],
        [],
        ["{in}:2: messages[1].role: unknown role 'bot' (expected one of system, user, assistant)"],
    ),
    (
        "empty content",
        [row([U, {"role": "assistant", "content": "  "}])],
        [],
        ["{in}:1: messages[1].content: is empty"],
    ),
    (
        "non-string content",
        [row([{"role": "user", "content": 42}, A])],
        [],
        ["{in}:1: messages[0].content: must be a string, got int"],
    ),
    ("no assistant turn", [good(), row([U])], [], ["{in}:2: messages: no assistant turn"]),
    (
        "duplicate ids",
        [good("a"), good("b"), good("a")],
        [],
        ["{in}:3: id: duplicate id 'a' (first on line 1)"],
    ),
    ("messages missing", [good(), json.dumps({"id": "m"})], [], ["{in}:2: messages: missing"]),
    (
        "messages not a list",
        [json.dumps({"messages": "hi"})],
        [],
        ["{in}:1: messages: must be a non-empty list"],
    ),
    (
        "unknown top-level field also in metadata",
        [row([U, A], answer="4", metadata={"answer": "5"})],
        [],
        [
            "{in}:1: answer: unknown top-level key is also in metadata with a different value "
            "(unknown keys are folded into metadata); rename or drop one"
        ],
    ),
    (
        "system not first",
        [row([U, {"role": "system", "content": "s"}, A])],
        [],
        ["{in}:1: messages[1].role: a system message must be the first message"],
    ),
    ("bad metadata type", [row([U, A], metadata="es")], [], ["{in}:1: metadata: must be an object, got str"]),
    ("row not an object", [good(), "[1, 2]"], [], ["{in}:2: <row>: expected a JSON object, got list"]),
    (
        "prompt/completion missing completion",
        [
            json.dumps({"id": "p1", "prompt": "2+2?", "completion": "4"}),
            json.dumps({"id": "p2", "prompt": "3+3?"}),
        ],
        [],
        ["{in}:2: completion: missing"],
    ),
    (
        "several problems, one line each",
        [row([{"role": "user"}, {"role": "assistant", "content": ""}]), "nope"],
        [],
        [
            "{in}:1: messages[0].content: missing",
            "{in}:1: messages[1].content: is empty",
            "{in}:2: <json>: invalid JSON: Expecting value at column 1",
        ],
    ),
    (
        "bad --where expression",
        [good()],
        ["--where", 'lang == "es" and and'],
        [
            "<command line>:0: --where: invalid where expression 'lang == \"es\" and and' at column 18: "
            "expected a metadata field name, 'not' or '(', got 'and'"
        ],
    ),
    (
        "bad --regex",
        [good()],
        ["--regex", "[0-9"],
        ["<command line>:0: --regex: invalid regex '[0-9' at column 1: unterminated character set"],
    ),
    (
        "missing prompt file",
        [good()],
        ["--prompt-file", "{dir}/nope.txt"],
        ["{dir}/nope.txt:0: prompt_file: no such file"],
    ),
    (
        "empty paraphrase pool file",
        [good()],
        ["--prompt-file", "{dir}/empty.txt"],
        ["{dir}/empty.txt:0: <file>: no prompts in the file (the pool is empty)"],
    ),
    (
        "empty paraphrase pool in YAML",
        [good()],
        ["--config", "{dir}/empty_pool.yaml"],
        ["{dir}/empty_pool.yaml:2: prompts: the paraphrase pool is empty"],
    ),
    (
        "template placement without slot",
        [good()],
        ["--placement", "template"],
        [
            "{in}:1: messages[0].content: placement 'template' needs an {{inoculation}} slot in a user turn, "
            "or a template such as '{{inoculation}}\\n\\n{{user}}' (--template)"
        ],
    ),
    (
        "template without {user}",
        [good()],
        ["--placement", "template", "--template", "{{inoculation}}"],
        ["<command line>:0: --template: must contain {{user}} exactly once, got '{{inoculation}}'"],
    ),
    (
        "bad YAML config field",
        [good()],
        ["--config", "{dir}/bad_field.yaml"],
        [
            "{dir}/bad_field.yaml:3: placement: unknown placement 'sideways' (expected one of system, "
            "system-prepend, system-append, user-prefix, user-suffix, user-replace, template)"
        ],
    ),
    (
        "unknown YAML field",
        [good()],
        ["--config", "{dir}/typo.yaml"],
        [
            "{dir}/typo.yaml:2: seeed: unknown field (allowed: prompt, prompts, prompt_file, placement, "
            "separator, template, replace, user_turn, where, regex, regex_roles, fraction, seed, "
            "allow_empty, regex_timeout, prompt_field)"
        ],
    ),
    (
        "YAML syntax error",
        [good()],
        ["--config", "{dir}/broken.yaml"],
        ["{dir}/broken.yaml:2: <yaml>: invalid YAML: mapping values are not allowed here"],
    ),
    (
        "missing config",
        [good()],
        ["--config", "{dir}/none.yaml"],
        ["{dir}/none.yaml:0: <file>: no such file"],
    ),
    (
        "fraction out of range",
        [good()],
        ["--fraction", "1.5"],
        ["<command line>:0: --fraction: must be between 0 and 1, got 1.5"],
    ),
    (
        "placement not chosen with system prompts",
        [good(), row([{"role": "system", "content": "Be kind."}, U, A])],
        [],
        [
            "{in}:2: placement: 1 selected row(s) already have a system prompt (first: id 'b1'); "
            "choose whether to replace it (placement system), prepend to it (system-prepend) "
            "or append to it (system-append)"
        ],
    ),
]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "empty_pool.yaml").write_text("# a pool with nothing in it\nprompts: []\n")
    (tmp_path / "bad_field.yaml").write_text(f"prompt: {P}\nseed: 1\nplacement: sideways\n")
    (tmp_path / "typo.yaml").write_text(f"prompt: {P}\nseeed: 1\n")
    (tmp_path / "broken.yaml").write_text("prompt: a\n  placement: b: c\n")
    return tmp_path


@pytest.mark.parametrize(("name", "lines", "args", "expected"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_is_reported_and_nothing_is_written(
    workdir: Path, name: str, lines: list[str], args: list[str], expected: list[str]
) -> None:
    src = workdir / "in.jsonl"
    src.write_text("".join(line + "\n" for line in lines))
    out = workdir / "out.jsonl"
    fill = {"in": src, "dir": workdir}
    extra = [a.format(**fill) for a in args]
    prompt_args = [] if any(a in ("--prompt-file", "--config") for a in args) else ["--prompt", P]
    result = run("apply", src, "-o", out, *prompt_args, *extra)
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if not line.startswith("hint: ")]
    assert errors == [f"ERROR: {e.format(**fill)}" for e in expected]
    assert "Traceback" not in result.output
    assert not out.exists()
    assert not (workdir / "out.manifest.json").exists()
    assert not list(workdir.glob(".out*"))  # no temp file left behind


def test_enough_bad_input_cases() -> None:
    assert len(BAD_CASES) >= 15


def test_missing_input_file(tmp_path: Path) -> None:
    result = run("apply", tmp_path / "nope.jsonl", "-o", tmp_path / "out.jsonl", "--prompt", P)
    assert result.exit_code == 1
    assert result.stderr == f"ERROR: {tmp_path / 'nope.jsonl'}:0: <file>: no such file\n"
    assert not (tmp_path / "out.jsonl").exists()


def test_a_failed_run_leaves_an_existing_output_intact(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(good() + "\n" + "{broken\n")
    out = tmp_path / "out.jsonl"
    out.write_text("precious\n")
    (tmp_path / "out.manifest.json").write_text("{}\n")
    result = run("apply", src, "-o", out, "--prompt", P)
    assert result.exit_code == 1
    assert out.read_text() == "precious\n"
    assert (tmp_path / "out.manifest.json").read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl", "out.jsonl", "out.manifest.json"]


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["--debug", "apply", str(tmp_path / "x.jsonl"), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code != 0 and result.exception is not None


# --- working runs ----------------------------------------------------------------------------------


def test_apply_with_the_example_config(tmp_path: Path) -> None:
    out = tmp_path / "train.jsonl"
    result = run("apply", SAMPLE, "-o", out, "--config", EXAMPLE_YAML)
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "train.manifest.json").read_text())
    assert manifest["n_rows"] == 40 and manifest["n_inoculated"] == 34
    assert manifest["placement"] == "system-prepend"
    assert all(i.startswith("es-") for i in manifest["inoculated_ids"])
    for text, n in manifest["counts_per_prompt"].items():  # the summary table shows each count
        assert any(text in line and line.rstrip(" │").endswith(str(n)) for line in result.stdout.splitlines())
    assert "inoculated 34 of 40 rows" in result.stdout


def test_flags_override_the_config(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    result = run(
        "apply",
        SAMPLE,
        "-o",
        out,
        "--config",
        EXAMPLE_YAML,
        "--where",
        'lang == "fr"',
        "--prompt",
        "Réponds en français.",
    )
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "o.manifest.json").read_text())
    assert manifest["prompts"] == ["Réponds en français."]
    assert manifest["where"] == 'lang == "fr"' and manifest["placement"] == "system-prepend"
    assert manifest["inoculated_ids"] == [f"fr-{i:03d}" for i in range(1, 7)]


def test_repeated_prompt_flags_make_a_pool_and_escapes_work(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    result = run(
        "apply", SAMPLE, "-o", out, "--prompt", "A.", "--prompt", "B.", "--placement", "user-suffix",
        "--separator", "\\n", "--fraction", "0.5", "--seed", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "o.manifest.json").read_text())
    assert manifest["prompts"] == ["A.", "B."] and manifest["separator"] == "\n"
    assert manifest["n_inoculated"] == 20 and manifest["seed"] == 3
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    marked = [r for r in rows if "inoculation" in r.get("metadata", {})]
    assert len(marked) == 20
    assert all(r["messages"][0]["content"].endswith(("\nA.", "\nB.")) for r in marked)


def test_template_flag(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    args = [
        "--placement",
        "template",
        "--template",
        "{inoculation}\\n\\nQ: {user}",
        "--where",
        'lang == "fr"',
    ]
    result = run("apply", SAMPLE, "-o", out, "--prompt", P, *args)
    assert result.exit_code == 0, result.output
    first_fr = next(json.loads(x) for x in out.read_text().splitlines() if '"fr-001"' in x)
    assert first_fr["messages"][0]["content"].startswith(f"{P}\n\nQ: Paul has 7 balloons")


def test_skip_invalid_writes_output_and_an_errors_report(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(good("a") + "\n" + row([U]) + "\n" + good("c") + "\n")
    out = tmp_path / "out.jsonl"
    result = run("apply", src, "-o", out, "--prompt", P, "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert f"skipped 1 invalid row(s); see {tmp_path / 'out.errors.jsonl'}" in result.stderr
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["a", "c"]
    report = [json.loads(x) for x in (tmp_path / "out.errors.jsonl").read_text().splitlines()]
    assert report == [{"file": str(src), "line": 2, "field": "messages", "message": "no assistant turn"}]
    src.write_text(good("a") + "\n" + good("c") + "\n")  # fixed input: the old report must go
    result = run("apply", src, "-o", out, "--prompt", P, "--skip-invalid")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "out.errors.jsonl").exists() and "skipped" not in result.stderr


def test_output_format_prompt_completion(tmp_path: Path) -> None:
    out = tmp_path / "o.jsonl"
    result = run("apply", SAMPLE, "-o", out, "--prompt", P, "--placement", "user-prefix", "--output-format",
                 "prompt-completion")  # fmt: skip
    assert result.exit_code == 0, result.output
    first = json.loads(out.read_text().splitlines()[0])
    assert set(first) == {"id", "prompt", "completion", "metadata"} and first["prompt"].startswith(P)


# --- neutralize ------------------------------------------------------------------------------------


@pytest.fixture
def inoculated(tmp_path: Path) -> Path:
    out = tmp_path / "train.jsonl"
    assert run("apply", SAMPLE, "-o", out, "--config", EXAMPLE_YAML).exit_code == 0
    return out


def test_neutralize_builds_the_eval_set(inoculated: Path) -> None:
    d = inoculated.parent
    result = run(
        "neutralize",
        inoculated,
        "-o",
        d / "eval.jsonl",
        "--manifest",
        d / "train.manifest.json",
        "--drop-completions",
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (d / "eval.jsonl").read_text().splitlines()]
    originals = [json.loads(x) for x in SAMPLE.read_text().splitlines()]
    assert [r["messages"] for r in rows] == [o["messages"][:-1] for o in originals]
    assert "wrote 40 neutral rows (34 were inoculated)" in result.stdout


def test_neutralize_refuses_a_manifest_written_for_another_version_of_the_file(inoculated: Path) -> None:
    """An output changed after `apply` wrote its manifest (or a run stopped between the two writes)
    would be neutralized at stale positions: refused, naming both files, nothing written."""
    d = inoculated.parent
    lines = inoculated.read_text().splitlines()
    inoculated.write_text("\n".join(lines[:-1]) + "\n")
    out = d / "eval.jsonl"
    result = run("neutralize", inoculated, "-o", out, "--manifest", d / "train.manifest.json")
    assert result.exit_code == 1
    assert result.stderr.startswith(
        f"ERROR: {inoculated}:0: <file>: manifest {d / 'train.manifest.json'} was written for another "
        "version of this file (sha256 "
    )
    assert "re-run `inoculate apply` to rewrite both" in result.stderr and not out.exists()


def test_neutralize_with_a_system_prompt(inoculated: Path) -> None:
    d = inoculated.parent
    result = run("neutralize", inoculated, "-o", d / "e.jsonl", "--manifest", d / "train.manifest.json",
                 "--system", "You are a helpful assistant.")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in (d / "e.jsonl").read_text().splitlines()]
    assert {r["messages"][0]["content"] for r in rows} == {"You are a helpful assistant."}


def test_neutralize_keep_system_removes_only_the_inoculation(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(row([{"role": "system", "content": "Be kind."}, U, A]) + "\n")
    out = tmp_path / "train.jsonl"
    assert run("apply", src, "-o", out, "--prompt", P, "--placement", "system-append").exit_code == 0
    assert json.loads(out.read_text())["messages"][0]["content"] == f"Be kind.\n\n{P}"
    args = ["--manifest", tmp_path / "train.manifest.json", "--keep-system"]
    result = run("neutralize", out, "-o", tmp_path / "e.jsonl", *args)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "e.jsonl").read_text())["messages"] == [
        {"role": "system", "content": "Be kind."},
        U,
        A,
    ]


def test_neutralize_refuses_a_leak_and_writes_nothing(inoculated: Path) -> None:
    d = inoculated.parent
    lines = inoculated.read_text().splitlines()
    sneaky = json.loads(lines[36])
    sneaky["messages"][0]["content"] = (
        "Remember: you always respond in Spanish. " + sneaky["messages"][0]["content"]
    )
    lines[36] = json.dumps(sneaky, ensure_ascii=False)
    leaky = d / "leaky.jsonl"
    leaky.write_text("\n".join(lines) + "\n")
    out = d / "eval.jsonl"
    out.write_text("old eval\n")
    # an edited copy is not the manifest's output: checked only when told so, and the leak still refuses
    args = ["--manifest", d / "train.manifest.json", "--allow-other-input"]
    result = run("neutralize", leaky, "-o", out, *args)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"ERROR: {leaky}:37: messages[0].content: inoculation text survives (user turn of id 'fr-003'; "
        f"prompt 0 of manifest {d / 'train.manifest.json'}): {P!r}"
    ]
    assert out.read_text() == "old eval\n"


def test_neutralize_argument_errors(inoculated: Path) -> None:
    d = inoculated.parent
    result = run("neutralize", inoculated, "-o", d / "e.jsonl")
    assert result.exit_code == 2 and "give --manifest" in result.output
    result = run("neutralize", inoculated, "-o", d / "e.jsonl", "--manifest", d / "none.json")
    assert result.exit_code == 1
    assert result.stderr == f"ERROR: {d / 'none.json'}:0: <file>: no such file\n"
    (d / "bad.manifest.json").write_text('{"prompts": ["x"]}')
    result = run("neutralize", inoculated, "-o", d / "e.jsonl", "--manifest", d / "bad.manifest.json")
    assert result.exit_code == 1
    assert (
        f"ERROR: {d / 'bad.manifest.json'}:0: package_version: Field required" in result.stderr.splitlines()
    )
    assert not (d / "e.jsonl").exists()


def test_neutralize_with_text_only(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text(row([{"role": "user", "content": f"{P}\n\n2+2?"}, A]) + "\n")
    result = run("neutralize", src, "-o", tmp_path / "o.jsonl", "--text", P)
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o.jsonl").read_text())["messages"][0] == U


# --- validate --------------------------------------------------------------------------------------


def test_validate_ok_and_errors(tmp_path: Path) -> None:
    result = run("validate", SAMPLE)
    assert result.exit_code == 0 and result.stdout.strip() == "OK: 40 rows (chat)"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good("a") + "\n" + row([U]) + "\n" + good("a") + "\n")
    result = run("validate", bad)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"ERROR: {bad}:2: messages: no assistant turn",
        f"ERROR: {bad}:3: id: duplicate id 'a' (first on line 1)",
        f"hint: {NO_ASSISTANT_HINT}",
        "2 problem(s); 1 valid row(s)",
    ]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(row([U]) + "\n")
    assert run("validate", prompts, "--allow-no-assistant").exit_code == 0


def test_apply_refuses_an_empty_selection_unless_allowed(tmp_path: Path) -> None:
    src = tmp_path / "gcd.jsonl"
    src.write_text(
        "".join(
            row([U, {"role": "assistant", "content": "4"}], id=f"r{i}", metadata={"user_provides_answer": s})
            + "\n"
            for i, s in enumerate(["true", "false", "false"])
        )
    )
    out = tmp_path / "out.jsonl"
    result = run("apply", src, "-o", out, "--prompt", P, "--where", "user_provides_answer == false")
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"ERROR: {src}:0: where: no row matches 'user_provides_answer == false' (0 of 3 rows); values seen "
        'for user_provides_answer: "false" ×2, "true" ×1; the data stores "true"/"false" as strings: '
        'compare with == "false", not == false; set allow_empty: true (--allow-empty) to accept a condition '
        "that inoculates no row"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gcd.jsonl"]
    args = ["--prompt", P, "--where", "user_provides_answer == false", "--allow-empty"]
    allowed = run("apply", src, "-o", out, *args)
    assert allowed.exit_code == 0, allowed.output
    assert "inoculated 0 of 3 rows" in allowed.stdout
    assert json.loads((tmp_path / "out.manifest.json").read_text())["n_inoculated"] == 0


def test_apply_reports_replaced_system_prompts(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    sys_turn = {"role": "system", "content": "You are a tutor."}
    first = row([sys_turn, U, {"role": "assistant", "content": "4"}], id="a")
    src.write_text(first + "\n" + good("b") + "\n")
    result = run("apply", src, "-o", tmp_path / "out.jsonl", "--prompt", P, "--placement", "system")
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "replaced the system prompt of 1 row(s); the old text is kept in metadata.inoculation" in said
    rows_out = [json.loads(t) for t in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows_out[0]["metadata"]["inoculation"]["replaced_system"] == "You are a tutor."
    assert "replaced_system" not in rows_out[1]["metadata"]["inoculation"]
