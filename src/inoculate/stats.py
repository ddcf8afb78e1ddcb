"""Intervals and comparisons for trait scores, with seeds as the unit of replication.

- Rates (every value 0 or 1) get Wilson intervals; other means get seeded bootstrap (BCa) intervals.
- With two or more seeds, rows are averaged within each seed and the interval is a Student-t
  interval across the seed means. A t-interval rather than a bootstrap: with 3 seeds a bootstrap has
  only 10 distinct resamples and its percentile interval badly under-covers, while the t-interval
  is exact for normal seed means and is the standard choice for a handful of replicates.
- With one seed there is nothing to replicate across, so the within-seed (row-level) interval is
  reported instead and `Summary.unit` says "rows".

All computation goes through scipy; NaN scores ("not scorable") are dropped before anything else.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Hashable, Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict
from scipy import stats as sps

NAN = float("nan")
Method = Literal["t", "wilson", "bootstrap", "none"]


class Summary(BaseModel):
    """A mean with its interval, and what the interval is across."""

    model_config = ConfigDict(frozen=True)

    mean: float
    ci_low: float
    ci_high: float
    n: int
    """Non-NaN values (rows) behind the mean."""
    n_seeds: int
    method: Method
    unit: Literal["seeds", "rows"]
    """`seeds`: the interval is across seed means; `rows`: within one seed (or no seeds given)."""
    confidence: float = 0.95
    note: str = ""


class PairedComparison(BaseModel):
    """Mean of (a - b) over paired units, its interval, and a two-sided p-value."""

    model_config = ConfigDict(frozen=True)

    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    method: Literal["paired-t", "permutation"]
    confidence: float = 0.95


def _clean(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    return arr[~np.isnan(arr)]


def _clamp(lo: float, hi: float, bounded: bool) -> tuple[float, float]:
    """Rates live in [0, 1]; a t-interval on a rate can stray outside (NaN stays NaN)."""
    if not bounded:
        return lo, hi
    return (float(np.clip(lo, 0.0, 1.0)), float(np.clip(hi, 0.0, 1.0)))


def _rng_kwargs(fn: object, seed: int) -> dict[str, object]:
    """scipy >= 1.15 takes `rng`; older versions `random_state`."""
    params = inspect.signature(fn).parameters  # type: ignore[arg-type]
    key = "rng" if "rng" in params else "random_state"
    return {key: np.random.default_rng(seed)}


def is_binary(values: Sequence[float]) -> bool:
    arr = _clean(values)
    return arr.size > 0 and bool(np.all((arr == 0.0) | (arr == 1.0)))


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials (NaNs when n == 0)."""
    if n <= 0:
        return NAN, NAN
    ci = sps.binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return _clamp(float(ci.low), float(ci.high), True)


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, *, n_resamples: int = 9999, seed: int = 0
) -> tuple[float, float]:
    """Seeded BCa bootstrap interval for the mean (percentile if BCa is undefined).

    Fewer than two values give NaNs; identical values give a zero-width interval.
    """
    arr = _clean(values)
    if arr.size < 2:
        return NAN, NAN
    if np.all(arr == arr[0]):
        return float(arr[0]), float(arr[0])
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = sps.bootstrap(
                (arr,),
                np.mean,
                confidence_level=confidence,
                n_resamples=n_resamples,
                method=method,
                **_rng_kwargs(sps.bootstrap, seed),
            )
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if not (math.isnan(lo) or math.isnan(hi)):
            return lo, hi
    return NAN, NAN


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean: mean +- t(df=n-1) * sd / sqrt(n)."""
    arr = _clean(values)
    if arr.size < 2:
        return NAN, NAN
    mean = float(arr.mean())
    sem = float(sps.sem(arr))
    if sem == 0.0:
        return mean, mean
    lo, hi = sps.t.interval(confidence, df=arr.size - 1, loc=mean, scale=sem)
    return float(lo), float(hi)


def summarize_values(
    values: Sequence[float], *, bounded: bool = True, confidence: float = 0.95, seed: int = 0
) -> Summary:
    """Rows as the unit: Wilson if every value is 0/1 (and the scorer is bounded), else bootstrap."""
    arr = _clean(values)
    n = int(arr.size)
    if n == 0:
        return Summary(
            mean=NAN,
            ci_low=NAN,
            ci_high=NAN,
            n=0,
            n_seeds=0,
            method="none",
            unit="rows",
            confidence=confidence,
            note="no scorable values",
        )
    mean = float(arr.mean())
    if bounded and is_binary(arr):
        lo, hi = wilson(int(arr.sum()), n, confidence)
        method: Method = "wilson"
    else:
        lo, hi = _clamp(*bootstrap_ci(arr, confidence, seed=seed), bounded)
        method = "bootstrap"
    return Summary(
        mean=mean, ci_low=lo, ci_high=hi, n=n, n_seeds=0, method=method, unit="rows", confidence=confidence
    )


def summarize_seeds(
    per_seed: Sequence[float],
    *,
    within: Sequence[float] | None = None,
    n_rows: int | None = None,
    bounded: bool = True,
    confidence: float = 0.95,
    seed: int = 0,
) -> Summary:
    """Summarize per-seed means: a t-interval across seeds when there are two or more.

    With one seed, `within` (that seed's row values) gives the fallback row-level Wilson/bootstrap
    interval; without it the interval is NaN. `n_rows` is reported as `n` (defaults to the seeds).
    """
    means = _clean(per_seed)
    k = int(means.size)
    if k >= 2:
        lo, hi = _clamp(*t_interval(means, confidence), bounded)
        return Summary(
            mean=float(means.mean()),
            ci_low=lo,
            ci_high=hi,
            n=n_rows if n_rows is not None else k,
            n_seeds=k,
            method="t",
            unit="seeds",
            confidence=confidence,
        )
    note = "one seed: interval is within the seed (rows as the unit), not across seeds"
    if within is not None and _clean(within).size:
        s = summarize_values(within, bounded=bounded, confidence=confidence, seed=seed)
        return s.model_copy(update={"n_seeds": k, "note": note})
    if k == 1:
        return Summary(
            mean=float(means[0]),
            ci_low=NAN,
            ci_high=NAN,
            n=n_rows if n_rows is not None else 1,
            n_seeds=1,
            method="none",
            unit="seeds",
            confidence=confidence,
            note="one seed and no row values: no interval",
        )
    return Summary(
        mean=NAN,
        ci_low=NAN,
        ci_high=NAN,
        n=0,
        n_seeds=0,
        method="none",
        unit="seeds",
        confidence=confidence,
        note="no scorable values",
    )


def summarize_rows(
    values: Sequence[float],
    seeds: Sequence[Hashable] | None = None,
    *,
    bounded: bool = True,
    confidence: float = 0.95,
    seed: int = 0,
) -> Summary:
    """Average within each seed, then summarize across seeds; no seeds means rows are the unit.

    The mean weights seeds equally, whatever their row counts.
    """
    if seeds is None:
        return summarize_values(values, bounded=bounded, confidence=confidence, seed=seed)
    if len(seeds) != len(values):
        raise ValueError(f"summarize_rows: {len(values)} values but {len(seeds)} seeds")
    groups: dict[Hashable, list[float]] = {}
    for v, s in zip(values, seeds, strict=True):
        if not math.isnan(float(v)):
            groups.setdefault(s, []).append(float(v))
    per_seed = [float(np.mean(g)) for g in groups.values()]
    n_rows = sum(len(g) for g in groups.values())
    within = next(iter(groups.values())) if len(groups) == 1 else None
    return summarize_seeds(
        per_seed, within=within, n_rows=n_rows, bounded=bounded, confidence=confidence, seed=seed
    )


def paired(
    a_by_seed: Sequence[float] | Mapping[Hashable, float],
    b_by_seed: Sequence[float] | Mapping[Hashable, float],
    *,
    confidence: float = 0.95,
) -> PairedComparison:
    """Compare two conditions run on the same seeds (and prompts): paired t-test on a - b.

    Sequences are paired by position, mappings by key (the keys must match). Pairs with a NaN are
    dropped. When every difference is exactly zero the p-value is 1.0 (scipy's t is 0/0 there).
    """
    a, b = _align(a_by_seed, b_by_seed)
    diff = a - b
    n = int(diff.size)
    if n == 0:
        return PairedComparison(
            mean_diff=NAN, ci_low=NAN, ci_high=NAN, p_value=NAN, n=0, method="paired-t", confidence=confidence
        )
    lo, hi = t_interval(diff, confidence)
    if n < 2:
        p = NAN
    elif np.all(diff == 0):
        p = 1.0
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p = float(sps.ttest_rel(a, b).pvalue)
    return PairedComparison(
        mean_diff=float(diff.mean()),
        ci_low=lo,
        ci_high=hi,
        p_value=p,
        n=n,
        method="paired-t",
        confidence=confidence,
    )


def paired_permutation(
    a: Sequence[float],
    b: Sequence[float],
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> PairedComparison:
    """Per-prompt paired comparison without a normality assumption.

    p-value: sign-flip permutation test of the mean difference (exact when 2**n <= n_resamples);
    interval: seeded bootstrap of the mean difference. Use it when there is a single seed but
    many prompts scored under both conditions.
    """
    x, y = _align(a, b)
    diff = x - y
    n = int(diff.size)
    if n == 0:
        return PairedComparison(
            mean_diff=NAN,
            ci_low=NAN,
            ci_high=NAN,
            p_value=NAN,
            n=0,
            method="permutation",
            confidence=confidence,
        )
    if np.all(diff == 0):
        p = 1.0
    else:
        res = sps.permutation_test(
            (x, y),
            lambda u, v, axis: np.mean(u - v, axis=axis),
            permutation_type="samples",
            vectorized=True,
            n_resamples=n_resamples,
            **_rng_kwargs(sps.permutation_test, seed),
        )
        p = float(res.pvalue)
    lo, hi = bootstrap_ci(diff, confidence, n_resamples=n_resamples, seed=seed)
    return PairedComparison(
        mean_diff=float(diff.mean()),
        ci_low=lo,
        ci_high=hi,
        p_value=p,
        n=n,
        method="permutation",
        confidence=confidence,
    )


def _align(
    a: Sequence[float] | Mapping[Hashable, float], b: Sequence[float] | Mapping[Hashable, float]
) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        if not (isinstance(a, Mapping) and isinstance(b, Mapping)):
            raise ValueError("paired: give two mappings (seed -> value) or two sequences, not one of each")
        if set(a) != set(b):
            only_a, only_b = sorted(map(str, set(a) - set(b))), sorted(map(str, set(b) - set(a)))
            raise ValueError(f"paired: seeds differ (only in a: {only_a}; only in b: {only_b})")
        keys = list(a)
        xa = np.array([a[k] for k in keys], dtype=float)
        xb = np.array([b[k] for k in keys], dtype=float)
    else:
        if len(a) != len(b):
            raise ValueError(f"paired: {len(a)} values in a but {len(b)} in b")
        xa, xb = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    keep = ~(np.isnan(xa) | np.isnan(xb))
    return xa[keep], xb[keep]
