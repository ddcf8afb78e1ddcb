"""Run programs and their tests in the sandbox: one fresh process tree per test, many in parallel."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from inoculate.sandbox.isolation import NOBODY, Isolation, choose
from inoculate.sandbox.policy import SandboxPolicy

Reason = Literal["passed", "timeout", "memory", "assertion", "error", "crashed", "exit_code", "output_limit"]
_TMPFS = ("/tmp", "/var/tmp", "/dev/shm")
_PROGRAM = "main.py"


class RunRequest(BaseModel):
    """One run: the program, then `setup`, then one test, in one file, in a fresh process."""

    model_config = ConfigDict(frozen=True)

    program: str
    test: str = ""
    setup: str = ""


class RunResult(BaseModel):
    """What one run did. `passed` only if it exited 0 after running every line (a completion marker that
    the harness prints last was seen), so `sys.exit(0)` or `os._exit(0)` before the test is not a pass."""

    model_config = ConfigDict(frozen=True)

    passed: bool
    reason: Reason
    detail: str
    exit_code: int | None
    wall_s: float
    stdout: str
    stderr: str
    truncated: bool
    isolation: str


def _source(req: RunRequest, marker: str) -> str:
    parts = [req.program, req.setup, req.test, f"import sys as _s\n_s.stdout.write('\\n{marker}\\n')\n"]
    return "\n\n".join(p.rstrip() for p in parts if p.strip()) + "\n"


def _read(path: Path, limit: int, tail: bool) -> tuple[str, bool]:
    size = path.stat().st_size
    with path.open("rb") as f:
        if tail and size > limit:
            f.seek(size - limit)
        data = f.read(limit)
    return data.decode("utf-8", "replace"), size > limit


def _exception(stderr_tail: str) -> str:
    """The last traceback line (`AssertionError: msg`), or ''."""
    if "Traceback (most recent call last)" not in stderr_tail and "Error" not in stderr_tail:
        return ""
    lines = [ln for ln in stderr_tail.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else ""


def classify(code: int | None, timed_out: bool, marker_seen: bool, stderr_tail: str) -> tuple[Reason, str]:
    """(reason, detail) for a finished run."""
    if timed_out:
        return "timeout", "wall-clock limit reached; the run's processes were killed"
    assert code is not None
    if code == 0:
        return ("passed", "") if marker_seen else ("exit_code", "exited 0 before the tests finished")
    if code > 128 and code - 128 in (signal.SIGXCPU,):
        return "timeout", "CPU-time limit (SIGXCPU)"
    if code > 128 and code - 128 == signal.SIGXFSZ:
        return "output_limit", "file-size limit hit (output or a file too large; SIGXFSZ)"
    last = _exception(stderr_tail)
    name = last.split(":", 1)[0].strip()
    if name == "AssertionError":
        return "assertion", last
    if "[Errno 27]" in last:  # EFBIG: Python ignores SIGXFSZ, so the write fails instead
        return "output_limit", f"file-size limit hit (output or a file too large): {last}"
    if name == "MemoryError":
        return "memory", "MemoryError (address-space limit)"
    if code == 1 and last:
        return "error", last
    if code > 128:
        sig = code - 128
        try:
            signame = signal.Signals(sig).name
        except ValueError:
            signame = f"signal {sig}"
        return "crashed", f"killed by {signame}"
    return "exit_code", f"exit code {code}" + (f": {last}" if last else "")


def _rlimits(policy: SandboxPolicy) -> dict[str, int]:
    mib = 1024 * 1024
    return {
        "RLIMIT_CPU": policy.cpu_s,
        "RLIMIT_AS": policy.memory_mb * mib,
        "RLIMIT_FSIZE": policy.file_size_mb * mib,
        "RLIMIT_NOFILE": policy.open_files,
        "RLIMIT_NPROC": policy.nproc,
        "RLIMIT_CORE": 0,
    }


def _kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the run's session: unshare, the namespace's PID 1, children
    proc.kill()


def run_one(req: RunRequest, policy: SandboxPolicy, isolation: Isolation) -> RunResult:
    """Run one request in a fresh temp folder, which is removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="inoculate-sandbox-"))
    marker = "__inoculate_done_" + secrets.token_hex(16)
    try:
        work = base / "work"
        work.mkdir()
        (work / _PROGRAM).write_text(_source(req, marker), encoding="utf-8")
        user: dict[str, object] = {}
        if isolation.as_nobody:
            for p in (work, work / _PROGRAM):
                os.chown(p, NOBODY, NOBODY)
            os.chmod(base, 0o711)
            user = {"user": NOBODY, "group": NOBODY, "extra_groups": []}
        spec = {
            "python": isolation.python,
            "rlimits": _rlimits(policy),
            "tmpfs": list(_TMPFS) if isolation.kind == "unshare" else [],
            "program": _PROGRAM,
        }
        boot = resources.files("inoculate.sandbox").joinpath("_bootstrap.py").read_text(encoding="utf-8")
        argv = [*isolation.argv(str(work)), isolation.python, "-I", "-c", boot, json.dumps(spec)]
        out_path, err_path = base / "stdout", base / "stderr"
        start = time.monotonic()
        timed_out = False
        with out_path.open("wb") as out, err_path.open("wb") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=work, env={},
                start_new_session=True, close_fds=True, **user,  # type: ignore[call-overload]
            )  # fmt: skip
            try:
                proc.wait(timeout=policy.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill(proc)  # also on a normal exit: nothing of the run outlives it
            proc.wait()
        wall = time.monotonic() - start
        stdout, cut_out = _read(out_path, policy.max_output_bytes, tail=False)
        stderr, cut_err = _read(err_path, policy.max_output_bytes, tail=True)
        tail = stderr[-4096:]
        marker_seen = marker in _read(out_path, 256, tail=True)[0]
        reason, detail = classify(None if timed_out else proc.returncode, timed_out, marker_seen, tail)
        return RunResult(
            passed=reason == "passed",
            reason=reason,
            detail=detail,
            exit_code=None if timed_out else proc.returncode,
            wall_s=wall,
            stdout=stdout.replace(f"\n{marker}\n", ""),
            stderr=stderr,
            truncated=cut_out or cut_err,
            isolation=isolation.note,
        )
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_many(requests: Sequence[RunRequest], policy: SandboxPolicy | None = None) -> list[RunResult]:
    """Run every request (each in its own process tree), `policy.workers` at a time, in input order.

    Refuses (`SandboxUnavailable`) when no isolation works and `policy.unsafe_exec` is False.
    """
    policy = policy or SandboxPolicy()
    isolation = choose(policy.unsafe_exec)
    if not requests:
        return []
    with ThreadPoolExecutor(max_workers=min(policy.workers, len(requests))) as pool:
        return list(pool.map(lambda r: run_one(r, policy, isolation), requests))


def run_tests(
    program: str, tests: Sequence[str], setup: str = "", policy: SandboxPolicy | None = None
) -> list[RunResult]:
    """Each test in its own fresh process after `program` and `setup`; one result per test."""
    return run_many([RunRequest(program=program, test=t, setup=setup) for t in tests], policy)
