"""Bar plots (PNG, matplotlib Agg) of each metric under one eval prompt, across conditions, with CIs."""

from __future__ import annotations

import math
import os
from pathlib import Path

from inoculate.fileio import save_figure
from inoculate.report.load import RunData
from inoculate.report.tables import SummaryRow, lookup


def bar_plot(
    run: RunData, rows: list[SummaryRow], metric: str, eval_prompt: str, path: str | os.PathLike[str]
) -> Path:
    """One bar per condition (mean over seeds), 95% CI error bars, each seed's value as a dot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    conds = run.conditions
    means, lo_err, hi_err = [], [], []
    for c in conds:
        r = lookup(rows, c, eval_prompt, metric)
        m = r.mean if r is not None else math.nan
        means.append(0.0 if math.isnan(m) else m)
        lo = r.ci_low if r is not None else math.nan
        hi = r.ci_high if r is not None else math.nan
        lo_err.append(0.0 if math.isnan(lo) or math.isnan(m) else max(m - lo, 0.0))
        hi_err.append(0.0 if math.isnan(hi) or math.isnan(m) else max(hi - m, 0.0))
    fig, ax = plt.subplots(figsize=(1.3 * len(conds) + 2, 3.6))
    x = list(range(len(conds)))
    ax.bar(x, means, yerr=[lo_err, hi_err], capsize=5, color="#4C72B0", alpha=0.85, label="mean over seeds")
    for i, c in enumerate(conds):
        vals = [cell.value(eval_prompt, metric) for cell in run.cells_of(c)]
        vals = [v for v in vals if not math.isnan(v)]
        ax.scatter(
            [i] * len(vals), vals, color="black", s=12, zorder=3, label="seed" if i == 0 and vals else None
        )
    ax.set_xticks(x)
    ax.set_xticklabels(conds, rotation=20, ha="right")
    info = run.metrics[metric]
    for i, m in enumerate(means):
        ax.annotate(
            f"{m:.2f}", (i, m + hi_err[i]), textcoords="offset points", xytext=(0, 3), ha="center", fontsize=8
        )
    if info.bounded:
        ax.set_ylim(0, 1.22)
        ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel(f"{metric} ({info.kind})")
    ax.set_title(f"{run.name}: {metric} under the '{eval_prompt}' prompt (95% CI over seeds)")
    ax.legend(loc="upper center", ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    out = Path(path)
    save_figure(fig, out, bbox_inches="tight")
    return out


def write_figures(run: RunData, rows: list[SummaryRow], out: str | os.PathLike[str]) -> list[Path]:
    """figures/<metric>_<prompt>.png for every trait (and capability) under the headline prompt."""
    prompt = run.neutral_prompt
    if prompt is None:
        return []
    figdir = Path(out) / "figures"
    return [bar_plot(run, rows, metric, prompt, figdir / f"{metric}_{prompt}.png") for metric in run.metrics]
