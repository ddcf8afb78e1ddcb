"""The sandbox's limits, one pydantic model (see docs/sandbox.md for the policy they implement)."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field


class SandboxPolicy(BaseModel):
    """Limits for one program run. Every field has a conservative default; all are per process except
    `nproc` (processes in one run's namespace) and `workers` (runs at once)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timeout_s: float = Field(10.0, gt=0, description="wall clock per run; the whole run is killed after it")
    cpu_s: int = Field(10, gt=0, description="RLIMIT_CPU seconds per process")
    memory_mb: int = Field(1024, gt=0, description="RLIMIT_AS per process (address space, MiB)")
    file_size_mb: int = Field(16, gt=0, description="RLIMIT_FSIZE: largest file (stdout/stderr too), MiB")
    open_files: int = Field(64, gt=3, description="RLIMIT_NOFILE")
    nproc: int = Field(32, gt=1, description="RLIMIT_NPROC inside the run's user namespace")
    max_output_bytes: int = Field(
        64 * 1024, gt=0, description="stdout/stderr kept per run (beyond: truncated)"
    )
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, gt=0, description="runs in parallel")
    unsafe_exec: bool = Field(
        False, description="run without a namespace when none can be made (no isolation)"
    )


UNSAFE_ENV = "INOCULATE_UNSAFE_EXEC"
_default: SandboxPolicy | None = None


def default_policy() -> SandboxPolicy:
    """The policy scorers run code under: the one `set_default_policy` set, else the defaults, with
    `unsafe_exec` on when the environment variable INOCULATE_UNSAFE_EXEC is 1 (the CLI's --unsafe-exec)."""
    if _default is not None:
        return _default
    return SandboxPolicy(unsafe_exec=os.environ.get(UNSAFE_ENV, "").strip() == "1")


def set_default_policy(policy: SandboxPolicy | None) -> None:
    """Set (or with None, reset) the policy `default_policy` returns for this process."""
    global _default
    _default = policy
