"""Does the screen predict inoculation? Compare screen measures with post-training suppression.

Reads a run of an experiment whose `screen:` block used `pick: all` (every candidate trained as its
own condition, beside a `baseline` trained without inoculation), and for each candidate pairs

- the screen measures (elicitation rate of the trait, surprise reduction, trait-specific reduction),
- the suppression of the trait after training: baseline rate - condition rate, under the neutral
  eval prompt, mean over seeds (and the other traits' retention, for context),

then reports Spearman's rho (scipy) for each measure, a scatter plot, and the cost of each measure.

Sample size (`sample_size_curve`): each measure is recomputed on random subsets of its examples (the
same subset for every candidate, as a smaller screen would be), to show how few examples rank the
candidates as the full screen does, and what that costs (the measured seconds scaled linearly to the
subset size).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from inoculate.fileio import save_figure, write_json_atomic
from inoculate.report.tables import read_summary_csv
from inoculate.rundir import SCREEN_DIR
from inoculate.screen import MeasureLabels, ScreenResult, measure_info

MEASURE_LABELS = MeasureLabels()
"""Measure name -> axis label, from the measure registry (plugin measures included), in column order."""


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


class SampleSizePoint(BaseModel):
    measure: str
    k: int
    """Examples per candidate (surprise, trait: training responses; elicitation: samples)."""
    rho_full: float
    """Mean over draws of Spearman(subset measure, full measure) across candidates."""
    rho_suppression: float
    """Mean over draws of Spearman(subset measure, suppression)."""
    seconds: float
    """The measure's total measured seconds x k / (examples it used)."""


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
    sample_size: list[SampleSizePoint] = Field(default_factory=list)

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


def _rates(root: Path, eval_prompt: str, rows: Sequence[Any] | None) -> dict[tuple[str, str], float]:
    if rows is not None:
        return {(r.condition, r.metric): float(r.mean) for r in rows if r.eval_prompt == eval_prompt}

    return {
        (r["condition"], r["metric"]): float(r["mean"])
        for r in read_summary_csv(root / "summary.csv")
        if r["eval_prompt"] == eval_prompt
    }


def _value_key(measure: str, trait: str) -> str:
    return measure_info(measure).key(trait)


def _cost_key(measure: str) -> str:
    """The measure whose cost covers this one (a `part_of` measure shares its owner's pass)."""
    return measure_info(measure).part_of or measure


def _spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    from scipy.stats import spearmanr

    with warnings.catch_warnings():  # a constant column gives NaN: left out of the mean
        warnings.simplefilter("ignore")
        return float(spearmanr(xs, ys).statistic)


def sample_size_curve(
    result: ScreenResult,
    points: Sequence[CandidatePoint],
    trait: str,
    *,
    grid: Sequence[int] = (4, 8, 16, 32, 64, 128, 256),
    draws: int = 200,
    seed: int = 0,
) -> list[SampleSizePoint]:
    """Each measure on random k-subsets of its per-example values (same subset for all candidates)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    supp = [p.suppression for p in points]
    out = []
    for m in MEASURE_LABELS:
        key = _value_key(m, trait)
        cands = [result.get(p.name) for p in points]
        if not all(key in c.values for c in cands):
            continue
        vals = np.array([c.values[key] for c in cands], dtype=float)  # candidates x examples
        n = vals.shape[1]
        cost = result.cost.get(_cost_key(m))
        full = np.nanmean(vals, axis=1)
        for k in [k for k in grid if k < n] + [n]:
            r_full, r_supp = [], []
            for _ in range(draws if k < n else 1):
                idx = rng.choice(n, size=k, replace=False)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    means = np.nanmean(vals[:, idx], axis=1)
                r_full.append(_spearman(means, full))
                r_supp.append(_spearman(means, supp))
            out.append(
                SampleSizePoint(
                    measure=m,
                    k=k,
                    rho_full=float(np.nanmean(r_full)) if not np.all(np.isnan(r_full)) else math.nan,
                    rho_suppression=float(np.nanmean(r_supp)) if not np.all(np.isnan(r_supp)) else math.nan,
                    seconds=cost.seconds * k / n if cost else math.nan,
                )
            )
    return out


def smallest_k(curve: Sequence[SampleSizePoint], measure: str, agreement: float) -> SampleSizePoint | None:
    """The smallest subset whose ranking agrees with the full screen's at mean Spearman >= agreement."""
    pts = sorted((p for p in curve if p.measure == measure), key=lambda p: p.k)
    return next((p for p in pts if not math.isnan(p.rho_full) and p.rho_full >= agreement), None)


