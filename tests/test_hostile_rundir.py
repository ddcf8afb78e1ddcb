"""The run folder under hostile conditions: foreign files, a second run, a killed run, a copied
folder, a corrupted output, the umask, and secrets. Nothing of the user's is ever deleted, two runs
never mix, and a run folder is self-contained."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiment_support import write_small_experiment
from inoculate.cli import app
from inoculate.rundir import (
    HOLDER_FILE,
    MARKER,
    RunFolderError,
    RunFolderLocked,
    claim_run_folder,
    write_marker,
)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _cli(*args: str) -> tuple[int, str]:
    """Exit code and output, with rich's log columns (time, source line) and line wrapping undone."""
    res = CliRunner().invoke(app, list(args))
    text = re.sub(r"\[\d\d:\d\d:\d\d\]|\b[a-z_]+\.py:\d+", " ", res.output)
    return res.exit_code, " ".join(text.split())


# --- foreign files ------------------------------------------------------------------------------------


def test_a_foreign_out_folder_is_refused_and_untouched(tiny_model_dir, tmp_path):
    path = write_small_experiment(tmp_path / "exp", tiny_model_dir, seeds=1)
    out = tmp_path / "mine"
    (out / "base").mkdir(parents=True)
    (out / "notes.txt").write_text("two years of notes")
    (out / "base" / "weights.bin").write_bytes(b"\x00precious")
    (out / "baseline" / "seed_0").mkdir(parents=True)
    (out / "baseline" / "seed_0" / "draft.md").write_text("draft")
    before = _tree(out)
    code, output = _cli("run", str(path), "--out", str(out))
    assert code == 1
    assert "holds files inoculate did not write (e.g. base)" in output
    assert "choose another --out or empty it" in output
    assert _tree(out) == before and not (out / MARKER).exists()
    code, output = _cli("run", str(path), "--out", str(out), "--force")
    assert code == 1 and _tree(out) == before


def test_foreign_folders_inside_our_run_folder_are_never_cleared(tiny_model_dir, tmp_path):
    from inoculate.experiment.cache import prepare_cell

    path = write_small_experiment(tmp_path / "exp", tiny_model_dir, seeds=1)
    out = tmp_path / "run"
    out.mkdir()
    write_marker(out, "run")
    (out / "base").mkdir()
    (out / "base" / "notes.txt").write_text("mine")
    code, output = _cli("run", str(path), "--out", str(out))
    assert code == 1 and "base holds files inoculate did not write (e.g. notes.txt)" in output
    assert (out / "base" / "notes.txt").read_text() == "mine"
    # a cell folder without inoculate's marker or config: refused, not cleared (even with force)
    cell = out / "baseline" / "seed_0"
    cell.mkdir(parents=True)
    (cell / "draft.md").write_text("draft")
    for force in (False, True):
        with pytest.raises(RunFolderError, match=r"e\.g\. draft\.md"):
            prepare_cell(cell, "k", "t", force=force)
    assert (cell / "draft.md").read_text() == "draft"
    # an empty folder is adopted (marked), a folder of ours is cleared
    empty = out / "inoc" / "seed_0"
    empty.mkdir(parents=True)
    assert prepare_cell(empty, "k", "t") == "new" and (empty / MARKER).is_file()


def test_a_run_folder_written_before_markers_is_adopted(tmp_path):
    """Today's layout (experiment.json with name/conditions/seeds/cells/eval_prompts) is ours."""
    out = tmp_path / "old"
    out.mkdir()
    record = {"name": "x", "conditions": ["a"], "seeds": [0], "cells": [], "eval_prompts": {}}
    (out / "experiment.json").write_text(json.dumps(record))
    (out / "summary.csv").write_text("")
    with claim_run_folder(out):
        assert (out / MARKER).is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "experiment.json").write_text('{"name": "my own experiment notes"}')
    with pytest.raises(RunFolderError, match=r"e\.g\. experiment\.json"), claim_run_folder(other):
        pass
    assert not (other / MARKER).exists()


# --- the lock -----------------------------------------------------------------------------------------

