"""summary.csv (long format, CIs over seeds) and per_seed.csv, computed from stored cell results."""

from __future__ import annotations

import csv
import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inoculate.fileio import write_text_atomic
from inoculate.report.load import RunData

SUMMARY_COLUMNS = (
    "condition",
    "eval_prompt",
    "metric",
    "kind",
    "mean",
    "ci_low",
    "ci_high",
    "n_seeds",
    "n",
    "ci_method",
)
PER_SEED_COLUMNS = ("condition", "eval_prompt", "metric", "kind", "seed", "value", "n", "n_nan")


@dataclass(frozen=True)
class SummaryRow:
    condition: str
    eval_prompt: str
    metric: str
    kind: str
    mean: float
    ci_low: float
    ci_high: float
    n_seeds: int
    n: int
    ci_method: str

    def as_dict(self) -> dict[str, Any]:
        return {c: getattr(self, c) for c in SUMMARY_COLUMNS}


def per_seed_rows(run: RunData) -> list[dict[str, Any]]:
    rows = []
    for cond in run.conditions:
        for cell in run.cells_of(cond):
            for prompt in run.eval_prompts:
                for metric, info in run.metrics.items():
                    m = cell.eval.get(prompt, {}).get(metric)
                    if m is None:
                        continue
                    rows.append(
                        {
                            "condition": cond,
                            "eval_prompt": prompt,
                            "metric": metric,
                            "kind": info.kind,
                            "seed": cell.seed,
                            "value": cell.value(prompt, metric),
                            "n": m.n,
                            "n_nan": m.n_nan,
                        }
                    )
    return rows


def summary_rows(run: RunData) -> list[SummaryRow]:
    """One row per (condition, eval prompt, metric): the mean over seeds and its 95% CI over seeds.

    Seeds are the unit (`inoculate.stats.summarize_seeds`); with a single seed the interval is over
    that seed's rows and `ci_method` says so.
    """
    from inoculate.stats import summarize_seeds  # lazy: stats imports numpy and scipy

    out = []
    for cond in run.conditions:
        cells = run.cells_of(cond)
        if not cells:
            continue
        for prompt in run.eval_prompts:
            for metric, info in run.metrics.items():
                present = [c for c in cells if metric in c.eval.get(prompt, {})]
                if not present:
                    continue
                values = [c.value(prompt, metric) for c in present]
                n_rows = sum(int(c.eval[prompt][metric].n) for c in present)
                within = present[0].row_values(prompt, metric) if len(present) == 1 else None
                s = summarize_seeds(values, within=within, n_rows=n_rows, bounded=info.bounded)
                method = s.method if s.unit == "seeds" else f"{s.method} (rows of one seed)"
                out.append(
                    SummaryRow(
                        condition=cond,
                        eval_prompt=prompt,
                        metric=metric,
                        kind=info.kind,
                        mean=s.mean,
                        ci_low=s.ci_low,
                        ci_high=s.ci_high,
                        n_seeds=len([v for v in values if not math.isnan(v)]),
                        n=n_rows,
                        ci_method=method,
                    )
                )
    return out


def fmt_number(x: Any) -> str:
    if isinstance(x, float):
        return "nan" if math.isnan(x) else f"{x:.6g}"
    return str(x)


def to_csv(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([fmt_number(r[c]) for c in columns])
    return buf.getvalue()


def write_tables(run: RunData, out: str | os.PathLike[str]) -> list[SummaryRow]:
    out = Path(out)
    rows = summary_rows(run)
    write_text_atomic(out / "summary.csv", to_csv([r.as_dict() for r in rows], SUMMARY_COLUMNS))
    write_text_atomic(out / "per_seed.csv", to_csv(per_seed_rows(run), PER_SEED_COLUMNS))
    return rows


def read_summary_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """summary.csv back as dicts with numbers as floats/ints (for checks and tests)."""
    with open(path, encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        for c in ("mean", "ci_low", "ci_high"):
            r[c] = float(r[c])
        for c in ("n_seeds", "n"):
            r[c] = int(r[c])
    return rows


def lookup(rows: list[SummaryRow], condition: str, eval_prompt: str, metric: str) -> SummaryRow | None:
    for r in rows:
        if (r.condition, r.eval_prompt, r.metric) == (condition, eval_prompt, metric):
            return r
    return None
