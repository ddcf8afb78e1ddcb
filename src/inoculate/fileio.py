"""Atomic file writes: a failure never leaves a partial or half-written output."""

from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

_umask: int | None = None


def current_umask() -> int:
    """The process's umask, read once: from /proc (no change to the process state) where it is
    given, else by the set-and-restore `os.umask` dance (done once, so the window is one call)."""
    global _umask
    if _umask is None:
        value = None
        with contextlib.suppress(OSError, ValueError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("Umask:"):
                    value = int(line.split()[1], 8)
                    break
        if value is None:
            value = os.umask(0o022)
            os.umask(value)
        _umask = value
    return _umask


def file_mode() -> int:
    """The mode a plain `open()` would give a new file: 0o666 less the umask."""
    return 0o666 & ~current_umask()


TEMP_SUFFIX = ".tmp"
"""Temp files are `.<name>.<8 random chars>.tmp` beside their target (what a killed write leaves)."""


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w") -> Iterator[TextIO]:
    """Open a temp file beside `path`; rename it over `path` only if the block succeeds.

    The file gets the mode a plain `open()` would give it (0o666 less the umask), not mkstemp's 0o600.
    """
    target = Path(path)
    check_writable_path(target)
    if target.exists() and not target.is_file():  # /dev/stdout, /dev/full, a FIFO: write in place
        try:
            with open(target, mode, encoding=None if "b" in mode else "utf-8") as fh:
                yield fh
                fh.flush()
        except OSError as e:
            raise _naming(e, target) from e
        return
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=TEMP_SUFFIX)
    except OSError as e:
        raise _naming(e, target) from e
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            os.fchmod(fh.fileno(), file_mode())
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise _naming(e, target, tmp) from e
        raise


def check_writable_path(target: Path) -> None:
    """Refuse, before any work, an output path that is a directory or lies under a non-directory."""
    if target.is_dir():
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(target))
    for parent in target.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(target))
            break


def _naming(e: OSError, target: Path, tmp: str | None = None) -> OSError:
    """`e` naming the output path a user gave: a write error (no space left, I/O error) names no
    file, and one on the temp file or the rename names the temp file."""

    def ours(name: object) -> bool:
        if name is None or name in (tmp, str(target.parent), str(target)):
            return True
        base = os.path.basename(os.fsdecode(name)) if isinstance(name, str | bytes) else ""
        return base.startswith(f".{target.name}.") and base.endswith(TEMP_SUFFIX)  # a temp file

    if ours(e.filename) and ours(e.filename2):
        return OSError(e.errno, e.strerror or str(e), str(target))
    return e


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path) as fh:
        fh.write(text)


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """`json.dumps` that writes strict JSON (RFC 8259): a NaN or infinite float (an unscorable row,
    a diverged loss) is written as null, never as the invalid `NaN`/`Infinity`; readers in `report`
    read null back as NaN. Strings with lone surrogates fail at encoding, as before."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError:  # only non-finite floats make allow_nan=False fail: convert them and retry
        return json.dumps(nan_to_null(obj), allow_nan=False, **kwargs)


def nan_to_null(obj: Any) -> Any:
    """`obj` with every NaN/infinite float (in dicts, lists and tuples) replaced by None."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: nan_to_null(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [nan_to_null(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    write_text_atomic(path, dumps_strict(obj, indent=2, ensure_ascii=False, sort_keys=False) + "\n")


def write_jsonl_atomic(path: str | os.PathLike[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSONL atomically (strict JSON: see `dumps_strict`); returns the number written."""
    n = 0
    with atomic_open(path) as fh:
        for row in rows:
            fh.write(dumps_strict(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def save_figure(fig: Any, path: str | os.PathLike[str], **savefig: Any) -> Path:
    """Write a matplotlib figure as PNG (dpi 120 unless given) atomically, close it, return the path."""
    import matplotlib.pyplot as plt

    out = Path(path)
    try:
        with atomic_open(out, "wb") as fh:
            fig.savefig(fh, **{"format": "png", "dpi": 120, **savefig})
    finally:
        plt.close(fig)
    return out


def sha256_file(path: str | os.PathLike[str]) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
