"""Read a run folder's stored results: only finished cells (a `done` marker with the expected key)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inoculate.errors import InputErrors
from inoculate.rundir import (
    BASE_DIR,
    CONDITION_REF,
    EXPERIMENT_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    TRAIN_MANIFEST_FILE,
    BaseElicitation,
    CellMetrics,
    MetricInfo,
    MetricMean,
    RunRecord,
    read_record,
)

NAN = float("nan")


@dataclass
class CellResult:
    condition: str
    seed: int
    dir: Path
    eval: dict[str, dict[str, MetricMean]]
    """eval prompt -> metric -> {mean, n, n_nan}"""
    train: dict[str, Any] = field(default_factory=dict)
    inoculation: dict[str, Any] | None = None
    """The cell's train.manifest.json (n_rows, n_inoculated, n_replaced_system, ...); None without one."""
    judges: dict[str, dict[str, Any]] | None = None
    """Judge name -> its client's counters for this cell's evaluation (metrics.json `judges`)."""

    def value(self, eval_prompt: str, metric: str) -> float:
        m = self.eval.get(eval_prompt, {}).get(metric)
        return NAN if m is None or m.mean is None else float(m.mean)

    def row_values(self, eval_prompt: str, metric: str) -> list[float]:
        """The cell's per-generation scores (for one-seed intervals), NaN for unscorable rows."""
        path = self.dir / "scores" / f"{eval_prompt}.jsonl"
        if not path.is_file():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                v = json.loads(line).get(metric)
                out.append(NAN if v is None else float(v))
        return out


@dataclass
class RunData:
    root: Path
    experiment: dict[str, Any]
    """experiment.json as written (`record` is the same, typed: read that)."""
    record: RunRecord
    manifest: dict[str, Any] | None
    cells: list[CellResult]
    missing: list[tuple[str, int]]
    base: BaseElicitation | None
    base_cache_key: str | None = None
    """The cross-run cache entry the base elicitation was copied from (None: computed in this run)."""

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def conditions(self) -> list[str]:
        return list(self.record.conditions)

    @property
    def eval_prompts(self) -> list[str]:
        return list(self.record.eval_prompts)

    @property
    def metrics(self) -> dict[str, MetricInfo]:
        return dict(self.record.metrics)

    @property
    def traits(self) -> list[str]:
        return [m for m, info in self.record.metrics.items() if info.kind == "trait"]

    @property
    def seeds(self) -> list[int]:
        return list(self.record.seeds)

    @property
    def neutral_prompt(self) -> str | None:
        """The headline eval prompt: `neutral` if declared, else the first fixed (non-@condition) one."""
        prompts = self.record.eval_prompts
        if "neutral" in prompts:
            return "neutral"
        return next((p for p, v in prompts.items() if v != CONDITION_REF), None)

    @property
    def training_prompts(self) -> list[str]:
        return [p for p, v in self.record.eval_prompts.items() if v == CONDITION_REF]

    @property
    def other_prompts(self) -> list[str]:
        skip = {self.neutral_prompt, *self.training_prompts}
        return [p for p in self.eval_prompts if p not in skip]

    def cells_of(self, condition: str) -> list[CellResult]:
        return sorted((c for c in self.cells if c.condition == condition), key=lambda c: c.seed)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _done_key(cell_dir: Path) -> str | None:
    done = _read_json(cell_dir / "done")
    return done.get("key") if isinstance(done, dict) else None


def load_run(root: str | os.PathLike[str]) -> RunData:
    """Load a run folder written by `inoculate run`; unfinished or outdated cells count as missing."""
    root = Path(root)
    experiment = _read_json(root / EXPERIMENT_FILE)
    if not isinstance(experiment, dict):
        raise InputErrors.one(
            str(root),
            0,
            EXPERIMENT_FILE,
            "not a run folder (no readable experiment.json; run `inoculate run` first)",
        )
    record = read_record(root / EXPERIMENT_FILE, RunRecord)
    cells: list[CellResult] = []
    missing: list[tuple[str, int]] = []
    for entry in record.cells:
        cond, seed = entry.condition, entry.seed
        d = root / cond / f"seed_{seed}"
        if _done_key(d) != entry.key or not isinstance(_read_json(d / METRICS_FILE), dict):
            missing.append((cond, seed))
            continue
        metrics = read_record(d / METRICS_FILE, CellMetrics)
        manifest = _read_json(d / TRAIN_MANIFEST_FILE)
        cells.append(
            CellResult(
                condition=cond,
                seed=seed,
                dir=d,
                eval=metrics.eval,
                train=metrics.train,
                inoculation=manifest if isinstance(manifest, dict) else None,
                judges=metrics.judges,
            )
        )
    base_dir = root / BASE_DIR
    base = None
    base_cache_key = None
    if _done_key(base_dir) == record.base_key and isinstance(_read_json(base_dir / METRICS_FILE), dict):
        base = read_record(base_dir / METRICS_FILE, BaseElicitation)
        done = _read_json(base_dir / "done")
        if (
            isinstance(done, dict)
            and done.get("source") == "cache"
            and isinstance(done.get("cache_key"), str)
        ):
            base_cache_key = done["cache_key"]
    manifest = _read_json(root / MANIFEST_FILE)
    return RunData(
        root=root,
        experiment=experiment,
        record=record,
        manifest=manifest if isinstance(manifest, dict) else None,
        cells=cells,
        missing=missing,
        base=base,
        base_cache_key=base_cache_key,
    )


def is_nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))
