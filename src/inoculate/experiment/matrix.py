"""The conditions x seeds matrix, and running it with a cache so that finished cells are never redone.

`run_matrix` is independent of what a cell does: it takes a cell function, so the cache and resume
logic can be tested (and reused) with any cheap function. The experiment runner passes the real one
(transform -> train -> generate -> score).

`run_matrix_in_phases` runs the same matrix in two phases: every unfinished cell is trained first, then
one evaluation pass takes them all (the runner's path when one engine samples every cell's adapter in
one call). A cell is finished, as in `run_matrix`, only when its `done` marker is written, after its
metrics; a cell trained but not evaluated keeps its training outputs and is only evaluated on resume.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from inoculate.experiment.cache import done_problem, mark_done, prepare_cell, write_cell_config

EVENTS = "events.jsonl"


@dataclass(frozen=True)
class Cell:
    """One (condition, seed) run with its resolved config and cache keys."""

    condition: str
    seed: int
    config: dict[str, Any] = field(compare=False, hash=False)
    key: str = ""
    train_key: str = ""

    @property
    def rel_dir(self) -> Path:
        return Path(self.condition) / f"seed_{self.seed}"

    @property
    def label(self) -> str:
        return f"{self.condition} / seed {self.seed}"


def cell_order(conditions: Sequence[str], seeds: Sequence[int]) -> list[tuple[str, int]]:
    """Seed-major order: every condition of seed 0 first, so an early stop leaves whole replicates."""
    return [(c, s) for s in seeds for c in conditions]


StageFn = Callable[[str], None]
CellFn = Callable[[Cell, Path, StageFn], dict[str, Any]]
"""`cell_fn(cell, cell_dir, stage)` does the work, calls `stage("train")` etc. as it goes, writes its
outputs under `cell_dir` (atomically) and returns a small summary recorded in the `done` marker."""


class MatrixProgress(Protocol):
    def message(self, text: str) -> None: ...
    def start(self, total: int, finished: int) -> None: ...
    def cell_started(self, cell: Cell) -> None: ...
    def stage(self, cell: Cell, stage: str) -> None: ...
    def cell_finished(self, cell: Cell, summary: dict[str, Any], seconds: float, cached: bool) -> None: ...
    def stop(self) -> None: ...


class NullProgress:
    def message(self, text: str) -> None:
        pass

    def start(self, total: int, finished: int) -> None:
        pass

    def cell_started(self, cell: Cell) -> None:
        pass

    def stage(self, cell: Cell, stage: str) -> None:
        pass

    def cell_finished(self, cell: Cell, summary: dict[str, Any], seconds: float, cached: bool) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass
class MatrixResult:
    ran: list[Cell] = field(default_factory=list)
    cached: list[Cell] = field(default_factory=list)

    @property
    def cells(self) -> list[Cell]:
        return [*self.cached, *self.ran]


def log_event(root: Path, **event: Any) -> None:
    """Append one line to the run's event log (one write per line; a reader skips a torn last line)."""
    root.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"time": round(time.time(), 3), **event}, ensure_ascii=False) + "\n"
    fd = os.open(root / EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)  # less the umask
    try:
        os.write(fd, line.encode("utf-8"))
    finally:
        os.close(fd)


def read_events(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    path = Path(root) / EVENTS
    if not path.is_file():
        return []
    out = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(raw))
        except ValueError:
            continue
    return out


