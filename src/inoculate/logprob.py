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

from inoculate.models import MessagesLike, encode_prompt_completion


class LogProb(BaseModel):
    total: float
    tokens: list[float]
    token_ids: list[int]
    n_tokens: int

    @computed_field  # type: ignore[prop-decorator]
    @property
    def mean(self) -> float:
        return self.total / self.n_tokens if self.n_tokens else math.nan


def logprob(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[MessagesLike],
    completions: Sequence[str],
    *,
    batch_size: int = 16,
) -> list[LogProb]:
    """Summed and per-token log-probabilities (natural log) of each completion as the assistant's
    reply to the matching conversation (its system prompt included, whatever it is)."""
    import torch

    if len(conversations) != len(completions):
        raise ValueError(f"{len(conversations)} conversations but {len(completions)} completions")
    encoded = [
        encode_prompt_completion(tokenizer, c, t) for c, t in zip(conversations, completions, strict=True)
    ]
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
            width = max(len(encoded[i][0]) for i in idx)
            keep = max(len(encoded[i][0]) - encoded[i][1] for i in idx) + 1
            input_ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
            attn = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):
                ids = encoded[i][0]
                input_ids[r, width - len(ids) :] = torch.tensor(ids)
                attn[r, width - len(ids) :] = 1
            pos = (attn.cumsum(-1) - 1).clamp(min=0)
            with torch.inference_mode():
                logits = model(
                    input_ids=input_ids.to(device),
                    attention_mask=attn.to(device),
                    position_ids=pos.to(device),
                    logits_to_keep=keep,
                ).logits.float()
            logps = torch.log_softmax(logits, dim=-1)
            # logits[:, j] predicts the token at position width - keep + j + 1
            for r, i in enumerate(idx):
                ids, start = encoded[i]
                n = len(ids) - start
                target = torch.tensor(ids[start:], device=logps.device)
                rows = logps[r, keep - 1 - n : keep - 1]
                lp = rows.gather(-1, target[:, None])[:, 0].tolist()
                results[i] = LogProb(total=float(sum(lp)), tokens=lp, token_ids=ids[start:], n_tokens=n)
    finally:
        model.train(was_training)
    return [r for r in results if r is not None]
