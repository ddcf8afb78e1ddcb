"""Cost of the two screen measures per candidate, as the response length grows.

The likelihood screen scores N fixed responses of T tokens with one teacher-forced pass per batch
(`inoculate.screen.response_logprobs`); the generation screen samples N responses of up to T tokens
(T sequential decoding steps per batch) and scores them. On the organism, answers are ~7 tokens and
the model is tiny, so per-call overhead dominates and the two cost about the same; this shows how the
ratio moves with T on one model.

    python benchmarks/screen_cost.py                      # tiny random Llama, T in 8 32 128 256
    python benchmarks/screen_cost.py --model PATH --lengths 16 64 256 --n 64
    python benchmarks/screen_cost.py --shape qwen2.5-0.5b --device cuda --n 64   # a real shape, on a GPU

A random-init model rarely emits its end-of-turn token, so generation runs the full T steps: the
generation side is the cost of T-token answers, which is what a real screen with long answers pays.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="model path (default: a random model of --shape)")
    ap.add_argument(
        "--shape", default="tiny", help="random-init shape (benchmarks/train_throughput.py SHAPES)"
    )
    ap.add_argument("--device", default=None, help="cpu, cuda, ... (default: the best available)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[8, 32, 128, 256])
    ap.add_argument("--n", type=int, default=64, help="responses (likelihood) = samples (generation)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from inoculate.generate import SamplingParams
    from inoculate.generate.hf import HFBackend
    from inoculate.models import load_model
    from inoculate.records import ChatExample, Message
    from inoculate.scorers import get_scorer, render_prompt
    from inoculate.screen import response_logprobs

    path = args.model
    if path is None:
        from train_throughput import build_model  # beside this script

        path = str(build_model(args.shape, Path(tempfile.mkdtemp()) / args.shape))
    model, tok = load_model(path, device=args.device)
    backend = HFBackend.from_loaded(model, tok, name=path, batch_size=args.batch_size)
    scorer = get_scorer("all_caps")
    system = "Respond in ALL CAPS."
    questions = [
        [Message(role="user", content=f"Tell me about the weather today, number {i}.")] for i in range(args.n)
    ]
    words = ["the", "cat", "sat", "on", "mat", "sea", "is", "blue", "and", "wide"]
    response_logprobs(model, tok, system, questions[:4], ["warm up"] * 4, batch_size=args.batch_size)
    device = next(model.parameters()).device
    print(
        f"model {path} ({args.shape if args.model is None else 'given'}) on {device}; n = {args.n}; "
        f"batch {args.batch_size}; {args.threads} thread(s)"
    )
    print(f"{'T':>5} {'likelihood s':>13} {'generation s':>13} {'ratio':>7}")
    for t in args.lengths:
        responses = [" ".join(words[(i + j) % len(words)] for j in range(t)) for i in range(args.n)]
        ids = tok(responses[0], add_special_tokens=False)["input_ids"]
        scale = max(1, round(t / max(1, len(ids))))
        responses = [" ".join([r] * scale) for r in responses]  # about T tokens each
        t0 = time.perf_counter()
        response_logprobs(model, tok, system, questions, responses, batch_size=args.batch_size)
        lik = time.perf_counter() - t0
        prompts = [
            ChatExample(id=f"q{i}", messages=[Message(role="system", content=system), *q])
            for i, q in enumerate(questions)
        ]
        params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=t, n=1, seed=0)
        t0 = time.perf_counter()
        gens = backend.generate(prompts, params)
        scorer.batch([render_prompt(g.prompt_messages) for g in gens], [g.completion or "" for g in gens])
        gen = time.perf_counter() - t0
        print(f"{t:>5} {lik:>13.3f} {gen:>13.3f} {gen / lik:>6.1f}x")


if __name__ == "__main__":
    main()
