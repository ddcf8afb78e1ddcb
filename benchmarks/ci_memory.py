"""Time and peak memory of row-level mean intervals, old vs new, at 10k / 100k / 1M rows.

old: `scipy.stats.bootstrap(..., method="BCa", n_resamples=9999)` as `inoculate.stats` called it
     before (an n x 9999 index matrix and resample, plus an n x (n - 1) jackknife).
new: `inoculate.stats.summarize_values` on the same values: for bounded non-binary values above
     LARGE_N rows a t-interval (`ci_method` t), and the chunked bootstrap with the O(n) jackknife
     (`ci_method` bca-bootstrap) when forced or for unbounded values.

Each measurement runs in its own subprocess under an address-space limit (--limit-gb) so a method
that would exhaust memory fails with MemoryError instead of taking the machine down. Peak memory
is the subprocess's peak RSS (ru_maxrss) minus its RSS after importing and building the values
(the interpreter, numpy and scipy), and tracemalloc's peak of the interval call alone.

Usage: python benchmarks/ci_memory.py [--sizes 10000,100000,1000000] [--limit-gb 8]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
import tracemalloc
import warnings

import numpy as np

CASES = ("old-bca", "new-auto", "new-bca")


def _old_bca(arr: np.ndarray) -> tuple[float, float]:
    from scipy import stats as sps

    from inoculate.stats import _rng_kwargs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = sps.bootstrap((arr,), np.mean, n_resamples=9999, method="BCa", **_rng_kwargs(sps.bootstrap, 0))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(case: str, n: int, limit_gb: float) -> None:
    from inoculate.stats import summarize_values

    arr = np.random.default_rng(0).beta(2, 5, n)  # bounded, skewed, not binary
    base = _rss_mb()
    limit = int(limit_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        if case == "old-bca":
            lo, hi = _old_bca(arr)
            how = "scipy BCa"
        else:
            s = summarize_values(arr, method="auto" if case == "new-auto" else "bootstrap")
            lo, hi, how = s.ci_low, s.ci_high, s.ci_method
        err = ""
    except MemoryError:
        lo = hi = math.nan
        how, err = "-", f"MemoryError (limit {limit_gb:g} GB)"
    secs = time.perf_counter() - t0
    traced = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    print(json.dumps({"s": secs, "rss": peak, "traced": traced, "lo": lo, "hi": hi, "how": how, "err": err}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--limit-gb", type=float, default=8.0)
    ap.add_argument("--child", nargs=2, metavar=("CASE", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], int(args.child[1]), args.limit_gb)
        return
    head = f"{'rows':>9} {'case':9} {'ci_method':15} {'time s':>8} {'peak RSS MB':>12} {'traced MB':>10}"
    print(f"{head}  interval")
    for n in (int(x) for x in args.sizes.split(",")):
        for case in CASES:
            cmd = [sys.executable, __file__, "--child", case, str(n), "--limit-gb", str(args.limit_gb)]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0 or not out.stdout.strip():
                tail = (out.stderr.strip().splitlines() or ["?"])[-1]
                print(f"{n:>9} {case:9} failed: {tail}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            iv = r["err"] or f"[{r['lo']:.6f}, {r['hi']:.6f}]"
            print(
                f"{n:>9} {case:9} {r['how']:15} {r['s']:8.2f} {r['rss']:12.0f} {r['traced']:10.0f}  {iv}",
                flush=True,
            )


if __name__ == "__main__":
    main()
