"""Score chat examples: the final assistant turn is the completion, the turns before it the prompt."""

from __future__ import annotations

from collections.abc import Sequence

from inoculate.records import ChatExample, Message
from inoculate.scorers.registry import Scorer


def render_prompt(messages: Sequence[Message]) -> str:
    """The prompt text a scorer sees.

    A lone user turn is passed as its bare content (what a caller of `scorer(prompt, completion)`
    would pass by hand); anything longer is a transcript of `role: content` blocks separated by
    blank lines, so a system prompt or earlier turns stay visible to the scorer.
    """
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content
    return "\n\n".join(f"{m.role}: {m.content}" for m in messages)


def score_examples(examples: Sequence[ChatExample], scorers: Sequence[Scorer]) -> dict[str, list[float]]:
    """Score every example with every scorer (through each scorer's batch form): spec -> values."""
    prompts = [render_prompt(ex.prompt_messages) for ex in examples]
    completions = [ex.completion or "" for ex in examples]
    return {s.name: s.batch(prompts, completions) for s in scorers}
