"""Intervals and comparisons for trait scores, with seeds as the unit of replication.

- Rates (every value 0 or 1) get Wilson intervals; other means get seeded bootstrap (BCa) intervals,
  except bounded values with more than `LARGE_N` rows, which get a Student-t interval (at that n the
  CLT makes it accurate for values in [0, 1], and the bootstrap would only add Monte Carlo noise).
  The bootstrap runs in chunks of resamples (memory O(n), time O(n * resamples)) and its BCa
  acceleration comes from the closed-form jackknife of the mean, so nothing n x n or n x B is built.
- Several samples per prompt (generations with n > 1) are not independent: with `clusters` (the
  prompt each row was sampled from), per-prompt means are the unit and the interval is a t-interval
  across them (`ci_method` "cluster-t"), the standard summary-measure analysis of clustered data.
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
LARGE_N = 10_000
"""Bounded, non-binary row values above this count get a t-interval instead of the bootstrap."""
_CHUNK = 1 << 21
"""Bootstrap resamples are drawn in chunks of about this many indices (~24 MB of working memory)."""


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
    unit: Literal["seeds", "rows", "prompts"]
    """`seeds`: across seed means; `rows`: within one seed (or no seeds given); `prompts`: across
    per-prompt means (several samples per prompt)."""
    confidence: float = 0.95
    note: str = ""
    ci_method: str = ""
    """The exact interval: wilson, bca-bootstrap, percentile-bootstrap, t, t-across-seeds, cluster-t, none."""
    n_clusters: int = 0
    """Distinct prompts behind the scorable values when clusters were given (0: not given)."""

    @classmethod
    def empty(
        cls,
        unit: Literal["seeds", "rows", "prompts"],
        note: str = "",
        *,
        confidence: float = 0.95,
        **fields: object,
    ) -> Summary:
        """No interval: NaN mean and bounds, n = 0, method "none" (`fields` overrides, e.g. a known mean)."""
        base: dict[str, object] = dict(
            mean=NAN, ci_low=NAN, ci_high=NAN, n=0, n_seeds=0, method="none", ci_method="none"
        )
        return cls(**{**base, **fields}, unit=unit, confidence=confidence, note=note)  # type: ignore[arg-type]

    def describe(self) -> str:
        """One line on what the interval treats as independent, e.g. for CLI output."""
        if self.n_clusters:
            what = f"n = {self.n} samples from {self.n_clusters} prompts"
        else:
            what = f"n = {self.n} rows"
        if self.unit == "seeds":
            how = f"CI across {self.n_seeds} seeds" if self.n_seeds >= 2 else "no CI"
        elif self.unit == "prompts":
            how = "CI clusters by prompt"
        elif self.n_clusters and self.n_clusters == self.n:
            how = "one sample per prompt; CI across rows"
        else:
            how = "CI across rows"
        if self.method == "none":
            how = "no CI"
        return f"{what}; {how}"


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


def bootstrap_means(arr: np.ndarray, n_resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `n_resamples` bootstrap resamples of `arr`, drawn a chunk of resamples at a time.

    Draws the same index stream as one `rng.integers(0, n, (n_resamples, n))` call (what
    `scipy.stats.bootstrap` draws), so the result equals scipy's bootstrap distribution, but memory
    is O(n + n_resamples) rather than O(n * n_resamples).
    """
    n = int(arr.size)
    per = max(1, _CHUNK // max(n, 1))
    out = np.empty(n_resamples, dtype=float)
    dtype = np.int32 if n < 2**31 else np.int64  # same draws either way; int32 halves the memory
    for k in range(0, n_resamples, per):
        c = min(per, n_resamples - k)
        idx = rng.integers(0, n, (c, n), dtype=dtype)
        out[k : k + c] = arr[idx].mean(axis=-1)
    return out


def _bca_alphas(arr: np.ndarray, boot: np.ndarray, alpha: float) -> tuple[float, float]:
    """BCa percentiles (Efron & Tibshirani 1993, eq. 14.10 and 14.15) for the mean, in O(n).

    The jackknife acceleration needs the leave-one-out means (S - x_i) / (n - 1); their deviations
    from their average are (x_i - mean) / (n - 1), so a = sum(d^3) / (6 * sum(d^2)^1.5) with
    d = x - mean, without building the n leave-one-out samples.
    """
    theta = float(arr.mean())
    pct = (np.count_nonzero(boot < theta) + np.count_nonzero(boot <= theta)) / (2 * boot.size)
    z0 = float(sps.norm.ppf(pct))
    d = arr - theta
    a = float(np.sum(d**3) / (6.0 * np.sum(d**2) ** 1.5))
    z_lo = float(sps.norm.ppf(alpha))
    with np.errstate(all="ignore"):
        n1, n2 = z0 + z_lo, z0 - z_lo
        a1 = float(sps.norm.cdf(z0 + n1 / (1 - a * n1)))
        a2 = float(sps.norm.cdf(z0 + n2 / (1 - a * n2)))
    return a1, a2


def bootstrap_interval(
    values: Sequence[float], confidence: float = 0.95, *, n_resamples: int = 9999, seed: int = 0
) -> tuple[float, float, str]:
    """`bootstrap_ci` and which interval it is: bca-bootstrap, or percentile-bootstrap where BCa is
    undefined (or "none" / "constant" for too few / identical values)."""
    arr = _clean(values)
    if arr.size < 2:
        return NAN, NAN, "none"
    if np.all(arr == arr[0]):
        return float(arr[0]), float(arr[0]), "constant"
    boot = bootstrap_means(arr, n_resamples, np.random.default_rng(seed))
    alpha = (1 - confidence) / 2
    a1, a2 = _bca_alphas(arr, boot, alpha)
    if not (math.isnan(a1) or math.isnan(a2)):
        lo, hi = np.quantile(boot, [a1, a2])
        if not (math.isnan(lo) or math.isnan(hi)):
            return float(lo), float(hi), "bca-bootstrap"
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return float(lo), float(hi), "percentile-bootstrap"


def bootstrap_ci(
    values: Sequence[float], confidence: float = 0.95, *, n_resamples: int = 9999, seed: int = 0
) -> tuple[float, float]:
    """Seeded BCa bootstrap interval for the mean (percentile if BCa is undefined).

    Fewer than two values give NaNs; identical values give a zero-width interval. Equals
    `scipy.stats.bootstrap(..., method="BCa")` with the same seed (to rounding), in O(n) memory.
    """
    lo, hi, _ = bootstrap_interval(values, confidence, n_resamples=n_resamples, seed=seed)
    return lo, hi


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
    values: Sequence[float],
    *,
    bounded: bool = True,
    confidence: float = 0.95,
    seed: int = 0,
    method: Literal["auto", "bootstrap", "t"] = "auto",
) -> Summary:
    """Rows as the unit: Wilson if every value is 0/1 (and the scorer is bounded); else a t-interval
    for bounded values when n > LARGE_N; else the (chunked, BCa) bootstrap.

    `method` forces the bootstrap or the t-interval for non-binary values (benchmarks, checks).
    """
    arr = _clean(values)
    n = int(arr.size)
    if n == 0:
        return Summary.empty("rows", "no scorable values", confidence=confidence)
    mean = float(arr.mean())
    chosen: Method
    if bounded and is_binary(arr):
        lo, hi = wilson(int(arr.sum()), n, confidence)
        chosen, ci_method = "wilson", "wilson"
    elif method == "t" or (method == "auto" and bounded and n > LARGE_N):
        lo, hi = _clamp(*t_interval(arr, confidence), bounded)
        chosen, ci_method = "t", "t"
    else:
        lo, hi, ci_method = bootstrap_interval(arr, confidence, seed=seed)
        lo, hi = _clamp(lo, hi, bounded)
        chosen = "bootstrap"
    return Summary(
        mean=mean,
        ci_low=lo,
        ci_high=hi,
        n=n,
        n_seeds=0,
        method=chosen,
        unit="rows",
        confidence=confidence,
        ci_method=ci_method,
    )


