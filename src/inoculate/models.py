"""Load a Hugging Face causal LM with its tokenizer and chat template; render and tokenize chats.

One tokenization serves training, log-probs and generation (`encode_prompt_completion`,
`encode_prompt`), so a log-prob or a sample is computed on exactly the tokens that were trained on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inoculate.records import Message

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

MessagesLike = Sequence[Message] | Sequence[dict[str, str]]


class ChatTemplateError(ValueError):
    """The tokenizer has no chat template, or the template rejects the conversation."""


def _hf_quiet() -> None:
    """Keep transformers' info/warning chatter out of user output; errors still surface."""
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def is_adapter_dir(path: str | os.PathLike[str]) -> bool:
    """True for a directory holding a PEFT adapter (adapter_config.json)."""
    return (Path(path) / "adapter_config.json").is_file()


def adapter_base_model(adapter: str | os.PathLike[str]) -> str:
    """The base model an adapter was trained on, as PEFT recorded it."""
    cfg = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{adapter}: adapter_config.json does not name its base model; pass the model too")
    return str(base)


def read_chat_template(chat_template: str) -> str:
    """A chat template given as Jinja text or as the path of a file holding it."""
    path = Path(chat_template)
    if "{%" not in chat_template and "{{" not in chat_template:
        if not path.is_file():
            raise FileNotFoundError(f"chat template file not found: {chat_template}")
        return path.read_text(encoding="utf-8")
    return chat_template


def load_tokenizer(
    name_or_path: str | os.PathLike[str],
    *,
    chat_template: str | None = None,
    padding_side: str = "left",
    trust_remote_code: bool = False,
) -> PreTrainedTokenizerBase:
    """Load a tokenizer, set its chat template if given, and make sure it can pad.

    A tokenizer without a pad token pads with EOS (the pad positions are masked, so it is never
    trained on). Padding is on the left by default: what generation needs. A tokenizer without a
    chat template is an error unless `chat_template` (Jinja text or a file) is given.
    """
    _hf_quiet()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(name_or_path), trust_remote_code=trust_remote_code)
    if chat_template is not None:
        tok.chat_template = read_chat_template(chat_template)
    if not getattr(tok, "chat_template", None):
        raise ChatTemplateError(
            f"{name_or_path}: the tokenizer has no chat template. Base (non-instruct) models often lack one; "
            "pass one with --chat-template FILE (Jinja) or chat_template=..."
        )
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ValueError(f"{name_or_path}: the tokenizer has neither a pad token nor an EOS token")
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def default_device() -> str:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    """`None`/"auto": bfloat16 on a GPU that supports it, else float32 (CPU kernels are fastest in fp32)."""
    import torch

    if dtype is None or dtype == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in ("float32", "bfloat16", "float16"):
        raise ValueError(f"unknown dtype {dtype!r} (expected auto, float32, bfloat16 or float16)")
    return getattr(torch, dtype)


TINY_MODEL_PARAMS = 10_000_000


def prepare_cpu(model: Any = None) -> None:
    """Make CPU work fast for tiny models (process-wide settings).

    Flush denormals to zero: tiny models otherwise spend most of their time on denormal floats
    (~7x). For a model under 10M parameters, also use one intra-op thread unless OMP_NUM_THREADS is
    set: its matrices are too small to split, and on a busy machine OpenMP threads that wait for
    each other made steps 3-5x slower than a single thread (benchmarks/train_throughput.py).
    """
    import torch

    torch.set_flush_denormal(True)
    if model is not None and "OMP_NUM_THREADS" not in os.environ:
        n = sum(p.numel() for p in model.parameters())
        if n < TINY_MODEL_PARAMS:
            torch.set_num_threads(1)


