"""The matrix progress display: one bar for cells done/total, the current cell and stage beside it."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from inoculate.experiment.matrix import Cell


class RichProgress:
    """`MatrixProgress` for a terminal. Each finished cell also gets one log line with its headline
    numbers (the first eval prompt), which is all that shows when output is not a terminal."""

    def __init__(self, console: Console | None = None, *, headline_prompt: str | None = None):
        self.console = console or Console(stderr=True)
        self.headline_prompt = headline_prompt
        self._progress = Progress(
            TextColumn("[bold]cells"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=self.console,
            transient=False,
        )
        self._task: Any = None

    def message(self, text: str) -> None:
        self.console.log(escape(text), style="bold yellow" if text.startswith("WARNING") else None)

    def start(self, total: int, finished: int) -> None:
        self._progress.start()
        self._task = self._progress.add_task("", total=total, completed=finished)
        if finished:
            self.console.log(f"{finished} of {total} cells already finished (cached); skipping them")

    def cell_started(self, cell: Cell) -> None:
        self._progress.update(self._task, description=f"{cell.label}: starting")

    def stage(self, cell: Cell, stage: str) -> None:
        self._progress.update(self._task, description=escape(f"{cell.label}: {stage}"))

    def cell_finished(self, cell: Cell, summary: dict[str, Any], seconds: float, cached: bool) -> None:
        if cached:
            return
        self._progress.advance(self._task)
        evals = summary.get("eval", {})
        prompt = self.headline_prompt if self.headline_prompt in evals else next(iter(evals), None)
        numbers = ""
        if prompt is not None:
            numbers = "  ".join(
                f"{m}={v['mean']:.2f}" for m, v in evals[prompt].items() if v.get("mean") is not None
            )
            numbers = f"  [{prompt}] {numbers}"
        dyn = summary.get("dynamics") or {}
        if dyn.get("collapse_step") is not None:
            stopped = ", training stopped there" if dyn.get("stopped_early") else ""
            numbers += f"  IP collapse warning at step {dyn['collapse_step']}{stopped}"
        self.console.log(escape(f"done {cell.label} in {seconds:.1f}s{numbers}"))
        self._progress.update(self._task, description="")

    def stop(self) -> None:
        self._progress.stop()