def run_matrix(
    cells: Sequence[Cell],
    root: str | os.PathLike[str],
    cell_fn: CellFn,
    *,
    force: bool = False,
    progress: MatrixProgress | None = None,
    workers: int = 1,
    alongside: Callable[[], None] | None = None,
) -> MatrixResult:
    """Run every cell not already finished with its key; return which ran and which were cached.

    Each cell's folder gets `config.json` first and `done` last. `force` reruns every cell. A cell
    whose `done` marker names its key but whose outputs no longer match (or parse) is recomputed,
    and the run says so. `workers` > 1 runs cells in that many worker processes (forked).
    `alongside` is work of this process that needs no cell (the base model's evaluation): with workers
    it runs while they start on the cells, else before the first cell; its errors stop the run.
    """
    root = Path(root)
    prog = progress or NullProgress()
    result = MatrixResult()
    todo = _unfinished(cells, root, force, prog, result)
    # What exists now (the plan, its data, imported modules) lives for the whole run: freeze it out of
    # the cycle collector, which each training run calls (accelerate's free_memory) and which otherwise
    # walks it every time; forked workers then also leave those pages shared.
    gc.freeze()
    if workers > 1 and len(todo) > 1:
        n = min(workers, len(todo))
        pool = _fork_pool(n, cell_fn, root, force)  # forked before the progress display starts a thread
        prog.start(len(cells), len(result.cached))
        for cell in result.cached:
            prog.cell_finished(cell, {}, 0.0, True)
        try:
            for cell in todo[:n]:
                prog.cell_started(cell)
            results = pool.imap(_work, todo)
            if alongside is not None:
                alongside()
            for i, (summary, seconds) in enumerate(results):
                result.ran.append(todo[i])
                prog.cell_finished(todo[i], summary, seconds, False)
                if i + n < len(todo):
                    prog.cell_started(todo[i + n])
        except BaseException:
            pool.terminate()
            raise
        else:
            pool.close()
        finally:
            pool.join()
            prog.stop()
        return result
    if alongside is not None:
        alongside()
    prog.start(len(cells), len(result.cached))
    for cell in result.cached:
        prog.cell_finished(cell, {}, 0.0, True)
    try:
        for cell in todo:
            prog.cell_started(cell)
            summary, seconds = run_one(cell, root, cell_fn, force, lambda stage, c=cell: prog.stage(c, stage))
            result.ran.append(cell)
            prog.cell_finished(cell, summary, seconds, False)
    finally:
        prog.stop()
    return result


def _unfinished(
    cells: Sequence[Cell], root: Path, force: bool, prog: MatrixProgress, result: MatrixResult
) -> list[Cell]:
    """The cells to run; the finished ones go to `result.cached`, and an invalid one is said and logged."""
    todo = []
    for cell in cells:
        problem = None if force else done_problem(root / cell.rel_dir, cell.key)
        if problem is None and not force:
            result.cached.append(cell)
            continue
        if problem not in (None, "not finished"):
            prog.message(f"seed_{cell.seed} of {cell.condition}: {problem}; recomputing")
            log_event(root, event="cell_invalid", condition=cell.condition, seed=cell.seed, problem=problem)
        todo.append(cell)
    return todo


TrainFn = Callable[[Cell, Path, StageFn], Any]
"""`train_fn(cell, cell_dir, stage)` trains the cell into `cell_dir` and returns what its evaluation
needs; a folder whose training finished (kept by `prepare_cell`) is not trained again."""
EvaluateFn = Callable[[list[tuple[Cell, Any]]], Iterator[tuple[Cell, dict[str, Any]]]]
"""`evaluate_fn([(cell, trained), ...])` evaluates every trained cell (an empty list too: it may have
other work, the base model's), writes each one's outputs and yields `(cell, summary)` once that cell's
metrics are written."""
PhaseFn = Callable[[str], contextlib.AbstractContextManager[None]]


