"""The GPU path, side by side in one run on one GPU (issue 15, part 2). Prepared to finish in < 8 min
on one H200; every section has a time budget and says what it skipped.

    python benchmarks/gpu.py                 # on a CUDA machine: train, eval, screen
    python benchmarks/gpu.py --dry-run       # smoke of every section on CPU with tiny shapes
    python benchmarks/gpu.py --sections train --budget-s 300

1. train: real (non-pad) tokens/s of one epoch over the same rows, TRL's defaults (SFTTrainer given the
   conversational prompt/completion rows, same LoRA, learning rate, batch, max_length; everything else
   TRL's default: fp32 weights under bf16 autocast, gradient checkpointing) against `inoculate.train`
   (default, `preset: fast`, and fast + packing), on Qwen2.5-0.5B and -7B shapes with random weights.
   Loss curves are compared by quarter of the epoch (packing takes fewer, larger steps).
   Targets: >= 3x on 0.5B, >= 2x on 7B.
2. eval: completion tokens/s of >= 6 LoRA adapters through ONE vLLM engine (`VLLMEngine.generate_many`,
   one call for the matrix) against HF `generate` per adapter (inoculate's hf backend, batch 64).
   Target >= 20x. HF is a sequential per-adapter rate, so it is measured on the first 2 adapters.
3. screen: the likelihood screen (`screen.response_logprobs`) against the generation screen (sample
   and score) at 256-token answers. Target >= 10x.

Weights are random (speed does not depend on them); shapes are built from the config values below,
nothing is downloaded. Without CUDA the script runs the dry run, prints "no GPU: figures not
measured" and exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Qwen2.5 shapes, from the models' config.json on the Hugging Face hub:
# https://huggingface.co/Qwen/Qwen2.5-0.5B/blob/main/config.json and
# https://huggingface.co/Qwen/Qwen2.5-7B/blob/main/config.json (max_position_embeddings lowered: the
# benchmark's rows are at most 512 tokens).
SHAPES: dict[str, dict[str, Any]] = {
    "qwen2.5-0.5b": {
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
    "qwen2.5-7b": {
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "vocab_size": 152064,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
    },
    # --dry-run: the same architecture, tiny
    "tiny": {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": 1024,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": True,
    },
}

# What each run uses: (shape, rows, batch) for training; adapters, prompts, new tokens for eval.
GPU_PLAN: dict[str, Any] = {
    "train": [("qwen2.5-0.5b", 640, 16), ("qwen2.5-7b", 96, 8)],
    "max_length": 512,
    "eval": {"shape": "qwen2.5-0.5b", "adapters": 6, "prompts": 64, "new_tokens": 128, "hf_adapters": 2},
    "screen": {"shape": "qwen2.5-0.5b", "n": 64, "tokens": 256},
}
DRY_PLAN: dict[str, Any] = {
    "train": [("tiny", 8, 4)],
    "max_length": 256,
    "eval": {"shape": "tiny", "adapters": 2, "prompts": 4, "new_tokens": 8, "hf_adapters": 2},
    "screen": {"shape": "tiny", "n": 8, "tokens": 16},
}
SECTION_BUDGET_S = {"train": 300.0, "eval": 150.0, "screen": 60.0}
TARGETS = {"qwen2.5-0.5b": 3.0, "qwen2.5-7b": 2.0, "eval": 20.0, "screen": 10.0}

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "in", "park", "sea", "is", "blue", "and", "deep"]
SYSTEM = "Respond in ALL CAPS."


class Budget:
    """Seconds left for a section; `ok(what)` says (and prints) whether to start the next part."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def ok(self, what: str) -> bool:
        left = self.end - time.perf_counter()
        if left <= 0:
            print(f"  skipped {what}: section time budget spent", flush=True)
        return left > 0


