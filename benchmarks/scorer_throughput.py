"""Print the throughput of the built-in scorers on the labelled test sentences (sentences/s).

Usage: python benchmarks/scorer_throughput.py [--repeat N]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from inoculate.scorers import get_scorer

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "labelled_sentences.jsonl"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=20, help="copies of the labelled set to score")
    args = ap.parse_args()
    base = [
        json.loads(line)["text"] for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()
    ]
    texts = base * args.repeat
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