def run_matrix_in_phases(
    cells: Sequence[Cell],
    root: str | os.PathLike[str],
    train_fn: TrainFn,
    evaluate_fn: EvaluateFn,
    *,
    force: bool = False,
    progress: MatrixProgress | None = None,
    phase: PhaseFn | None = None,
) -> MatrixResult:
    """Train every unfinished cell (phase `train`), then evaluate them all in one pass (phase
    `evaluate`); return which ran and which were cached.

    Each cell's folder gets `config.json` first, as in `run_matrix`, and `done` last, as soon as the
    evaluation pass yields the cell (its metrics written). A run stopped in between leaves trained cells
    without `done`: they are not finished, and the next run keeps their training (same training key)
    and evaluates them. `phase(NAME)` wraps each phase (the runner logs it with its seconds)."""
    root = Path(root)
    prog = progress or NullProgress()
    in_phase = phase or (lambda name: contextlib.nullcontext())
    result = MatrixResult()
    todo = _unfinished(cells, root, force, prog, result)
    gc.freeze()  # as in run_matrix
    prog.start(len(cells), len(result.cached))
    for cell in result.cached:
        prog.cell_finished(cell, {}, 0.0, True)
    try:
        trained: list[tuple[Cell, Any]] = []
        train_seconds: dict[Cell, float] = {}
        with in_phase("train"):
            for cell in todo:
                prog.cell_started(cell)
                cell_dir = start_cell(cell, root, force)
                t0 = time.perf_counter()
                trained.append((cell, train_fn(cell, cell_dir, lambda stage, c=cell: prog.stage(c, stage))))
                train_seconds[cell] = time.perf_counter() - t0
                log_event(
                    root,
                    event="cell_trained",
                    condition=cell.condition,
                    seed=cell.seed,
                    key=cell.key,
                    seconds=round(train_seconds[cell], 3),
                )
        with in_phase("evaluate"):
            t0 = time.perf_counter()
            for cell, summary in evaluate_fn(trained):
                if cell not in train_seconds or cell in result.ran:
                    raise RuntimeError(f"the evaluation pass returned {cell.label}, which it was not given")
                # its training, then the shared pass from its start to this cell's metrics
                seconds = train_seconds[cell] + time.perf_counter() - t0
                mark_done(
                    root / cell.rel_dir,
                    cell.key,
                    condition=cell.condition,
                    seed=cell.seed,
                    seconds=round(seconds, 3),
                    evaluated_with_others=True,
                )
                log_event(root, event="cell_finished", condition=cell.condition, seed=cell.seed, key=cell.key)
                result.ran.append(cell)
                prog.cell_finished(cell, summary, seconds, False)
            missing = [c.label for c, _ in trained if c not in result.ran]
            if missing:
                raise RuntimeError(f"the evaluation pass did not evaluate {', '.join(missing)}")
    finally:
        prog.stop()
    return result


def start_cell(cell: Cell, root: Path, force: bool) -> Path:
    """A cell's folder made ready for its work (`prepare_cell`: kept training outputs of the same training
    key, else cleared), `config.json` written, the start logged; returns the folder."""
    cell_dir = root / cell.rel_dir
    state = prepare_cell(cell_dir, cell.key, cell.train_key, force=force)
    write_cell_config(cell_dir, cell.config, cell.key, cell.train_key)
    log_event(root, event="cell_started", condition=cell.condition, seed=cell.seed, key=cell.key, state=state)
    return cell_dir


def run_one(
    cell: Cell, root: Path, cell_fn: CellFn, force: bool, stage: StageFn
) -> tuple[dict[str, Any], float]:
    """One cell, start to `done`: its folder prepared, `config.json` first, the work, `done` last; the
    events logged. Returns the cell function's summary and the seconds it took."""
    cell_dir = start_cell(cell, root, force)
    t0 = time.perf_counter()
    summary = cell_fn(cell, cell_dir, stage)
    seconds = time.perf_counter() - t0
    mark_done(cell_dir, cell.key, condition=cell.condition, seed=cell.seed, seconds=round(seconds, 3))
    log_event(root, event="cell_finished", condition=cell.condition, seed=cell.seed, key=cell.key)
    return summary, seconds


# Worker processes: forked, so they inherit the cell function (and the plan it closes over) as they are,
# loaded data and imported modules included; only the cell goes to a worker and its summary comes back.
_JOB: tuple[CellFn, Path, bool] | None = None


def _fork_pool(workers: int, cell_fn: CellFn, root: Path, force: bool) -> Any:
    import multiprocessing

    global _JOB
    _JOB = (cell_fn, root, force)
    # A forked child must not use the tokenizers' thread pool the parent may have started.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    threads = max(1, (os.cpu_count() or 1) // workers)
    return multiprocessing.get_context("fork").Pool(workers, initializer=_init_worker, initargs=(threads,))


def _init_worker(threads: int) -> None:
    torch = sys.modules.get("torch")  # imported by the cell function's modules, if it uses torch at all
    if torch is not None:
        torch.set_num_threads(threads)  # the workers share the cores instead of each taking them all


def _work(cell: Cell) -> tuple[dict[str, Any], float]:
    assert _JOB is not None, "a matrix worker runs only in a pool made by _fork_pool"
    cell_fn, root, force = _JOB
    return run_one(cell, root, cell_fn, force, lambda stage: None)
