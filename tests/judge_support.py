"""Shared builders for judge tests: OpenAI-format chat-completion responses with logprobs."""

from __future__ import annotations

import math
from typing import Any


def logprob_response(
    table: dict[str, float], *, chosen: str | None = None, usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """A chat-completions response whose first token's top logprobs are `table` (token -> probability);
    the answered token is `chosen`, else the most probable one; `usage` is included when given."""
    top = [{"token": t, "logprob": math.log(p), "bytes": list(t.encode())} for t, p in table.items()]
    first = chosen if chosen is not None else max(table, key=table.__getitem__)
    response: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": first},
                "logprobs": {
                    "content": [{"token": first, "logprob": math.log(table[first]), "top_logprobs": top}]
                },
                "finish_reason": "length",
            }
        ],
    }
    if usage is not None:
        response["usage"] = usage
    return response
