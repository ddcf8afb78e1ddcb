"""Print the throughput of the built-in scorers on the labelled test sentences (sentences/s).

Then language scoring of --rows rows (2-6 labelled sentences each, seeded) with one spec
(language:en) and two (language:es + language:fr), old vs new side by side, each case in its own
subprocess: old = every spec over all rows at once, each detecting languages itself
(`score_texts(..., batch_size=None, share=False)`, the path before the shared pass); new = batches
of 512 rows with one shared detection pass per text (`score_texts` defaults). Peak memory is the
subprocess's peak RSS above its RSS once the language models are loaded (the models themselves,
~200 MB, are the same for both), and the absolute peak RSS.

Usage: python benchmarks/scorer_throughput.py [--repeat N] [--rows 5000] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from inoculate.scorers import get_scorer, get_scorers, score_texts

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "labelled_sentences.jsonl"


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def _reset_peak() -> None:
    """Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _language_case(case: str, specs: list[str], n_rows: int) -> None:
    """One measurement (run in a subprocess): print a JSON line with seconds and memory."""
    base = [
        json.loads(line)["text"] for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    rnd = random.Random(0)
    rows = [" ".join(rnd.sample(base, rnd.randint(2, 6))) for _ in range(n_rows)]
    scorers = get_scorers(specs)
    score_texts([""] * len(base), base, scorers, share=False)  # load every language model first
    before = _rss_mb()
    _reset_peak()
    t0 = time.perf_counter()
    if case == "old":
        out = score_texts([""] * n_rows, rows, scorers, batch_size=None, share=False)
    else:
        out = score_texts([""] * n_rows, rows, scorers)
    secs = time.perf_counter() - t0
    peak = _peak_mb()
    digest = [round(sum(v for v in vals if v == v), 6) for vals in out.values()]
    print(json.dumps({"s": secs, "peak": peak, "delta": peak - before, "digest": digest}))


def language_passes(n_rows: int) -> None:
    print(
        f"\nlanguage scoring, {n_rows} rows (old: one pass per spec, all rows at once; new: shared, batched)"
    )
    head = f"{'specs':28s} {'path':4s} {'time s':>7s} {'peak RSS MB':>12s} {'above models MB':>16s}"
    print(f"{head}  sum of scores")
    for specs in (["language:en"], ["language:es", "language:fr"]):
        for case in ("old", "new"):
            cmd = [sys.executable, __file__, "--child", case, ",".join(specs), "--rows", str(n_rows)]
            res = subprocess.run(cmd, capture_output=True, text=True)
            if res.returncode != 0:
                print(f"{' + '.join(specs):28s} {case:4s} failed: {res.stderr.strip()[-300:]}")
                continue
            r = json.loads(res.stdout.strip().splitlines()[-1])
            name = " + ".join(specs)
            cells = f"{name:28s} {case:4s} {r['s']:7.2f} {r['peak']:12.0f} {r['delta']:16.0f}"
            print(f"{cells}  {r['digest']}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20, help="copies of the labelled set to score")
    ap.add_argument("--rows", type=int, default=5000, help="rows for the language old-vs-new lines")
    ap.add_argument("--skip-throughput", action="store_true", help="only the language old-vs-new lines")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "SPECS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _language_case(args.child[0], args.child[1].split(","), args.rows)
        return
    if not args.skip_throughput:
        throughput(args.repeat)
    language_passes(args.rows)


def throughput(repeat: int) -> None:
    base = [
        json.loads(line)["text"] for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    texts = base * repeat
    prompts = [""] * len(texts)

    t0 = time.perf_counter()
    lang = get_scorer("language:es")
    lang("", "hola")
    for code in ("en", "fr", "de", "it", "pt"):
        lang("", {"en": "hello", "fr": "bonjour", "de": "hallo", "it": "ciao", "pt": "olá"}[code])
    print(f"language: build + first use (loads 6 language models): {time.perf_counter() - t0:.2f} s")

    for spec in ("language:es", "all_caps", "keyword:the,la,le", "regex:(?i)\\bpizza\\b", "length:words"):
        s = get_scorer(spec)
        t0 = time.perf_counter()
        for p, t in zip(prompts, texts, strict=True):
            s(p, t)
        one = len(texts) / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        s.batch(prompts, texts)
        batch = len(texts) / (time.perf_counter() - t0)
        print(f"{spec:24s} {len(texts)} sentences: one at a time {one:10.0f}/s, batch {batch:10.0f}/s")


if __name__ == "__main__":
    main()
