"""One cell of the matrix, and the base model's row: train, generate, score, write.

A cell: its condition's transformed training set -> train (LoRA or full, `inoculate.train`) ->
generate under each eval prompt -> score every trait and capability (`scorers.score_generations`)
-> `metrics.json`. The base model is evaluated the same way, without training, into `OUT/base/`.
`run_cell` is `train_cell` then `evaluate_cell`; the two halves are apart for the runner's two-phase
path (`experiment.together`), where a whole matrix is sampled in one engine call and each cell's
evaluation takes its generations (`generated`) instead of sampling them.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inoculate.experiment import base_cache
from inoculate.experiment.cache import done_problem, mark_done
from inoculate.experiment.config import OrganismModel
from inoculate.experiment.matrix import Cell, log_event
from inoculate.experiment.monitor import cell_summary, surface_warnings
from inoculate.experiment.plan import Plan, rel_to
from inoculate.fileio import write_jsonl_atomic, write_text_atomic
from inoculate.generate import SamplingParams, get_backend
from inoculate.judges import active_clients, add_stats
from inoculate.records import ChatExample
from inoculate.rundir import (
    BASE_DIR,
    DYNAMICS_FILE,
    METRICS_FILE,
    TRAIN_MANIFEST_FILE,
    BaseElicitation,
    CellMetrics,
    RunFolderError,
    foreign_message,
    is_ours,
    remove_owned,
    staging_dir,
    write_marker,
    write_record,
)
from inoculate.scorers import score_generations
from inoculate.train import TrainConfig, TrainResult, train


def served_adapter_name(condition: str, seed: int) -> str:
    """The model name a server must give a cell's adapter for the openai_http backend to evaluate it:
    `inoculate serve BASE --lora-module NAME=OUT/<condition>/seed_<k>/adapter` (or vLLM's
    `--lora-modules NAME=PATH`)."""
    return f"{condition}-seed{seed}"


def run_cell(
    plan: Plan,
    cell: Cell,
    cell_dir: Path,
    stage: Any,
    message: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Transform -> train -> generate -> score for one (condition, seed); writes metrics.json.

    A monitored condition trains with the learning-dynamics callback (`dynamics.jsonl`); its collapse
    warning goes to `message` (the run's progress output) when given."""
    return evaluate_cell(plan, train_cell(plan, cell, cell_dir, stage, message), stage)


@dataclass(frozen=True)
class TrainedCell:
    """A cell whose training finished: what its evaluation needs."""

    cell: Cell
    cell_dir: Path
    result: TrainResult
    max_steps: int
    timings: dict[str, float]
    """wall (`train`) and CPU (`cpu_train`) seconds of the training"""

    @property
    def weights(self) -> str:
        """The trained adapter or model, read from the cell's folder (not from the paths
        `train_result.json` recorded): a copied or moved run folder evaluates its own weights."""
        return str(self.cell_dir / ("adapter" if self.result.is_adapter else "model"))

    @property
    def adapter(self) -> str | None:
        return self.weights if self.result.is_adapter else None


def train_cell(
    plan: Plan,
    cell: Cell,
    cell_dir: Path,
    stage: Any,
    message: Callable[[str], None] | None = None,
) -> TrainedCell:
    """Train one (condition, seed) into its folder (see `run_cell`). A folder whose training finished
    returns its recorded result (`inoculate.train` resumes): nothing is trained again."""
    examples, manifest = plan.train_sets[cell.condition]
    if manifest is not None:
        manifest.save(cell_dir / TRAIN_MANIFEST_FILE)

    stage("train")
    t0, c0 = time.perf_counter(), time.process_time()
    model_path, train_config = plan.model_path, plan.train_config
    tc = TrainConfig.model_validate({**train_config, "output_dir": str(cell_dir), "seed": cell.seed})
    monitor = plan.dynamics.get(cell.condition)
    callbacks = [monitor.callback()] if monitor is not None else []
    printed = io.StringIO()
    with contextlib.ExitStack() as stack:
        if monitor is not None:
            stack.enter_context(surface_warnings(monitor, callbacks[0], cell.label, message))
        stack.enter_context(contextlib.redirect_stdout(printed))
        result = train(model_path, examples, tc, callbacks=callbacks)
    if printed.getvalue():
        write_text_atomic(cell_dir / "train_stdout.log", printed.getvalue())
    timings = {"train": time.perf_counter() - t0, "cpu_train": time.process_time() - c0}
    return TrainedCell(cell=cell, cell_dir=cell_dir, result=result, max_steps=tc.max_steps, timings=timings)


