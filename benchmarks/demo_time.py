"""Time `inoculate demo` end to end, as a user runs it: a fresh process each time.

- cold: an empty cache and a new run folder, as on a fresh install: the base model is installed from the
  copy the package ships (`organism.packaged`), the base model's elicitation is computed;
- scratch: the same with the shipped models turned off (`INOCULATE_ORGANISM_PACKAGE=none`), so stage-1
  pretraining runs first, as `inoculate organism build` does;
- warm: the base model and its elicitation already cached, a new run folder (every cell trained and
  evaluated again).

For each run it prints the wall-clock seconds and the CPU seconds of the whole process tree (the demo
and its cell workers), then a stage-by-stage table from the run's own records: stage 1 (organism.json),
the rest of the set-up, the base model's elicitation, each cell's train / generate / score (metrics.json;
CPU seconds are each worker's own), the matrix as a whole and the report (the run's phase events).
On a shared machine wall seconds grow with the load and CPU seconds much less: compare CPU seconds
between versions, and take wall-clock figures on an idle machine.

Targets (issue 15, 2 cores): cold <= 90 s, warm <= 30 s; "scratch" has no target and is printed so that
the cost of stage 1 stays visible.

Usage: python benchmarks/demo_time.py [--runs cold,scratch,warm] [--seeds 3] [--keep DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGETS_S = {"cold": 90.0, "warm": 30.0}


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_demo(
    out: Path, cache: Path, seeds: int, workers: int | None, *, shipped: bool = True
) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the process tree) of one `inoculate demo`."""
    from inoculate.organism.base import CACHE_ENV
    from inoculate.organism.packaged import PACKAGE_ENV

    env = {**os.environ, CACHE_ENV: str(cache), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
    env.pop(PACKAGE_ENV, None)
    if not shipped:
        env[PACKAGE_ENV] = "none"
    cmd = [sys.executable, "-m", "inoculate", "demo", "--out", str(out), "--seeds", str(seeds)]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    cpu0, t0 = _children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    seconds, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise SystemExit(f"inoculate demo failed with status {proc.returncode}")
    said = (proc.stdout + proc.stderr).splitlines()
    verdict = next((ln for ln in said if ln.strip().startswith("expectations:")), None)
    if verdict:
        print(f"  {verdict.strip()}")
    return seconds, cpu


def _row(name: str, wall: float | None, cpu: float | None, note: str = "") -> str:
    w = f"{wall:8.1f}" if wall is not None else " " * 8
    c = f"{cpu:8.1f}" if cpu is not None else " " * 8
    return f"  {name:<34}{w}{c}  {note}"


def stage_table(out: Path, cache: Path, *, cold: bool) -> str:
    """Where the time went, from the run's phase events, each cell's timings and the stage-1 record."""
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines() if line.strip()]
    phases = {e["phase"]: e for e in events if e.get("event") == "phase"}
    timings = [json.loads(p.read_text())["timings_s"] for p in sorted(out.glob("*/seed_*/metrics.json"))]
    lines = [f"  {'stage':<34}{'wall s':>8}{'cpu s':>8}"]
    prep = phases.get("prepare")
    if cold:
        from inoculate.organism.packaged import MANIFEST_FILE

        dirs = [p.parent for p in cache.glob("organism/*/organism.json")]
        if dirs and (dirs[0] / MANIFEST_FILE).is_file():
            lines.append(_row("stage 1: the shipped model installed", None, None, "in set-up"))
            if prep:
                lines.append(_row("set-up (data, install, plan)", prep["seconds"], prep["cpu_s"]))
        elif dirs:
            m = json.loads((dirs[0] / "organism.json").read_text())
            lines.append(_row("stage 1 (build the organism)", m["build_seconds"], m.get("build_cpu_seconds")))
            lines.append(_row("  of which training steps", m["train_seconds"], None, f"{m['steps']} steps"))
            if prep:
                rest_w = prep["seconds"] - m["build_seconds"]
                rest_c = prep["cpu_s"] - m.get("build_cpu_seconds", 0.0)
                lines.append(_row("other set-up (data, plan)", rest_w, rest_c))
    elif prep:
        lines.append(_row("set-up (data, cached organism)", prep["seconds"], prep["cpu_s"]))
    if "base" in phases:
        base = phases["base"]
        lines.append(
            _row(
                "base-model elicitation",
                base["seconds"],
                base["cpu_s"],
                "with workers: beside the first cells",
            )
        )
    for stage in ("train", "generate", "score"):
        walls = [t[stage] for t in timings if stage in t]
        cpus = [t[f"cpu_{stage}"] for t in timings if f"cpu_{stage}" in t]
        if walls:
            lines.append(
                _row(
                    f"per cell: {stage} (mean of {len(walls)})",
                    statistics.mean(walls),
                    statistics.mean(cpus) if cpus else None,
                    f"max {max(walls):.2f} s wall",
                )
            )
    if "matrix" in phases:
        cell_cpu = sum(
            t.get("cpu_train", 0) + t.get("cpu_generate", 0) + t.get("cpu_score", 0) for t in timings
        )
        lines.append(
            _row(
                f"matrix ({len(timings)} cells)",
                phases["matrix"]["seconds"],
                None,
                f"cells' own CPU {cell_cpu:.1f} s; the parent's {phases['matrix']['cpu_s']:.1f} s",
            )
        )
    for name, what in (
        ("train", "train phase (every cell)"),
        ("evaluate", "evaluate phase (one engine call)"),
    ):
        if name in phases:  # the two-phase path (a vllm run), not the demo's
            lines.append(_row(what, phases[name]["seconds"], phases[name]["cpu_s"]))
    if "report" in phases:
        lines.append(_row("report", phases["report"]["seconds"], phases["report"]["cpu_s"]))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument(
        "--runs",
        default="cold,scratch,warm",
        help="which runs, in this order (cold: shipped base model; scratch: stage 1 built; warm: cached)",
    )
    ap.add_argument(
        "--skip-cold", action="store_true", help="the same as --runs warm (reuses --keep's cache)"
    )
    ap.add_argument("--keep", type=Path, default=None, help="work folder to keep (default: a temp folder)")
    ap.add_argument("--workers", type=int, default=None, help="cell worker processes (default: the demo's)")
    args = ap.parse_args()

    work = args.keep or Path(tempfile.mkdtemp(prefix="inoculate-demo-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "cache"
    import torch

    load = os.getloadavg()
    print(
        f"cpus: {os.cpu_count()}, torch threads: {torch.get_num_threads()}, seeds: {args.seeds}, "
        f"cpu kernel: {torch.backends.cpu.get_cpu_capability()}, "
        f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    runs = ["warm"] if args.skip_cold else [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(runs) - {"cold", "scratch", "warm"}
    if unknown:
        raise SystemExit(f"unknown run(s) {sorted(unknown)}: choose from cold, scratch, warm")
    titles = {
        "cold": "cold (fresh cache, shipped base model installed)",
        "scratch": "scratch (fresh cache, stage-1 pretraining run)",
        "warm": "warm (base model and its elicitation cached)",
    }
    results: dict[str, tuple[float, float]] = {}
    for name in runs:
        if name != "warm":  # a fresh cache; warm reuses the last one
            shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(work / name, ignore_errors=True)
        results[name] = run_demo(work / name, cache, args.seeds, args.workers, shipped=name != "scratch")
        wall, cpu = results[name]
        print(f"{titles[name]:<50} {wall:6.1f} s wall, {cpu:6.1f} s cpu")
        print(stage_table(work / name, cache, cold=name != "warm"))
    load = os.getloadavg()
    print(f"load average after: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    for name, (wall, _cpu) in results.items():
        if name not in TARGETS_S:
            continue
        target = TARGETS_S[name]
        verdict = "within" if wall <= target else "OVER"
        print(
            f"target {name}: <= {target:.0f} s wall on 2 cores; measured {wall:.1f} s: {verdict} the target"
        )
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
