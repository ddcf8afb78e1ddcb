"""Programs per second through the sandbox against bare `python -c` on the same programs, in one run.

    python benchmarks/sandbox_throughput.py [--n 64] [--workers W]

Both sides run the same short programs with the same number of parallel workers; the ratio is the
sandbox's overhead (namespaces, privilege drop, rlimits, temp folder, output files). Wall and CPU time
(children) are printed: on a shared machine wall time is contaminated by load, CPU time much less so.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from inoculate.sandbox import RunRequest, SandboxPolicy, detect, run_many

PROGRAMS = [
    "def f(n):\n    return sum(i * i for i in range(n))\nassert f(1000) == 332833500\n",
    "import math\nassert math.gcd(12, 18) == 6\n",
    "s = sorted([5, 3, 1, 4])\nassert s == [1, 3, 4, 5]\n",
    "print('hello')\n",
]


def _child_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="programs per side")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    iso = detect()
    if iso is None:
        print("no isolation available here (unshare/bwrap); nothing to measure")
        return 1
    programs = [PROGRAMS[i % len(PROGRAMS)] for i in range(args.n)]
    python = iso.python  # the interpreter the sandbox runs programs with: the same on both sides

    def bare(src: str) -> bool:
        done = subprocess.run([python, "-c", src], capture_output=True, timeout=60, check=False)
        return done.returncode == 0

    cpu0, t0 = _child_cpu(), time.monotonic()
    with ThreadPoolExecutor(args.workers) as pool:
        ok_bare = sum(pool.map(bare, programs))
    bare_wall, bare_cpu = time.monotonic() - t0, _child_cpu() - cpu0

    cpu0, t0 = _child_cpu(), time.monotonic()
    results = run_many([RunRequest(program=p) for p in programs], SandboxPolicy(workers=args.workers))
    box_wall, box_cpu = time.monotonic() - t0, _child_cpu() - cpu0
    ok_box = sum(r.passed for r in results)

    print(f"{args.n} programs, {args.workers} workers, interpreter {python}, isolation {iso.kind}")
    print(f"{'':10}{'programs/s':>12}{'wall s':>9}{'child CPU s':>13}{'passed':>8}")
    print(f"{'bare':10}{args.n / bare_wall:12.1f}{bare_wall:9.2f}{bare_cpu:13.2f}{ok_bare:8}")
    print(f"{'sandbox':10}{args.n / box_wall:12.1f}{box_wall:9.2f}{box_cpu:13.2f}{ok_box:8}")
    print(f"overhead: {box_wall / bare_wall:.2f}x wall, {box_cpu / max(bare_cpu, 1e-9):.2f}x CPU")
    return 0 if ok_bare == ok_box == args.n else 1


if __name__ == "__main__":
    sys.exit(main())