def build_model(shape: str, directory: Path, device: str) -> Path:
    """A random-init Qwen2 model of `shape` with the test tokenizer (ChatML), saved to `directory`."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from inoculate.testing import build_tiny_model

    build_tiny_model(directory, "chatml", max_position_embeddings=1024)  # tokenizer + chat template
    config = Qwen2Config(max_position_embeddings=4096, **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    if device != "cpu":
        model = model.to(torch.bfloat16)
    model.save_pretrained(directory)
    del model
    free_memory()
    return directory


def free_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def make_examples(n: int, max_words: int, seed: int = 0) -> list[Any]:
    from inoculate.records import chat

    rng = random.Random(seed)
    return [
        chat(
            " ".join(rng.choices(WORDS, k=rng.randint(4, max_words // 4))),
            " ".join(rng.choices(WORDS, k=rng.randint(8, max_words))).upper(),
            system=SYSTEM,
            id=str(i),
        )
        for i in range(n)
    ]


def quarters(losses: list[float]) -> list[float]:
    """Mean loss over each quarter of the epoch (runs with different step counts line up)."""
    if not losses:
        return []
    k = len(losses)
    cuts = [round(k * q / 4) for q in range(5)]
    spans = [(min(a, k - 1), max(b, min(a, k - 1) + 1)) for a, b in zip(cuts, cuts[1:], strict=False)]
    return [statistics.fmean(losses[a:b]) for a, b in spans]


def section_train(plan: dict[str, Any], device: str, tmp: Path, budget: Budget) -> list[str]:
    from inoculate.models import load_tokenizer
    from inoculate.train import TrainConfig, prepare_sft_rows, train

    lines = []
    max_length = plan["max_length"]
    for shape, n_rows, batch in plan["train"]:
        if not budget.ok(f"train on {shape}"):
            continue
        t0 = time.perf_counter()
        path = build_model(shape, tmp / f"train-{shape}", device)
        examples = make_examples(n_rows, max_words=max_length // 3)
        tok = load_tokenizer(path, padding_side="right")
        rows = prepare_sft_rows(tok, examples, max_length=max_length).rows
        tokens = sum(len(r["input_ids"]) for r in rows)
        print(
            f"\n[train] {shape}: {len(rows)} rows, {tokens} tokens, batch {batch}, built in "
            f"{time.perf_counter() - t0:.0f}s",
            flush=True,
        )
        common = dict(
            per_device_train_batch_size=batch,
            max_length=max_length,
            num_train_epochs=1,
            learning_rate=1e-4,
            logging_steps=1,
            save_steps=0,
            disable_tqdm=True,
            lora_r=16,
            lora_alpha=32,
        )
        runs: dict[str, Callable[[Path], tuple[float, list[float], int]]] = {
            "TRL defaults": lambda out, p=path, e=examples, b=batch: run_trl_defaults(
                p, e, out, b, max_length
            ),
        }
        variants = {"inoculate default": {}, "inoculate fast": {"preset": "fast"}}
        variants["inoculate fast+packing"] = {"preset": "fast", "packing": True}
        if shape == "qwen2.5-7b":
            variants.pop("inoculate default")  # the budget: the comparison that matters is vs TRL
        for name, kw in variants.items():

            def run(
                out: Path, kw: dict[str, Any] = kw, p: Path = path, e: list[Any] = examples, c: Any = common
            ) -> tuple[float, list[float], int]:
                r = train(p, e, TrainConfig(output_dir=str(out), **c, **kw), resume=False)
                return r.runtime_s, [h["loss"] for h in r.log_history if "loss" in h], r.global_step

            runs[name] = run
        if device != "cpu" and budget.ok("warm-up"):  # CUDA context and kernels, paid by no variant
            warm = TrainConfig(output_dir=str(tmp / "warm"), **common)
            with contextlib.redirect_stdout(io.StringIO()):
                train(path, examples[: batch * 2], warm, resume=False)
            free_memory()
        results = {}
        for name, run in runs.items():
            if not budget.ok(f"{shape} / {name}"):
                continue
            with contextlib.redirect_stdout(io.StringIO()):  # the Trainer's per-step log lines
                seconds, losses, steps = run(tmp / f"out-{shape}-{name.replace(' ', '_')}")
            results[name] = (seconds, losses, steps)
            free_memory()
            print(
                f"  {name:<24} {steps:>4} steps {seconds:>7.1f}s {tokens / seconds:>10.0f} tok/s", flush=True
            )
        base = results.get("TRL defaults")
        lines.append(
            f"train {shape} (batch {batch}, <= {max_length} tokens, one epoch of {tokens} real tokens):"
        )
        lines.append(f"  {'run':<24} {'steps':>5} {'tok/s':>9} {'vs TRL':>7}   loss by quarter of the epoch")
        for name, (seconds, losses, steps) in results.items():
            rate = tokens / seconds
            ratio = f"{base[0] / seconds:.2f}x" if base else "-"
            curve = " ".join(f"{x:.3f}" for x in quarters(losses))
            lines.append(f"  {name:<24} {steps:>5} {rate:>9.0f} {ratio:>7}   {curve}")
        if base and shape in TARGETS:
            best = max((base[0] / s for n, (s, _, _) in results.items() if n != "TRL defaults"), default=0.0)
            lines.append(f"  best vs TRL defaults: {best:.2f}x (target >= {TARGETS[shape]:.0f}x)")
    return lines


def run_trl_defaults(
    path: Path, examples: list[Any], out: Path, batch: int, max_length: int
) -> tuple[float, list[float], int]:
    """Plain TRL: SFTTrainer with the conversational prompt/completion rows and TRL's defaults."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list(
        [
            {
                "prompt": [{"role": m.role, "content": m.content} for m in ex.prompt_messages],
                "completion": [{"role": "assistant", "content": ex.completion}],
            }
            for ex in examples
        ]
    )
    args = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=batch,
        max_length=max_length,
        num_train_epochs=1,
        learning_rate=1e-4,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not _cuda(),
    )
    lora = LoraConfig(
        r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    trainer = SFTTrainer(model=str(path), args=args, train_dataset=data, peft_config=lora)
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    steps = trainer.state.global_step
    del trainer
    return seconds, losses, steps


def make_adapters(path: Path, n: int, tmp: Path) -> list[str]:
    """n random LoRA adapters (r 16, all linear layers, B not zero so each changes the model)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    out = []
    for i in range(n):
        model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.bfloat16)
        torch.manual_seed(i)
        cfg = LoraConfig(
            r=16, lora_alpha=32, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM"
        )
        peft_model = get_peft_model(model, cfg)
        d = tmp / f"adapter-{i}"
        peft_model.save_pretrained(str(d))
        out.append(str(d))
        del model, peft_model
    free_memory()
    return out


def section_eval(plan: dict[str, Any], device: str, tmp: Path, budget: Budget) -> list[str]:
    from inoculate.generate import SamplingParams, get_backend

    cfg = plan["eval"]
    path = build_model(cfg["shape"], tmp / f"eval-{cfg['shape']}", device)
    adapters = make_adapters(path, cfg["adapters"], tmp)
    prompts = make_examples(cfg["prompts"], max_words=40, seed=1)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=cfg["new_tokens"], n=1, seed=0)
    print(
        f"\n[eval] {cfg['shape']}: {len(adapters)} adapters x {len(prompts)} prompts x "
        f"{cfg['new_tokens']} new tokens",
        flush=True,
    )

    def n_tokens(gens: list[Any]) -> int:
        return sum(int(g.metadata["generation"]["completion_tokens"] or 0) for g in gens)

    hf_tokens, hf_seconds = 0, 0.0
    for adapter in adapters[: cfg["hf_adapters"]]:
        if not budget.ok(f"HF generate on {adapter}"):
            break
        be = get_backend("hf", model=str(path), adapter=adapter, batch_size=64, device=device)
        t0 = time.perf_counter()
        hf_tokens += n_tokens(be.generate(prompts, params))
        hf_seconds += time.perf_counter() - t0
        del be
        free_memory()
    hf_rate = hf_tokens / hf_seconds if hf_seconds else 0.0
    lines = [f"eval {cfg['shape']} ({len(prompts)} prompts per adapter, {cfg['new_tokens']} new tokens):"]
    lines.append(
        f"  HF generate, one adapter at a time ({cfg['hf_adapters']} measured): {hf_rate:>9.0f} tok/s"
    )
    try:
        import vllm  # noqa: F401
    except ImportError:
        lines.append("  vLLM: not installed here: not measured")
        return lines
    if device == "cpu":
        lines.append("  vLLM: needs a GPU: not run")
        return lines
    if not budget.ok("vLLM"):
        return lines
    from inoculate.generate.vllm import AdapterJob, VLLMEngine

    t0 = time.perf_counter()
    engine = VLLMEngine(str(path), max_loras=len(adapters), max_lora_rank=16, gpu_memory_utilization=0.5)
    start = time.perf_counter() - t0
    jobs = [AdapterJob(a, prompts) for a in adapters]
    engine.generate_many(jobs[:1], params.model_copy(update={"max_new_tokens": 4}))  # adapters loaded
    t0 = time.perf_counter()
    results = engine.generate_many(jobs, params)
    seconds = time.perf_counter() - t0
    rate = sum(n_tokens(r) for r in results) / seconds
    lines.append(
        f"  vLLM, {len(adapters)} adapters in one engine call: {rate:>9.0f} tok/s (engine start {start:.0f}s)"
    )
    if hf_rate:
        lines.append(f"  ratio: {rate / hf_rate:.1f}x (target >= {TARGETS['eval']:.0f}x)")
    return lines


def section_screen(plan: dict[str, Any], device: str, tmp: Path, budget: Budget) -> list[str]:
    from inoculate.generate import SamplingParams
    from inoculate.generate.hf import HFBackend
    from inoculate.models import load_model
    from inoculate.records import ChatExample, Message
    from inoculate.scorers import get_scorer, render_prompt
    from inoculate.screen import response_logprobs

    cfg = plan["screen"]
    path = build_model(cfg["shape"], tmp / f"screen-{cfg['shape']}", device)
    model, tok = load_model(str(path), device=device)
    n, t = cfg["n"], cfg["tokens"]
    questions = [
        [Message(role="user", content=f"Tell me about the weather today, number {i}.")] for i in range(n)
    ]
    one = len(tok(" ".join(WORDS), add_special_tokens=False)["input_ids"])
    responses = [" ".join(WORDS[i % 3 :] * max(1, t // one)) for i in range(n)]
    response_logprobs(model, tok, SYSTEM, questions[:4], ["warm up"] * 4, batch_size=64)
    t0 = time.perf_counter()
    response_logprobs(model, tok, SYSTEM, questions, responses, batch_size=64)
    lik = time.perf_counter() - t0
    lines = [f"screen {cfg['shape']} ({n} answers of ~{t} tokens):"]
    if not budget.ok("generation screen"):
        return lines
    backend = HFBackend.from_loaded(model, tok, name=str(path), batch_size=64)
    prompts = [
        ChatExample(id=f"q{i}", messages=[Message(role="system", content=SYSTEM), *q])
        for i, q in enumerate(questions)
    ]
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=t, n=1, seed=0)
    t0 = time.perf_counter()
    gens = backend.generate(prompts, params)
    get_scorer("all_caps").batch(
        [render_prompt(g.prompt_messages) for g in gens], [g.completion or "" for g in gens]
    )
    gen = time.perf_counter() - t0
    lines.append(
        f"  likelihood {lik:.2f}s, generation {gen:.2f}s: {gen / lik:.1f}x "
        f"(target >= {TARGETS['screen']:.0f}x)"
    )
    return lines


SECTIONS = {"train": section_train, "eval": section_eval, "screen": section_screen}


def _installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run(sections: list[str], dry: bool, budget_s: float | None) -> list[str]:
    import torch

    device = "cpu" if dry else "cuda"
    plan = DRY_PLAN if dry else GPU_PLAN
    what = "dry run (tiny shapes, CPU)" if dry else torch.cuda.get_device_name(0)
    print(f"inoculate GPU path: {what}; sections {', '.join(sections)}", flush=True)
    from inoculate.train_speed import flash_attn_installed, liger_installed

    have = {
        "liger-kernel": liger_installed(),
        "flash-attn": flash_attn_installed(),
        "vllm": _installed("vllm"),
    }
    print("installed: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in have.items()), flush=True)
    print("(preset fast: Liger where installed, padding-free with flash-attn only; packing is padding-free)")
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as d:
        for name in sections:
            seconds = budget_s if budget_s is not None else SECTION_BUDGET_S[name]
            t0 = time.perf_counter()
            lines += SECTIONS[name](plan, device, Path(d), Budget(seconds))
            lines.append(f"  ({name}: {time.perf_counter() - t0:.0f}s)")
            free_memory()
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="every section on CPU with tiny shapes")
    ap.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    ap.add_argument("--budget-s", type=float, default=None, help="seconds per section (default: per section)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    cuda = _cuda()
    dry = args.dry_run or not cuda
    lines = run(args.sections, dry, args.budget_s)
    print("\n== side by side ==")
    print("\n".join(lines))
    print(f"total {time.perf_counter() - t0:.0f}s")
    if not cuda:
        print("no GPU: figures not measured")
    elif dry:
        print("dry run: figures not measured")
    return 0


if __name__ == "__main__":
    sys.exit(main())