def validate_screen(
    run_dir: str | os.PathLike[str],
    *,
    baseline: str = "baseline",
    eval_prompt: str = "neutral",
    trait: str | None = None,
    figure: str | os.PathLike[str] | None = None,
    rows: Sequence[Any] | None = None,
) -> ScreenValidation:
    """Correlate the stored screen (ROOT/screen/screen.json) with the run's results: `rows`
    (`inoculate.report.SummaryRow`s) or else ROOT/summary.csv."""
    from scipy.stats import spearmanr

    root = Path(run_dir)
    result = ScreenResult.model_validate_json((root / SCREEN_DIR / "screen.json").read_text(encoding="utf-8"))
    trait = trait or result.primary_trait
    if trait is None:
        raise ValueError("name the trait (the screen ran without elicitation scorers)")
    rates = _rates(root, eval_prompt, rows)
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
        keys = {m: _value_key(m, trait) for m in MEASURE_LABELS}
        measures = {m: c.measures[k].mean for m, k in keys.items() if k in c.measures}
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
        sample_size=sample_size_curve(result, points, trait),
    )
    write_json_atomic(root / SCREEN_DIR / "validation.json", out.model_dump(mode="json"))
    plot_validation(out, figure or root / "figures" / "screen_validation.png")
    return out


def _label_groups(
    points: Sequence[tuple[float, float, str]], near: float = 0.06
) -> list[tuple[tuple[float, float], list[str]]]:
    """Points closer than `near` (as a fraction of each axis' span) share one label, so names do not
    overprint."""
    if not points:
        return []
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    sx, sy = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    groups: list[tuple[tuple[float, float], list[str]]] = []
    for x, y, name in sorted(points, key=lambda p: (-p[1], p[0])):
        for (gx, gy), names in groups:
            if abs(x - gx) / sx < near and abs(y - gy) / sy < near:
                names.append(name)
                break
        else:
            groups.append(((x, y), [name]))
    return groups


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
        for (x, y), names in _label_groups([(p.measures[m], p.suppression, p.name) for p in pts]):
            ax.annotate(
                "\n".join(names), (x, y), fontsize=7, xytext=(4, -2), textcoords="offset points", va="top"
            )
        c = rho.get(m)
        ax.set_title(f"Spearman rho = {c.rho:+.2f} (p = {c.p_value:.3f})" if c else "", fontsize=9)
        ax.set_xlabel(MEASURE_LABELS[m])
        ax.set_ylabel(f"suppression of {v.trait} (baseline - rate)")
    fig.suptitle(f"Screen measures vs suppression of {v.trait} after training", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


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
    lines += ["", *sample_size_markdown(v)]
    return "\n".join(lines) + "\n"


AGREEMENT = 0.9


def _rho(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.2f}"


def sample_size_markdown(v: ScreenValidation) -> list[str]:
    """How many examples each measure needs to rank as the full screen does, and what that costs."""
    if not v.sample_size:
        return []
    ms = [m for m in MEASURE_LABELS if any(p.measure == m for p in v.sample_size)]
    lines = [
        "Sample size: each measure recomputed on random subsets of k examples (200 draws; the same subset "
        "for every candidate). rho(full): mean Spearman with the full screen's ranking; rho(supp.): with "
        "suppression; seconds: the measured cost scaled to k.",
        "",
        "| measure | k | rho(full) | rho(supp.) | seconds |",
        "|---|---|---|---|---|",
    ]
    for p in v.sample_size:
        lines.append(
            f"| {p.measure} | {p.k} | {_rho(p.rho_full)} | {_rho(p.rho_suppression)} | {p.seconds:.3f} |"
        )
    lines.append("")
    picked = {m: smallest_k(v.sample_size, m, AGREEMENT) for m in ms}
    for m, p in picked.items():
        if p is None:
            lines.append(f"- {m}: no subset reaches rho(full) >= {AGREEMENT}")
        else:
            lines.append(
                f"- {m}: k = {p.k} ranks as the full screen does (rho {p.rho_full:+.2f} >= {AGREEMENT}); "
                f"{p.seconds:.3f} s"
            )
    e = picked.get("elicitation")
    for m in reversed(ms):  # the most specific likelihood measure first
        p = picked.get(m) if m != "elicitation" else None
        if e is not None and p is not None and p.seconds > 0:
            lines.append(
                f"- at equal agreement with its own full ranking, the {m} measure costs "
                f"{e.seconds / p.seconds:.1f}x less time than elicitation"
            )
    return lines
