"""Rebuild presets' base models from scratch, and compare a fresh build with the shipped one.

`build_presets` runs stage 1 for each preset (never installing a shipped copy), in up to `jobs`
processes at once: each build is single-threaded, so two builds use two cores.

`compare_builds(built, shipped)` says whether a fresh build is the shipped model:
- **identical**: every file the model needs (weights, config, tokenizer) is byte-identical;
- **equivalent**: built where the float rounding differs (another torch, CPU kernel or thread
  count, as recorded in `organism.json`): the config and tokenizer are identical, the elicitation
  table (every prompt of the library x every trait, greedy) differs by at most `ELICITATION_TOLERANCE`
  and the loss on fresh stage-1 rows (another seed's draw) by at most `LOSS_TOLERANCE` nats per token;
- **different**: anything else, including other weights from the same torch, kernel and threads (the
  recipe changed without a new key).
"""

from __future__ import annotations

import math
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from inoculate.fileio import sha256_file
from inoculate.organism import packaged
from inoculate.organism.base import (
    ELICIT_SCORERS,
    META_FILE,
    OrganismConfig,
    build_base_model,
    elicitation_table,
    read_meta,
)
from inoculate.organism.presets import preset
from inoculate.organism.stage1 import stage1_examples

# How far two builds of one preset whose float rounding differs may be apart. Measured on the demo
# preset built on the AVX-512 and the AVX2 kernel (same torch, one thread): weights up to 0.30 apart,
# the elicitation tables equal (largest difference 0.00), held-out loss 0.0400 vs 0.0394 nats per token
# (docs/organism.md). A model trained half as long, or on other data, is far outside both.
ELICITATION_TOLERANCE = 0.10
LOSS_TOLERANCE = 0.01
HELDOUT_ROWS = 512

# The environment fields that decide float rounding; the Python version and platform do not.
ROUNDING_FIELDS = ("torch", "transformers", "machine", "cpu_capability", "torch_threads")


class BuildComparison(BaseModel):
    key: str
    verdict: Literal["identical", "equivalent", "different"]
    reason: str
    same_environment: bool
    differing_files: list[str]
    weights_identical: bool
    max_weight_diff: float
    elicitation_max_diff: float | None = None
    elicitation_worst: str | None = None
    heldout_loss: tuple[float, float] | None = None
    """(fresh build, shipped): mean nats per token on `HELDOUT_ROWS` fresh stage-1 rows."""


def _build_one(args: tuple[str, str | None]) -> str:
    name, out = args
    return str(build_base_model(preset(name), out, force=True, use_shipped=False))


def build_presets(
    names: Sequence[str], out: str | os.PathLike[str] | None = None, jobs: int = 1
) -> list[Path]:
    """Build each named preset's base model from scratch into `out/<key>` (default: the cache,
    replacing what is there), `jobs` at a time, each in its own fresh process."""
    for name in names:
        preset(name)  # an unknown name fails before any build starts
    work = [(name, None if out is None else str(out)) for name in names]
    if jobs <= 1 or len(work) <= 1:
        return [Path(_build_one(w)) for w in work]
    # spawn: each build starts from a fresh interpreter, as a CLI build does, whatever this process ran
    with multiprocessing.get_context("spawn").Pool(min(jobs, len(work))) as pool:
        return [Path(p) for p in pool.map(_build_one, work, chunksize=1)]


