"""The statistics module against values computed independently of it (closed forms, textbook tables)."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from inoculate.stats import (
    LARGE_N,
    Summary,
    bootstrap_ci,
    is_binary,
    paired,
    paired_permutation,
    summarize_rows,
    summarize_seeds,
    summarize_values,
    t_interval,
    wilson,
)

Z975 = 1.959963984540054  # standard normal 97.5% quantile


def wilson_by_formula(k: int, n: int, z: float = Z975) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def t975_df2() -> float:
    """t quantile for df = 2 in closed form: t = (2p - 1) / sqrt(2 p (1 - p)), p = 0.975."""
    p = 0.975
    return (2 * p - 1) / math.sqrt(2 * p * (1 - p))


def two_sided_p_df2(t: float) -> float:
    """Student-t with df = 2 has CDF 1/2 + t / (2 sqrt(2 + t^2)), so p = 1 - |t| / sqrt(2 + t^2)."""
    return 1 - abs(t) / math.sqrt(2 + t * t)


def mean_sd(xs: list[float]) -> tuple[float, float]:
    m = sum(xs) / len(xs)
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


@pytest.mark.parametrize("k,n", [(3, 10), (1, 7), (50, 100), (81, 263), (99, 100)])
def test_wilson_matches_the_closed_form(k: int, n: int) -> None:
    lo, hi = wilson(k, n)
    elo, ehi = wilson_by_formula(k, n)
    assert lo == pytest.approx(elo, abs=1e-12)
    assert hi == pytest.approx(ehi, abs=1e-12)


@pytest.mark.parametrize(
    "k,n,lo,hi",
    # Newcombe (1998), Statistics in Medicine 17:857-872, Table II, method 3 (Wilson score).
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_newcombe_1998(k: int, n: int, lo: float, hi: float) -> None:
    got = wilson(k, n)
    assert got[0] == pytest.approx(lo, abs=5e-5)
    assert got[1] == pytest.approx(hi, abs=5e-5)


def test_wilson_edges() -> None:
    assert wilson(0, 10)[0] == 0.0
    assert wilson(10, 10)[1] == 1.0
    assert all(math.isnan(x) for x in wilson(0, 0))


def test_t_interval_by_hand() -> None:
    xs = [0.2, 0.4, 0.9]
    m, sd = mean_sd(xs)
    half = t975_df2() * sd / math.sqrt(3)
    lo, hi = t_interval(xs)
    assert lo == pytest.approx(m - half, abs=1e-12)
    assert hi == pytest.approx(m + half, abs=1e-12)
    assert t975_df2() == pytest.approx(4.303, abs=5e-4)  # the printed table value


def test_summarize_seeds_uses_a_t_interval_across_seeds_and_clamps_rates() -> None:
    s = summarize_seeds([0.3, 0.45, 0.5])
    m, sd = mean_sd([0.3, 0.45, 0.5])
    half = t975_df2() * sd / math.sqrt(3)
    assert isinstance(s, Summary)
    assert (s.method, s.unit, s.n_seeds, s.n) == ("t", "seeds", 3, 3)
    assert s.mean == pytest.approx(m)
    assert (s.ci_low, s.ci_high) == pytest.approx((m - half, m + half))
    low = summarize_seeds([0.05, 0.1, 0.4])
    m, sd = mean_sd([0.05, 0.1, 0.4])
    assert low.ci_low == 0.0  # m - half < 0, clamped for a rate
    assert low.ci_high == pytest.approx(m + t975_df2() * sd / math.sqrt(3))
    high = summarize_seeds([0.9, 1.0, 1.0])
    assert high.ci_high == 1.0 and high.ci_low < 0.9
    raw = summarize_seeds([10.0, 20.0, 60.0], bounded=False)
    m, sd = mean_sd([10.0, 20.0, 60.0])
    assert raw.ci_low == pytest.approx(m - t975_df2() * sd / math.sqrt(3))
    assert raw.ci_low < 0  # not clamped


def test_summarize_seeds_with_one_seed_falls_back_to_the_within_seed_interval() -> None:
    rows = [1.0] * 7 + [0.0] * 13
    s = summarize_seeds([0.35], within=rows)
    assert (s.method, s.unit, s.n_seeds, s.n) == ("wilson", "rows", 1, 20)
    assert "one seed" in s.note
    assert (s.ci_low, s.ci_high) == pytest.approx(wilson_by_formula(7, 20))
    bare = summarize_seeds([0.35])
    assert bare.mean == 0.35 and math.isnan(bare.ci_low) and bare.method == "none"
    empty = summarize_seeds([])
    assert empty.n == 0 and math.isnan(empty.mean)


def test_summarize_rows_averages_within_seed_first() -> None:
    values = [1, 1, 1, 1, 0, 0, 1, 0, 0, float("nan")]
    seeds = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    per_seed = [1.0, 0.0, 1 / 3]  # seed 2's NaN row is dropped
    s = summarize_rows(values, seeds)
    m, sd = mean_sd(per_seed)
    assert s.mean == pytest.approx(m)
    assert s.mean != pytest.approx(5 / 9)  # not the pooled row mean
    assert (s.n, s.n_seeds, s.method) == (9, 3, "t")
    assert s.ci_high == pytest.approx(min(1.0, m + t975_df2() * sd / math.sqrt(3)))
    with pytest.raises(ValueError):
        summarize_rows([1.0, 0.0], [0])


def test_summarize_rows_with_one_seed_or_none_is_row_level() -> None:
    rows = [1.0, 0.0, 0.0, 1.0, 1.0, float("nan")]
    for s in (summarize_rows(rows, None), summarize_rows(rows, ["a"] * 6)):
        assert (s.method, s.unit, s.n) == ("wilson", "rows", 5)
        assert (s.ci_low, s.ci_high) == pytest.approx(wilson_by_formula(3, 5))
    assert summarize_rows(rows, ["a"] * 6).n_seeds == 1


def test_bootstrap_is_seeded_and_agrees_with_the_t_interval_on_normal_data() -> None:
    rnd = random.Random(7)
    xs = [rnd.gauss(3.0, 1.0) for _ in range(400)]
    a, b = bootstrap_ci(xs, seed=1), bootstrap_ci(xs, seed=1)
    assert a == b
    assert bootstrap_ci(xs, seed=2) != a
    m, sd = mean_sd(xs)
    half = 1.9659 * sd / math.sqrt(len(xs))  # t(0.975, df=399), from a printed table
    assert a[0] == pytest.approx(m - half, abs=0.2 * half)
    assert a[1] == pytest.approx(m + half, abs=0.2 * half)
    assert bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert all(math.isnan(x) for x in bootstrap_ci([1.0]))


def test_summarize_values_picks_wilson_for_rates_and_bootstrap_for_means() -> None:
    assert is_binary([0.0, 1.0, float("nan")]) and not is_binary([0.5, 1.0])
    rate = summarize_values([1, 0, 1, 1])
    assert rate.method == "wilson"
    frac = summarize_values([0.1, 0.5, 0.9, 0.3, 0.7])
    assert frac.method == "bootstrap" and 0.0 <= frac.ci_low < frac.mean < frac.ci_high <= 1.0
    counts = summarize_values([0.0, 1.0, 1.0, 0.0], bounded=False)  # raw counts that happen to be 0/1
    assert counts.method == "bootstrap"
    empty = summarize_values([float("nan")])
    assert empty.n == 0 and empty.method == "none"


def test_paired_t_by_hand() -> None:
    a = [0.9, 0.8, 0.75]
    b = [0.3, 0.4, 0.5]
    d = [x - y for x, y in zip(a, b, strict=True)]
    m, sd = mean_sd(d)
    t = m / (sd / math.sqrt(3))
    r = paired(a, b)
    assert r.method == "paired-t" and r.n == 3
    assert r.mean_diff == pytest.approx(m)
    assert r.p_value == pytest.approx(two_sided_p_df2(t), rel=1e-9)
    assert r.ci_low == pytest.approx(m - t975_df2() * sd / math.sqrt(3))
    assert r.ci_high == pytest.approx(m + t975_df2() * sd / math.sqrt(3))


def test_paired_aligns_mappings_by_seed_and_drops_nan_pairs() -> None:
    by_pos = paired([0.9, 0.8, 0.75], [0.3, 0.4, 0.5])
    by_key = paired({2: 0.75, 0: 0.9, 1: 0.8}, {0: 0.3, 1: 0.4, 2: 0.5})
    assert by_key.mean_diff == pytest.approx(by_pos.mean_diff)
    assert by_key.p_value == pytest.approx(by_pos.p_value)
    with pytest.raises(ValueError, match="seeds differ"):
        paired({0: 1.0, 1: 0.5}, {0: 1.0, 2: 0.5})
    with pytest.raises(ValueError):
        paired([1.0, 2.0], [1.0])
    dropped = paired([0.9, float("nan"), 0.8, 0.75], [0.3, 0.1, 0.4, 0.5])
    assert dropped.n == 3 and dropped.p_value == pytest.approx(by_pos.p_value)
    same = paired([0.5, 0.6], [0.5, 0.6])
    assert same.mean_diff == 0.0 and same.p_value == 1.0
    one = paired([0.5], [0.2])
    assert one.n == 1 and math.isnan(one.p_value) and math.isnan(one.ci_low)


def test_paired_permutation_is_exact_for_small_samples() -> None:
    a = [1.0, 1.0, 1.0, 1.0, 1.0]
    b = [0.0, 0.0, 0.0, 0.0, 0.0]
    r = paired_permutation(a, b)
    # All 2**5 sign flips enumerated; only all-plus and all-minus are as extreme as observed.
    assert r.p_value == pytest.approx(2 / 32)
    assert r.mean_diff == 1.0 and r.method == "permutation"
    mixed = paired_permutation([1, 0, 1, 1], [0, 1, 0, 0])  # diffs +1 -1 +1 +1: mean 0.5
    # |mean| >= 0.5 needs at most one sign disagreeing with the rest: 2 * (1 + 4) = 10 of 16
    assert mixed.p_value == pytest.approx(10 / 16)
    rnd = np.random.default_rng(0)
    x = rnd.normal(0, 1, 60)
    shifted = paired_permutation(x + 0.5, x + rnd.normal(0, 0.3, 60), seed=3)
    assert shifted.p_value < 0.001 and shifted.ci_low > 0


def t975(df: int) -> float:
    """Printed-table t quantiles (two-sided 95%)."""
    return {3: 3.182446305284263, 5: 2.570581835636314}[df]


def test_clustered_samples_get_a_t_interval_across_prompt_means_wider_than_the_naive_one() -> None:
    # 6 prompts x 5 samples, samples within a prompt strongly correlated: 15 ones of 30 in all.
    ones = [5, 4, 1, 0, 3, 2]
    values = [float(j < k) for k in ones for j in range(5)]
    clusters = [f"p{i}" for i, _ in enumerate(ones) for _ in range(5)]
    s = summarize_rows(values, clusters=clusters)
    per_prompt = [k / 5 for k in ones]  # 1, .8, .2, 0, .6, .4: mean .5, sd sqrt(.14)
    m, sd = mean_sd(per_prompt)
    assert (m, sd) == pytest.approx((0.5, math.sqrt(0.14)))
    half = t975(5) * sd / math.sqrt(6)
    assert (s.ci_method, s.unit, s.n, s.n_clusters) == ("cluster-t", "prompts", 30, 6)
    assert s.mean == pytest.approx(0.5)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert (s.ci_low, s.ci_high) == pytest.approx((0.1073, 0.8927), abs=5e-5)  # by hand
    naive = summarize_rows(values)
    assert naive.ci_method == "wilson"
    assert (naive.ci_low, naive.ci_high) == pytest.approx(wilson_by_formula(15, 30))
    assert s.ci_high - s.ci_low > 2 * (naive.ci_high - naive.ci_low)
    assert s.describe() == "n = 30 samples from 6 prompts; CI clusters by prompt"


def test_clusters_with_one_sample_each_or_one_prompt_stay_row_level() -> None:
    values = [1.0, 0.0, 1.0, 1.0, float("nan")]
    singles = summarize_rows(values, clusters=["a", "b", "c", "d", "d"])  # d's NaN sample is dropped
    assert (singles.ci_method, singles.unit, singles.n_clusters) == ("wilson", "rows", 4)
    assert (singles.ci_low, singles.ci_high) == pytest.approx(wilson_by_formula(3, 4))
    one = summarize_rows(values, clusters=["a"] * 5)
    assert one.unit == "rows" and one.n_clusters == 1 and "one prompt" in one.note
    # unequal sizes: the mean weighs prompts equally (mean of 1.0 and 0.0 and 0.5), not rows
    uneq = summarize_rows([1.0, 1.0, 1.0, 0.0, 0.0, 1.0], clusters=["a", "a", "a", "b", "c", "c"])
    m, sd = mean_sd([1.0, 0.0, 0.5])
    assert uneq.mean == pytest.approx(0.5) and uneq.mean != pytest.approx(4 / 6)
    assert uneq.ci_high == pytest.approx(min(1.0, m + t975_df2() * sd / math.sqrt(3)))
    with pytest.raises(ValueError):
        summarize_rows([1.0, 0.0], clusters=["a"])


def test_clusters_within_one_seed_and_across_seeds() -> None:
    values = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 1.0]
    prompts = ["a", "a", "b", "b", "c", "c", "d", "d"]
    one_seed = summarize_rows(values, [7] * 8, clusters=prompts)
    assert (one_seed.ci_method, one_seed.n_seeds, one_seed.n_clusters) == ("cluster-t", 1, 4)
    m, sd = mean_sd([1.0, 0.0, 0.5, 1.0])
    assert one_seed.ci_low == pytest.approx(max(0.0, m - t975(3) * sd / 2))
    assert "one seed" in one_seed.note
    seeds = summarize_rows(values, [0, 0, 0, 0, 1, 1, 1, 1], clusters=prompts)
    assert (seeds.ci_method, seeds.unit, seeds.n_clusters) == ("t-across-seeds", "seeds", 4)
    assert seeds.describe() == "n = 8 samples from 4 prompts; CI across 2 seeds"


def test_large_bounded_samples_get_a_t_interval_and_small_ones_keep_the_bootstrap() -> None:
    rnd = np.random.default_rng(4)
    big = rnd.beta(2, 5, LARGE_N + 1)
    s = summarize_values(big)
    assert (s.method, s.ci_method) == ("t", "t")
    half = 1.96 * big.std(ddof=1) / math.sqrt(big.size)
    assert (s.ci_low, s.ci_high) == pytest.approx((big.mean() - half, big.mean() + half), rel=1e-4)
    small = summarize_values(big[:500])
    assert (small.method, small.ci_method) == ("bootstrap", "bca-bootstrap")
    raw = summarize_values(big[:3000] * 100, bounded=False)
    assert raw.ci_method == "bca-bootstrap"


def test_chunked_bootstrap_draws_scipys_resamples_and_bca_uses_the_jackknife_closed_form() -> None:
    from scipy import stats as sps

    from inoculate import stats as st

    rnd = np.random.default_rng(9)
    x = rnd.exponential(1.0, 300)
    ref = sps.bootstrap((x,), np.mean, n_resamples=999, method="BCa", **st._rng_kwargs(sps.bootstrap, 3))
    got = bootstrap_ci(x, n_resamples=999, seed=3)
    assert got == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high), abs=1e-12)
    # the resample means equal scipy's bootstrap distribution even when chunks hold a single resample
    old = st._CHUNK
    try:
        st._CHUNK = 1
        boot = st.bootstrap_means(x, 999, np.random.default_rng(3))
    finally:
        st._CHUNK = old
    assert np.allclose(np.sort(boot), np.sort(ref.bootstrap_distribution), atol=1e-12)
    # acceleration: brute-force leave-one-out means, as in Efron & Tibshirani eq. 14.15
    loo = np.array([np.delete(x, i).mean() for i in range(x.size)])
    u = loo.mean() - loo
    a = (u**3).sum() / (6 * ((u**2).sum()) ** 1.5)
    d = x - x.mean()
    assert a == pytest.approx((d**3).sum() / (6 * ((d**2).sum()) ** 1.5), rel=1e-9)
    assert st.bootstrap_interval([0.2, 0.2, 0.2])[2] == "constant"