def summarize_clustered(
    values: Sequence[float],
    clusters: Sequence[Hashable],
    *,
    bounded: bool = True,
    confidence: float = 0.95,
    seed: int = 0,
) -> Summary:
    """Several samples per prompt: the prompt is the unit.

    Each prompt's scorable samples are averaged and the interval is a Student-t interval across the
    per-prompt means (`ci_method` "cluster-t"); the mean is the mean of the per-prompt means, so
    every prompt weighs the same. When no prompt has two scorable samples the rows are independent
    and the row-level interval is used; with a single prompt there is nothing to replicate across,
    so the row-level interval is reported with a note. `n_clusters` counts the prompts.
    """
    if len(clusters) != len(values):
        raise ValueError(f"summarize_clustered: {len(values)} values but {len(clusters)} clusters")
    groups: dict[Hashable, list[float]] = {}
    for v, c in zip(values, clusters, strict=True):
        if not math.isnan(float(v)):
            groups.setdefault(c, []).append(float(v))
    k = len(groups)
    n = sum(len(g) for g in groups.values())
    if k < 2 or all(len(g) == 1 for g in groups.values()):
        s = summarize_values(values, bounded=bounded, confidence=confidence, seed=seed)
        note = "one prompt: interval is across its samples, not across prompts" if k == 1 and n > 1 else ""
        return s.model_copy(update={"n_clusters": k, "note": note or s.note})
    means = np.array([np.mean(g) for g in groups.values()])
    lo, hi = _clamp(*t_interval(means, confidence), bounded)
    return Summary(
        mean=float(means.mean()),
        ci_low=lo,
        ci_high=hi,
        n=n,
        n_seeds=0,
        method="t",
        unit="prompts",
        confidence=confidence,
        note="mean of per-prompt means; t-interval across prompts",
        ci_method="cluster-t",
        n_clusters=k,
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
            ci_method="t-across-seeds",
        )
    note = "one seed: interval is within the seed (rows as the unit), not across seeds"
    if within is not None and _clean(within).size:
        s = summarize_values(within, bounded=bounded, confidence=confidence, seed=seed)
        return s.model_copy(update={"n_seeds": k, "note": note})
    if k == 1:
        return Summary.empty(
            "seeds",
            "one seed and no row values: no interval",
            confidence=confidence,
            mean=float(means[0]),
            n=n_rows if n_rows is not None else 1,
            n_seeds=1,
        )
    return Summary.empty("seeds", "no scorable values", confidence=confidence)


