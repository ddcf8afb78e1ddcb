"""Score chat examples: the final assistant turn is the completion, the turns before it the prompt."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from typing import Any

from inoculate.errors import InputError, InputErrors
from inoculate.records import ChatExample, Message
from inoculate.scorers.registry import Scorer, rows_metadata, shared_batch

BATCH_SIZE = 512
"""Rows per scoring batch: work shared between scorers (language detection) lives one batch long."""


def render_prompt(messages: Sequence[Message]) -> str:
    """The prompt text a scorer sees.

    A lone user turn is passed as its bare content (what a caller of `scorer(prompt, completion)`
    would pass by hand); anything longer is a transcript of `role: content` blocks separated by
    blank lines, so a system prompt or earlier turns stay visible to the scorer.
    """
    if len(messages) == 1 and messages[0].role == "user":
        return messages[0].content
    return "\n\n".join(f"{m.role}: {m.content}" for m in messages)


def score_texts(
    prompts: Sequence[str],
    completions: Sequence[str],
    scorers: Sequence[Scorer] | Mapping[str, Scorer],
    *,
    batch_size: int | None = BATCH_SIZE,
    share: bool = True,
    metadata: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, list[float]]:
    """Score (prompt, completion) pairs with every scorer, `batch_size` rows at a time: spec -> values.

    Each batch runs inside `shared_batch` (unless `share=False`), so scorers share work within it,
    e.g. one language-detection pass per text for all `language:XX` specs; the shared results are
    dropped at the end of the batch, so their memory is bounded by the batch. `batch_size=None`
    scores all rows as one batch; with `share=False` too that is the unshared path (benchmarks).
    A mapping of scorers is keyed by its names instead of the scorers' own (`spec`). `metadata` (one
    dict per row) is what `batch_metadata()` returns to scorers during each batch.
    """
    if len(prompts) != len(completions):
        raise ValueError(f"score_texts: {len(prompts)} prompts but {len(completions)} completions")
    if metadata is not None and len(metadata) != len(completions):
        raise ValueError(f"score_texts: {len(metadata)} metadata rows but {len(completions)} completions")
    named = list(scorers.items()) if isinstance(scorers, Mapping) else [(s.name, s) for s in scorers]
    out: dict[str, list[float]] = {name: [] for name, _ in named}
    step = batch_size or max(len(completions), 1)
    for start in range(0, len(completions), step):
        p, c = prompts[start : start + step], completions[start : start + step]
        meta = None if metadata is None else metadata[start : start + step]
        with shared_batch() if share else nullcontext(), rows_metadata(meta):
            for name, s in named:
                out[name].extend(s.batch(p, c))
    return out


def score_examples(
    examples: Sequence[ChatExample],
    scorers: Sequence[Scorer] | Mapping[str, Scorer],
    *,
    batch_size: int | None = BATCH_SIZE,
    share: bool = True,
) -> dict[str, list[float]]:
    """Score every example with every scorer (through each scorer's batch form): spec -> values.

    Streams `batch_size` examples at a time through `score_texts` (see there for `share`).
    """
    names = list(scorers) if isinstance(scorers, Mapping) else [s.name for s in scorers]
    out: dict[str, list[float]] = {name: [] for name in names}
    step = batch_size or max(len(examples), 1)
    for start in range(0, len(examples), step):
        chunk = examples[start : start + step]
        prompts = [render_prompt(ex.prompt_messages) for ex in chunk]
        completions = [ex.completion or "" for ex in chunk]
        meta = [ex.metadata for ex in chunk]
        got = score_texts(prompts, completions, scorers, batch_size=None, share=share, metadata=meta)
        for name, values in got.items():
            out[name].extend(values)
    return out


def score_generations(
    generations: Sequence[ChatExample], scorers: Sequence[Scorer] | Mapping[str, Scorer]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The one scoring pass (`score_examples`: prompts rendered, each scorer batched) as per-row scores
    and per-scorer means.

    rows: one dict per generation, `{"id", "sample", <scorer>: value}` (NaN written as None;
    `sample` is `metadata.generation.sample_index`); means: scorer -> `{mean, n, n_nan}` with NaN
    rows left out. Scorers given as a mapping are named by its keys (else by their specs).
    `scores_of(rows, name)` reads one scorer's column back with NaN.
    """
    scores = score_examples(generations, scorers)
    rows = []
    for i, g in enumerate(generations):
        sample = (g.metadata.get("generation") or {}).get("sample_index")
        row: dict[str, Any] = {"id": g.id, "sample": sample}
        row.update({name: None if math.isnan(v[i]) else v[i] for name, v in scores.items()})
        rows.append(row)
    means: dict[str, dict[str, Any]] = {}
    for name, vals in scores.items():
        ok = [v for v in vals if not math.isnan(v)]
        means[name] = {"mean": sum(ok) / len(ok) if ok else None, "n": len(ok), "n_nan": len(vals) - len(ok)}
    return rows, means


def scores_of(rows: Sequence[Mapping[str, Any]], name: str) -> list[float]:
    """One scorer's column of `score_generations` rows, None read back as NaN."""
    return [math.nan if r[name] is None else r[name] for r in rows]


def row_seeds(examples: Sequence[ChatExample], lines: Sequence[int], source: str) -> list[Any] | None:
    """`metadata.seed` of every row, or None when no row has one; some-but-not-all is an error
    (`InputErrors` at each row's line of `source`). Summaries average each seed first."""
    have = ["seed" in ex.metadata for ex in examples]
    if not any(have):
        return None
    errors = []
    for ex, line, has in zip(examples, lines, have, strict=True):
        if not has:
            errors.append(InputError(source, line, "metadata.seed", "missing, but other rows have a seed"))
        elif not isinstance(ex.metadata["seed"], (int, str)) or isinstance(ex.metadata["seed"], bool):
            errors.append(InputError(source, line, "metadata.seed", "must be an integer or a string"))
    if errors:
        raise InputErrors(errors)
    return [ex.metadata["seed"] for ex in examples]


def row_clusters(examples: Sequence[ChatExample]) -> list[Any] | None:
    """The prompt each row was sampled from (`metadata.generation.source_id`), or None if no row says.

    Rows without one are their own cluster. Several samples of one prompt (generations with
    n > 1) are then summarized with the prompt as the unit, not the sample.
    """
    ids: list[Any] = []
    found = False
    for i, ex in enumerate(examples):
        gen = ex.metadata.get("generation")
        sid = gen.get("source_id") if isinstance(gen, dict) else None
        if isinstance(sid, (str, int)) and not isinstance(sid, bool):
            ids.append(("prompt", sid))
            found = True
        else:
            ids.append(("row", i))
    return ids if found else None
