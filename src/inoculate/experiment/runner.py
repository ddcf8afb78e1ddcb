"""`inoculate run`: load -> plan -> screen -> record -> base -> matrix -> report.

`plan.prepare` resolves the experiment once (data, base model, conditions, eval sets, keyed cells);
a `screen:` block adds its picked conditions to that plan (`Plan.with_conditions`); `record` writes
experiment.json and manifest.json; `cell` evaluates the base model and runs each (condition, seed):
train with the condition's transformed data -> generate under each eval prompt (eval set
neutralized, then the eval prompt's system prompt set) -> score every trait and capability ->
`metrics.json`; the report is written from the run folder.

When one engine samples every cell's adapter in one call (`together.evaluates_together`: the vllm
backend with LoRA cells), the matrix runs in two phases instead: every cell is trained first, then
the whole matrix and the base model are sampled in one call and scored (`experiment.together`).

Layout of `OUT` (default `runs/<name>`):

    OUT/experiment.json         the resolved experiment (what `inoculate report` reads)
    OUT/manifest.json           package versions, git hash, base model, sampling, prompts the model saw
    OUT/<condition>/seed_<k>/   config.json, train.manifest.json, adapter/, train_log.jsonl,
                                dynamics.jsonl (monitored conditions, `dynamics:`),
                                generations/<eval_prompt>.jsonl, scores/<eval_prompt>.jsonl,
                                metrics.json, done
    OUT/base/                   the base model's elicitation table
    OUT/summary.csv, per_seed.csv, report.md, figures/
    OUT/.inoculate, .inoculate.lock(.json)   ownership marker; the run lock and its holder

Only folders inoculate wrote are ever cleared (`inoculate.rundir`); one run at a time holds `OUT`.
Paths inside `OUT` are recorded relative to it, so a copied or moved run folder reruns from its own
files.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from inoculate.experiment.cell import base_elicitation, run_cell, train_cell
from inoculate.experiment.config import ExperimentConfig, OrganismModel
from inoculate.experiment.load import load_experiment
from inoculate.experiment.matrix import (
    MatrixProgress,
    MatrixResult,
    NullProgress,
    log_event,
    run_matrix,
    run_matrix_in_phases,
)
from inoculate.experiment.plan import Plan, check_conditions, prepare
from inoculate.experiment.record import experiment_record, write_manifest
from inoculate.experiment.screening import picked_conditions
from inoculate.experiment.together import evaluate_together, evaluates_together
from inoculate.judges import JudgeCache, JudgeClients, use_clients
from inoculate.report import Report
from inoculate.report import write_report as _write
from inoculate.rundir import EXPERIMENT_FILE, claim_run_folder, write_record


@dataclass
class RunOutcome:
    out_dir: Path
    plan: Plan
    matrix: MatrixResult
    seconds: float
    report: Report | None = None


def default_out_dir(cfg: ExperimentConfig) -> Path:
    return Path("runs") / cfg.name


def run_experiment(
    experiment: ExperimentConfig | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    seeds: int | None = None,
    force: bool = False,
    progress: MatrixProgress | None = None,
    write_report: bool = True,
    workers: int | None = None,
) -> RunOutcome:
    """Run (or resume) an experiment and write its report; finished cells are not redone.

    `workers`: cells run at once, each in a worker process (see `default_workers`, the default); the
    two-phase path (`together.evaluates_together`) runs in this process."""
    cfg = experiment if isinstance(experiment, ExperimentConfig) else load_experiment(experiment)
    root = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    check_conditions(cfg)  # an empty condition is refused before the run folder is touched
    prog = progress or NullProgress()
    with contextlib.ExitStack() as stack:
        lock = stack.enter_context(claim_run_folder(root))  # OUT is ours and locked; leftovers cleared
        if cfg.uses_judges():  # one cache for every judge of the run: a rerun sends no request again
            cache = JudgeCache(cfg.judge_cache_path(root))
            stack.callback(cache.close)
            stack.enter_context(use_clients(JudgeClients(cache)))
        t0 = time.perf_counter()
        if lock.took_over is not None:
            held = lock.took_over
            prog.message(
                f"took over the lock of a run that ended without releasing it "
                f"(pid {held.get('pid')} on {held.get('host')}, since {held.get('started')})"
            )
        phase = _Phases(root)
        with phase("prepare"):  # data, the base model (stage 1 when the organism is not cached), screen
            plan = prepare(cfg, seeds=seeds, log=prog.message)
            plan = apply_screen(plan, root)  # screens (cached in root/screen), adds the condition(s)
            write_record(root / EXPERIMENT_FILE, experiment_record(plan, root))
            write_manifest(plan, root)
        log_event(root, event="run_started", cells=len(plan.cells), force=force)
        message = prog.message if progress is not None else None  # else: the monitor's own warnings
        if evaluates_together(plan):  # train every cell, then one engine call samples them all
            if workers is not None and workers > 1:
                prog.message(f"{workers} workers asked; cells train one at a time before one engine call")
            matrix = run_matrix_in_phases(
                plan.cells,
                root,
                lambda cell, d, stage: train_cell(plan, cell, d, stage, message),
                lambda trained: evaluate_together(plan, root, trained, force=force, log=prog.message),
                force=force,
                progress=prog,
                phase=phase,
            )
        else:
            matrix = _cell_by_cell(plan, root, prog, message, force, workers, phase)
        log_event(root, event="run_finished", ran=len(matrix.ran), cached=len(matrix.cached))
        seconds = time.perf_counter() - t0
        report = None
        if write_report:
            with phase("report"):
                report = _write(root)
        return RunOutcome(out_dir=root, plan=plan, matrix=matrix, seconds=seconds, report=report)


def _cell_by_cell(
    plan: Plan,
    root: Path,
    prog: MatrixProgress,
    message: Callable[[str], None] | None,
    force: bool,
    workers: int | None,
    phase: _Phases,
) -> MatrixResult:
    """Each cell trained and evaluated in turn (with workers, several at once), the base model
    evaluated before them or, with workers, while they run."""

    def evaluate_base() -> None:
        with phase("base"):
            prog.message(f"evaluating the base model under {len(plan.base.prompts)} prompt(s)")
            base_elicitation(plan, root, prog.message, force=force)

    with phase("matrix"):  # with workers, the base model is evaluated while they run the first cells
        return run_matrix(
            plan.cells,
            root,
            lambda cell, d, stage: run_cell(plan, cell, d, stage, message),
            force=force,
            progress=prog,
            workers=default_workers(plan.config) if workers is None else workers,
            alongside=evaluate_base,
        )


def default_workers(cfg: ExperimentConfig) -> int:
    """Cells run at once by default: one per CPU core, at most 2, for the built-in organism on a machine
    without a GPU (its cells are small, single-threaded and independent); else 1 (a real model's cell
    uses the whole device, and judges share one cache and rate limit)."""
    if not isinstance(cfg.model, OrganismModel) or cfg.uses_judges() or os.name != "posix":
        return 1
    import torch  # the plan has imported it already

    if torch.cuda.is_available():
        return 1
    return max(1, min(2, os.cpu_count() or 1))


class _Phases:
    """`with phase(NAME):` logs the phase to the run's event log with its wall seconds and this process's
    CPU seconds (`benchmarks/demo_time.py` reads them)."""

    def __init__(self, root: Path):
        self.root = root

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        yield
        log_event(
            self.root,
            event="phase",
            phase=name,
            seconds=round(time.perf_counter() - wall, 3),
            cpu_s=round(time.process_time() - cpu, 3),
        )


def apply_screen(plan: Plan, root: str | os.PathLike[str]) -> Plan:
    """The plan with its experiment's `screen:` block resolved into conditions (see
    `screening.picked_conditions`; the screen is cached in ROOT/screen); unchanged without a block."""
    if plan.config.screen is None:
        return plan
    return plan.with_conditions(picked_conditions(plan.config, plan.screen_inputs(), root))
