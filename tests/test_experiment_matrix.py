"""The matrix runner's cache and resume logic, with a cheap deterministic cell function."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from inoculate.experiment.cache import DONE, cell_key, is_done, prepare_cell, read_done
from inoculate.experiment.matrix import Cell, cell_order, read_events, run_matrix, run_matrix_in_phases
from inoculate.fileio import write_json_atomic


class Boom(Exception):
    pass


def make_cells(conditions=("a", "b"), seeds=(0, 1), lr=0.1, eval_n=4) -> list[Cell]:
    cells = []
    for cond, seed in cell_order(list(conditions), list(seeds)):
        train_part = {"condition": cond, "seed": seed, "lr": lr}
        config = {**train_part, "eval_n": eval_n}
        cells.append(
            Cell(
                condition=cond,
                seed=seed,
                config=config,
                key=cell_key(config, {"train": "t", "eval": "e"}, {"sha256": "m"}, "1"),
                train_key=cell_key(train_part, {"train": "t"}, {"sha256": "m"}, "1"),
            )
        )
    return cells


class FakeCell:
    """Writes a 'trained' file (kept across evaluation-only changes) and a metrics file; can die mid-cell."""

    def __init__(self, die_on: tuple[str, int] | None = None, die_stage: str = "evaluate"):
        self.die_on = die_on
        self.die_stage = die_stage
        self.trained: list[tuple[str, int]] = []
        self.evaluated: list[tuple[str, int]] = []

    def __call__(self, cell: Cell, cell_dir: Path, stage) -> dict:
        stage("train")
        trained = cell_dir / "trained.json"
        if (cell.condition, cell.seed) == self.die_on and self.die_stage == "train":
            (cell_dir / "half_written").write_text("partial")
            raise Boom()
        if not trained.is_file():
            self.trained.append((cell.condition, cell.seed))
            write_json_atomic(trained, {"lr": cell.config["lr"], "seed": cell.seed})
        stage("evaluate")
        (cell_dir / "generations").mkdir(exist_ok=True)
        (cell_dir / "generations" / "neutral.jsonl").write_text("{}\n")
        if (cell.condition, cell.seed) == self.die_on:
            raise Boom()
        self.evaluated.append((cell.condition, cell.seed))
        value = (cell.seed + 1) / 10 + (0.5 if cell.condition == "b" else 0.0)
        summary = {"eval": {"neutral": {"x": {"mean": value, "n": cell.config["eval_n"], "n_nan": 0}}}}
        write_json_atomic(cell_dir / "metrics.json", summary)
        return summary


def test_cell_order_is_seed_major():
    assert cell_order(["a", "b"], [0, 1]) == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]


def test_runs_every_cell_then_skips_finished_ones(tmp_path):
    cells = make_cells()
    fn = FakeCell()
    res = run_matrix(cells, tmp_path, fn)
    assert [(c.condition, c.seed) for c in res.ran] == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    for c in cells:
        d = tmp_path / c.rel_dir
        assert is_done(d, c.key)
        assert json.loads((d / "config.json").read_text())["key"] == c.key
        assert read_done(d)["condition"] == c.condition
    mtimes = {c: (tmp_path / c.rel_dir / "metrics.json").stat().st_mtime_ns for c in cells}

    fn2 = FakeCell()
    res2 = run_matrix(cells, tmp_path, fn2)
    assert res2.ran == [] and len(res2.cached) == 4
    assert fn2.trained == [] and fn2.evaluated == []
    assert mtimes == {c: (tmp_path / c.rel_dir / "metrics.json").stat().st_mtime_ns for c in cells}


def test_a_killed_run_resumes_without_redoing_finished_cells(tmp_path):
    cells = make_cells()
    dying = FakeCell(die_on=("a", 1))
    with pytest.raises(Boom):
        run_matrix(cells, tmp_path, dying)
    assert dying.evaluated == [("a", 0), ("b", 0)]
    partial = tmp_path / "a" / "seed_1"
    assert partial.is_dir() and not (partial / DONE).exists()
    before = {c.rel_dir: (tmp_path / c.rel_dir / "metrics.json").read_bytes() for c in cells[:2]}
    mtimes = {c.rel_dir: (tmp_path / c.rel_dir / "metrics.json").stat().st_mtime_ns for c in cells[:2]}

    resumed = FakeCell()
    res = run_matrix(cells, tmp_path, resumed)
    assert [(c.condition, c.seed) for c in res.ran] == [("a", 1), ("b", 1)]
    assert resumed.evaluated == [("a", 1), ("b", 1)]
    # a/seed_1 died after training with the same training key: its training output is reused
    assert resumed.trained == [("b", 1)]
    for c in cells[:2]:
        assert (tmp_path / c.rel_dir / "metrics.json").read_bytes() == before[c.rel_dir]
        assert (tmp_path / c.rel_dir / "metrics.json").stat().st_mtime_ns == mtimes[c.rel_dir]

    straight = tmp_path / "straight"
    run_matrix(cells, straight, FakeCell())
    for c in cells:
        assert (straight / c.rel_dir / "metrics.json").read_bytes() == (
            tmp_path / c.rel_dir / "metrics.json"
        ).read_bytes()

    events = [e["event"] for e in read_events(tmp_path)]
    assert events.count("cell_started") == 3 + 2
    assert events.count("cell_finished") == 4


def test_partial_output_of_a_killed_cell_is_never_kept(tmp_path):
    cells = make_cells(conditions=("a",), seeds=(0,))
    with pytest.raises(Boom):
        run_matrix(cells, tmp_path, FakeCell(die_on=("a", 0), die_stage="train"))
    d = tmp_path / cells[0].rel_dir
    assert (d / "half_written").exists() and not is_done(d, cells[0].key)
    run_matrix(cells, tmp_path, FakeCell())
    assert is_done(d, cells[0].key)
    assert not (d / "generations" / "stale.jsonl").exists()


def test_changed_eval_settings_rerun_evaluation_but_keep_training(tmp_path):
    run_matrix(make_cells(eval_n=4), tmp_path, FakeCell())
    fn = FakeCell()
    res = run_matrix(make_cells(eval_n=8), tmp_path, fn)
    assert len(res.ran) == 4
    assert fn.trained == [] and len(fn.evaluated) == 4


def test_changed_training_settings_redo_the_cell(tmp_path):
    run_matrix(make_cells(lr=0.1), tmp_path, FakeCell())
    fn = FakeCell()
    run_matrix(make_cells(lr=0.2), tmp_path, fn)
    assert len(fn.trained) == 4
    assert json.loads((tmp_path / "a" / "seed_0" / "trained.json").read_text())["lr"] == 0.2


def test_force_redoes_finished_cells(tmp_path):
    cells = make_cells()
    run_matrix(cells, tmp_path, FakeCell())
    fn = FakeCell()
    res = run_matrix(cells, tmp_path, fn, force=True)
    assert len(res.ran) == 4 and len(fn.trained) == 4


def test_prepare_cell_clears_evaluation_outputs_and_marker(tmp_path):
    d = tmp_path / "c"
    assert prepare_cell(d, "k1", "t1") == "new"
    write_json_atomic(d / "config.json", {"key": "k1", "train_key": "t1"})
    (d / "trained").write_text("x")
    (d / "metrics.json").write_text("{}")
    (d / "scores").mkdir()
    write_json_atomic(d / DONE, {"key": "k1"})
    assert prepare_cell(d, "k2", "t1") == "resume"
    assert (d / "trained").exists()
    assert not (d / "metrics.json").exists() and not (d / "scores").exists() and not (d / DONE).exists()
    write_json_atomic(d / "config.json", {"key": "k2", "train_key": "t1"})
    assert prepare_cell(d, "k3", "t2") == "stale"
    assert not (d / "trained").exists()


def test_a_torn_done_marker_does_not_count(tmp_path):
    (tmp_path / DONE).write_text('{"key": "k')
    assert not is_done(tmp_path, "k")


class PidCell(FakeCell):
    """FakeCell that also says which process ran it."""

    def __call__(self, cell: Cell, cell_dir: Path, stage) -> dict:
        summary = super().__call__(cell, cell_dir, stage)
        return {**summary, "pid": os.getpid()}


@pytest.mark.skipif(os.name != "posix", reason="worker processes are forked")
def test_workers_run_cells_in_other_processes_with_the_sequential_result(tmp_path):
    cells = make_cells(conditions=("a", "b", "c"))
    res = run_matrix(cells, tmp_path / "par", PidCell(), workers=2)
    assert [(c.condition, c.seed) for c in res.ran] == [(c.condition, c.seed) for c in cells]
    run_matrix(cells, tmp_path / "seq", FakeCell())
    for c in cells:
        par, seq = tmp_path / "par" / c.rel_dir, tmp_path / "seq" / c.rel_dir
        assert is_done(par, c.key)
        assert (par / "metrics.json").read_bytes() == (seq / "metrics.json").read_bytes()
    events = read_events(tmp_path / "par")
    assert sum(e["event"] == "cell_finished" for e in events) == len(cells)
    # a finished parallel run is cached like a sequential one
    again = run_matrix(cells, tmp_path / "par", FakeCell(), workers=2)
    assert again.ran == [] and len(again.cached) == len(cells)


@pytest.mark.skipif(os.name != "posix", reason="worker processes are forked")
def test_workers_are_other_processes_and_a_failing_cell_stops_the_run(tmp_path):
    pids: list[int] = []

    class Progress:
        def message(self, text): ...
        def start(self, total, finished): ...
        def cell_started(self, cell): ...
        def stage(self, cell, stage): ...
        def cell_finished(self, cell, summary, seconds, cached):
            pids.append(summary["pid"])

        def stop(self): ...

    cells = make_cells()
    run_matrix(cells, tmp_path / "ok", PidCell(), workers=2, progress=Progress())
    assert len(pids) == len(cells) and os.getpid() not in pids

    with pytest.raises(Boom):
        run_matrix(cells, tmp_path / "dies", FakeCell(die_on=("a", 0)), workers=2)
    assert not (tmp_path / "dies" / "a" / "seed_0" / DONE).exists()


class FakePhases:
    """`run_matrix_in_phases`' two functions: training writes 'trained.json' (kept on resume), the
    evaluation pass writes each cell's metrics and can die after `die_after` cells; `log` keeps the
    order of what happened."""

    def __init__(self, die_after: int | None = None):
        self.die_after = die_after
        self.log: list[tuple[str, str, int]] = []

    def train(self, cell: Cell, cell_dir: Path, stage) -> Path:
        stage("train")
        trained = cell_dir / "trained.json"
        if not trained.is_file():
            self.log.append(("train", cell.condition, cell.seed))
            write_json_atomic(trained, {"seed": cell.seed})
        return trained

    def evaluate(self, trained: list):
        self.log.append(("pass", "", len(trained)))
        for i, (cell, path) in enumerate(trained):
            if i == self.die_after:
                raise Boom()
            assert path.is_file()
            summary = {"eval": {"neutral": {"x": {"mean": cell.seed / 10, "n": 4, "n_nan": 0}}}}
            write_json_atomic(path.parent / "metrics.json", summary)
            self.log.append(("evaluate", cell.condition, cell.seed))
            yield cell, summary


def test_in_phases_trains_every_cell_before_one_evaluation_pass(tmp_path):
    cells = make_cells()
    fake = FakePhases()
    phases: list[str] = []

    import contextlib

    @contextlib.contextmanager
    def phase(name):
        phases.append(name)
        yield

    res = run_matrix_in_phases(cells, tmp_path, fake.train, fake.evaluate, phase=phase)
    labels = [(c.condition, c.seed) for c in cells]
    assert fake.log == [("train", *x) for x in labels] + [("pass", "", 4)] + [
        ("evaluate", *x) for x in labels
    ]
    assert phases == ["train", "evaluate"]
    assert [(c.condition, c.seed) for c in res.ran] == labels
    for c in cells:
        done = read_done(tmp_path / c.rel_dir)
        assert is_done(tmp_path / c.rel_dir, c.key) and done["evaluated_with_others"] is True
        assert "metrics.json" in done["outputs"]
    kinds = [e["event"] for e in read_events(tmp_path)]
    assert kinds == ["cell_started", "cell_trained"] * 4 + ["cell_finished"] * 4
    # a rerun finds every cell finished: nothing trained, and the pass (the base model's) still runs
    fake2 = FakePhases()
    again = run_matrix_in_phases(cells, tmp_path, fake2.train, fake2.evaluate)
    assert len(again.cached) == 4 and not again.ran and fake2.log == [("pass", "", 0)]


def test_in_phases_a_pass_that_dies_leaves_trained_cells_unfinished_and_resumable(tmp_path):
    """Killed in the evaluation pass after one cell: that cell is done, the others are not, and their
    training is kept; the rerun evaluates them without training them again."""
    cells = make_cells()
    fake = FakePhases(die_after=1)
    with pytest.raises(Boom):
        run_matrix_in_phases(cells, tmp_path, fake.train, fake.evaluate)
    assert [is_done(tmp_path / c.rel_dir, c.key) for c in cells] == [True, False, False, False]
    assert not (tmp_path / cells[1].rel_dir / DONE).exists()

    fake2 = FakePhases()
    res = run_matrix_in_phases(cells, tmp_path, fake2.train, fake2.evaluate)
    assert fake2.log == [("pass", "", 3)] + [("evaluate", c.condition, c.seed) for c in cells[1:]]
    assert [c.key for c in res.cached] == [cells[0].key] and len(res.ran) == 3
    states = [e["state"] for e in read_events(tmp_path) if e["event"] == "cell_started"][4:]
    assert states == ["resume"] * 3
    assert all(is_done(tmp_path / c.rel_dir, c.key) for c in cells)


def test_in_phases_a_cell_the_pass_skipped_is_an_error_not_a_finished_cell(tmp_path):
    cells = make_cells(seeds=(0,))
    fake = FakePhases()

    def first_only(trained):
        yield from fake.evaluate(trained[:1])

    with pytest.raises(RuntimeError, match="did not evaluate b / seed 0"):
        run_matrix_in_phases(cells, tmp_path, fake.train, first_only)
    assert is_done(tmp_path / cells[0].rel_dir, cells[0].key)
    assert not (tmp_path / cells[1].rel_dir / DONE).exists()
