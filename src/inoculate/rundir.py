"""The run folder: its file names, and its safety (whose files these are, who writes them now, and
what a killed run left). Ground floor: the runner writes these names and the report reads them.

- Names: `EXPERIMENT_FILE`, `MANIFEST_FILE`, `BASE_DIR`, `SCREEN_DIR`, each cell's `METRICS_FILE`,
  `TRAIN_MANIFEST_FILE` and `DYNAMICS_FILE`; `CONDITION_REF`, the eval-prompt value that means "the
  condition's own prompt"; `neutral_eval_prompt`, the rule for which eval prompt is neutral.

- Ownership: every folder `inoculate run` creates (the run folder, `base/`, each cell, each staging
  folder) gets a `.inoculate` marker. A folder is only ever cleared when it is ours: it has the
  marker, or it is empty, or (folders written before markers existed) it has exactly the layout
  today's code writes. A non-empty `--out` that is not ours is refused, never cleared.
- One writer: `inoculate run` holds an exclusive lock on `.inoculate.lock` (flock, via `filelock`)
  for the whole run; `.inoculate.lock.json` beside it names the holder (pid, host, start time) for
  the message a second run gets. The kernel drops the lock when its process dies, so a lock left by
  a killed run is simply taken over; its stale holder file is overwritten.
- Leftovers: staging folders (`.staging-*` with a marker) and temp files of atomic writes
  (`.<name>.<8 chars>.tmp`) left by a killed run are removed on the next start, under the lock.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inoculate._version import __version__
from inoculate.errors import InputErrors
from inoculate.fileio import write_json_atomic

EXPERIMENT_FILE = "experiment.json"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.json"
TRAIN_MANIFEST_FILE = "train.manifest.json"
DYNAMICS_FILE = "dynamics.jsonl"
BASE_DIR = "base"
SCREEN_DIR = "screen"
CONDITION_REF = "@condition"
"""An eval prompt's value that means "each condition's own inoculation prompt"."""


def neutral_eval_prompt(eval_prompts: dict[str, Any]) -> str | None:
    """The eval prompt probed as `neutral`: `neutral` if declared, else the first fixed one."""
    if "neutral" in eval_prompts and eval_prompts["neutral"] != CONDITION_REF:
        return "neutral"
    return next((p for p, v in eval_prompts.items() if v != CONDITION_REF), None)


# --- the run folder's files, typed and versioned ------------------------------------------------------

RECORD_VERSION = 1
"""The format of experiment.json, metrics.json and base/metrics.json. A file without `version` was
written before versions were recorded, with the same keys: it reads as version 1."""

_RecordT = TypeVar("_RecordT", bound="_Record")

REBUILD_HINT = "rebuild it with `inoculate run CONFIG --out DIR` (finished cells are reused from the cache)"


class _Record(BaseModel):
    """A file of the run folder: the keys the report reads are fields; any others are kept as written."""

    model_config = ConfigDict(extra="allow")

    version: int = RECORD_VERSION


class MetricInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    kind: str
    scorer: str | None = None
    bounded: bool = True


class CellRef(BaseModel):
    condition: str
    seed: int
    key: str


class MonitorRecord(BaseModel):
    """A monitored condition's learning-dynamics settings (experiment.json `dynamics`)."""

    model_config = ConfigDict(extra="allow")

    every: int
    batch_size: int
    stop_on_collapse: bool
    rule: dict[str, Any]
    prompts: dict[str, str | None]
    probes_sha256: str
    n_probes: int
    trait: str
    other: str | None
    probes: str
    categories: list[str]
    own_prompt: bool = True


class ModelRecord(BaseModel):
    """experiment.json's `model`: how it was given, where it lies, what it is."""

    model_config = ConfigDict(extra="allow")

    kind: str
    spec: Any
    path: str | None
    identity: dict[str, Any]


class DataRecord(BaseModel):
    """experiment.json's `data`: the sources as given, their sizes and hashes."""

    model_config = ConfigDict(extra="allow")

    train: Any = None
    eval: Any = None
    n_train: int
    n_eval: int
    sha256: dict[str, str]


class RunRecord(_Record):
    """experiment.json: what `inoculate report` needs to know about the experiment."""

    name: str
    description: str = ""
    conditions: list[str]
    condition_prompts: dict[str, list[str] | None] = Field(default_factory=dict)
    condition_specs: dict[str, dict[str, Any] | None] = Field(default_factory=dict)
    condition_data: dict[str, dict[str, Any]] = Field(default_factory=dict)
    """condition -> the training data it used: `{label: "data.train", sha256}` or a control condition's
    own `{label: FILE NAME, source, n, sha256}` (older runs: empty, every condition used data.train)"""
    eval_prompts: dict[str, str | None]
    metrics: dict[str, MetricInfo]
    seeds: list[int]
    expect: dict[str, dict[str, str]] = Field(default_factory=dict)
    model: ModelRecord
    data: DataRecord
    sampling: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)
    cells: list[CellRef] = Field(default_factory=list)
    base_key: str | None = None
    dynamics: dict[str, MonitorRecord] | None = None


