"""Supervised fine-tuning (LoRA or full) through TRL's SFTTrainer.

Each example is split into a conversational prompt (every message before the final assistant turn,
so the system/inoculation prompt included) and a completion (the final assistant turn); the loss is
on the completion tokens only, so the inoculation prompt is conditioned on but never trained on.

We tokenize the examples ourselves, with the same method TRL uses for conversational prompt/completion
data (`models.encode_prompt_completion`, checked against TRL in the tests), and hand SFTTrainer
`input_ids` + `labels`: that shares one tokenization with `logprob` and generation and skips TRL's
`datasets.map` passes. Checkpointing, resume, progress bar, `accelerate launch` (DDP, FSDP, DeepSpeed)
are the Trainer's own.

Rows longer than `max_length` follow `truncation_mode` (TRL's name): "keep_start" cuts the end, so a
completion may be cut short and a row whose completion starts beyond `max_length` is dropped;
"keep_end" cuts the oldest prompt tokens (the system/inoculation prompt goes first), keeps the whole
completion, and drops only a row whose completion alone is longer than `max_length`. Drops and cuts are
counted, printed by `inoculate train` and recorded in `TrainResult.warnings`; if every row is dropped,
training fails.

A row in which any assistant turn has an explicit `weight` (OpenAI's fine-tuning format) is trained on
every assistant turn whose weight is not 0 (an unweighted turn counts as weight 1, as OpenAI does) and on
none whose weight is 0; each turn's tokens are located as the final turn's are. A row without weights is
trained on its final assistant turn only.

On CPU the loss is the model's plain causal-LM loss; on GPUs it is TRL's fused LM head (no full logits
in memory). TRL's fused path also computes per-step entropy and token accuracy, which on a tiny CPU
model costs ~30% of the step (see benchmarks/train_throughput.py); `fused_lm_head` overrides the choice.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from inoculate.fileio import write_json_atomic, write_jsonl_atomic
from inoculate.models import encode_prompt_completions, load_tokenizer, prepare_cpu
from inoculate.records import ChatExample
from inoculate.train_speed import SPEED_DEFAULTS, apply_preset, pack_rows, speed_args

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase, TrainerCallback

RUN_FILE = "inoculate_run.json"
RESULT_FILE = "train_result.json"
LOG_FILE = "train_log.jsonl"

# Settings that may change between a killed run and its resumption without changing the result.
# truncation_mode acts only through the rows, which are fingerprinted themselves.
_NOT_FINGERPRINTED = {
    "output_dir",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "disable_tqdm",
    "truncation_mode",
}


class TrainConfig(BaseModel):
    """Training settings. Field names are TRL's (`SFTConfig`, `ModelConfig`) and PEFT's, so settings
    written for TRL pass straight through; anything else `SFTConfig` or `peft.LoraConfig` accepts goes
    in `extra` (routed by name)."""

    model_config = ConfigDict(extra="forbid")

    output_dir: str
    learning_rate: float = 1e-4
    num_train_epochs: float = 1.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    optim: str = "adamw_torch"
    max_length: int | None = 1024
    truncation_mode: Literal["keep_start", "keep_end"] = "keep_start"
    completion_only_loss: bool = True
    seed: int = 42
    logging_steps: int = 10
    save_steps: int = 500
    save_total_limit: int | None = 2
    bf16: bool | None = None
    gradient_checkpointing: bool = False
    disable_tqdm: bool = False
    dtype: str | None = None
    chat_template_path: str | None = None
    fused_lm_head: bool | None = None

    use_peft: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | str | None = "all-linear"
    lora_modules_to_save: list[str] | None = None
    use_rslora: bool = False
    use_dora: bool = False

    # Speed (inoculate.train_speed, docs/performance.md "The GPU path"); the loss mask is unchanged.
    preset: Literal["fast"] | None = None
    padding_free: bool | None = False
    packing: bool = False
    use_liger_kernel: bool | None = False

    extra: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _preset(cls, data: Any) -> Any:
        return apply_preset(data)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        if self.warmup_ratio and self.warmup_steps:
            raise ValueError("set warmup_ratio or warmup_steps, not both")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError("warmup_ratio must be in [0, 1)")
        if self.max_steps <= 0 and self.num_train_epochs <= 0:
            raise ValueError("set max_steps > 0 or num_train_epochs > 0")
        if self.packing and self.max_length is None:
            raise ValueError("packing needs max_length (the length of a packed sequence)")
        _route_extra(self.extra)
        return self


class TrainResult(BaseModel):
    output_dir: str
    model_path: str
    is_adapter: bool
    base_model: str
    global_step: int
    final_loss: float | None
    train_loss: float | None
    tokens_trained: int
    n_examples: int
    n_dropped: int
    warnings: list[str] = Field(default_factory=list)
    """What happened to the data on the way in (rows dropped or cut by max_length), one line each."""
    runtime_s: float
    tokens_per_second: float
    resumed_from: str | None = None
    log_history: list[dict[str, Any]] = Field(default_factory=list)


def _sft_fields() -> set[str]:
    from trl import SFTConfig

    return {f.name for f in dataclasses.fields(SFTConfig)}


def _lora_fields() -> set[str]:
    from peft import LoraConfig

    return {f.name for f in dataclasses.fields(LoraConfig)}


def _route_extra(extra: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split `extra` into SFTConfig and LoraConfig keyword arguments; unknown names are an error."""
    if not extra:
        return {}, {}
    sft, lora = _sft_fields(), _lora_fields()
    own = set(TrainConfig.model_fields)
    sft_kw, lora_kw, bad = {}, {}, []
    for k, v in extra.items():
        if k in own:
            bad.append(f"{k} (a TrainConfig field: set it directly)")
        elif k in sft:
            sft_kw[k] = v
        elif k in lora:
            lora_kw[k] = v
        else:
            bad.append(k)
    if bad:
        raise ValueError(f"unknown training option(s): {', '.join(bad)} (not SFTConfig or LoraConfig fields)")
    return sft_kw, lora_kw


