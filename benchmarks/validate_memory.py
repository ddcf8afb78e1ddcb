"""Peak memory of `inoculate validate` per row: the streaming reader vs holding every row.

    python benchmarks/validate_memory.py                  # 100k and 1M generated rows
    python benchmarks/validate_memory.py --rows 100000 --old-max 100000

Each measurement runs in a fresh process and reports (peak RSS - RSS after imports) / rows.
`new` is `formats.iter_examples` (what validate uses); `old` is `formats.load_examples`, which
keeps every ChatExample (what validate did before). Target: `new` flat in the row count.

Measured (this container, 4.4 KB rows with 2 extra keys): new 115-143 B/row at 10k/100k/1M rows
(127 MB peak at 1M), old ~2,550 B/row (259 MB at 100k; 1M skipped: ~2.6 GB). What `new` still
holds per row is the id index that refuses duplicate ids (a dict of id -> first line), not the
rows: the rows themselves are flat.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import resource, sys
from inoculate.formats import iter_examples, load_examples
from inoculate.records import ChatExample
def rss_kb():
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
base = rss_kb()
path, mode = sys.argv[1], sys.argv[2]
if mode == "new":
    n = sum(isinstance(item, ChatExample) for _, item in iter_examples(path))
else:
    n = len(load_examples(path).examples)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
print(n, max(peak - base, 0) * 1024)
"""


def make_rows(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            row = {
                "id": f"row-{i}",
                "messages": [
                    {"role": "user", "content": f"What is {i} + {i}? Explain the steps, please." * 3},
                    {"role": "assistant", "content": f"{i} + {i} = {2 * i}. First add the units..." * 3},
                ],
                "label": "sum",
                "answer": str(2 * i),
            }
            fh.write(json.dumps(row) + "\n")


def measure(path: Path, mode: str) -> tuple[int, int]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[0]), int(out[1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="100000,1000000", help="comma-separated row counts")
    ap.add_argument("--old-max", type=int, default=1_000_000, help="skip the old path above this many rows")
    args = ap.parse_args()
    print(
        f"{'rows':>10} {'file MB':>8} {'new B/row':>10} {'old B/row':>10} "
        f"{'new peak MB':>12} {'old peak MB':>12}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(x) for x in args.rows.split(",")):
            path = Path(tmp) / f"rows{n}.jsonl"
            make_rows(path, n)
            got, new = measure(path, "new")
            assert got == n, (got, n)
            old = measure(path, "old")[1] if n <= args.old_max else None
            mb = path.stat().st_size / 1e6
            old_row = f"{old / n:10.0f}" if old is not None else f"{'skipped':>10}"
            old_mb = f"{old / 1e6:12.1f}" if old is not None else f"{'skipped':>12}"
            print(f"{n:>10,} {mb:8.1f} {new / n:10.1f} {old_row} {new / 1e6:12.1f} {old_mb}")
            path.unlink()


if __name__ == "__main__":
    main()
