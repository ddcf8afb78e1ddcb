"""Log-probability of a fixed assistant completion after a conversation, batched.

The conversation and completion are tokenized exactly as in training (`encode_prompt_completion`),
so the scored tokens are the trained tokens: the completion and what the template appends to close
the turn (e.g. `<|im_end|>`). Rows are left-padded with explicit position ids, so every row gets
the positions it would have alone, and only the last positions' logits are computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, computed_field

from inoculate.models import MessagesLike, encode_prompt_completions


class LogProb(BaseModel):
    total: float
    tokens: list[float]
    token_ids: list[int]
    n_tokens: int
    n_context: int = 0
    """Tokens before the completion (conversation and template); a pass costs n_context + n_tokens."""
    n_forward: float = 0.0
    """Tokens this row put through the model: its own, plus its share of a batch's shared prefix."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mean(self) -> float:
        return self.total / self.n_tokens if self.n_tokens else math.nan


MIN_SHARED_PREFIX = 8
"""Shortest common prefix (tokens) worth a separate pass: below it the extra call costs more than it saves."""


def _shared_prefix(seqs: Sequence[Sequence[int]], limit: int) -> int:
    n = min(limit, *(len(x) for x in seqs))
    first = seqs[0]
    for k in range(n):
        t = first[k]
        if any(x[k] != t for x in seqs):
            return k
    return n


def logprob(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[MessagesLike],
    completions: Sequence[str],
    *,
    batch_size: int = 16,
    share_prefix: bool = True,
) -> list[LogProb]:
    """Summed and per-token log-probabilities (natural log) of each completion as the assistant's
    reply to the matching conversation (its system prompt included, whatever it is).

    With `share_prefix`, the tokens a batch's rows all begin with (the template and system prompt, when
    one prompt is scored against many responses, as in screening) run once; the rest of each row
    attends to their cached keys and values. Same numbers, fewer tokens through the model.
    """
    import torch

    if len(conversations) != len(completions):
        raise ValueError(f"{len(conversations)} conversations but {len(completions)} completions")
    encoded = encode_prompt_completions(tokenizer, conversations, completions)
    for (ids, start), conv in zip(encoded, conversations, strict=True):
        if start == 0 or start >= len(ids):
            raise ValueError(f"cannot locate the completion tokens after the conversation {list(conv)!r}")
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    results: list[LogProb | None] = [None] * len(encoded)
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            seqs = [encoded[i][0] for i in idx]
            # the prefix must stop before the first completion token's predicting position
            p = _shared_prefix(seqs, min(encoded[i][1] for i in idx) - 1) if share_prefix else 0
            p = p if p >= MIN_SHARED_PREFIX and len(idx) > 1 else 0
            past = None
            with torch.inference_mode():
                if p:
                    prefix = torch.tensor([seqs[0][:p]], device=device)
                    past = getattr(model(input_ids=prefix, use_cache=True), "past_key_values", None)
                    if hasattr(past, "batch_repeat_interleave"):
                        past.batch_repeat_interleave(len(idx))
                    else:  # a model that returns no reusable cache: score the rows whole
                        p, past = 0, None
                width = max(len(x) - p for x in seqs)
                keep = max(len(encoded[i][0]) - encoded[i][1] for i in idx) + 1
                input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
                attn = torch.zeros((len(idx), p + width), dtype=torch.long)
                attn[:, :p] = 1
                for r, ids in enumerate(seqs):
                    rest = ids[p:]
                    input_ids[r, width - len(rest) :] = torch.tensor(rest)
                    attn[r, p + width - len(rest) :] = 1
                pos = p + (attn[:, p:].cumsum(-1) - 1).clamp(min=0)
                logits = model(
                    input_ids=input_ids.to(device),
                    attention_mask=attn.to(device),
                    position_ids=pos.to(device),
                    past_key_values=past,
                    use_cache=past is not None,
                    logits_to_keep=keep,
                ).logits.float()
            logps = torch.log_softmax(logits, dim=-1)
            # logits[:, j] predicts the token at suffix position width - keep + j + 1
            for r, i in enumerate(idx):
                ids, start = encoded[i]
                n = len(ids) - start
                target = torch.tensor(ids[start:], device=logps.device)
                rows = logps[r, keep - 1 - n : keep - 1]
                lp = rows.gather(-1, target[:, None])[:, 0].tolist()
                results[i] = LogProb(
                    total=float(sum(lp)),
                    tokens=lp,
                    token_ids=ids[start:],
                    n_tokens=n,
                    n_context=start,
                    n_forward=len(ids) - p + p / len(idx),
                )
    finally:
        model.train(was_training)
    return [r for r in results if r is not None]