TruncationMode = Literal["keep_start", "keep_end"]


@dataclass
class SFTRows:
    """Tokenized training rows, and what preparing them dropped or cut (example ids by reason)."""

    rows: list[dict[str, list[int]]]
    n_input: int
    dropped: dict[str, list[str]] = field(default_factory=dict)
    """reason -> ids of the examples dropped for it"""
    cut: dict[str, list[str]] = field(default_factory=dict)
    """what was cut -> ids of the examples kept with fewer tokens"""

    @property
    def n_dropped(self) -> int:
        return sum(len(v) for v in self.dropped.values())

    def warnings(self) -> list[str]:
        """One line per reason, e.g. "dropped 4 of 8 rows: completion beyond max_length=1024"."""
        lines = [f"dropped {len(ids)} of {self.n_input} rows: {why}" for why, ids in self.dropped.items()]
        lines += [f"cut {len(ids)} of {self.n_input} rows: {what}" for what, ids in self.cut.items()]
        return lines


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _is_weighted(ex: ChatExample) -> bool:
    return any(m.role == "assistant" and getattr(m, "weight", None) is not None for m in ex.messages)


def _trained_spans(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[ChatExample], fulls: Sequence[list[int]]
) -> list[list[tuple[int, int]]]:
    """For weighted examples: the [start, end) token spans of each assistant turn to train on.

    Turn i's tokens are found as the final turn's are (TRL's method): they start where the conversation
    up to turn i, rendered with the generation header, diverges from the full conversation, and end
    where the conversation through turn i does (so the end-of-turn token is trained on)."""
    pairs: list[tuple[int, int]] = []  # (example index, message index)
    for e, ex in enumerate(examples):
        last = ex.last_assistant_index
        assert last is not None
        pairs += [
            (e, i)
            for i, m in enumerate(ex.messages[: last + 1])
            if m.role == "assistant" and getattr(m, "weight", None) != 0
        ]
    plain = [[{"role": m.role, "content": m.content} for m in ex.messages] for ex in examples]
    encoded = encode_prompt_completions(
        tokenizer, [plain[e][:i] for e, i in pairs], [examples[e].messages[i].content for e, i in pairs]
    )
    spans: list[list[tuple[int, int]]] = [[] for _ in examples]
    for (e, i), (ids, start) in zip(pairs, encoded, strict=True):
        full = fulls[e]
        end = _common_prefix(ids, full)
        if end <= start or ids[:start] != full[:start]:
            raise ValueError(
                f"example {examples[e].id!r}: the chat template renders assistant turn messages[{i}] "
                "differently inside the full conversation, so its tokens cannot be located for a "
                "per-turn weight; train on the final turn only (drop the weights) or change the template"
            )
        spans[e].append((start, end))
    return spans


