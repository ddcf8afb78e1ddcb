"""Hostile inputs to `inoculate apply` (issue 10): regex bombs, deep `not`s, bad string escapes. Each gives a
clear error and leaves no output, manifest or temp file behind."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inoculate.cli import app
from inoculate.errors import InputErrors
from inoculate.selectors import MAX_DEPTH, SelectorError, parse_regex, parse_where
from inoculate.transform import InoculationSpec, apply_file

BOMB = "a" * 34 + "!"


def write_rows(path: Path, n: int = 3) -> Path:
    rows = [
        {
            "id": f"r{i}",
            "messages": [{"role": "user", "content": BOMB}, {"role": "assistant", "content": "ok"}],
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def assert_nothing_written(folder: Path, keep: set[str]) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(keep)


def test_catastrophic_regex_times_out_naming_pattern_and_row(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "in.jsonl")
    spec = InoculationSpec(prompt="P", regex="(a|a)+$", regex_timeout=0.2)
    t0 = time.perf_counter()
    with pytest.raises(InputErrors) as e:
        apply_file(src, tmp_path / "out.jsonl", spec)
    assert time.perf_counter() - t0 < 10
    assert [str(x) for x in e.value.errors] == [
        f"{src}:1: regex: regex '(a|a)+$' ran past its time limit of 0.2 s on messages[0].content of id 'r0' "
        "(catastrophic backtracking?); simplify the pattern (avoid nested repeats such as (a|a)+) or raise "
        "regex_timeout (--regex-timeout)"
    ]
    assert_nothing_written(tmp_path, {"in.jsonl"})


def test_nested_quantifier_from_the_issue_no_longer_hangs(tmp_path: Path) -> None:
    """`(a+)+$` on 34 characters hung with `re`; the regex package answers at once (no match here)."""
    src = write_rows(tmp_path / "in.jsonl")
    t0 = time.perf_counter()
    result = CliRunner().invoke(
        app, ["apply", str(src), "-o", str(tmp_path / "o.jsonl"), "--prompt", "P", "--regex", "(a+)+$"]
    )
    assert time.perf_counter() - t0 < 10
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"ERROR: {src}:0: regex: regex '(a+)+$' matches no user turn in the 3 rows; set allow_empty: true "
        "(--allow-empty) to accept a condition that inoculates no row"
    )
    assert_nothing_written(tmp_path, {"in.jsonl"})


def test_cli_regex_timeout_flag(tmp_path: Path) -> None:
    src = write_rows(tmp_path / "in.jsonl")
    args = ["apply", str(src), "-o", str(tmp_path / "o.jsonl"), "--prompt", "P", "--regex", "(a|aa)+$"]
    result = CliRunner().invoke(app, [*args, "--regex-timeout", "0.1"])
    assert result.exit_code == 1
    assert "ran past its time limit of 0.1 s on messages[0].content of id 'r0'" in result.stderr
    bad = CliRunner().invoke(app, [*args, "--regex-timeout", "0"])
    assert bad.exit_code == 1
    assert "--regex-timeout: must be a positive number of seconds, got 0.0" in bad.stderr
    assert_nothing_written(tmp_path, {"in.jsonl"})


@pytest.mark.parametrize(
    ("expr", "column", "message"),
    [
        ("not " * 5000 + "x", 4 * MAX_DEPTH + 1, f"nested more than {MAX_DEPTH} levels deep"),
        ("(" * 3000 + "x" + ")" * 3000, MAX_DEPTH + 1, f"nested more than {MAX_DEPTH} levels deep"),
        ('x == "\\N"', 6, "invalid escape in string"),
        ('x == "\\x4"', 6, "invalid escape in string"),
        ("x == '\\U0011ffff'", 6, "invalid escape in string"),
    ],
)
def test_hostile_where_is_a_selector_error(tmp_path: Path, expr: str, column: int, message: str) -> None:
    with pytest.raises(SelectorError) as e:
        parse_where(expr)
    assert e.value.column == column
    assert message in e.value.message
    assert len(str(e.value)) < 400  # a 20,000-character expression is not echoed whole
    src = write_rows(tmp_path / "in.jsonl")
    result = CliRunner().invoke(
        app, ["apply", str(src), "-o", str(tmp_path / "o.jsonl"), "--prompt", "P", "--where", expr]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith("ERROR: <command line>:0: --where: invalid where expression ")
    assert f"at column {column}: " in result.stderr
    assert "RecursionError" not in result.stderr and "internal error" not in result.stderr
    assert_nothing_written(tmp_path, {"in.jsonl"})


def test_depth_limit_admits_reasonable_nesting() -> None:
    w = parse_where("not " * (MAX_DEPTH - 1) + "x")
    assert (MAX_DEPTH - 1) % 2 == 1  # an odd number of nots negates
    assert w({"x": True}) is False and w({"x": False}) is True
    assert parse_where("(" * (MAX_DEPTH - 1) + "x == 1" + ")" * (MAX_DEPTH - 1))({"x": 1}) is True
    assert parse_where(" and ".join(["x"] * 5000))({"x": True}) is True  # long flat chains are not nested


def test_invalid_escape_kept_as_python_keeps_it() -> None:
    assert parse_where('x == "\\d"')({"x": "\\d"}) is True


def test_regex_selector_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive number of seconds"):
        parse_regex("a", timeout=0)


@pytest.mark.parametrize("command", ["apply", "neutralize"])
def test_output_that_is_the_input_is_refused_and_the_input_kept(tmp_path: Path, command: str) -> None:
    """`-o IN` would rename the new file over the user's data; refuse it and leave IN byte for byte."""
    src = write_rows(tmp_path / "in.jsonl")
    before = src.read_bytes()
    args = [command, str(src), "-o", str(tmp_path / "." / "in.jsonl")]
    if command == "apply":
        args += ["--prompt", "P"]
    else:
        spec = InoculationSpec(prompt="P")
        apply_file(src, tmp_path / "made.jsonl", spec)
        args += ["--manifest", str(tmp_path / "made.manifest.json"), "--allow-other-input"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.stderr.splitlines()[0] == (
        f"ERROR: {tmp_path / '.' / 'in.jsonl'}:0: --output: is the input file {src}: "
        "writing it would replace your data; write to another path"
    )
    assert src.read_bytes() == before
    extra = {"made.jsonl", "made.manifest.json"} if command == "neutralize" else set()
    assert_nothing_written(tmp_path, {"in.jsonl"} | extra)
