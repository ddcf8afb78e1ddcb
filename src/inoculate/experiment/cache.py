"""Content-addressed cells: what a cell's key is made of, and when a cell counts as finished.

A cell's key is the sha256 of its fully resolved config, the hashes of its input data, the base
model's identity and the package version. A cell is finished when its folder holds a `done` marker
naming that key and its outputs are intact; the marker is written last, atomically, so a folder
without it (a killed run) is never read, and is redone. The marker records the sha256 of every output
(`metrics.json`, `generations/`, `scores/`); an output that no longer matches makes the cell
unfinished. A marker written before hashes were recorded is verified by parsing its outputs.
Training keeps its own key (`train_key`): when only evaluation settings change, the trained adapter
is kept and only generation and scoring are redone.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from inoculate._version import __version__
from inoculate.fileio import TEMP_SUFFIX, sha256_file, write_json_atomic
from inoculate.records import ChatExample
from inoculate.rundir import METRICS_FILE, RunFolderError, foreign_message, has_marker, is_ours, write_marker

DONE = "done"
CELL_CONFIG = "config.json"
EVAL_OUTPUTS = ("generations", "scores", METRICS_FILE)
"""What a cell writes after training: removed before a cell is (re)evaluated."""

_PARTIAL_HASH_OVER = 256 * 1024 * 1024
_PARTIAL_HASH_CHUNK = 16 * 1024 * 1024


def canonical_json(obj: Any) -> str:
    """One text per value: sorted keys, no whitespace, NaN spelled out (JSON has no NaN)."""

    def fix(x: Any) -> Any:
        if isinstance(x, float) and math.isnan(x):
            return "NaN"
        if isinstance(x, dict):
            return {str(k): fix(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [fix(v) for v in x]
        if isinstance(x, Path):
            return str(x)
        return x

    return json.dumps(fix(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def hash_obj(obj: Any) -> str:
    return hashlib.sha256(canonical_json(obj).encode("utf-8")).hexdigest()


def hash_examples(examples: Iterable[ChatExample]) -> str:
    """The content hash of a dataset as loaded (ids, messages and metadata, in order)."""
    h = hashlib.sha256()
    for ex in examples:
        h.update(canonical_json(ex.to_json()).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    """sha256 of a file; files over 256 MB hash their size, first and last 16 MB (weights shards)."""
    size = path.stat().st_size
    if size <= _PARTIAL_HASH_OVER:
        return sha256_file(path)
    h = hashlib.sha256(f"partial:{size}:".encode())
    with open(path, "rb") as fh:
        h.update(fh.read(_PARTIAL_HASH_CHUNK))
        fh.seek(size - _PARTIAL_HASH_CHUNK)
        h.update(fh.read(_PARTIAL_HASH_CHUNK))
    return h.hexdigest()


def hash_dir(path: str | os.PathLike[str]) -> str:
    """Content hash of a folder: every file's relative path and digest (hidden files skipped)."""
    root = Path(path)
    h = hashlib.sha256()
    for f in sorted(q for q in root.rglob("*") if q.is_file()):
        rel = f.relative_to(root).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):
            continue
        h.update(rel.encode() + b"\0" + _file_digest(f).encode() + b"\n")
    return h.hexdigest()


def model_identity(name_or_path: str | os.PathLike[str], *, source: Any = None) -> dict[str, Any]:
    """What identifies a base model: a local folder's content hash, or a hub id as written.

    `source` records how it was obtained (e.g. the organism preset) beside the hash.
    """
    p = Path(name_or_path)
    ident: dict[str, Any] = {}
    if source is not None:
        ident["source"] = source
    if p.is_dir():
        ident["sha256"] = hash_dir(p)
    else:
        ident["hub_id"] = str(name_or_path)
    return ident


def cell_key(
    config: dict[str, Any],
    data_hashes: dict[str, str],
    model: dict[str, Any],
    version: str | None = None,
) -> str:
    """The key of one cell: its resolved config + input data hashes + base model + package version."""
    return hash_obj(
        {
            "config": config,
            "data": data_hashes,
            "model": model,
            "version": version if version is not None else __version__,
        }
    )


# --- the state of a cell folder -------------------------------------------------------------------


