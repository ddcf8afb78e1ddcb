"""A whole matrix evaluated in one engine call: the runner's two-phase path.

When the generation backend samples many adapters of one base model in one call (`generates_many`:
vllm) and the cells train LoRA adapters (`evaluates_together`), the runner trains every unfinished
cell first, without any engine (`matrix.run_matrix_in_phases`, phase `train`), and then
`evaluate_together` does the rest (phase `evaluate`):

1. the jobs: every trained cell's adapter under each of its eval prompts, with the cell's seed, and
   the base model (no adapter, the first seed) under its prompts unless `OUT/base` is finished or
   the cross-run cache holds it;
2. the process's engine is built now, once, after training has released the GPU, and samples every
   job in ONE `generate_many` call. Each sample keeps its own seed (a function of the run seed, the
   row id and the sample index), so the records are those the per-cell path writes;
3. the base model's and then each cell's generations are scored and written (generations/, scores/,
   metrics.json) by the per-cell path's own functions (`cell.base_elicitation`, `cell.evaluate_cell`),
   and each cell is handed back to be marked `done`.

The call holds every completion of the matrix in memory at once (cells x eval prompts x rows x n, each
factor bounded by the config's limits), as the records then do anyway; one call lets vLLM schedule
every adapter's requests together, `max_loras` adapters in a batch.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from inoculate.experiment.cell import (
    TrainedCell,
    base_elicitation,
    base_needs_sampling,
    evaluate_cell,
    sampling_params,
)
from inoculate.experiment.matrix import Cell, log_event
from inoculate.experiment.plan import Plan
from inoculate.generate.base import AdapterJob, adapter_engine, generates_many
from inoculate.records import ChatExample

_BASE = -1
"""The base model's jobs' owner (a cell's is its position)."""


def evaluates_together(plan: Plan) -> bool:
    """The rule of the two-phase path: the backend samples many adapters in one call and each cell
    trains an adapter. Full fine-tuning (a model per cell) and every other backend evaluate cell by
    cell, each cell right after its training."""
    return plan.config.train.use_peft and generates_many(plan.config.generation.backend)


def evaluate_together(
    plan: Plan,
    root: Path,
    trained: list[tuple[Cell, TrainedCell]],
    *,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> Iterator[tuple[Cell, dict[str, Any]]]:
    """Sample every trained cell's eval sets and the base model's in one `generate_many` call, then
    score and write each (see the module); yields `(cell, metrics)` as each cell's metrics are
    written. The base model is written first; `force` recomputes it (see `base_elicitation`)."""
    jobs: list[AdapterJob] = []
    owners: list[tuple[int, str]] = []
    for i, (cell, t) in enumerate(trained):
        if t.adapter is None:
            raise ValueError(f"{cell.label} trained a full model; only adapters are evaluated together")
        params = sampling_params(plan, cell.seed)
        for name, examples in plan.cell_prompts(cell.condition).items():
            jobs.append(AdapterJob(t.adapter, examples, params=params))
            owners.append((i, name))
    with_base = base_needs_sampling(plan, root, force=force)
    if with_base:
        params = sampling_params(plan, plan.seeds[0])
        for name, examples in plan.base.prompts.items():
            jobs.append(AdapterJob(None, examples, params=params))
            owners.append((_BASE, name))

    generated: dict[int, dict[str, list[ChatExample]]] = {}
    seconds = 0.0
    if jobs:
        gen = plan.config.generation
        _release_training_memory()
        if log is not None:
            who = f"{len(trained)} cell(s)" + (" and the base model" if with_base else "")
            log(f"sampling {who}: {len(jobs)} eval sets in one {gen.backend} call")
        engine = adapter_engine(gen.backend, plan.model_path, **gen.options())
        t0, c0 = time.perf_counter(), time.process_time()
        results = engine.generate_many(jobs)
        seconds = time.perf_counter() - t0
        if len(results) != len(jobs):
            raise RuntimeError(f"the engine returned {len(results)} results for {len(jobs)} jobs")
        for (owner, name), gens in zip(owners, results, strict=True):
            generated.setdefault(owner, {})[name] = gens
        log_event(
            root,
            event="generated_together",
            backend=gen.backend,
            cells=len(trained),
            base=with_base,
            jobs=len(jobs),
            samples=sum(len(r) for r in results),
            seconds=round(seconds, 3),
            cpu_s=round(time.process_time() - c0, 3),
        )
    base_elicitation(plan, root, log, force=force, generated=generated.get(_BASE))
    for i, (cell, t) in enumerate(trained):
        # `generate_together`: the one call's wall seconds, shared by every cell (and the base model)
        shared = {"generate_together": seconds}
        yield cell, evaluate_cell(plan, t, generated=generated.get(i, {}), extra_timings=shared)


def _release_training_memory() -> None:
    """Give the GPU memory training left in torch's cache back before the engine reserves its share."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