class MetricMean(BaseModel):
    model_config = ConfigDict(extra="allow")

    mean: float | None = None
    n: int = 0
    n_nan: int = 0


class CellMetrics(_Record):
    """A cell's metrics.json."""

    condition: str
    seed: int
    key: str | None = None
    eval: dict[str, dict[str, MetricMean]] = Field(default_factory=dict)
    """eval prompt -> metric -> mean over the scorable generations"""
    train: dict[str, Any] = Field(default_factory=dict)
    timings_s: dict[str, float] = Field(default_factory=dict)
    dynamics: dict[str, Any] | None = None
    """The learning-dynamics summary of a monitored cell."""
    judges: dict[str, dict[str, Any]] | None = None
    """Judge name -> what its client did for this cell's evaluation: `kind`, `requests`, `calls`,
    `cache_hits`, `failures`, `prompt_tokens`, `completion_tokens`, ... (`judges.ClientStats`)."""


class BaseRow(BaseModel):
    prompt: str
    file: str
    system: str | None
    metrics: dict[str, MetricMean]


class BaseElicitation(_Record):
    """base/metrics.json: the base model under each eval prompt (and each condition's training prompt)."""

    source: str = "experiment"
    rows: list[BaseRow]
    organism: Any = None


def write_record(path: Path, record: _Record) -> dict[str, Any]:
    """Write one of the run folder's records (atomically); returns what was written."""
    data = record.model_dump()  # python mode: floats (NaN too) are written as `write_json_atomic` writes them
    if isinstance(record, (RunRecord, CellMetrics)) and record.dynamics is None:
        data.pop("dynamics")
    if isinstance(record, BaseElicitation) and record.organism is None:
        data.pop("organism")
    write_json_atomic(path, data)
    return data


def read_record(path: Path, kind: type[_RecordT]) -> _RecordT:
    """One record of the run folder; a file without `version` reads as version 1 (the same keys). A
    newer version, or a file that does not fit, is refused with how to rebuild the folder."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise InputErrors.one(str(path), 0, "<file>", f"not a {kind.__name__} record; {REBUILD_HINT}")
    version = data.get("version", 1)
    if not isinstance(version, int) or version > RECORD_VERSION:
        raise InputErrors.one(
            str(path),
            0,
            "version",
            f"written in format {version!r}, newer than this inoculate reads ({RECORD_VERSION}); "
            f"upgrade inoculate, or {REBUILD_HINT}",
        )
    try:
        return kind.model_validate({**data, "version": version})
    except ValidationError as e:
        first = e.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "<file>"
        raise InputErrors.one(str(path), 0, field, f"{first['msg']}; {REBUILD_HINT}") from None


MARKER = ".inoculate"
LOCK_FILE = ".inoculate.lock"
HOLDER_FILE = ".inoculate.lock.json"
STAGING_PREFIX = ".staging-"
_OWN_NAMES = frozenset({MARKER, LOCK_FILE, HOLDER_FILE})
_TEMP_RE = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")
_LEGACY_RUN_KEYS = frozenset({"name", "conditions", "seeds", "cells", "eval_prompts"})
_LEGACY_BASE_NAMES = frozenset({"done", "metrics.json", "generations", "scores"})


class RunFolderError(ValueError):
    """A run folder that cannot be used as asked (not ours, or in use); the message says what to do."""


class RunFolderLocked(RunFolderError):
    pass


# --- ownership ----------------------------------------------------------------------------------------


def write_marker(folder: Path, kind: str) -> None:
    write_json_atomic(
        folder / MARKER,
        {"tool": "inoculate", "kind": kind, "version": __version__, "created": _now()},
    )


def has_marker(folder: Path) -> bool:
    return (folder / MARKER).is_file()


def make_owned_dir(folder: Path, kind: str) -> Path:
    """Create `folder` (parents too) and mark it ours."""
    folder.mkdir(parents=True, exist_ok=True)
    if not has_marker(folder):
        write_marker(folder, kind)
    return folder


def _entries(folder: Path) -> list[str]:
    """What a folder holds, less inoculate's own bookkeeping (marker, lock, holder file)."""
    return sorted(p.name for p in folder.iterdir() if p.name not in _OWN_NAMES)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_legacy_run(root: Path) -> bool:
    """A run folder written before markers existed: `experiment.json` with the layout `inoculate run`
    has always written first (name, conditions, seeds, cells with their keys, eval prompts)."""
    record = _read_json(root / "experiment.json")
    return isinstance(record, dict) and set(record) >= _LEGACY_RUN_KEYS and isinstance(record["cells"], list)