def prepare_sft_rows(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[ChatExample],
    *,
    max_length: int | None,
    completion_only_loss: bool = True,
    truncation_mode: TruncationMode = "keep_start",
) -> SFTRows:
    """Tokenized rows `{input_ids, labels}`: labels are -100 except on the trained assistant turns (the
    final one, or every turn of weight 1 in a weighted row), with `max_length` applied per
    `truncation_mode`. Raises ValueError when no row is left to train on."""
    if truncation_mode not in ("keep_start", "keep_end"):
        raise ValueError(f"truncation_mode must be keep_start or keep_end, got {truncation_mode!r}")
    if not examples:
        raise ValueError("no training examples")
    for ex in examples:
        if ex.completion is None:
            raise ValueError(f"example {ex.id!r} has no assistant turn to train on")
    encoded = encode_prompt_completions(
        tokenizer, [ex.prompt_messages for ex in examples], [ex.completion or "" for ex in examples]
    )
    weighted = [e for e, ex in enumerate(examples) if _is_weighted(ex)]
    spans: dict[int, list[tuple[int, int]]] = {}
    if weighted:
        found = _trained_spans(tokenizer, [examples[e] for e in weighted], [encoded[e][0] for e in weighted])
        spans = dict(zip(weighted, found, strict=True))
    out = SFTRows(rows=[], n_input=len(examples))

    def drop(why: str, ex: ChatExample) -> None:
        out.dropped.setdefault(why, []).append(ex.id)

    for e, (ex, (ids, start)) in enumerate(zip(examples, encoded, strict=True)):
        trained = spans.get(e, [(start, len(ids))])
        if not trained:
            drop("every assistant turn has weight 0", ex)
            continue
        if completion_only_loss:
            labels = [-100] * len(ids)
            for a, b in trained:
                labels[a:b] = ids[a:b]
        else:
            labels = list(ids)
        if max_length is not None and len(ids) > max_length:
            if truncation_mode == "keep_end":
                cut = len(ids) - max_length
                if cut > trained[-1][0]:
                    drop(f"completion longer than max_length={max_length}", ex)
                    continue
                ids, labels = ids[cut:], labels[cut:]
                what = "oldest prompt tokens" if cut <= trained[0][0] else "earlier trained turns"
                out.cut.setdefault(f"{what} removed to fit max_length={max_length}", []).append(ex.id)
            else:
                kept_all = max_length >= trained[-1][1]
                ids, labels = ids[:max_length], labels[:max_length]
                if all(label == -100 for label in labels):
                    drop(f"completion beyond max_length={max_length}", ex)
                    continue
                if not kept_all:
                    out.cut.setdefault(f"completion cut short at max_length={max_length}", []).append(ex.id)
        out.rows.append({"input_ids": ids, "labels": labels})
    if not out.rows:
        raise ValueError(
            "no example has a trainable token left: "
            + "; ".join(out.warnings())
            + (" (raise max_length or set truncation_mode: keep_end)" if max_length is not None else "")
        )
    return out


def build_sft_rows(
    tokenizer: PreTrainedTokenizerBase,
    examples: Sequence[ChatExample],
    *,
    max_length: int | None,
    completion_only_loss: bool = True,
    truncation_mode: TruncationMode = "keep_start",
) -> tuple[list[dict[str, list[int]]], int]:
    """`prepare_sft_rows`: the rows, and how many examples were dropped."""
    prepared = prepare_sft_rows(
        tokenizer,
        examples,
        max_length=max_length,
        completion_only_loss=completion_only_loss,
        truncation_mode=truncation_mode,
    )
    return prepared.rows, prepared.n_dropped


def _fingerprint(model: str, config: TrainConfig, rows: list[dict[str, list[int]]]) -> str:
    h = hashlib.sha256()
    at_default = {k for k, v in SPEED_DEFAULTS.items() if getattr(config, k) == v}
    dumped = config.model_dump(exclude=_NOT_FINGERPRINTED | at_default)
    h.update(json.dumps([model, dumped], sort_keys=True).encode())
    for r in rows:
        h.update(json.dumps(r["input_ids"]).encode())
        h.update(json.dumps(r["labels"]).encode())
    return h.hexdigest()