def compare_builds(
    built: str | os.PathLike[str],
    shipped: str | os.PathLike[str],
) -> BuildComparison:
    """Compare a fresh build with a shipped base model of the same key (see the module docstring)."""
    built, shipped = Path(built), Path(shipped)
    meta = read_meta(built)
    manifest = packaged.read_manifest(shipped)
    if meta["key"] != manifest.key:
        raise ValueError(f"{built} has key {meta['key']}, the shipped model {shipped} has {manifest.key}")
    env = {k: str(v) for k, v in (meta.get("built_with") or {}).items()}
    same_env = all(env.get(f) == manifest.built_with.get(f) for f in ROUNDING_FIELDS)
    names = [n for n in manifest.files if n != META_FILE]  # organism.json holds the build's own times
    differing = [n for n in names if sha256_file(built / n) != sha256_file(shipped / n)]
    weights_identical = "model.safetensors" not in differing
    max_diff = 0.0 if weights_identical else _max_weight_diff(built, shipped)
    common = dict(
        key=manifest.key,
        same_environment=same_env,
        differing_files=differing,
        weights_identical=weights_identical,
        max_weight_diff=max_diff,
    )
    if not differing:
        return BuildComparison(verdict="identical", reason="every file is byte-identical", **common)
    if differing != ["model.safetensors"]:
        return BuildComparison(
            verdict="different",
            reason=f"{', '.join(d for d in differing if d != 'model.safetensors')} differ",
            **common,
        )
    if same_env:
        return BuildComparison(
            verdict="different",
            reason="other weights from the same torch, CPU kernel and threads: the recipe changed "
            "without a new key",
            **common,
        )
    worst, where = _elicitation_diff(built, shipped)
    config = OrganismConfig.model_validate(meta["config"])
    losses = (heldout_loss(built, config), heldout_loss(shipped, config))
    close = worst <= ELICITATION_TOLERANCE and abs(losses[0] - losses[1]) <= LOSS_TOLERANCE
    reason = (
        f"built with other float rounding ({_env_diff(env, manifest.built_with)}); elicitation rates "
        f"differ by at most {worst:.3f} ({where}; tolerance {ELICITATION_TOLERANCE}); held-out loss "
        f"{losses[0]:.4f} vs {losses[1]:.4f} nats per token (tolerance {LOSS_TOLERANCE})"
    )
    return BuildComparison(
        verdict="equivalent" if close else "different",
        reason=reason,
        elicitation_max_diff=worst,
        elicitation_worst=where,
        heldout_loss=losses,
        **common,
    )


def heldout_loss(model_dir: str | os.PathLike[str], config: OrganismConfig, n: int = HELDOUT_ROWS) -> float:
    """Mean nats per answer token of the model on `n` stage-1 rows drawn with another seed than its own."""
    from inoculate.logprob import logprob
    from inoculate.models import load_model, prepare_cpu

    rows = stage1_examples(n, config.mix, seed=config.seed + 1, extensions=config.extensions)
    model, tokenizer = load_model(model_dir)
    prepare_cpu(model)
    scored = logprob(
        model, tokenizer, [r.messages[:-1] for r in rows], [r.messages[-1].content for r in rows]
    )
    return -sum(s.total for s in scored) / sum(s.n_tokens for s in scored)


def _env_diff(a: dict[str, str], b: dict[str, str]) -> str:
    return ", ".join(f"{f} {a.get(f)} vs {b.get(f)}" for f in ROUNDING_FIELDS if a.get(f) != b.get(f))


def _max_weight_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    ta, tb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    if set(ta) != set(tb) or any(ta[k].shape != tb[k].shape for k in ta):
        return math.inf
    return max(float((ta[k].float() - tb[k].float()).abs().max()) for k in ta) if ta else 0.0


def _elicitation_diff(a: Path, b: Path) -> tuple[float, str]:
    """The largest difference in any (prompt, trait) rate of the two models' elicitation tables."""
    rows_a = {r["prompt"]: r for r in elicitation_table(a)["rows"]}
    rows_b = {r["prompt"]: r for r in elicitation_table(b)["rows"]}
    worst, where = 0.0, ""
    for prompt, ra in rows_a.items():
        for col in ELICIT_SCORERS:
            x, y = ra[col], rows_b[prompt][col]
            if math.isnan(x) and math.isnan(y):
                continue
            d = math.inf if math.isnan(x) or math.isnan(y) else abs(x - y)
            if d > worst or not where:
                worst, where = d, f"{prompt} / {col}: {x:.3f} vs {y:.3f}"
    return worst, where
