"""Reports from a run folder: summary.csv, per_seed.csv, report.md and figures/*.png.

`write_report(run_dir)` regenerates everything from the stored cell results (what `inoculate report`
does); the runner calls it at the end of a run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from inoculate.fileio import write_text_atomic
from inoculate.report.dynamics import write_dynamics_figures
from inoculate.report.expect import Verdict
from inoculate.report.load import CellResult, RunData, load_run
from inoculate.report.markdown import condition_table, render_report, verdicts
from inoculate.report.plots import write_figures
from inoculate.report.tables import (
    PER_SEED_COLUMNS,
    SUMMARY_COLUMNS,
    SummaryRow,
    per_seed_rows,
    read_summary_csv,
    summary_rows,
    write_tables,
)


@dataclass
class Report:
    run: RunData
    rows: list[SummaryRow]
    verdicts: list[Verdict]
    summary_csv: Path
    per_seed_csv: Path
    report_md: Path
    figures: list[Path]

    def headline(self) -> tuple[list[str], list[list[str]]]:
        """The neutral-prompt table (header, rows) as shown in report.md."""
        prompt = self.run.neutral_prompt
        if prompt is None:
            return [], []
        return condition_table(self.run, self.rows, prompt)


def write_report(run_dir: str | os.PathLike[str]) -> Report:
    """(Re)write summary.csv, per_seed.csv, figures/ and report.md of a run folder."""
    root = Path(run_dir)
    run = load_run(root)
    rows = write_tables(run, root)
    figures = write_figures(run, rows, root)
    rel = [f.relative_to(root).as_posix() for f in figures]
    figures += write_dynamics_figures(run, root)  # linked from report.md's learning-dynamics section
    write_text_atomic(root / "report.md", render_report(run, rows, rel))
    return Report(
        run=run,
        rows=rows,
        verdicts=verdicts(run, rows),
        summary_csv=root / "summary.csv",
        per_seed_csv=root / "per_seed.csv",
        report_md=root / "report.md",
        figures=figures,
    )


__all__ = [
    "PER_SEED_COLUMNS",
    "SUMMARY_COLUMNS",
    "CellResult",
    "Report",
    "RunData",
    "SummaryRow",
    "load_run",
    "per_seed_rows",
    "read_summary_csv",
    "summary_rows",
    "write_report",
]