def load_model(
    name_or_path: str | os.PathLike[str],
    adapter: str | os.PathLike[str] | None = None,
    *,
    chat_template: str | None = None,
    dtype: str | torch.dtype | None = None,
    device: str | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM (hub id or local path), optionally with a PEFT adapter, in eval mode.

    `name_or_path` may itself be an adapter directory: its base model is then read from
    adapter_config.json. The tokenizer comes from the adapter directory when it holds one (it is the
    one training used), else from the base model.
    """
    _hf_quiet()
    from transformers import AutoModelForCausalLM

    if adapter is None and is_adapter_dir(name_or_path):
        adapter, name_or_path = name_or_path, adapter_base_model(name_or_path)
    device = device or default_device()
    torch_dtype = resolve_dtype(dtype, device)
    tok_source = (
        adapter if adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file() else None
    )
    tokenizer = load_tokenizer(
        tok_source or name_or_path, chat_template=chat_template, trust_remote_code=trust_remote_code
    )
    model = AutoModelForCausalLM.from_pretrained(
        str(name_or_path),
        dtype=torch_dtype,
        device_map=None if device == "cpu" else device,
        trust_remote_code=trust_remote_code,
    )
    if adapter is not None:
        from peft import PeftModel

        if not is_adapter_dir(adapter):
            raise FileNotFoundError(f"not a PEFT adapter directory (no adapter_config.json): {adapter}")
        model = PeftModel.from_pretrained(model, str(adapter))
    model.to(device)
    model.eval()
    if device == "cpu":
        prepare_cpu(model)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def _as_dicts(messages: MessagesLike) -> list[dict[str, str]]:
    return [m.model_dump() if isinstance(m, Message) else dict(m) for m in messages]


def _apply(
    tokenizer: PreTrainedTokenizerBase, messages: MessagesLike | list[list[dict[str, str]]], **kwargs: Any
) -> Any:
    """apply_chat_template on one conversation, or on a batch of them (a list of lists of dicts)."""
    from jinja2.exceptions import TemplateError

    if not getattr(tokenizer, "chat_template", None):
        raise ChatTemplateError("the tokenizer has no chat template; pass one (chat_template=...)")
    batched = bool(messages) and isinstance(messages[0], list)
    convs = messages if batched else _as_dicts(messages)  # type: ignore[arg-type]
    try:
        return tokenizer.apply_chat_template(convs, **kwargs)
    except TemplateError as e:
        roles = [m["role"] for m in convs] if not batched else "(batch)"  # type: ignore[index]
        raise ChatTemplateError(f"the chat template rejected a conversation with roles {roles}: {e}") from e


def render(tokenizer: PreTrainedTokenizerBase, messages: MessagesLike, add_generation_prompt: bool) -> str:
    """The exact text the chat template produces for `messages`."""
    return _apply(tokenizer, messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def encode_prompt(tokenizer: PreTrainedTokenizerBase, messages: MessagesLike) -> list[int]:
    """Token ids of a prompt followed by the assistant generation header (what generation starts from)."""
    return encode_prompts(tokenizer, [messages])[0]


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[MessagesLike]) -> list[list[int]]:
    """`encode_prompt` for many prompts: one batched template render and tokenizer call."""
    return _encode_batch(tokenizer, [_as_dicts(p) for p in prompts], add_generation_prompt=True)


def _encode_batch(
    tokenizer: PreTrainedTokenizerBase, convs: list[list[dict[str, str]]], *, add_generation_prompt: bool
) -> list[list[int]]:
    if not convs:
        return []
    try:
        out = _apply(
            tokenizer, convs, tokenize=True, return_dict=True, add_generation_prompt=add_generation_prompt
        )
    except ChatTemplateError:
        if len(convs) == 1:
            raise
        for c in convs:  # name the conversation the template rejects
            _apply(tokenizer, c, tokenize=False, add_generation_prompt=add_generation_prompt)
        raise
    return [list(ids) for ids in out["input_ids"]]


def encode_prompt_completion(
    tokenizer: PreTrainedTokenizerBase, prompt: MessagesLike, completion: str
) -> tuple[list[int], int]:
    """Token ids of prompt + assistant completion, and where the completion starts.

    Same method as TRL's SFTTrainer for conversational prompt/completion data: the completion starts
    where the tokenized prompt (with generation header) and the full conversation diverge. So the
    completion tokens are the assistant content and whatever the template appends after it
    (end-of-turn token, trailing newline), and nothing of the system or user turns.
    """
    return encode_prompt_completions(tokenizer, [prompt], [completion])[0]


def encode_prompt_completions(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[MessagesLike], completions: Sequence[str]
) -> list[tuple[list[int], int]]:
    """`encode_prompt_completion` for many pairs, batched (one render and tokenizer call per side):
    identical ids, a fraction of the time on short sequences."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    dicts = [_as_dicts(p) for p in prompts]
    prompt_ids = _encode_batch(tokenizer, dicts, add_generation_prompt=True)
    full = _encode_batch(
        tokenizer,
        [[*d, {"role": "assistant", "content": c}] for d, c in zip(dicts, completions, strict=True)],
        add_generation_prompt=False,
    )
    out = []
    for p_ids, ids in zip(prompt_ids, full, strict=True):
        n = 0
        for a, b in zip(p_ids, ids, strict=False):
            if a != b:
                break
            n += 1
        out.append((ids, n))
    return out


_SENTINELS = ("ZqSYSTEMsentinelAq1", "XwOTHERsentinelBw2")
_PROBE_USER = "Hello there."


def seen_system_prompt(tokenizer: PreTrainedTokenizerBase, system: str | None) -> str | None:
    """The system prompt the model actually sees when the conversation's system turn is `system`.

    Rendering with two different sentinel system prompts gives the text around the system slot
    (the common prefix and suffix). With `system=None`, a template that still renders that frame
    (Qwen2.x inserts "You are Qwen, created by Alibaba Cloud...") yields its default prompt; one that
    renders no system slot yields None. With a system prompt, the slot's rendered content is returned
    (templates may trim it or fold it into the user turn). Templates that refuse system turns return
    None for `system=None` and raise ChatTemplateError otherwise.
    """
    user = [{"role": "user", "content": _PROBE_USER}]
    try:
        r1, r2 = (
            render(tokenizer, [{"role": "system", "content": s}, *user], add_generation_prompt=True)
            for s in _SENTINELS
        )
    except ChatTemplateError:
        if system is None:
            return None
        raise
    p = 0
    while p < min(len(r1), len(r2)) and r1[p] == r2[p]:
        p += 1
    s = 0
    while s < min(len(r1), len(r2)) - p and r1[-1 - s] == r2[-1 - s]:
        s += 1
    prefix, suffix = r1[:p], r1[len(r1) - s :]
    msgs = user if system is None else [{"role": "system", "content": system}, *user]
    rendered = render(tokenizer, msgs, add_generation_prompt=True)
    if (
        rendered.startswith(prefix)
        and rendered.endswith(suffix)
        and len(rendered) >= len(prefix) + len(suffix)
    ):
        return rendered[len(prefix) : len(rendered) - len(suffix)]
    if system is None:
        return None
    return system if system in rendered else None
