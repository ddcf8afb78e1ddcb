"""The base model's elicitation, cached across runs by content: `$INOCULATE_CACHE/base_elicitation/<key>`.

The untrained base model's generations and scores under every eval prompt and training prompt depend
only on what `base_cache_key` hashes: the run's base key (`plan.base_plan`: the base model's content
hash, the rendered prompts with the eval sets' rows, the sampling parameters and seed, the generation
backend, the scorer specs, the eval-set names, the package version), the organism setting and this
module's format version. A run with the same inputs copies the stored outputs into its `base/`
instead of generating again; any change to an input is another key, a miss.

An entry is written into a temporary folder beside it and renamed into place when complete, with a
`done` record holding the sha256 of every stored file; an entry whose files no longer match (or that
has no record) is ignored, removed and recomputed. Only a base model whose weights are a local folder
(its identity is a content hash) and a run without judges are cached: a hub id or a served model may
change under the same name, and a judge's answers are not the run's to reuse.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from inoculate.experiment.cache import done_problem, hash_obj, mark_done
from inoculate.experiment.plan import Plan
from inoculate.rundir import METRICS_FILE

CACHE_ENV = "INOCULATE_CACHE"
BASE_CACHE_ENV = "INOCULATE_BASE_CACHE"
"""A folder for this cache alone (the test suite points it at a temporary folder)."""
CACHE_DIR = "base_elicitation"
FORMAT = 1
"""Bumped when what an entry holds, or how it is made, changes: every older entry then misses."""
STORED = ("generations", "scores", METRICS_FILE)
"""What an entry holds: the base folder's outputs (not its `done` marker or ownership marker)."""


def base_cache_root() -> Path:
    """`$INOCULATE_BASE_CACHE`, else `$INOCULATE_CACHE/base_elicitation`, else
    `~/.cache/inoculate/base_elicitation`."""
    own = os.environ.get(BASE_CACHE_ENV)
    if own:
        return Path(own)
    env = os.environ.get(CACHE_ENV)
    return (Path(env) if env else Path.home() / ".cache" / "inoculate") / CACHE_DIR


def base_cache_key(plan: Plan) -> str | None:
    """The entry's key, or None when this run's base elicitation is not cached (see the module)."""
    cfg = plan.config
    if "sha256" not in plan.model_identity or cfg.uses_judges():
        return None
    return hash_obj({"base": plan.base.key, "setting": cfg.organism_setting(), "format": FORMAT})


def _entry(key: str) -> Path:
    return base_cache_root() / key


def is_cached(key: str) -> bool:
    """Whether an intact entry for `key` is stored (what `load_cached` would copy)."""
    entry = _entry(key)
    return (
        entry.is_dir()
        and done_problem(entry, key) is None
        and all((entry / name).exists() for name in STORED)
    )


def load_cached(key: str, into: Path) -> bool:
    """Copy an intact entry's outputs into `into` (an empty staging folder); False on a miss.

    A damaged entry (a file missing or changed, no record) is removed and counts as a miss."""
    entry = _entry(key)
    if not entry.is_dir():
        return False
    if not is_cached(key):
        shutil.rmtree(entry, ignore_errors=True)
        return False
    for name in STORED:
        src = entry / name
        if src.is_dir():
            shutil.copytree(src, into / name)
        else:
            shutil.copy2(src, into / name)
    return True


def store(key: str, computed: Path) -> None:
    """Store a computed base folder's outputs as the entry for `key`: into a temporary folder, renamed
    into place; a failed store (disk full, a read-only cache) leaves no entry and does not fail the run."""
    entry = _entry(key)
    tmp = entry.parent / f".{key}.{os.getpid()}-{time.time_ns()}.tmp"
    try:
        tmp.mkdir(parents=True)
        for name in STORED:
            src = computed / name
            if src.is_dir():
                shutil.copytree(src, tmp / name)
            elif src.is_file():
                shutil.copy2(src, tmp / name)
        mark_done(tmp, key, format=FORMAT)
        if entry.exists():  # a damaged one (an intact one was loaded instead), or another run's
            shutil.rmtree(entry, ignore_errors=True)
        tmp.rename(entry)
    except OSError:
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
