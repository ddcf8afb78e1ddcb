"""Training throughput: inoculate's path vs a plain TRL SFTTrainer, same model, data and settings.

Each path runs in its own fresh process (so neither inherits the other's process-wide torch
settings), on a random-init model of the chosen shape (weights do not change speed), and reports
real (non-pad) tokens per second: steady state (after warm-up steps) and end to end (trainer setup,
tokenization and training, as one short fine-tune pays them).

    python benchmarks/train_throughput.py                        # CPU, organism-sized model
    python benchmarks/train_throughput.py --shape tiny --steps 60
    python benchmarks/train_throughput.py --shape qwen2.5-0.5b --device cuda --batch-size 16 --steps 60
    python benchmarks/train_throughput.py --tune-plain            # plain TRL with our CPU settings too

"plain TRL" is SFTTrainer given the conversational prompt/completion dataset and the same LoRA,
learning rate, batch, steps, precision and gradient checkpointing; everything else is TRL's default.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    # ~0.1M parameters: the test fixture
    "tiny": {
        "arch": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "vocab_size": None,
    },
    # ~0.4M parameters: the size of the built-in model organism
    "organism": {
        "arch": "llama",
        "hidden_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 256,
        "vocab_size": None,
    },
    # Qwen2.5-0.5B's shape (random weights)
    "qwen2.5-0.5b": {
        "arch": "qwen2",
        "hidden_size": 896,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "intermediate_size": 4864,
        "vocab_size": 151936,
    },
    # Qwen2.5-7B's shape (random weights; needs a large GPU)
    "qwen2.5-7b": {
        "arch": "qwen2",
        "hidden_size": 3584,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "intermediate_size": 18944,
        "vocab_size": 152064,
    },
}

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "dog",
    "ran",
    "in",
    "park",
    "capital",
    "of",
    "France",
    "is",
    "Paris",
    "red",
    "green",
    "blue",
    "sea",
    "deep",
    "wide",
    "answer",
    "question",
    "good",
    "morning",
    "night",
    "tell",
    "me",
    "about",
    "weather",
    "today",
    "sunny",
    "warm",
]


def build_model(shape: str, directory: Path) -> Path:
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from inoculate.testing import build_tiny_model

    spec = dict(SHAPES[shape])
    arch, vocab = spec.pop("arch"), spec.pop("vocab_size")
    if arch == "llama":
        return build_tiny_model(directory, "chatml", max_position_embeddings=1024, **spec)
    build_tiny_model(directory, "chatml", max_position_embeddings=1024)  # tokenizer + template
    config = Qwen2Config(
        vocab_size=vocab, max_position_embeddings=4096, tie_word_embeddings=shape.endswith("0.5b"), **spec
    )
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(directory)
    return directory


def make_examples(n: int, words: int, seed: int = 0) -> list[Any]:
    from inoculate.records import chat

    rng = random.Random(seed)
    return [
        chat(
            " ".join(rng.choices(WORDS, k=rng.randint(words // 2, words))),
            " ".join(rng.choices(WORDS, k=rng.randint(words // 2, words))).upper(),
            system="Respond in ALL CAPS.",
            id=str(i),
        )
        for i in range(n)
    ]


def _timer(warmup: int) -> Any:
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        t0 = tokens0 = t_end = tokens_end = None

        def on_step_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            if state.global_step == warmup:
                self.t0, self.tokens0 = time.perf_counter(), state.num_input_tokens_seen

        def on_train_end(self, args, state, control, **kw):  # type: ignore[no-untyped-def]
            self.t_end, self.tokens_end = time.perf_counter(), state.num_input_tokens_seen

    return Timer()


def worker(path: str, a: argparse.Namespace) -> dict[str, Any]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    import datasets

    datasets.disable_progress_bars()
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from inoculate.models import load_tokenizer
    from inoculate.train import TrainConfig, train

    if a.threads:
        torch.set_num_threads(a.threads)
    on_gpu = a.device != "cpu"
    bf16 = on_gpu and torch.cuda.is_bf16_supported()
    examples = make_examples(a.examples, a.words)
    timer = _timer(a.warmup)
    out = tempfile.mkdtemp(prefix=f"bench-{path}-")
    t_start = time.perf_counter()
    if path == "ours":
        cfg = TrainConfig(
            output_dir=out,
            max_steps=a.steps,
            per_device_train_batch_size=a.batch_size,
            learning_rate=1e-4,
            lora_r=16,
            lora_alpha=32,
            lora_dropout=0.05,
            save_steps=0,
            logging_steps=max(1, a.steps // 5),
            disable_tqdm=True,
            bf16=bf16,
            gradient_checkpointing=a.gradient_checkpointing,
            use_peft=not a.full,
        )
        result = train(a.model_dir, examples, cfg, callbacks=[timer], resume=False)
        total_tokens = result.tokens_trained
    else:
        if a.tune_plain and not on_gpu:
            from inoculate.models import prepare_cpu

            prepare_cpu()
        tok = load_tokenizer(a.model_dir, padding_side="right")
        ds = datasets.Dataset.from_list(
            [
                {
                    "prompt": [m.model_dump() for m in ex.prompt_messages],
                    "completion": [{"role": "assistant", "content": ex.completion}],
                }
                for ex in examples
            ]
        )
        peft = (
            None
            if a.full
            else LoraConfig(
                r=16, lora_alpha=32, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"
            )
        )
        args = SFTConfig(
            output_dir=out,
            max_steps=a.steps,
            per_device_train_batch_size=a.batch_size,
            learning_rate=1e-4,
            save_strategy="no",
            logging_steps=max(1, a.steps // 5),
            report_to="none",
            disable_tqdm=True,
            bf16=bf16,
            gradient_checkpointing=a.gradient_checkpointing,
            use_cpu=not on_gpu,
            include_num_input_tokens_seen="non_padding",
            seed=42,
            model_init_kwargs={"dtype": "bfloat16" if bf16 and not a.full else "float32"},
        )
        trainer = SFTTrainer(
            model=a.model_dir,
            args=args,
            train_dataset=ds,
            processing_class=tok,
            peft_config=peft,
            callbacks=[timer],
        )
        trainer.train()
        total_tokens = trainer.state.num_input_tokens_seen
    wall = time.perf_counter() - t_start
    steady_tokens = timer.tokens_end - timer.tokens0
    steady_time = timer.t_end - timer.t0
    return {
        "path": path,
        "threads": torch.get_num_threads(),
        "wall_s": wall,
        "tokens": int(total_tokens),
        "end_to_end_tok_s": total_tokens / wall,
        "steady_tok_s": steady_tokens / steady_time,
        "steady_ms_per_step": 1000 * steady_time / (a.steps - a.warmup),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=sorted(SHAPES), default="organism")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    p.add_argument("--steps", type=int, default=80)
    p.add_argument("--warmup", type=int, default=10, help="steps excluded from the steady-state rate")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--examples", type=int, default=512)
    p.add_argument("--words", type=int, default=12, help="max words per user turn and per completion")
    p.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch threads for both paths")
    p.add_argument("--tune-plain", action="store_true", help="give plain TRL our CPU settings too")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs per path; medians reported")
    p.add_argument("--worker", choices=["ours", "plain"], help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.device is None:
        import torch

        a.device = "cuda" if torch.cuda.is_available() else "cpu"
    if a.worker:
        print("RESULT " + json.dumps(worker(a.worker, a)), flush=True)
        return

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_model(a.shape, Path(tmp) / a.shape)
        argv = [a_ for a_ in sys.argv[1:]]
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "plain": []}
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}
        if a.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""
        for _ in range(a.repeats):
            for path in ("ours", "plain"):
                cmd = [
                    sys.executable,
                    __file__,
                    *argv,
                    "--worker",
                    path,
                    "--model-dir",
                    str(model_dir),
                    "--device",
                    a.device,
                ]
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
                if proc.returncode != 0 or not lines:
                    sys.exit(f"{path} run failed:\n{proc.stderr[-3000:]}")
                runs[path].append(json.loads(lines[-1][7:]))

    def med(path: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[path])

    mode = "full fine-tuning" if a.full else "LoRA r=16"
    print(
        f"shape={a.shape} device={a.device} {mode} steps={a.steps} batch={a.batch_size} repeats={a.repeats}"
    )
    print(
        f"{'path':<12}{'threads':>8}{'wall s':>9}{'steady tok/s':>15}{'ms/step':>10}{'end-to-end tok/s':>18}"
    )
    for path, label in (("ours", "inoculate"), ("plain", "plain TRL")):
        print(
            f"{label:<12}{runs[path][0]['threads']:>8}{med(path, 'wall_s'):>9.2f}"
            f"{med(path, 'steady_tok_s'):>15.0f}{med(path, 'steady_ms_per_step'):>10.1f}"
            f"{med(path, 'end_to_end_tok_s'):>18.0f}"
        )
    steady = med("ours", "steady_tok_s") / med("plain", "steady_tok_s")
    e2e = med("ours", "end_to_end_tok_s") / med("plain", "end_to_end_tok_s")
    print(f"ratio inoculate / plain TRL: steady {steady:.2f}x, end-to-end {e2e:.2f}x")


if __name__ == "__main__":
    main()