def summarize_rows(
    values: Sequence[float],
    seeds: Sequence[Hashable] | None = None,
    *,
    clusters: Sequence[Hashable] | None = None,
    bounded: bool = True,
    confidence: float = 0.95,
    seed: int = 0,
) -> Summary:
    """Average within each seed, then summarize across seeds; no seeds means rows are the unit.

    The mean weights seeds equally, whatever their row counts. `clusters` (the prompt each row was
    sampled from) matters when there are fewer than two seeds: several samples of one prompt are
    then clustered (`summarize_clustered`). With two or more seeds the seeds stay the unit.
    """
    if seeds is not None and len(seeds) != len(values):
        raise ValueError(f"summarize_rows: {len(values)} values but {len(seeds)} seeds")
    if clusters is not None and len(clusters) != len(values):
        raise ValueError(f"summarize_rows: {len(values)} values but {len(clusters)} clusters")
    n_clusters = 0
    if clusters is not None:
        n_clusters = len({c for v, c in zip(values, clusters, strict=True) if not math.isnan(float(v))})
    if seeds is None:
        if clusters is not None:
            return summarize_clustered(values, clusters, bounded=bounded, confidence=confidence, seed=seed)
        return summarize_values(values, bounded=bounded, confidence=confidence, seed=seed)
    groups: dict[Hashable, list[float]] = {}
    for v, s in zip(values, seeds, strict=True):
        if not math.isnan(float(v)):
            groups.setdefault(s, []).append(float(v))
    if len(groups) == 1 and clusters is not None:
        s = summarize_clustered(values, clusters, bounded=bounded, confidence=confidence, seed=seed)
        note = "one seed: interval is within the seed, not across seeds"
        return s.model_copy(update={"n_seeds": 1, "note": f"{note}; {s.note}" if s.note else note})
    per_seed = [float(np.mean(g)) for g in groups.values()]
    n_rows = sum(len(g) for g in groups.values())
    within = next(iter(groups.values())) if len(groups) == 1 else None
    s = summarize_seeds(
        per_seed, within=within, n_rows=n_rows, bounded=bounded, confidence=confidence, seed=seed
    )
    return s.model_copy(update={"n_clusters": n_clusters}) if n_clusters else s


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
