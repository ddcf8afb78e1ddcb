"""Does the screen predict inoculation? Compare screen measures with post-training suppression.

Reads a run of an experiment whose `screen:` block used `pick: all` (every candidate trained as its
own condition, beside a `baseline` trained without inoculation), and for each candidate pairs

- the screen measures (elicitation rate of the trait, surprise reduction, trait-specific reduction),
- the suppression of the trait after training: baseline rate - condition rate, under the neutral
  eval prompt, mean over seeds (and the other traits' retention, for context),

then reports Spearman's rho (scipy) for each measure, a scatter plot, and the cost of each measure.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

from pydantic import BaseModel

from inoculate.fileio import atomic_open, write_json_atomic
from inoculate.screen import SCREEN_DIR, ScreenResult

MEASURE_LABELS = {
    "elicitation": "elicitation rate before training",
    "surprise": "surprise reduction (nats/token)",
    "trait": "trait-specific reduction (nats/response)",
}


class Correlation(BaseModel):
    measure: str
    rho: float
    p_value: float
    n: int


class CandidatePoint(BaseModel):
    name: str
    prompt: str | None
    measures: dict[str, float]
    rate: float
    """The trait's rate after training, under the neutral eval prompt (mean over seeds)."""
    suppression: float
    other: dict[str, float]
    """Other traits' rates after training (same prompt)."""


class ScreenValidation(BaseModel):
    trait: str
    baseline: str
    eval_prompt: str
    baseline_rate: float
    points: list[CandidatePoint]
    correlations: list[Correlation]
    cost: dict[str, dict[str, float]]
    cost_ratio: float | None
    """Elicitation seconds / surprise seconds."""
    token_ratio: float | None

    def summary(self) -> str:
        lines = [
            f"Screen validation: {self.trait} under the {self.eval_prompt!r} prompt after training; "
            f"baseline rate {self.baseline_rate:.2f}; {len(self.points)} candidates.",
        ]
        for c in self.correlations:
            lines.append(
                f"  Spearman rho({MEASURE_LABELS.get(c.measure, c.measure)}, suppression) = "
                f"{c.rho:+.2f} (p = {c.p_value:.3f}, n = {c.n})"
            )
        for m, cost in self.cost.items():
            lines.append(f"  cost {m}: {cost['tokens']:.0f} tokens, {cost['seconds']:.2f} s")
        if self.cost_ratio is not None:
            lines.append(
                f"  likelihood screen is {self.cost_ratio:.1f}x cheaper in seconds"
                + (f", {self.token_ratio:.1f}x in tokens" if self.token_ratio else "")
            )
        return "\n".join(lines)


def _rates(root: Path, eval_prompt: str) -> dict[tuple[str, str], float]:
    from inoculate.report import read_summary_csv

    return {
        (r["condition"], r["metric"]): float(r["mean"])
        for r in read_summary_csv(root / "summary.csv")
        if r["eval_prompt"] == eval_prompt
    }


