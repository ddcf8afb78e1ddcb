"""Time `inoculate demo` end to end, as a user runs it: a fresh process each time.

- cold: an empty organism cache (stage-1 pretraining of the base model included) and a new run folder;
- warm: the base model already cached, a new run folder (every cell trained and evaluated again).

Prints wall-clock seconds for each, the target (<= 300 s on 2 cores), and where the time went
(base-model build, base-model evaluation, per-cell train/evaluate means) from the run's own records.

Usage: python benchmarks/demo_time.py [--seeds 3] [--skip-cold] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 300.0


def run_demo(out: Path, cache: Path, seeds: int) -> float:
    from inoculate.organism.base import CACHE_ENV

    env = {**os.environ, CACHE_ENV: str(cache), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    cmd = [sys.executable, "-m", "inoculate", "demo", "--out", str(out), "--seeds", str(seeds)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"inoculate demo failed with status {proc.returncode}")
    return seconds


def breakdown(out: Path) -> str:
    """Where the time went, from the run's event log and each cell's recorded timings."""
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines() if line.strip()]
    started = next(e["time"] for e in events if e["event"] == "run_started")
    first_cell = next((e["time"] for e in events if e["event"] == "cell_started"), None)
    finished = next(e["time"] for e in reversed(events) if e["event"] == "run_finished")
    timings = [json.loads(p.read_text())["timings_s"] for p in sorted(out.glob("*/seed_*/metrics.json"))]
    lines = []
    if first_cell is not None:
        lines.append(f"  base-model evaluation + setup before the first cell: {first_cell - started:6.1f} s")
    lines.append(f"  matrix ({len(timings)} cells): {finished - (first_cell or started):6.1f} s")
    for stage in ("train", "evaluate"):
        values = [t[stage] for t in timings if stage in t]
        if values:
            lines.append(
                f"    {stage:<8} per cell: mean {statistics.mean(values):5.2f} s, max {max(values):5.2f} s"
            )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--skip-cold", action="store_true", help="reuse --keep's cache instead of a fresh one")
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp folder)")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="inoculate-demo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    import torch

    print(f"cpus: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, seeds: {args.seeds}")
    results = {}
    if not args.skip_cold:
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(work / "cold", ignore_errors=True)
        results["cold"] = run_demo(work / "cold", cache, args.seeds)
        print(f"cold (fresh cache, stage-1 pretraining included): {results['cold']:6.1f} s")
        print(breakdown(work / "cold"))
    shutil.rmtree(work / "warm", ignore_errors=True)
    results["warm"] = run_demo(work / "warm", cache, args.seeds)
    print(f"warm (base model cached):                         {results['warm']:6.1f} s")
    print(breakdown(work / "warm"))
    if "cold" in results:
        print(f"stage-1 build (cold - warm):                      {results['cold'] - results['warm']:6.1f} s")
    worst = max(results.values())
    verdict = "within" if worst <= TARGET_S else "OVER"
    print(f"target: <= {TARGET_S:.0f} s on 2 cores; slowest run {worst:.1f} s: {verdict} the target")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
