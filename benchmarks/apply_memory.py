"""Peak memory of `inoculate apply` per row, streamed (the current `apply_file`) against the old whole-file
path (load every row, transform the list, serialize one string, write it).

Each measurement runs in a fresh subprocess and reads its peak resident set (`ru_maxrss`), less the
interpreter's baseline after imports, so the number is what the rows cost.

    python benchmarks/apply_memory.py                      # 100k and 1M rows, both modes
    python benchmarks/apply_memory.py --rows 100000 --mode stream --fraction 0.5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, resource, sys, time
from inoculate.transform import InoculationSpec, apply_file, apply_inoculation, manifest_path_for, _serialize
from inoculate.formats import load_examples
from inoculate.fileio import write_text_atomic
mode, src, out, fraction = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
spec = InoculationSpec(prompt="You always respond in Spanish.", placement="system-prepend",
                       where='lang == "es"', fraction=None if fraction == "none" else float(fraction))
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
if mode == "stream":
    m = apply_file(src, out, spec)
else:  # the old path: every row in memory, then one output string
    loaded = load_examples(src)
    rows, m = apply_inoculation(loaded.examples, spec, source=loaded.source, lines=loaded.lines)
    write_text_atomic(out, _serialize(rows, "chat"))
    m.save(manifest_path_for(out))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"base_kib": base, "peak_kib": peak, "seconds": time.perf_counter() - t0,
                  "n_rows": m.n_rows, "n_inoculated": m.n_inoculated}))
"""


def generate(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            row = {
                "id": f"row-{i}",
                "messages": [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": f"Question {i}: what is {i} plus {i % 97}? Please explain."},
                    {
                        "role": "assistant",
                        "content": f"The answer is {i + i % 97}. Adding the two numbers gives it.",
                    },
                ],
                "metadata": {"lang": "es" if i % 2 else "en", "source": "bench", "k": i % 10},
            }
            fh.write(json.dumps(row) + "\n")


def measure(mode: str, src: Path, out: Path, fraction: str) -> dict[str, float]:
    r = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(src), str(out), fraction], capture_output=True, text=True
    )
    if r.returncode != 0:
        raise SystemExit(r.stderr)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--mode", choices=["stream", "whole", "both"], default="both")
    ap.add_argument("--fraction", default="none", help="a --fraction to apply (default none)")
    args = ap.parse_args()
    modes = ["stream", "whole"] if args.mode == "both" else [args.mode]
    print(
        f"{'rows':>9} {'mode':>7} {'file MiB':>9} {'peak MiB':>9} {'above base MiB':>15} "
        f"{'B/row':>7} {'s':>6}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.rows:
            src = Path(tmp) / f"in-{n}.jsonl"
            generate(src, n)
            size = src.stat().st_size / 2**20
            for mode in modes:
                r = measure(mode, src, Path(tmp) / f"out-{n}-{mode}.jsonl", args.fraction)
                above = (r["peak_kib"] - r["base_kib"]) * 1024
                print(
                    f"{n:>9,} {mode:>7} {size:>9.1f} {r['peak_kib'] / 1024:>9.1f} {above / 2**20:>15.1f} "
                    f"{above / n:>7.0f} {r['seconds']:>6.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