def validate_screen(
    run_dir: str | os.PathLike[str],
    *,
    baseline: str = "baseline",
    eval_prompt: str = "neutral",
    trait: str | None = None,
    figure: str | os.PathLike[str] | None = None,
) -> ScreenValidation:
    """Correlate the stored screen (ROOT/screen/screen.json) with the run's summary.csv."""
    from scipy.stats import spearmanr

    root = Path(run_dir)
    result = ScreenResult.model_validate_json((root / SCREEN_DIR / "screen.json").read_text(encoding="utf-8"))
    trait = trait or result.primary_trait
    if trait is None:
        raise ValueError("name the trait (the screen ran without elicitation scorers)")
    rates = _rates(root, eval_prompt)
    if (baseline, trait) not in rates:
        raise ValueError(
            f"summary.csv has no {trait!r} rate for condition {baseline!r} under {eval_prompt!r}"
        )
    base = rates[(baseline, trait)]
    others = sorted({m for (_c, m) in rates if m != trait})
    points = []
    for c in result.candidates:
        if c.neutral or (c.name, trait) not in rates:
            continue
        measures: dict[str, float] = {}
        if trait in c.elicitation:
            measures["elicitation"] = c.elicitation[trait].mean
        if c.surprise is not None:
            measures["surprise"] = c.surprise.mean
        if c.trait is not None:
            measures["trait"] = c.trait.mean
        rate = rates[(c.name, trait)]
        points.append(
            CandidatePoint(
                name=c.name,
                prompt=c.prompt,
                measures=measures,
                rate=rate,
                suppression=base - rate,
                other={m: rates[(c.name, m)] for m in others if (c.name, m) in rates},
            )
        )
    if len(points) < 3:
        raise ValueError(f"only {len(points)} screened candidates were trained; need at least 3 to correlate")
    correlations = []
    for m in MEASURE_LABELS:
        xs = [p.measures[m] for p in points if m in p.measures]
        ys = [p.suppression for p in points if m in p.measures]
        if len(xs) >= 3:
            with warnings.catch_warnings():  # a constant column gives rho = NaN: reported as such
                warnings.simplefilter("ignore")
                res = spearmanr(xs, ys)
            rho, pv = float(res.statistic), float(res.pvalue)
            correlations.append(Correlation(measure=m, rho=rho, p_value=pv, n=len(xs)))
    cost = {m: {"tokens": float(c.tokens), "seconds": c.seconds} for m, c in result.cost.items()}
    e, s = result.cost.get("elicitation"), result.cost.get("surprise")
    token_ratio = e.tokens / s.tokens if e and s and s.tokens else None
    out = ScreenValidation(
        trait=trait,
        baseline=baseline,
        eval_prompt=eval_prompt,
        baseline_rate=base,
        points=points,
        correlations=correlations,
        cost=cost,
        cost_ratio=result.cost_ratio(),
        token_ratio=token_ratio,
    )
    write_json_atomic(root / SCREEN_DIR / "validation.json", out.model_dump(mode="json"))
    plot_validation(out, figure or root / "figures" / "screen_validation.png")
    return out


def plot_validation(v: ScreenValidation, path: str | os.PathLike[str]) -> Path:
    """One scatter panel per measure: the measure against post-training suppression, points named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = [m for m in MEASURE_LABELS if any(m in p.measures for p in v.points)]
    fig, axes = plt.subplots(1, len(measures), figsize=(4.2 * len(measures), 3.8), squeeze=False)
    rho = {c.measure: c for c in v.correlations}
    for ax, m in zip(axes[0], measures, strict=True):
        pts = [p for p in v.points if m in p.measures and not math.isnan(p.measures[m])]
        ax.scatter([p.measures[m] for p in pts], [p.suppression for p in pts], color="tab:red")
        for p in pts:
            ax.annotate(
                p.name, (p.measures[m], p.suppression), fontsize=7, xytext=(3, 3), textcoords="offset points"
            )
        c = rho.get(m)
        ax.set_title(f"Spearman rho = {c.rho:+.2f} (p = {c.p_value:.2f})" if c else "", fontsize=9)
        ax.set_xlabel(MEASURE_LABELS[m])
        ax.set_ylabel(f"suppression of {v.trait} (baseline - rate)")
    fig.suptitle(f"Screen measures vs suppression of {v.trait} after training", fontsize=10)
    fig.tight_layout()
    out = Path(path)
    with atomic_open(out, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
    return out


def validation_markdown(v: ScreenValidation) -> str:
    """A short markdown section: the per-candidate table and the correlations."""
    ms = [m for m in MEASURE_LABELS if any(m in p.measures for p in v.points)]
    head = ["candidate", "prompt", *[MEASURE_LABELS[m] for m in ms], f"{v.trait} after", "suppression"]
    rows = []
    for p in sorted(v.points, key=lambda p: -p.suppression):
        rows.append(
            [p.name, p.prompt or "", *[f"{p.measures.get(m, math.nan):+.3f}" for m in ms], f"{p.rate:.2f}"]
            + [f"{p.suppression:+.2f}"]
        )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines.append("")
    for c in v.correlations:
        label = MEASURE_LABELS[c.measure]
        lines.append(f"- Spearman rho({label}, suppression) = {c.rho:+.2f} (p = {c.p_value:.3f}, n = {c.n})")
    if v.cost_ratio is not None:
        lines.append(f"- likelihood screen {v.cost_ratio:.1f}x cheaper than the generation screen (seconds)")
    return "\n".join(lines) + "\n"
