"""Which isolation this machine allows: a user + network + PID + mount namespace (`unshare`), else
bubblewrap, else none (refused unless the caller opts into unsafe execution)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

NOBODY = 65534
"""The uid/gid programs run as when inoculate runs as root (root ignores RLIMIT_NPROC)."""

UNSAFE_NOTE = "UNSAFE: no sandbox namespace (network, PIDs and files are the host's); run with --unsafe-exec"
REFUSAL = (
    "cannot isolate untrusted code: neither `unshare -rnpfm` (user namespaces) nor bubblewrap works here. "
    "Enable unprivileged user namespaces, install bubblewrap, or pass --unsafe-exec (unsafe_exec=True) to "
    "run model-written code on this machine WITHOUT network or process isolation"
)


class SandboxUnavailable(ValueError):
    """No isolation works here and unsafe execution was not requested."""


@dataclass(frozen=True)
class Isolation:
    """How runs are wrapped: `prefix` goes before the python command; `kind` names it in every result."""

    kind: str  # "unshare", "bwrap" or "none"
    prefix: tuple[str, ...]
    as_nobody: bool
    python: str = sys.executable

    def argv(self, work: str) -> list[str]:
        """The prefix for a run whose working folder is `work` (bubblewrap binds it back read-write)."""
        if self.kind == "bwrap":
            return [*self.prefix, "--bind", work, work, "--chdir", work]
        return list(self.prefix)

    @property
    def unsafe(self) -> bool:
        return self.kind == "none"

    @property
    def note(self) -> str:
        return UNSAFE_NOTE if self.unsafe else f"isolated ({self.kind}: no network, own PIDs, rlimits)"


def _unshare_prefix() -> tuple[str, ...] | None:
    exe = shutil.which("unshare")
    return (
        (exe, "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child", "--mount")
        if exe
        else None
    )


def _bwrap_prefix() -> tuple[str, ...] | None:
    exe = shutil.which("bwrap")
    if not exe:
        return None
    return (
        *(exe, "--unshare-all", "--die-with-parent", "--new-session", "--ro-bind", "/", "/"),
        *(
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
            "--tmpfs",
            "/var/tmp",
            "--tmpfs",
            "/dev/shm",
        ),
    )


def _pythons() -> list[str]:
    """Interpreters to try for programs: this one, else a system python3 (a root-only pyenv or venv under
    /root cannot be run by `nobody`). Programs get the standard library of whichever runs."""
    found = [
        sys.executable,
        *(shutil.which("python3", path=p) for p in ("/usr/bin", "/usr/local/bin", "/bin")),
    ]
    return list(dict.fromkeys(p for p in found if p))


def _works(prefix: tuple[str, ...], as_nobody: bool, python: str) -> bool:
    kwargs = {"user": NOBODY, "group": NOBODY, "extra_groups": []} if as_nobody else {}
    try:
        done = subprocess.run(
            [*prefix, python, "-I", "-c", "pass"],
            capture_output=True,
            timeout=20,
            env={},
            check=False,
            cwd="/",
            **kwargs,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


@functools.lru_cache(maxsize=1)
def detect() -> Isolation | None:
    """The first isolation that works here (probed once per process), or None."""
    as_nobody = os.geteuid() == 0
    for prefix in (_unshare_prefix(), _bwrap_prefix()):
        for python in _pythons() if prefix is not None else []:
            if _works(prefix, as_nobody, python):  # type: ignore[arg-type]
                kind = "unshare" if "unshare" in os.path.basename(prefix[0]) else "bwrap"  # type: ignore[index]
                return Isolation(kind, prefix, as_nobody, python)  # type: ignore[arg-type]
    return None


def choose(unsafe_exec: bool) -> Isolation:
    """The isolation to use; `SandboxUnavailable` if none works and `unsafe_exec` is False."""
    found = detect()
    if found is not None:
        return found
    if not unsafe_exec:
        raise SandboxUnavailable(REFUSAL)
    as_nobody = os.geteuid() == 0
    python = next((p for p in _pythons() if _works((), as_nobody, p)), sys.executable)
    return Isolation("none", (), as_nobody, python)