_HOLD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from inoculate.rundir import RunLock
    lock = RunLock(Path(sys.argv[1])).acquire()
    print("held", flush=True)
    time.sleep(120)
    """
)


def _holder(root: Path) -> subprocess.Popen:
    root.mkdir(parents=True, exist_ok=True)
    write_marker(root, "run")
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(root)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held", proc.stderr.read()
    return proc


def test_a_second_run_is_locked_out_and_told_who_holds_the_folder(tiny_model_dir, tmp_path):
    path = write_small_experiment(tmp_path / "exp", tiny_model_dir, seeds=1)
    out = tmp_path / "run"
    proc = _holder(out)
    try:
        before = _tree(out)
        code, output = _cli("run", str(path), "--out", str(out))
        assert code == 1
        assert f"pid {proc.pid} on {socket.gethostname()}" in output and "is in use by" in output
        assert _tree(out) == before  # nothing written by the locked-out run
        with pytest.raises(RunFolderLocked), claim_run_folder(out):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "run"
    proc = _holder(out)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    stale = json.loads((out / HOLDER_FILE).read_text())
    assert stale["pid"] == proc.pid  # the killed run left its holder file behind
    with claim_run_folder(out) as lock:
        assert lock.took_over is not None and lock.took_over["pid"] == proc.pid
        assert json.loads((out / HOLDER_FILE).read_text())["pid"] == os.getpid()
    assert not (out / HOLDER_FILE).exists()  # released cleanly: no holder left
    with claim_run_folder(out) as lock:
        assert lock.took_over is None


def test_report_while_a_run_holds_the_folder_says_so(small_rundir, tmp_path):
    _path, root = small_rundir
    proc = _holder(root)
    try:
        code, output = _cli("report", str(root))
        assert code == 0, output
        assert f"pid {proc.pid}" in output and "still running" in output
    finally:
        proc.kill()
        proc.wait()


# --- a finished run: copied, corrupted ------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_rundir(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    path = write_small_experiment(folder, tiny_model_dir, seeds=1)
    code, output = _cli("run", str(path), "--out", str(folder / "run"))
    assert code == 0, output
    return path, folder / "run"


def test_a_copied_run_folder_reruns_from_its_own_files(small_rundir, tmp_path):
    path, root = small_rundir
    exp = tmp_path / "exp"
    shutil.copytree(path.parent, exp, ignore=shutil.ignore_patterns("run"))
    original = tmp_path / "original"
    shutil.copytree(root, original)
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    shutil.rmtree(original)
    record = json.loads((copy / "experiment.json").read_text())
    assert not Path(record["model"]["path"]).is_relative_to(original)
    # unchanged: every cell is cached in the copy
    code, output = _cli("run", str(exp / "small.yaml"), "--out", str(copy))
    assert code == 0, output and "0 cell(s) run, 3 cached" in output
    # an evaluation setting changed: each cell re-evaluates with the copy's adapter, training kept
    adapters = {p: p.stat().st_mtime_ns for p in copy.glob("*/seed_0/adapter/*")}
    yaml = exp / "small.yaml"
    yaml.write_text(yaml.read_text().replace("max_new_tokens: 6", "max_new_tokens: 5"))
    code, output = _cli("run", str(yaml), "--out", str(copy))
    assert code == 0, output
    assert "3 cell(s) run" in output
    assert adapters == {p: p.stat().st_mtime_ns for p in copy.glob("*/seed_0/adapter/*")}
    for cond in ("baseline", "inoc", "mix"):
        row = json.loads(
            (copy / cond / "seed_0" / "generations" / "neutral.jsonl").read_text().splitlines()[0]
        )
        adapter = row["metadata"]["generation"]["adapter"]
        assert adapter == f"{cond}/seed_0/adapter" and (copy / adapter).is_dir()
    for p in copy.rglob("*"):
        if p.is_file() and p.suffix in (".json", ".jsonl", ".md", ".csv") and "checkpoint" not in str(p):
            if p.name in ("inoculate_run.json", "train_result.json"):
                continue  # written by `inoculate train` (outside the run record); not read back
            text = p.read_text()
            assert str(original) not in text and str(root) not in text, p  # root: where it was run


def test_a_truncated_metrics_file_is_recomputed_and_reported(small_rundir, tmp_path):
    path, root = small_rundir
    copy = tmp_path / "run"
    shutil.copytree(root, copy)
    metrics = copy / "baseline" / "seed_0" / "metrics.json"
    good = json.loads(metrics.read_text())
    metrics.write_text(metrics.read_text()[:20])
    (copy / "summary.csv").unlink()
    code, output = _cli("run", str(path), "--out", str(copy))
    assert code == 0, output
    assert "seed_0 of baseline: metrics.json does not match its done record; recomputing" in output
    assert "1 cell(s) run, 2 cached" in output
    again = json.loads(metrics.read_text())
    assert again["eval"].keys() == good["eval"].keys()
    summary = (copy / "summary.csv").read_text()
    assert summary.count("\nbaseline,") == len(good["eval"]) * 3
    # an old-format done marker (no hashes) is verified by parsing: intact is kept, torn is redone
    done = copy / "inoc" / "seed_0" / "done"
    old = {k: v for k, v in json.loads(done.read_text()).items() if k != "outputs"}
    done.write_text(json.dumps(old))
    code, output = _cli("run", str(path), "--out", str(copy))
    assert code == 0 and "0 cell(s) run, 3 cached" in output
    scores = copy / "inoc" / "seed_0" / "scores" / "neutral.jsonl"
    scores.write_text(scores.read_text() + '{"id": "r0", "ca')
    code, output = _cli("run", str(path), "--out", str(copy))
    assert code == 0 and "seed_0 of inoc: scores/neutral.jsonl does not parse; recomputing" in output
    assert "1 cell(s) run, 2 cached" in output


# --- leftovers of a killed run ----------------------------------------------------------------------------


def test_stale_staging_and_temp_files_are_cleaned_on_the_next_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    write_marker(out, "run")
    staging = out / ".staging-base-123-456"
    (staging / "generations").mkdir(parents=True)
    write_marker(staging, "staging")
    (staging / "generations" / "neutral.jsonl").write_text("{}\n")
    cell = out / "a" / "seed_0"
    cell.mkdir(parents=True)
    (cell / ".metrics.json.k2j_9xq1.tmp").write_text('{"half')
    (out / ".report.md.abcdefgh.tmp").write_text("half")
    # not ours: an unmarked dot-folder and temp files of other tools stay
    (out / ".staging-mine").mkdir()
    (out / "notes.tmp").write_text("keep")
    (cell / ".swap.tmp").write_text("keep")
    with claim_run_folder(out):
        pass
    assert not staging.exists()
    assert (
        not (cell / ".metrics.json.k2j_9xq1.tmp").exists() and not (out / ".report.md.abcdefgh.tmp").exists()
    )
    assert (out / ".staging-mine").is_dir() and (out / "notes.tmp").exists() and (cell / ".swap.tmp").exists()


# --- permissions ---------------------------------------------------------------------------------

_UMASK_RUN = textwrap.dedent(
    """
    import os, sys
    os.umask(int(sys.argv[2], 8))
    from pathlib import Path
    from inoculate.experiment.matrix import Cell, run_matrix
    from inoculate.rundir import claim_run_folder
    from inoculate.fileio import write_json_atomic

    def cell_fn(cell, d, stage):
        write_json_atomic(d / "metrics.json", {"eval": {}})
        return {}

    root = Path(sys.argv[1])
    with claim_run_folder(root):
        run_matrix([Cell("a", 0, {"x": 1}, key="k", train_key="t")], root, cell_fn)
    """
)


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_honour_the_umask(tmp_path, umask):
    root = tmp_path / "run"
    subprocess.run([sys.executable, "-c", _UMASK_RUN, str(root), oct(umask)], check=True)
    files = [p for p in root.rglob("*") if p.is_file() and p.name != ".inoculate.lock"]
    names = {p.relative_to(root).as_posix() for p in files}
    assert {
        ".inoculate",
        "events.jsonl",
        "a/seed_0/config.json",
        "a/seed_0/metrics.json",
        "a/seed_0/done",
    } <= names
    modes = {p.relative_to(root).as_posix(): oct(p.stat().st_mode & 0o777) for p in files}
    assert set(modes.values()) == {oct(0o666 & ~umask)}, modes


# --- secrets -------------------------------------------------------------------------------------


class _FakeOpenAI(BaseHTTPRequestHandler):
    seen_auth: list[str] = []

    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        _FakeOpenAI.seen_auth.append(self.headers.get("Authorization", ""))
        body = json.dumps(
            {"choices": [{"message": {"content": "EL GATO 1"}, "finish_reason": "stop"}], "usage": {}}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802
        self.do_POST()

    def log_message(self, *args: object) -> None:
        pass


def test_no_api_key_lands_in_any_file_of_the_run_folder(tiny_model_dir, tmp_path, monkeypatch):
    sentinel = "sk-SENTINEL-5f1d0c9e-do-not-write"
    monkeypatch.setenv("INOCULATE_TEST_API_KEY", sentinel)
    srv = HTTPServer(("127.0.0.1", 0), _FakeOpenAI)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        path = write_small_experiment(tmp_path / "exp", tiny_model_dir, seeds=1)
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        gen = (
            f'generation: {{backend: openai_http, base_url: "{url}", api_key_env: INOCULATE_TEST_API_KEY}}\n'
        )
        path.write_text(path.read_text() + gen)
        _FakeOpenAI.seen_auth.clear()
        code, output = _cli("run", str(path), "--out", str(tmp_path / "run"))
        assert code == 0, output
    finally:
        srv.shutdown()
        srv.server_close()
    assert f"Bearer {sentinel}" in _FakeOpenAI.seen_auth  # the key was in use during the run
    leaks = [p for p in (tmp_path / "run").rglob("*") if p.is_file() and sentinel.encode() in p.read_bytes()]
    assert leaks == []
    assert (tmp_path / "run" / "baseline" / "seed_0" / "config.json").is_file()


def test_secret_looking_generation_options_are_redacted_in_what_the_runner_writes():
    from inoculate.experiment.plan import _redact

    opts = {
        "backend": "x",
        "api_key": "sk-1",
        "api_key_env": "K",
        "extra_body": {"auth_token": "t", "max_tokens": 3},
    }
    assert _redact(opts) == {
        "backend": "x",
        "api_key": "<redacted>",
        "api_key_env": "K",
        "extra_body": {"auth_token": "<redacted>", "max_tokens": 3},
    }


@pytest.mark.parametrize(
    "damage", ['{"name": "x", "conditions": [', '{"name": "x", "conditions": 3, "seeds": [0], "cells": []}']
)
def test_report_on_a_damaged_record_writes_nothing_into_the_folder(tmp_path: Path, damage: str) -> None:
    """A truncated or mistyped experiment.json is refused before anything (the lock file too) is written."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "experiment.json").write_text(damage)
    res = CliRunner().invoke(app, ["report", str(run)])
    assert res.exit_code == 1
    assert res.stderr.startswith(f"ERROR: {run}")
    assert "Traceback" not in res.output
    assert sorted(p.name for p in run.iterdir()) == ["experiment.json"]
