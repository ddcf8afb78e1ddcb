"""The speed options of `inoculate.train`: what TRL, PEFT and Liger already offer, wired in one place.

- `padding_free`: each batch is one flat sequence with `position_ids` restarting at every row, so no
  compute goes to padding. The model sees each row as it would alone: attention stays inside a row
  and the first token of each row is never a target. Same rows per step, same loss mask, same loss as
  the padded batch (checked token by token in tests/test_train_speed.py). On a GPU with flash-attn
  installed the model is loaded with `attn_implementation="flash_attention_2"`, whose varlen kernels
  take the row boundaries from the position ids: attention costs what each row alone costs. Without
  flash-attn, transformers builds a block-diagonal mask over the whole flat batch and sdpa computes
  (masked) attention across all of it, which can cost more than the padding saved; so None ("auto",
  the fast preset's value) turns padding-free on only where flash-attn is installed on a CUDA GPU.
- `packing`: rows are packed into sequences of up to `max_length` tokens by TRL's best-fit-decreasing
  packer (`trl.data_utils.pack_dataset`, strategy "bfd": whole rows only, never split), and trained
  padding-free. A step then holds `per_device_train_batch_size` packed sequences, i.e. more rows:
  fewer optimizer steps per epoch, a larger effective batch.
- `use_liger_kernel`: Liger's Triton kernels (RMSNorm, RoPE, SwiGLU) through the Trainer (optional
  extra `inoculate[gpu]`); CUDA only. None means: on when a CUDA device is present and liger-kernel is
  installed.
- `preset: fast` fills in the fields a user left unset with `FAST_PRESET`.

The loss mask is made before any of this (`train.prepare_sft_rows`): the prompt, with its inoculation
system prompt, has label -100 in every path, so none of these options can train on it.
"""

from __future__ import annotations

import importlib.util
import warnings
from typing import Any

FAST_PRESET: dict[str, Any] = {
    "padding_free": None,
    "use_liger_kernel": None,
    "optim": "adamw_torch_fused",
}
"""`preset: fast`: padding-free batches and Liger kernels where they pay (None: decided at train time
from the device and the installed packages), fused AdamW. bf16 is already
the default on a GPU that supports it, and gradient checkpointing already off. Packing is not in the
preset: it changes how many rows a step holds, so it is the user's choice (`packing: true`)."""

SPEED_DEFAULTS: dict[str, Any] = {
    "preset": None,
    "padding_free": False,
    "packing": False,
    "use_liger_kernel": False,
}
"""The speed fields at their defaults: left out of a run's fingerprint, so that runs written before
these fields existed resume unchanged."""


def apply_preset(data: Any) -> Any:
    """Fill a config mapping's unset fields from its preset (the user's own values win)."""
    if isinstance(data, dict) and data.get("preset") == "fast":
        return {**FAST_PRESET, **data}
    return data


def liger_installed() -> bool:
    return importlib.util.find_spec("liger_kernel") is not None


def flash_attn_installed() -> bool:
    return importlib.util.find_spec("flash_attn") is not None


def resolve_padding_free(requested: bool | None, packing: bool, on_gpu: bool) -> bool:
    """Packing is always padding-free; None is "where flash-attn's varlen kernels run"."""
    if packing:
        return True
    if requested is None:
        return on_gpu and flash_attn_installed()
    return requested


def resolve_liger(requested: bool | None, on_gpu: bool) -> bool:
    """Whether to apply Liger kernels: None is "where they can run" (a CUDA device, the package
    installed). An explicit True without a GPU or without the package is an error with a hint."""
    if requested is None:
        return on_gpu and liger_installed()
    if requested and not on_gpu:
        raise ValueError("use_liger_kernel: Liger's kernels need a CUDA GPU (set it to false or null on CPU)")
    if requested and not liger_installed():
        raise ValueError("use_liger_kernel: liger-kernel is not installed (pip install 'inoculate[gpu]')")
    return bool(requested)


def speed_args(
    *,
    padding_free: bool | None,
    packing: bool,
    use_liger_kernel: bool | None,
    on_gpu: bool,
    model_init_kwargs: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """SFTConfig arguments for the speed options (the fields as the user set them, resolved here).

    Rows arrive tokenized, truncated and (with packing) already packed, since `skip_prepare_dataset`
    skips TRL's own packing; TRL's collator then builds the padding-free batches. TRL refuses
    `padding_free` with a `max_length` it would not enforce, so `max_length` goes as None there: our
    rows already fit it. Tokens are counted as all tokens of the flat batch, which holds no padding.
    `model_init_kwargs` (the ones train() built) gain flash-attention for padding-free on a GPU unless
    they name an `attn_implementation`."""
    padding_free = resolve_padding_free(padding_free, packing, on_gpu)
    use_liger_kernel = resolve_liger(use_liger_kernel, on_gpu)
    args: dict[str, Any] = {}
    if packing:
        args.update(packing=True, packing_strategy="bfd", padding_free=True)
    elif padding_free:
        args.update(padding_free=True, max_length=None)
    if packing or padding_free:
        # With a cache, transformers does not build the block-diagonal mask from the position ids, and
        # rows would attend across their boundaries (the Trainer's default; set so nothing undoes it).
        args["use_cache"] = False
        # A flat batch has no attention mask, and the Trainer's "non_padding" count would then drop
        # every token equal to the pad token (often the end-of-turn token); it has no padding to drop.
        args["include_num_input_tokens_seen"] = "all"
        init = dict(model_init_kwargs or {})
        if on_gpu and "attn_implementation" not in init:
            if flash_attn_installed():
                args["model_init_kwargs"] = {**init, "attn_implementation": "flash_attention_2"}
            else:
                warnings.warn(
                    "padding-free batches without flash-attn: sdpa attends over the whole flat batch under "
                    "a block mask, which may cost more than the padding saved (pip install flash-attn)",
                    stacklevel=2,
                )
    if use_liger_kernel:
        args["use_liger_kernel"] = True
    return args


def pack_rows(rows: list[dict[str, list[int]]], max_length: int) -> Any:
    """TRL's best-fit-decreasing packing of tokenized rows into a `datasets.Dataset` of sequences of at
    most `max_length` tokens, with `seq_lengths` (each row's length, for the position ids). Rows are
    never split: each is already at most `max_length` long."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    longest = max(len(r["input_ids"]) for r in rows)
    if longest > max_length:
        raise ValueError(f"a row of {longest} tokens is longer than max_length={max_length}")
    return pack_dataset(Dataset.from_list(rows), max_length, "bfd")