def read_done(cell_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The `done` marker's content, or None when the cell is not finished (or the marker is unreadable)."""
    marker = Path(cell_dir) / DONE
    try:
        obj = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def _output_files(cell_dir: Path) -> list[Path]:
    out: list[Path] = []
    for name in EVAL_OUTPUTS:
        target = cell_dir / name
        if target.is_file():
            out.append(target)
        elif target.is_dir():
            out += sorted(
                f
                for f in target.rglob("*")
                if f.is_file() and not f.name.startswith(".") and not f.name.endswith(TEMP_SUFFIX)
            )
    return out


def output_hashes(cell_dir: str | os.PathLike[str]) -> dict[str, str]:
    """sha256 of every evaluation output of a folder, by path relative to it."""
    d = Path(cell_dir)
    return {f.relative_to(d).as_posix(): sha256_file(f) for f in _output_files(d)}


def _unparsable(path: Path) -> bool:
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            for line in text.splitlines():
                if line.strip():
                    json.loads(line)
            return False
        return not isinstance(json.loads(text), dict)
    except (OSError, ValueError):
        return True


def output_problem(cell_dir: str | os.PathLike[str], done: dict[str, Any]) -> str | None:
    """What is wrong with a finished folder's outputs (None: intact).

    With recorded hashes, every recorded output must exist and match. A marker without them (written
    before hashes were recorded) is verified by parsing: its outputs must parse as JSON / JSON lines.
    """
    d = Path(cell_dir)
    recorded = done.get("outputs")
    if isinstance(recorded, dict):
        for rel, digest in recorded.items():
            path = d / rel
            if not path.is_file():
                return f"{rel} is missing"
            if sha256_file(path) != digest:
                return f"{rel} does not match its done record"
        return None
    for path in _output_files(d):
        if _unparsable(path):
            return f"{path.relative_to(d).as_posix()} does not parse"
    return None


def done_problem(cell_dir: str | os.PathLike[str], key: str) -> str | None:
    """None when the folder holds a finished result with exactly this key and intact outputs;
    else why not (`not finished` when there is no marker for this key)."""
    done = read_done(cell_dir)
    if done is None or done.get("key") != key:
        return "not finished"
    return output_problem(cell_dir, done)


def is_done(cell_dir: str | os.PathLike[str], key: str) -> bool:
    """True when the folder holds a finished cell with exactly this key and intact outputs."""
    return done_problem(cell_dir, key) is None


def mark_done(cell_dir: str | os.PathLike[str], key: str, **info: Any) -> None:
    """Write the `done` marker, with the hashes of the outputs: last, atomically."""
    write_json_atomic(Path(cell_dir) / DONE, {"key": key, **info, "outputs": output_hashes(cell_dir)})


def _read_config(cell_dir: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads((cell_dir / CELL_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def prepare_cell(cell_dir: str | os.PathLike[str], key: str, train_key: str, *, force: bool = False) -> str:
    """Make a cell folder ready to (re)run and say what was kept.

    Returns `new` (empty folder), `resume` (same training key: training outputs are kept, since
    training resumes from its own complete checkpoints or returns its finished result), or `stale`
    (another config was there: the folder was cleared). Evaluation outputs and the `done` marker are
    always removed, so nothing from an unfinished or outdated evaluation is read.
    """
    d = Path(cell_dir)
    state = "new"
    if d.exists():
        if not is_ours(d, "cell"):  # only what inoculate wrote is ever cleared
            raise RunFolderError(foreign_message(d, "move them away or choose another --out"))
        previous = _read_config(d)
        if force or previous is None or previous.get("train_key") != train_key:
            shutil.rmtree(d)
            state = "stale" if previous is not None else "new"
        else:
            state = "resume"
    d.mkdir(parents=True, exist_ok=True)
    if not has_marker(d):
        write_marker(d, "cell")
    (d / DONE).unlink(missing_ok=True)
    for name in EVAL_OUTPUTS:
        target = d / name
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    return state


def write_cell_config(
    cell_dir: str | os.PathLike[str], config: dict[str, Any], key: str, train_key: str
) -> None:
    write_json_atomic(Path(cell_dir) / CELL_CONFIG, {"key": key, "train_key": train_key, **config})
