"""Hostile inputs to the readers: each is refused at FILE:LINE: FIELD, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inoculate.cli import app
from inoculate.errors import InputErrors
from inoculate.fileio import write_json_atomic, write_jsonl_atomic
from inoculate.formats import iter_examples, load_examples, read_chat_jsonl
from inoculate.records import chat, write_chat_jsonl

GOOD = json.dumps(
    {"id": "g", "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]}
).encode()
MSGS = b'[{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]'
NAN_MSG = "is not valid JSON (nor is an out-of-range number like 1e999); use null"
SURR = "contains a lone surrogate (an unpaired \\ud800-\\udfff escape): not valid Unicode"

# (name, bytes of line 2 (after one good row), the one expected error with {p} for the path)
CASES = [
    (
        "NaN",
        b'{"messages": ' + MSGS + b', "metadata": {"score": NaN}}',
        f"{{p}}:2: metadata.score: NaN {NAN_MSG}",
    ),
    (
        "-Infinity",
        b'{"messages": ' + MSGS + b', "metadata": {"s": [1, -Infinity]}}',
        f"{{p}}:2: metadata.s[1]: -Infinity {NAN_MSG}",
    ),
    (
        "1e999",
        b'{"messages": ' + MSGS + b', "metadata": {"x": 1e999}}',
        f"{{p}}:2: metadata.x: Infinity {NAN_MSG}",
    ),
    (
        "lone surrogate",
        b'{"messages": [{"role": "user", "content": "hi \\ud800"}, {"role": "assistant", "content": "a"}]}',
        f"{{p}}:2: messages[0].content: {SURR}",
    ),
    (
        "lone surrogate in a key",
        b'{"messages": ' + MSGS + b', "metadata": {"\\udc00": 1}}',
        f"{{p}}:2: metadata.\\udc00: key {SURR}",
    ),
    (
        "duplicate key",
        b'{"messages": ' + MSGS + b', "messages": ' + MSGS + b"}",
        "{p}:2: messages: duplicate key in one object",
    ),
    (
        "duplicate key nested",
        b'{"messages": ' + MSGS + b', "metadata": {"a": {"b": 1, "b": 2}}}',
        "{p}:2: metadata.a.b: duplicate key in one object",
    ),
    (
        "deep nesting",
        b'{"messages": ' + MSGS + b', "metadata": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        "{p}:2: <row>: nested too deeply (more than 100 levels)",
    ),
    (
        "nesting over the bound",
        b'{"messages": ' + MSGS + b', "m": ' + b"[" * 150 + b"]" * 150 + b"}",
        "{p}:2: m" + "[0]" * 99 + ": nested too deeply (more than 100 levels)",
    ),
    (
        "bad bytes",
        b'{"messages": "\xff"}',
        "{p}:2: <file>: not UTF-8 text: byte 0xff at column 15 (invalid start byte)",
    ),
    (
        "bad bytes after text",
        '{"id": "é", "x": "'.encode() + b"\xc3\x28" + b'"}',
        "{p}:2: <file>: not UTF-8 text: byte 0xc3 at column 19 (invalid continuation byte)",
    ),
]


def run(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.mark.parametrize(("name", "line", "expected"), CASES, ids=[c[0] for c in CASES])
def test_hostile_row_is_refused_at_its_line(tmp_path: Path, name: str, line: bytes, expected: str) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(GOOD + b"\n" + line + b"\n" + GOOD.replace(b'"g"', b'"h"') + b"\n")
    want = expected.format(p=p)
    with pytest.raises(InputErrors) as e:
        load_examples(p)
    assert [str(x) for x in e.value.errors] == [want]
    # skip_invalid keeps the good rows around it
    loaded = load_examples(p, skip_invalid=True)
    assert [ex.id for ex in loaded.examples] == ["g", "h"] and loaded.lines == [1, 3]
    # the CLI: validate names it, apply writes nothing
    result = run("validate", p)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == f"ERROR: {want}"
    out = tmp_path / "out.jsonl"
    result = run("apply", p, "-o", out, "--prompt", "Be brief.")
    assert result.exit_code == 1 and f"ERROR: {want}" in result.stderr
    assert not out.exists() and not (tmp_path / "out.manifest.json").exists()


@pytest.mark.parametrize("content", [b"", b"\n", b"  \n\t\n\r\n"], ids=["empty", "newline", "blank-only"])
def test_empty_input_is_an_error_even_with_skip_invalid(tmp_path: Path, content: bytes) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(content)
    want = f"{p}:0: <file>: no rows (the file is empty or blank)"
    for skip in (False, True):
        with pytest.raises(InputErrors) as e:
            load_examples(p, skip_invalid=skip)
        assert [str(x) for x in e.value.errors] == [want]
    with pytest.raises(InputErrors):
        read_chat_jsonl(p, skip_invalid=True)
    assert run("validate", p).stderr.splitlines()[0] == f"ERROR: {want}"
    out = tmp_path / "out.jsonl"
    result = run("apply", p, "-o", out, "--prompt", "Be brief.", "--skip-invalid")
    assert result.exit_code == 1 and f"ERROR: {want}" in result.stderr
    assert not out.exists() and not (tmp_path / "out.manifest.json").exists()


def test_a_bom_is_not_an_error(tmp_path: Path) -> None:
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b"\xef\xbb\xbf" + GOOD + b"\n")
    assert [ex.id for ex in load_examples(p).examples] == ["g"]


def test_tool_calls_are_one_error_per_file(tmp_path: Path) -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    tool_rows = [
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": None, "tool_calls": [call]},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "q"},
                {"role": "tool", "content": "r", "tool_call_id": "c1"},
            ]
        },
        {
            "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
            "tools": [{}],
        },
    ]
    p = tmp_path / "tools.jsonl"
    p.write_text("\n".join([GOOD.decode(), *(json.dumps(r) for r in tool_rows)]) + "\n")
    want = (
        f"{p}:2: messages: tool calls are not supported yet: 3 row(s) have tool_calls/tool turns/tools "
        f"(first at {p}:2); drop them with --skip-invalid"
    )
    with pytest.raises(InputErrors) as e:
        load_examples(p)
    assert [str(x) for x in e.value.errors] == [want]
    loaded = load_examples(p, skip_invalid=True)
    assert [ex.id for ex in loaded.examples] == ["g"] and len(loaded.errors) == 1
    result = run("validate", p)
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        f"ERROR: {want}",
        "1 problem(s); 1 valid row(s)",
    ]


def test_weight_name_and_developer(tmp_path: Path) -> None:
    row = {
        "messages": [
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": "q1", "name": "ana"},
            {"role": "assistant", "content": "a1", "weight": 0},
            {"role": "user", "content": "q2"},
            {"role": "assistant", "content": "a2", "weight": 1},
        ]
    }
    p = tmp_path / "w.jsonl"
    p.write_text(json.dumps(row) + "\n")
    (ex,) = load_examples(p).examples
    assert [m.role for m in ex.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert ex.messages[1].name == "ana" and [m.weight for m in ex.messages] == [None, None, 0, None, 1]
    out = tmp_path / "out.jsonl"
    write_chat_jsonl(out, [ex])
    written = json.loads(out.read_text())["messages"]
    assert written[0] == {"role": "system", "content": "Be terse."}  # developer is written back as system
    assert written[1] == {"role": "user", "content": "q1", "name": "ana"}
    assert written[2] == {"role": "assistant", "content": "a1", "weight": 0}
    assert written[3] == {"role": "user", "content": "q2"}  # unset fields are not written as null
    (again,) = load_examples(out).examples
    assert again.messages == ex.messages


@pytest.mark.parametrize(
    ("turn", "expected"),
    [
        ({"role": "assistant", "content": "a", "weight": 2}, "messages[1].weight: must be 0 or 1, got 2"),
        (
            {"role": "assistant", "content": "a", "weight": True},
            "messages[1].weight: must be 0 or 1, got True",
        ),
        (
            {"role": "user", "content": "a", "weight": 1},
            "messages[1].weight: is only allowed on assistant turns",
        ),
        ({"role": "assistant", "content": "a", "name": ""}, "messages[1].name: must be a non-empty string"),
    ],
)
def test_bad_weight_and_name(tmp_path: Path, turn: dict, expected: str) -> None:
    p = tmp_path / "w.jsonl"
    msgs = [{"role": "user", "content": "q"}, turn, {"role": "assistant", "content": "b"}]
    p.write_text(json.dumps({"messages": msgs}) + "\n")
    with pytest.raises(InputErrors) as e:
        load_examples(p)
    assert [str(x) for x in e.value.errors] == [f"{p}:1: {expected}"]


def test_a_jsonl_file_has_no_other_split(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_bytes(GOOD + b"\n")
    assert len(load_examples(p, split="train").examples) == 1
    with pytest.raises(InputErrors) as e:
        load_examples(p, split="test")
    assert str(e.value.errors[0]).startswith(f"{p}:0: <split>: no split 'test'")


def test_streaming_reader_is_lazy_and_repeatable(tmp_path: Path) -> None:
    p = tmp_path / "in.jsonl"
    p.write_text(
        "".join(json.dumps({"id": i, "messages": json.loads(MSGS), "k": i}) + "\n" for i in range(5))
    )
    stream = iter_examples(p)
    it = iter(stream)
    assert next(it)[0] == 1 and stream.n_rows == 1  # one row read, not the file
    for _ in range(2):
        assert [line for line, _ in stream] == [1, 2, 3, 4, 5]
        assert stream.warnings == ["folded 1 unknown top-level key(s) into metadata in 5 row(s): k"]


def test_writers_emit_strict_json(tmp_path: Path) -> None:
    out = tmp_path / "m.json"
    write_json_atomic(out, {"mean": float("nan"), "ci": [float("inf"), 1.5]})
    assert json.loads(out.read_text(), parse_constant=pytest.fail) == {"mean": None, "ci": [None, 1.5]}
    rows = tmp_path / "r.jsonl"
    write_jsonl_atomic(rows, [{"s": float("-inf")}])
    assert rows.read_text() == '{"s": null}\n'
    # a lone surrogate fails at write and leaves no file behind
    bad = tmp_path / "bad.jsonl"
    with pytest.raises(UnicodeEncodeError):
        write_chat_jsonl(bad, [chat("hi \ud800", "a")])
    assert not bad.exists() and list(tmp_path.glob(".bad.jsonl.*")) == []