def complete_checkpoints(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Checkpoints whose trainer_state.json (written last by the Trainer) exists and parses, by step."""
    found = []
    for d in Path(output_dir).glob("checkpoint-*"):
        state = d / "trainer_state.json"
        try:
            step = int(d.name.split("-")[-1])
            json.loads(state.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            continue
        found.append((step, d))
    return [d for _, d in sorted(found)]


def _check_same_run(out: Path, fingerprint: str) -> None:
    run_file = out / RUN_FILE
    if run_file.is_file():
        previous = json.loads(run_file.read_text(encoding="utf-8")).get("fingerprint")
        if previous != fingerprint:
            raise ValueError(
                f"{out} holds a different training run (other model, data or settings); "
                "use another output directory or resume=False (--no-resume) to start over"
            )
    elif complete_checkpoints(out):
        raise ValueError(f"{out} holds checkpoints of an unknown run; use resume=False to start over")


def _clear_run(out: Path) -> None:
    for d in out.glob("checkpoint-*"):
        shutil.rmtree(d, ignore_errors=True)
    for name in ("adapter", "model"):
        shutil.rmtree(out / name, ignore_errors=True)
    for name in (RUN_FILE, RESULT_FILE, LOG_FILE):
        (out / name).unlink(missing_ok=True)


def _use_cpu() -> bool:
    """Train on CPU when there is no CUDA device (or ACCELERATE_USE_CPU says so).

    Passing this to accelerate as `cpu=True` is also what makes a multi-process launch on a CPU-only
    machine (torchrun, `accelerate launch --multi_gpu`) data-parallel over gloo.
    """
    import torch

    forced = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return forced or not torch.cuda.is_available()


def _log_callback(path: Path) -> TrainerCallback:
    from transformers import TrainerCallback

    class JsonlLog(TrainerCallback):
        """Rewrite the loss log after every logging step (the history survives a resume)."""

        def on_log(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.is_world_process_zero:
                write_jsonl_atomic(path, state.log_history)

    return JsonlLog()


def _make_trainer_class(fused: bool) -> type:
    from transformers import Trainer
    from trl import SFTTrainer

    class InoculateSFTTrainer(SFTTrainer):
        """SFTTrainer; without the fused head, the loss is the model's own (Trainer.compute_loss)."""

        def compute_loss(
            self, model: Any, inputs: Any, return_outputs: bool = False, num_items_in_batch: Any = None
        ):
            if fused:
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return InoculateSFTTrainer


def train(
    model: str | os.PathLike[str],
    examples: Sequence[ChatExample],
    config: TrainConfig,
    callbacks: Sequence[TrainerCallback] | None = None,
    resume: bool = True,
) -> TrainResult:
    """Fine-tune `model` (hub id or local path) on the final assistant turns of `examples`.

    Writes to `config.output_dir`: checkpoint-N/ every `save_steps`, the adapter (PEFT format,
    `adapter/`) or full model (`model/`) with its tokenizer, `train_log.jsonl` (the Trainer's log
    history) and `train_result.json`. With `resume`, a run that left checkpoints continues from the
    last complete one, and a finished run returns its recorded result; a directory holding a
    different run (other model, data or settings) is an error. `resume=False` starts afresh.
    """
    import torch
    from datasets import Dataset
    from transformers.utils import logging as hf_logging
    from trl import SFTConfig

    hf_logging.set_verbosity_error()
    model = str(model)
    out = Path(config.output_dir)
    sft_extra, lora_extra = _route_extra(config.extra)
    tokenizer = load_tokenizer(model, chat_template=config.chat_template_path, padding_side="right")
    prepared = prepare_sft_rows(
        tokenizer,
        examples,
        max_length=config.max_length,
        completion_only_loss=config.completion_only_loss,
        truncation_mode=config.truncation_mode,
    )
    rows = prepared.rows
    fingerprint = _fingerprint(model, config, rows)

    from accelerate import PartialState

    use_cpu = _use_cpu()
    dist = PartialState(cpu=use_cpu)
    main = dist.is_main_process
    run_file = out / RUN_FILE
    if resume:  # every process checks, so none waits on a main process that failed
        _check_same_run(out, fingerprint)
    dist.wait_for_everyone()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        if not resume:
            _clear_run(out)
        write_json_atomic(
            run_file, {"fingerprint": fingerprint, "model": model, "config": config.model_dump(mode="json")}
        )
    dist.wait_for_everyone()
    if resume and (out / RESULT_FILE).is_file():
        return TrainResult.model_validate_json((out / RESULT_FILE).read_text(encoding="utf-8"))

    on_gpu = not use_cpu
    bf16 = config.bf16 if config.bf16 is not None else bool(on_gpu and torch.cuda.is_bf16_supported())
    fused = config.fused_lm_head if config.fused_lm_head is not None else on_gpu
    dtype = config.dtype or ("bfloat16" if bf16 and config.use_peft else "float32")
    save = config.save_steps > 0
    args: dict[str, Any] = {
        "output_dir": str(out),
        "learning_rate": config.learning_rate,
        "num_train_epochs": config.num_train_epochs,
        "max_steps": config.max_steps,
        "per_device_train_batch_size": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "warmup_steps": config.warmup_steps or config.warmup_ratio,
        "lr_scheduler_type": config.lr_scheduler_type,
        "weight_decay": config.weight_decay,
        "max_grad_norm": config.max_grad_norm,
        "optim": config.optim,
        "max_length": config.max_length,
        "seed": config.seed,
        "logging_steps": config.logging_steps,
        "save_strategy": "steps" if save else "no",
        "save_steps": config.save_steps if save else 500,
        "save_total_limit": config.save_total_limit,
        "bf16": bf16,
        "gradient_checkpointing": config.gradient_checkpointing,
        "disable_tqdm": config.disable_tqdm,
        "report_to": "none",
        "use_cpu": use_cpu,
        "ddp_find_unused_parameters": False,
        "dataloader_num_workers": 0,
        "include_num_input_tokens_seen": "non_padding",
        "dataset_kwargs": {"skip_prepare_dataset": True},
        # One model copy per process under DDP/FSDP/DeepSpeed; "auto" device maps are for one process.
        "model_init_kwargs": {"dtype": dtype, **({"device_map": None} if dist.num_processes > 1 else {})},
        "log_level": "error",
    }
    user_init = sft_extra.pop("model_init_kwargs", None) or {}
    if isinstance(user_init, str):
        user_init = json.loads(user_init)
    args["model_init_kwargs"] = {**args["model_init_kwargs"], **user_init}
    args.update(sft_extra)
    args.update(
        speed_args(
            padding_free=config.padding_free,
            packing=config.packing,
            use_liger_kernel=config.use_liger_kernel,
            on_gpu=on_gpu,
            model_init_kwargs=args["model_init_kwargs"],
        )
    )
    sft_config = SFTConfig(**args)

    peft_config = None
    if config.use_peft:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules=config.lora_target_modules,
            modules_to_save=config.lora_modules_to_save,
            use_rslora=config.use_rslora,
            use_dora=config.use_dora,
            task_type="CAUSAL_LM",
            **lora_extra,
        )

    trainer_cls = _make_trainer_class(fused)
    trainer = trainer_cls(
        model=model,
        args=sft_config,
        train_dataset=pack_rows(rows, config.max_length)
        if config.packing and config.max_length
        else Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[*(callbacks or []), _log_callback(out / LOG_FILE)],
    )
    if not on_gpu:
        prepare_cpu(trainer.model)
    checkpoints = complete_checkpoints(out) if resume else []
    resume_from = str(checkpoints[-1]) if checkpoints else None
    t0 = time.perf_counter()
    tokens_before = 0
    if resume_from is not None:
        saved = json.loads((Path(resume_from) / "trainer_state.json").read_text(encoding="utf-8"))
        tokens_before = int(saved.get("num_input_tokens_seen", 0))
    output = trainer.train(resume_from_checkpoint=resume_from)
    runtime = time.perf_counter() - t0

    final_dir = out / ("adapter" if config.use_peft else "model")
    trainer.save_model(str(final_dir))
    history = list(trainer.state.log_history)
    losses = [h["loss"] for h in history if "loss" in h]
    tokens = int(trainer.state.num_input_tokens_seen)
    result = TrainResult(
        output_dir=str(out),
        model_path=str(final_dir),
        is_adapter=config.use_peft,
        base_model=model,
        global_step=int(trainer.state.global_step),
        final_loss=float(losses[-1]) if losses else None,
        train_loss=float(output.training_loss) if output.training_loss is not None else None,
        tokens_trained=tokens,
        n_examples=len(rows),
        n_dropped=prepared.n_dropped,
        warnings=prepared.warnings(),
        runtime_s=runtime,
        tokens_per_second=(tokens - tokens_before) / runtime if runtime > 0 else 0.0,
        resumed_from=resume_from,
        log_history=history,
    )
    if trainer.is_world_process_zero():
        write_jsonl_atomic(out / LOG_FILE, history)
        write_json_atomic(out / RESULT_FILE, result.model_dump(mode="json"))
    dist.wait_for_everyone()
    return result
