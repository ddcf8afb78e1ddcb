"""The one error path: whatever a user does wrong ends as `ERROR: ...` lines, exit 1, no traceback,
and no half-written output or temp file. Walls of per-row errors are cut to ~20 lines per kind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inoculate.cli import app
from inoculate.cli._app import ERRORS_PER_KIND, describe_error
from inoculate.errors import NO_ASSISTANT_HINT, SHAPES_HINT, InputError, InputErrors, render_errors

SAMPLE = Path(__file__).resolve().parent.parent / "examples" / "data" / "sample.jsonl"


def run(*args: str | Path):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_clean_error(result, message: str, code: int = 1) -> None:
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.stderr.startswith("ERROR: "), result.stderr
    assert message in result.stderr, result.stderr


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or "manifest" in p.name)


def apply_args(out: str | Path, data: Path = SAMPLE) -> list[str | Path]:
    return ["apply", data, "-o", out, "--prompt", "Answer in Spanish.", "--placement", "system"]


# --- OSError: the path and the system's own words ---------------------------------------------------


def test_output_is_a_directory(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    result = run(*apply_args(tmp_path / "out"))
    assert_clean_error(result, f"ERROR: {tmp_path / 'out'}: Is a directory")
    assert list((tmp_path / "out").iterdir()) == [] and leftovers(tmp_path) == []


def test_output_under_a_file(tmp_path: Path) -> None:
    (tmp_path / "somefile").write_text("x")
    result = run(*apply_args(tmp_path / "somefile" / "out.jsonl"))
    assert_clean_error(result, f"ERROR: {tmp_path / 'somefile' / 'out.jsonl'}: Not a directory")
    assert (tmp_path / "somefile").read_text() == "x" and leftovers(tmp_path) == []


def test_output_to_dev_full() -> None:
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full here")
    result = run("neutralize", SAMPLE, "-o", "/dev/full", "--text", "nothing to strip")
    assert_clean_error(result, "ERROR: /dev/full: No space left on device")
    assert Path("/dev/full").is_char_device()  # written in place, never renamed over


def _mount_tmpfs(where: Path, options: str) -> None:
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")


def _umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], check=False)


def _big_input(path: Path) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a" * 2000}]}
        for i in range(100)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_disk_full(tmp_path: Path) -> None:
    small = tmp_path / "small"
    _mount_tmpfs(small, "size=64k")
    try:
        result = run(*apply_args(small / "out.jsonl", _big_input(tmp_path / "in.jsonl")))
        assert_clean_error(result, f"ERROR: {small / 'out.jsonl'}: No space left on device")
        assert list(small.iterdir()) == []  # neither the output, nor its temp file, nor a manifest
    finally:
        _umount(small)


def test_read_only_output_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    _mount_tmpfs(ro, "ro,size=64k")
    try:
        result = run(*apply_args(ro / "out.jsonl"))
        assert_clean_error(result, f"ERROR: {ro / 'out.jsonl'}: Read-only file system")
    finally:
        _umount(ro)


def test_not_utf8_names_file_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    first = json.dumps(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    )
    bad.write_bytes(first.encode() + b'\n{"messages": "\xff"}\n')
    result = run("validate", bad)
    assert_clean_error(result, f"ERROR: {bad}:2: <file>: not UTF-8 text: byte 0xff at column 15")


# --- the other exception kinds, mapped in one place -------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "expected", "code"),
    [
        (RecursionError("maximum recursion depth exceeded"), "ERROR: input nested too deeply", 1),
        (MemoryError(), "ERROR: out of memory while running this command", 1),
        (PermissionError(13, "Permission denied", "/x/y.jsonl"), "ERROR: /x/y.jsonl: Permission denied", 1),
        (OSError(28, "No space left on device"), "ERROR: No space left on device", 1),
        (
            KeyError("boom"),
            "ERROR: internal error: KeyError: 'boom' (rerun with --debug for the traceback)",
            2,
        ),
    ],
)
def test_describe_error(exc: BaseException, expected: str, code: int) -> None:
    lines, got = describe_error(exc)
    assert got == code and lines[0].startswith(expected), lines


@pytest.mark.parametrize(
    ("exc", "message", "code"),
    [
        (MemoryError(), "ERROR: out of memory while", 1),
        (RecursionError(), "ERROR: input nested too deeply", 1),
        (KeyError("boom"), "ERROR: internal error: KeyError", 2),
    ],
)
def test_cli_maps_exceptions_and_debug_shows_them(
    monkeypatch: pytest.MonkeyPatch, exc: BaseException, message: str, code: int
) -> None:
    import inoculate.cli.data_cmds as data_cmds

    def boom(*_a: object, **_k: object) -> None:
        raise exc

    monkeypatch.setattr(data_cmds, "iter_examples", boom)  # validate streams its input
    assert_clean_error(run("validate", SAMPLE), message, code)
    debug = run("--debug", "validate", SAMPLE)
    assert debug.exception is exc  # --debug lets the traceback through


def test_deeply_nested_json(tmp_path: Path) -> None:
    deep = tmp_path / "deep.jsonl"
    deep.write_text('{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    result = run("validate", deep)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "nested" in result.stderr and "Traceback" not in result.output


def test_every_command_goes_through_the_error_path() -> None:
    commands = list(app.registered_commands)
    for group in app.registered_groups:  # `inoculate organism build`, ...
        commands += group.typer_instance.registered_commands
    assert len(commands) >= 12
    for c in commands:
        assert getattr(c.callback, "_handles_errors", False), f"{c.name} is not wrapped in handle_errors"


def test_no_traceback_in_a_real_process(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "inoculate", *map(str, apply_args(tmp_path / "out"))],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert done.stderr == f"ERROR: {tmp_path / 'out'}: Is a directory\n"


# --- walls of errors ---------------------------------------------------------------------------------


def test_render_groups_by_kind_and_prints_hints_once() -> None:
    errors = [InputError("f.jsonl", i, "completion", "missing", NO_ASSISTANT_HINT) for i in range(1, 101)]
    errors += [
        InputError("f.jsonl", i, "id", f"duplicate id 'r{i}' (first on line {i - 1})") for i in range(2, 30)
    ]
    lines = render_errors(errors, limit=20)
    assert lines[:20] == [f"ERROR: f.jsonl:{i}: completion: missing" for i in range(1, 21)]
    assert lines[20] == "  … and 80 more like this"
    assert lines[21] == "ERROR: f.jsonl:2: id: duplicate id 'r2' (first on line 1)"
    assert lines[41] == "  … and 8 more like this"
    assert lines[42:] == [f"hint: {NO_ASSISTANT_HINT}"]
    # nothing cut: every line, in the file's order
    few = [InputError("f", 2, "a", "x"), InputError("f", 1, "messages[3].role", "y", SHAPES_HINT)]
    assert render_errors(few) == [
        "ERROR: f:2: a: x",
        "ERROR: f:1: messages[3].role: y",
        f"hint: {SHAPES_HINT}",
    ]
    assert InputErrors(few).render() == render_errors(few)


def test_wall_of_errors_is_cut_with_a_hint(tmp_path: Path) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"question {i}?"}) + "\n" for i in range(500)))
    result = run("validate", prompts)
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) == ERRORS_PER_KIND + 3, lines
    assert lines[ERRORS_PER_KIND] == "  … and 480 more like this"
    assert lines[-2] == f"hint: {NO_ASSISTANT_HINT}" and "--allow-no-assistant" in lines[-2]
    assert lines[-1] == "500 problem(s); 0 valid row(s)"
    assert run("validate", "--allow-no-assistant", prompts).exit_code == 0
    # the same cut where a command raises (apply), not only in validate
    result = run(*apply_args(tmp_path / "out.jsonl", prompts))
    assert result.exit_code == 1 and "… and 480 more like this" in result.stderr
    assert len(result.stderr.splitlines()) == ERRORS_PER_KIND + 2
    assert not (tmp_path / "out.jsonl").exists()


def test_real_eval_prompts_point_at_allow_no_assistant(shared_data: Path) -> None:
    result = run("validate", shared_data / "tan" / "ultrachat_prompts.jsonl")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) <= ERRORS_PER_KIND + 4, lines
    assert lines[0].endswith("ultrachat_prompts.jsonl:1: completion: missing")
    assert "  … and 80 more like this" in lines
    assert f"hint: {NO_ASSISTANT_HINT}" in lines


def test_real_wrong_shape_points_at_the_accepted_shapes(shared_data: Path) -> None:
    result = run("validate", shared_data / "wichers" / "mbpp_reward_hack_solutions.json")
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert len(lines) <= 3 * (ERRORS_PER_KIND + 1) + 2, lines  # 717 bad rows, a few kinds
    assert any(line.endswith("more like this") for line in lines)
    assert f"hint: {SHAPES_HINT}" in lines
    assert lines[-1].startswith("1434 problem(s)") or "problem(s)" in lines[-1]


@pytest.mark.parametrize("name", ["wichers/ood_test.jsonl", "tan/ultrachat_prompts.jsonl"])
def test_real_files_never_make_a_wall(shared_data: Path, name: str) -> None:
    result = run("validate", shared_data / name)
    assert len(result.stderr.splitlines()) <= 3 * (ERRORS_PER_KIND + 1) + 3
    assert "Traceback" not in result.output