def _is_legacy_cell(folder: Path) -> bool:
    config = _read_json(folder / "config.json")
    return isinstance(config, dict) and "key" in config and "train_key" in config


def _is_legacy_base(folder: Path) -> bool:
    names = set(_entries(folder))
    return bool(names) and names <= _LEGACY_BASE_NAMES


def is_ours(folder: Path, kind: str) -> bool:
    """True when `folder` may be cleared: missing, empty, marked, or today's layout of that kind."""
    if not folder.exists():
        return True
    if not folder.is_dir():
        return False
    if has_marker(folder) or not _entries(folder):
        return True
    if kind == "run":
        return is_legacy_run(folder)
    if kind == "cell":
        return _is_legacy_cell(folder)
    if kind == "base":
        return _is_legacy_base(folder)
    return False


def foreign_message(folder: Path, what: str) -> str:
    if not folder.is_dir():
        return f"{folder} is a file, not a folder; {what}"
    names = _entries(folder)
    example = names[0] if names else "?"
    return f"{folder} holds files inoculate did not write (e.g. {example}); {what}"


def remove_owned(folder: Path, kind: str) -> None:
    """Delete a folder inoculate wrote; refuse (and touch nothing) when it is not ours."""
    if not is_ours(folder, kind):
        raise RunFolderError(foreign_message(folder, "move them away or choose another --out"))
    if folder.exists():
        shutil.rmtree(folder)


def check_run_root(root: Path) -> None:
    """Refuse a run folder that exists, is not empty and is not ours (before anything is written)."""
    if not is_ours(root, "run"):
        raise RunFolderError(foreign_message(root, "choose another --out or empty it"))


# --- the lock -----------------------------------------------------------------------------------------


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def describe_holder(root: Path) -> str:
    """Who holds the lock, from the holder file (pid, host, start time, command)."""
    info = _read_json(root / HOLDER_FILE)
    if not isinstance(info, dict):
        return "another process (its holder file is missing)"
    text = f"pid {info.get('pid')} on {info.get('host')}, since {info.get('started')}"
    if info.get("command"):
        text = f"`inoculate {info['command']}`, " + text
    pid = info.get("pid")
    if info.get("host") == socket.gethostname() and isinstance(pid, int) and not _pid_alive(pid):
        text += " (that pid is gone; a process it started still holds the lock)"
    return text


class RunLock:
    """The run folder's exclusive lock; `acquire` fails at once (no waiting) when it is held."""

    def __init__(self, root: Path, command: str = "run"):
        from filelock import FileLock

        self.root = root
        self.command = command
        self._lock = FileLock(str(root / LOCK_FILE), timeout=0)
        self.took_over: dict[str, Any] | None = None
        """The stale holder record of a dead run whose lock this one took over, if any."""

    def acquire(self) -> RunLock:
        from filelock import Timeout

        try:
            self._lock.acquire()
        except Timeout:
            raise RunFolderLocked(
                f"{self.root} is in use by {describe_holder(self.root)}; "
                "wait for it to finish, or use another --out"
            ) from None
        previous = _read_json(self.root / HOLDER_FILE)
        if isinstance(previous, dict):  # the holder of a killed run: its lock died with it
            self.took_over = previous
        write_json_atomic(
            self.root / HOLDER_FILE,
            {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "command": self.command},
        )
        return self

    def release(self) -> None:
        if self._lock.is_locked:
            with contextlib.suppress(OSError):
                (self.root / HOLDER_FILE).unlink()
            self._lock.release()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def claim_run_folder(root: Path, command: str = "run") -> Iterator[RunLock]:
    """Check `root` is ours (or new), lock it, mark it, and clear what a killed run left."""
    check_run_root(root)
    root.mkdir(parents=True, exist_ok=True)
    with RunLock(root, command) as lock:
        check_run_root(root)  # another process may have written to it between the check and the lock
        if not has_marker(root):
            write_marker(root, "run")
        clean_leftovers(root)
        yield lock


# --- what a killed run leaves -------------------------------------------------------------------------


def staging_dir(root: Path, name: str) -> Path:
    """A fresh, marked staging folder under `root`, renamed into place by its user when complete."""
    d = root / f"{STAGING_PREFIX}{name}-{os.getpid()}-{time.time_ns()}"
    d.mkdir(parents=True)
    write_marker(d, "staging")
    return d


def clean_leftovers(root: Path) -> list[Path]:
    """Remove marked staging folders and atomic-write temp files under `root` (call under the lock)."""
    removed: list[Path] = []
    for d in sorted(root.glob(f"{STAGING_PREFIX}*")):
        if d.is_dir() and has_marker(d):
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if _TEMP_RE.match(name):
                p = Path(dirpath) / name
                with contextlib.suppress(OSError):
                    p.unlink()
                    removed.append(p)
    return removed
