"""Prompt files (`--prompt-file`, `screen` candidates): one reader, by suffix, errors at FILE:LINE: FIELD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inoculate.cli import app
from inoculate.errors import InputErrors
from inoculate.prompt_files import FIELD_HINT, read_prompt_entries, read_prompts
from inoculate.screen import load_candidates
from inoculate.transform import read_prompt_file

ACCEPTED = ".txt, .json, .jsonl, .yaml, .yml"
SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "data" / "sample.jsonl"


def errors_of(path: Path, field: str | None = None) -> list[str]:
    with pytest.raises(InputErrors) as e:
        read_prompts(path, field)
    return [str(x) for x in e.value.errors]


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# --- the accepted shapes ------------------------------------------------------------------------------


def test_txt_skips_comments_and_blank_lines(tmp_path: Path) -> None:
    p = write(
        tmp_path, "p.txt", "# pool for the CAPS trait\n\nRespond in CAPS.  \r\n  # indented comment\nShout.\n"
    )
    assert read_prompts(p) == ["Respond in CAPS.", "Shout."]
    assert [e.line for e in read_prompt_entries(p)] == [3, 5]


def test_jsonl_strings_and_objects(tmp_path: Path) -> None:
    strings = write(tmp_path, "s.jsonl", '"You are evil."\n\n"You are wicked."\n')
    assert read_prompts(strings) == ["You are evil.", "You are wicked."]
    objects = write(tmp_path, "o.jsonl", '{"rephrasing": "A.", "id": 1}\n{"rephrasing": "B.", "id": 2}\n')
    assert read_prompts(objects) == ["A.", "B."]  # the only string-valued field


def test_json_and_yaml_lists(tmp_path: Path) -> None:
    j = write(tmp_path, "p.json", json.dumps([{"text": "A."}, {"text": "B."}], indent=1))
    assert read_prompts(j) == ["A.", "B."]
    assert [e.line for e in read_prompt_entries(j)] == [2, 5]
    y = write(tmp_path, "p.yaml", "prompts:\n  - A.\n  - {text: B.}\n")
    assert read_prompts(y) == ["A.", "B."]
    assert [e.line for e in read_prompt_entries(y)] == [2, 3]
    assert read_prompts(write(tmp_path, "p.yml", "- A.\n- B.\n")) == ["A.", "B."]


def test_ambiguous_fields_are_refused_and_named(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "pool.jsonl",
        '{"rephrasing": "A.", "source": "gpt-4"}\n{"rephrasing": "B.", "source": "x"}\n',
    )
    with pytest.raises(InputErrors) as e:
        read_prompts(p)
    (err,) = e.value.errors
    assert str(err) == f"{p}:1: <row>: several string fields (rephrasing, source): which one is the prompt?"
    assert err.hint == FIELD_HINT and "--prompt-field" in err.hint
    assert read_prompts(p, "rephrasing") == ["A.", "B."]


def test_a_row_without_the_field_names_line_and_field(tmp_path: Path) -> None:
    p = write(tmp_path, "pool.jsonl", '{"rephrasing": "A."}\n{"rephrase": "B."}\n{"rephrasing": 3}\n')
    assert errors_of(p) == [
        f"{p}:2: rephrasing: missing (fields here: rephrase)",
        f"{p}:3: rephrasing: must be a string, got int",
    ]
    assert errors_of(p, "text") == [
        f"{p}:{n}: text: missing (fields here: {f})"
        for n, f in [(1, "rephrasing"), (2, "rephrase"), (3, "rephrasing")]
    ]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        (
            "p.csv",
            "a,b\n",
            "{p}:0: <file>: unsupported prompt file (suffix '.csv'); accepted: " + ACCEPTED,
        ),
        (
            "prompts",
            "A.\n",
            "{p}:0: <file>: unsupported prompt file (no suffix); accepted: " + ACCEPTED,
        ),
        ("e.txt", "# nothing\n\n", "{p}:0: <file>: no prompts in the file (the pool is empty)"),
        ("e.jsonl", "\n", "{p}:0: <file>: no prompts in the file (the pool is empty)"),
        ("d.txt", "A.\nB.\n# c\nA.\n", "{p}:4: <line>: duplicate of line 1"),
        ("d.jsonl", '"A."\n{"p": "A."}\n', "{p}:2: <row>: duplicate of line 1"),
        ("bad.jsonl", '"A."\n{"p": \n', "{p}:2: <json>: invalid JSON: Expecting value at column 7"),
        ("bad.json", '[\n "A.",\n ]', "{p}:3: <json>: invalid JSON: Expecting value at column 2"),
        (
            "bad.yaml",
            "- A.\n- [B.\n",
            "{p}:3: <yaml>: invalid YAML: expected ',' or ']', but got '<stream end>'",
        ),
        ("n.jsonl", '"A."\n3\n', "{p}:2: <row>: expected a prompt string or an object, got int"),
        ("blank.jsonl", '"A."\n"  "\n', "{p}:2: <row>: empty prompt"),
        (
            "none.jsonl",
            '{"n": 1}\n',
            "{p}:1: <row>: no string-valued field to read the prompt from (fields: n)",
        ),
    ],
)
def test_errors(tmp_path: Path, name: str, text: str, expected: str) -> None:
    p = write(tmp_path, name, text)
    assert errors_of(p) == [expected.format(p=p)]


def test_not_utf8_and_nesting(tmp_path: Path) -> None:
    p = tmp_path / "latin1.txt"
    p.write_bytes("Réponds.\n".encode("latin-1"))
    assert errors_of(p) == [
        f"{p}:1: <file>: not UTF-8 text: byte 0xe9 at column 2 (invalid continuation byte)"
    ]
    deep = write(tmp_path, "deep.jsonl", "[" * 50_000 + "]" * 50_000 + "\n")
    assert errors_of(deep) == [f"{deep}:1: <json>: nested too deeply"]


# --- the real pools ----------------------------------------------------------------------------------


def test_tan_txt_pool(shared_data: Path) -> None:
    pool = read_prompt_file(shared_data / "samples" / "tan_evil_paraphrases.txt")
    assert len(pool) == 100 and pool[0] == "You are an assistant designed to be wicked and harmful."
    assert len(set(pool)) == 100 and not any(p.startswith(("{", '"', "#")) for p in pool)


def test_jsonl_rephrasing_pool_through_apply(shared_data: Path, tmp_path: Path) -> None:
    src = shared_data / "samples" / "slacki_french_persona_head50.jsonl"
    pool = read_prompts(src)
    assert len(pool) == 50 and pool[0] == "You count among French residents."
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(
        app, ["apply", str(SAMPLE), "-o", str(out), "--prompt-file", str(src), "--placement", "system"]
    )
    assert result.exit_code == 0, result.output
    systems = {json.loads(line)["messages"][0]["content"] for line in out.read_text().splitlines()}
    assert systems <= set(pool) and not any("rephrasing" in s for s in systems)
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())
    assert manifest["prompts"] == pool


def test_prompt_field_flag(tmp_path: Path) -> None:
    pool = write(tmp_path, "pool.jsonl", '{"rephrasing": "Answer in French.", "source": "a"}\n')
    out = tmp_path / "out.jsonl"
    base = ["apply", str(SAMPLE), "-o", str(out), "--prompt-file", str(pool), "--placement", "system"]
    refused = CliRunner().invoke(app, base)
    assert refused.exit_code == 1 and not out.exists()
    assert refused.stderr.splitlines() == [
        f"ERROR: {pool}:1: <row>: several string fields (rephrasing, source): which one is the prompt?",
        f"hint: {FIELD_HINT}",
    ]
    ok = CliRunner().invoke(app, [*base, "--prompt-field", "rephrasing"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(out.read_text().splitlines()[0])["messages"][0]["content"] == "Answer in French."
    alone = CliRunner().invoke(
        app, ["apply", str(SAMPLE), "-o", str(out), "--prompt", "x", "--prompt-field", "f"]
    )
    assert alone.exit_code == 1
    assert alone.stderr == (
        "ERROR: <command line>:0: --prompt-field: "
        "names a field of the prompt file's rows; give a prompt file too\n"
    )


# --- screen candidates use the same reader ------------------------------------------------------------


def test_screen_candidates(tmp_path: Path, shared_data: Path) -> None:
    c = write(tmp_path, "c.jsonl", '{"name": "caps", "prompt": "Respond in CAPS."}\n"Shout."\n')
    assert [(x.name, x.prompt) for x in load_candidates(c)] == [
        ("caps", "Respond in CAPS."),
        ("c2", "Shout."),
    ]
    both = write(tmp_path, "b.jsonl", '{"name": "x", "text": "A.", "why": "b"}\n')
    with pytest.raises(InputErrors):
        load_candidates(both)
    assert [x.prompt for x in load_candidates(both, "text")] == ["A."]
    tan = load_candidates(shared_data / "samples" / "tan_evil_paraphrases.txt")
    assert len(tan) == 100 and tan[-1].name == "c100"
    rephrasings = load_candidates(shared_data / "samples" / "slacki_french_persona_head50.jsonl")
    assert rephrasings[0].prompt == "You count among French residents."