def evaluate_cell(
    plan: Plan,
    trained: TrainedCell,
    stage: Any = None,
    *,
    generated: Mapping[str, list[ChatExample]] | None = None,
    extra_timings: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    """Generate -> score a trained cell under each eval prompt; writes generations/, scores/ and
    metrics.json, and returns what metrics.json holds. `generated`: each eval prompt's generations,
    already sampled (with every other cell's, `experiment.together`), instead of sampling them here;
    `extra_timings` are added to metrics.json's `timings_s`."""
    cell, cell_dir, result = trained.cell, trained.cell_dir, trained.result
    timings = dict(trained.timings)
    t0 = time.perf_counter()
    judges_before = judge_stats()
    prompts = plan.cell_prompts(cell.condition)
    scorers = plan.label_scorers({label: s for label, (s, _p) in plan.eval_axis.items()})
    evals = evaluate(
        plan,
        cell_dir,
        seed=cell.seed,
        model=plan.model_path if result.is_adapter else trained.weights,
        adapter=trained.adapter,
        prompts=prompts,
        scorers=scorers,
        stage=stage,
        root=cell_dir.parent.parent,  # a cell's folder is OUT/<condition>/seed_<k>
        adapter_name=served_adapter_name(cell.condition, cell.seed) if result.is_adapter else None,
        timings=timings,
        generated=generated,
    )
    timings["evaluate"] = time.perf_counter() - t0
    timings.update(extra_timings or {})

    summary = {
        "condition": cell.condition,
        "seed": cell.seed,
        "key": cell.key,
        "eval": evals,
        "train": {
            "global_step": result.global_step,
            "final_loss": result.final_loss,
            "train_loss": result.train_loss,
            "n_examples": result.n_examples,
            "runtime_s": result.runtime_s,
        },
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    judged = judge_stats_since(judges_before)
    if judged:
        summary["judges"] = judged
    monitor = plan.dynamics.get(cell.condition)
    if monitor is not None:
        summary["dynamics"] = cell_summary(
            monitor, cell_dir / DYNAMICS_FILE, max_steps=trained.max_steps, global_step=result.global_step
        )
    return write_record(cell_dir / METRICS_FILE, CellMetrics.model_validate(summary))


def evaluate(
    plan: Plan,
    out_dir: Path,
    *,
    seed: int,
    model: str,
    adapter: str | None,
    prompts: dict[str, list[ChatExample]],
    scorers: dict[str, dict[str, Any]] | None = None,
    stage: Any = None,
    root: Path | None = None,
    adapter_name: str | None = None,
    timings: dict[str, float] | None = None,
    generated: Mapping[str, list[ChatExample]] | None = None,
) -> dict[str, dict[str, Any]]:
    """Generate under each eval set and score; writes generations/ and scores/; returns the means.

    `scorers`: per name, the scorers of the metrics scored there (default: every metric's). A name
    `SET/PROMPT` (several eval sets) writes `generations/SET/PROMPT.jsonl`.
    With `root` (the run folder), model and adapter paths inside it are recorded relative to it.
    `adapter_name` is the name a server serves the adapter under (openai_http only). `timings` gets
    the seconds spent generating and scoring, wall (`generate`, `score`) and this process's CPU
    (`cpu_generate`, `cpu_score`), added to what it holds. `generated`: each name's generations,
    sampled already (by `sampling_params(plan, seed)`, through this model and adapter); no backend is
    built then, and `generate` counts only their writing."""

    gen = plan.config.generation
    backend = None
    if generated is None:
        named = {"adapter_name": adapter_name} if adapter_name and gen.backend == "openai_http" else {}
        backend = get_backend(gen.backend, model=model, adapter=adapter, **named, **gen.options())
    params = sampling_params(plan, seed)
    results: dict[str, dict[str, Any]] = {}
    spent = {"generate": 0.0, "score": 0.0, "cpu_generate": 0.0, "cpu_score": 0.0}
    for name, examples in prompts.items():
        if stage is not None and backend is not None:
            stage(f"generate [{name}]")
        t0, c0 = time.perf_counter(), time.process_time()
        gens = backend.generate(examples, params) if backend is not None else generated[name]
        write_jsonl_atomic(out_dir / "generations" / f"{name}.jsonl", (_portable(g, root) for g in gens))
        t1, c1 = time.perf_counter(), time.process_time()
        if stage is not None:
            stage(f"score [{name}]")
        rows, means = score_generations(gens, (scorers or {}).get(name, plan.scorers))
        write_jsonl_atomic(out_dir / "scores" / f"{name}.jsonl", rows)
        results[name] = means
        spent["generate"] += t1 - t0
        spent["cpu_generate"] += c1 - c0
        spent["score"] += time.perf_counter() - t1
        spent["cpu_score"] += time.process_time() - c1
    if timings is not None:
        for k, v in spent.items():
            timings[k] = timings.get(k, 0.0) + v
    return results


def sampling_params(plan: Plan, seed: int) -> SamplingParams:
    """The sampling parameters of an evaluation with run seed `seed` (a cell's seed; the base model's
    is the first)."""
    return SamplingParams(**plan.config.sampling.model_dump(), seed=seed)


def judge_stats() -> dict[str, Any]:
    """The run's judge clients' counters now (judge name -> `ClientStats`); empty outside a run."""
    clients = active_clients()
    return {} if clients is None else clients.stats()


def judge_stats_since(before: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """What each judge's client did since `before`, with the judge's kind: metrics.json's `judges`."""
    out: dict[str, dict[str, Any]] = {}
    for name, now in judge_stats().items():
        delta = add_stats(now, before[name], sign=-1) if name in before else now
        if delta.requests == 0:
            continue
        row: dict[str, Any] = delta.model_dump()
        row["seconds"] = round(row["seconds"], 3)
        clients = active_clients()
        row["kind"] = clients.kind(name) if clients is not None else None
        out[name] = row
    return out


def _portable(g: ChatExample, root: Path | None) -> dict[str, Any]:
    """A generation's record with the model/adapter paths inside the run folder made relative to it."""
    row = g.to_json()
    info = (row.get("metadata") or {}).get("generation")
    if root is not None and isinstance(info, dict):
        for name in ("model", "adapter"):
            if isinstance(info.get(name), str) and Path(info[name]).is_absolute():
                info[name] = rel_to(info[name], root)
    return row


def base_needs_sampling(plan: Plan, root: Path, *, force: bool = False) -> bool:
    """Whether `base_elicitation` will sample the base model: False when OUT/base is finished with its
    key or the cross-run cache holds it (`force`: always True)."""
    if force:
        return True
    if done_problem(root / BASE_DIR, plan.base.key) is None:
        return False
    cache_key = base_cache.base_cache_key(plan)
    return cache_key is None or not base_cache.is_cached(cache_key)


def base_elicitation(
    plan: Plan,
    root: Path,
    log: Callable[[str], None] | None = None,
    *,
    force: bool = False,
    generated: Mapping[str, list[ChatExample]] | None = None,
) -> dict[str, Any]:
    """The base model under each eval prompt (and each condition's training prompt); cached in OUT/base,
    and across runs by content (`base_cache`: a hit copies the stored outputs, the `done` marker and
    the run's event log say so). `force`: computed again, neither cache read. `generated`: the
    generations of each of `plan.base.prompts`, sampled already (with the cells',
    `experiment.together`), used when the elicitation is computed.

    When the base model is the organism, the organism's own elicitation table (every prompt family,
    held-out paraphrases included) is added beside the experiment's prompts.
    """
    final = root / BASE_DIR
    base = plan.base
    problem = "forced" if force else done_problem(final, base.key)
    if problem is None:
        return json.loads((final / METRICS_FILE).read_text(encoding="utf-8"))
    if not is_ours(final, "base"):  # checked before any work: never cleared, and said at once
        raise RunFolderError(foreign_message(final, "move them away or choose another --out"))
    if problem != "not finished" and log is not None:
        log(f"base: {problem}; recomputing")
    # Written into a marked staging folder and renamed into place when complete: a killed run leaves
    # only the staging folder, which the next run removes.
    out = staging_dir(root, BASE_DIR)
    cache_key = base_cache.base_cache_key(plan)
    if cache_key is not None and not force and base_cache.load_cached(cache_key, out):
        mark_done(out, base.key, source="cache", cache_key=cache_key)
        log_event(root, event="base_elicitation", source="cache", cache_key=cache_key)
        if log is not None:
            log(f"base: reused its elicitation from the cache ({base_cache.base_cache_root() / cache_key})")
        return _into_place(out, final)
    t0, c0 = time.perf_counter(), time.process_time()
    model_path = plan.model_path
    evals = evaluate(
        plan,
        out,
        seed=plan.seeds[0],
        model=model_path,
        adapter=None,
        prompts=base.prompts,
        scorers=plan.label_scorers(base.sets),
        root=root,
        generated=generated,
    )
    table: dict[str, Any] = {
        "source": "experiment",
        "rows": [
            {
                "prompt": base.labels[stem],
                "file": stem,
                "system": examples[0].system if examples else None,
                "metrics": evals[stem],
            }
            for stem, examples in base.prompts.items()
        ],
    }
    if isinstance(plan.config.model, OrganismModel):
        from inoculate import organism  # lazy: importing it registers the organism's scorers

        table["organism"] = organism.elicitation_table(model_path, plan.config.organism_setting())
    table = write_record(out / METRICS_FILE, BaseElicitation.model_validate(table))
    if cache_key is not None:
        base_cache.store(cache_key, out)
    mark_done(out, base.key, source="computed", cache_key=cache_key)
    log_event(
        root,
        event="base_elicitation",
        source="computed",
        cache_key=cache_key,
        seconds=round(time.perf_counter() - t0, 3),
        cpu_seconds=round(time.process_time() - c0, 3),
    )
    _into_place(out, final)
    return table


def _into_place(out: Path, final: Path) -> dict[str, Any]:
    """Mark the finished staging folder as the run's base folder and rename it into place."""
    write_marker(out, "base")
    remove_owned(final, "base")
    out.rename(final)
    return json.loads((final / METRICS_FILE).read_text(encoding="utf-8"))
