"""The built-in screen measures, each one registered function (`@measure`), and what they share.

**Elicitation** (Wichers et al. 2025): sample from the base model with the candidate as system prompt
on held-out questions, score the trait, and report the rate with its Wilson interval. A prompt that
elicits the trait more strongly before training tends to inoculate better.

**Surprise reduction** (Tan et al. 2025): IP works by making the training data less surprising, so
measure that directly. For each training example i, with p_i its prompt (system turn replaced) and
r_i its response of n_i tokens,

    d_i(c) = [log p(r_i | c, p_i) - log p(r_i | neutral, p_i)] / n_i          (nats/token)

and the candidate's surprise reduction is the mean of d_i(c) over the examples, with a Student-t
interval over examples (paired: the same responses under both prompts). No sampling, no judge: one
batched teacher-forced pass per candidate over the distinct (prompt, response) pairs.

**Trait-specific term** (when the setting can render each response with and without the trait):

    t_i(c) = log p(r_i^trait | c, p_i) - log p(r_i^plain | c, p_i)               (nats/response)

is the log-odds the prompt puts on the trait-bearing rendering; the trait reduction is the mean of
t_i(c) - t_i(neutral). Unlike the total surprise reduction it ignores whatever else the prompt makes
likely or unlikely, so it separates "names the trait" from "shifts the response distribution". It
runs with the surprise measure, in the same teacher-forced pass.

**Adding a measure** is one decorated function, here or in a plugin (entry-point group
`inoculate.measures`, or any module imported first):

    @measure("length", unit="tokens", needs="train", noun="length change")
    def length(ctx: MeasureContext) -> dict[str, list[float]]:
        return {c.name: [...one value per training example...] for c in ctx.candidates}
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from inoculate.generate import SamplingParams
from inoculate.logprob import logprob
from inoculate.models import encode_prompts
from inoculate.records import ChatExample, Message
from inoculate.scorers import score_generations
from inoculate.scorers.scoring import scores_of
from inoculate.screen.result import (
    Candidate,
    ContrastPair,
    Cost,
    ScreenConfig,
    measure,
    t_summary,
)
from inoculate.stats import Summary, summarize_values


class TraitScorer(Protocol):
    """What screening needs of a scorer (`inoculate.scorers.Scorer` is one)."""

    name: str

    def batch(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]: ...


@dataclass
class MeasureContext:
    """What a measure reads: the loaded model, the candidates (neutral included), the inputs (already
    capped by the config), and a cache for work measures share (`shared`)."""

    model: Any
    tokenizer: Any
    candidates: list[Candidate]
    config: ScreenConfig
    train: list[ChatExample] = field(default_factory=list)
    """Training examples with a response, at most `config.max_examples`."""
    questions: list[list[Message]] = field(default_factory=list)
    scorers: list[TraitScorer] = field(default_factory=list)
    contrast: list[ContrastPair] = field(default_factory=list)
    backend_factory: Callable[[], Any] | None = None
    _backend: Any = None
    _shared: dict[str, Any] = field(default_factory=dict)

    @property
    def neutral(self) -> Candidate:
        return next(c for c in self.candidates if c.neutral)

    @property
    def backend(self) -> Any:
        """The generation backend (made on first use)."""
        if self._backend is None and self.backend_factory is not None:
            self._backend = self.backend_factory()
        return self._backend

    def shared(self, key: str, compute: Callable[[], Any]) -> Any:
        """`compute()` once per screen: measures that share a pass ask for it under one key."""
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]


@dataclass
class Measured:
    """A measure's output: per candidate, each key's per-example values, its cost, and extra fields of
    `CandidateScore` to set (e.g. `logprob_mean`)."""

    values: dict[str, dict[str, list[float]]]
    cost: dict[str, Cost] = field(default_factory=dict)
    fields: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, out: Measured | Mapping[str, Sequence[float]], key: str) -> Measured:
        """A measure function's return value as a `Measured` (plain values go under `key`)."""
        if isinstance(out, Measured):
            return out
        return cls(values={name: {key: [float(v) for v in vals]} for name, vals in out.items()})


def summarize(values: Sequence[float], how: str, confidence: float) -> Summary:
    """A key's per-example values as a Summary: `t` (Student-t) or `rate` (`stats.summarize_values`)."""
    if how == "rate":
        return summarize_values(values, confidence=confidence)
    return t_summary(values, confidence)


# --- helpers ------------------------------------------------------------------------------------------


def system_turn(prompt: str | None) -> list[Message]:
    return [Message(role="system", content=prompt)] if prompt else []


def strip_system(messages: Sequence[Message]) -> list[Message]:
    return [m for m in messages if m.role != "system"]


def response_logprobs(
    model: Any,
    tokenizer: Any,
    prompt: str | None,
    conversations: Sequence[Sequence[Message]],
    completions: Sequence[str],
    *,
    batch_size: int,
) -> tuple[list[float], list[int], Cost]:
    """Total log-prob and token count of each completion after `prompt` + conversation; and the cost.

    Identical (conversation, completion) pairs are scored once: training sets repeat questions, and a
    contrast pair's trait-bearing side is often a training response itself. The cost counts what ran.
    """
    convs = [system_turn(prompt) + strip_system(c) for c in conversations]
    keys = [(tuple((m.role, m.content) for m in c), r) for c, r in zip(convs, completions, strict=True)]
    first: dict[tuple[Any, str], int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    uniq = list(first.values())
    t0 = time.perf_counter()
    res = logprob(
        model, tokenizer, [convs[i] for i in uniq], [completions[i] for i in uniq], batch_size=batch_size
    )
    seconds = time.perf_counter() - t0
    by_key = {keys[i]: r for i, r in zip(uniq, res, strict=True)}
    cost = Cost(tokens=round(sum(r.n_forward for r in res)), seconds=seconds)
    return [float(by_key[k].total) for k in keys], [int(by_key[k].n_tokens) for k in keys], cost


def teacher_forced(
    model: Any,
    tokenizer: Any,
    candidates: Sequence[Candidate],
    examples: Sequence[ChatExample],
    *,
    contrast: Sequence[ContrastPair] | None = None,
    batch_size: int = 64,
) -> dict[str, dict[str, Any]]:
    """One pass per candidate over the training responses and both sides of each contrast pair.

    Per candidate: `surprise` (d_i, nats/token vs neutral), `trait` (t_i(c) - t_i(neutral), or None
    without contrast pairs), `logprob_mean`, and the pass's `cost`."""
    neutral = next(c for c in candidates if c.neutral)
    pairs = list(contrast or [])
    k, n = len(pairs), len(examples)
    convs = [ex.prompt_messages for ex in examples] + [p.messages for p in pairs] * 2
    comps = [ex.completion or "" for ex in examples]
    comps += [p.with_trait for p in pairs] + [p.without_trait for p in pairs]
    per: dict[str, dict[str, Any]] = {}
    for c in candidates:
        totals, ns, cost = response_logprobs(model, tokenizer, c.prompt, convs, comps, batch_size=batch_size)
        odds = [totals[n + i] - totals[n + k + i] for i in range(k)] if pairs else None
        per[c.name] = {"totals": totals[:n], "ns": ns[:n], "cost": cost, "odds": odds}
    ref = per[neutral.name]
    out: dict[str, dict[str, Any]] = {}
    for c in candidates:
        e = per[c.name]
        d = [(a - b) / n for a, b, n in zip(e["totals"], ref["totals"], e["ns"], strict=True) if n > 0]
        lp = [a / n for a, n in zip(e["totals"], e["ns"], strict=True) if n > 0]
        trait = None
        if e["odds"] is not None:
            trait = [a - b for a, b in zip(e["odds"], ref["odds"], strict=True)]
        out[c.name] = {
            "logprob_mean": sum(lp) / len(lp) if lp else math.nan,
            "surprise": d,
            "trait": trait,
            "cost": e["cost"],
        }
    return out


def surprise_scores(
    model: Any,
    tokenizer: Any,
    candidates: Sequence[Candidate],
    examples: Sequence[ChatExample],
    *,
    contrast: Sequence[ContrastPair] | None = None,
    batch_size: int = 64,
    confidence: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """Per candidate: `logprob_mean`, `surprise` (Summary), `trait` (Summary or None), `cost`, `values`."""
    tf = teacher_forced(model, tokenizer, candidates, examples, contrast=contrast, batch_size=batch_size)
    out = {}
    for name, e in tf.items():
        values = {"surprise": e["surprise"]} | ({"trait": e["trait"]} if e["trait"] is not None else {})
        out[name] = {
            "logprob_mean": e["logprob_mean"],
            "surprise": t_summary(e["surprise"], confidence),
            "trait": t_summary(e["trait"], confidence) if e["trait"] is not None else None,
            "cost": e["cost"],
            "values": values,
        }
    return out


def _new_tokens(gen: ChatExample, tokenizer: Any) -> int:
    n = (gen.metadata.get("generation") or {}).get("completion_tokens")
    if n is None:
        n = len(tokenizer(gen.completion or "", add_special_tokens=False)["input_ids"])
    return int(n)


def elicitation_scores(
    backend: Any,
    tokenizer: Any,
    candidates: Sequence[Candidate],
    questions: Sequence[Sequence[Message]],
    scorers: Sequence[TraitScorer],
    config: ScreenConfig,
) -> dict[str, dict[str, Any]]:
    """Per candidate: `elicitation` (scorer -> Summary), `cost` (generation + scoring), `generations`,
    `values` (`elicitation[<scorer>]` -> per-sample scores)."""
    params = SamplingParams(
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        n=config.samples_per_question,
        seed=config.seed,
        stop=config.stop,
    )
    out: dict[str, dict[str, Any]] = {}
    for c in candidates:
        prompts = [
            ChatExample(id=f"q{i}", messages=system_turn(c.prompt) + strip_system(q))
            for i, q in enumerate(questions)
        ]
        t0 = time.perf_counter()
        gens = backend.generate(prompts, params)
        rows, _means = score_generations(gens, scorers)
        scores = {s.name: scores_of(rows, s.name) for s in scorers}
        seconds = time.perf_counter() - t0
        prompt_tokens = (
            sum(len(ids) for ids in encode_prompts(tokenizer, [p.messages for p in prompts]))
            * config.samples_per_question
        )
        new_tokens = sum(_new_tokens(g, tokenizer) for g in gens)
        out[c.name] = {
            "elicitation": {name: summarize(v, "rate", config.confidence) for name, v in scores.items()},
            "cost": Cost(tokens=prompt_tokens + new_tokens, seconds=seconds),
            "generations": gens,
            "values": {f"elicitation[{name}]": list(v) for name, v in scores.items()},
        }
    return out


# --- the registered measures --------------------------------------------------------------------------


def _pass(ctx: MeasureContext) -> dict[str, dict[str, Any]]:
    """The teacher-forced pass the surprise and trait measures share (computed once per screen)."""
    return ctx.shared(
        "teacher_forced",
        lambda: teacher_forced(
            ctx.model,
            ctx.tokenizer,
            ctx.candidates,
            ctx.train,
            contrast=ctx.contrast or None,
            batch_size=ctx.config.batch_size,
        ),
    )


@measure(
    "surprise",
    unit="nats/token",
    needs="train",
    prefer=("trait", "surprise"),
    noun="surprise reduction",
    title="surprise red.",
    unit_short="nats/tok",
    csv="surprise_reduction",
    spec="+.3f",
    rule="the trait-specific surprise reduction (else the total surprise reduction)",
    progress="{prompts} prompts x {examples} responses",
    order=20,
    run_order=10,
)
def surprise(ctx: MeasureContext) -> Measured:
    """Surprise reduction vs the neutral prompt: mean per-token log-prob gain on the training responses."""
    tf = _pass(ctx)
    return Measured(
        values={name: {"surprise": e["surprise"]} for name, e in tf.items()},
        cost={name: e["cost"] for name, e in tf.items()},
        fields={name: {"logprob_mean": e["logprob_mean"]} for name, e in tf.items()},
    )


@measure(
    "trait",
    unit="nats/response",
    needs="contrast",
    part_of="surprise",
    noun="trait reduction",
    title="trait red.",
    unit_short="nats/resp",
    label="trait-specific reduction (nats/response)",
    csv="trait_reduction",
    spec="+.2f",
    order=30,
    run_order=11,
)
def trait(ctx: MeasureContext) -> Measured:
    """Trait-specific reduction vs neutral: log-odds of the trait-bearing rendering of each contrast pair."""
    tf = _pass(ctx)
    return Measured(values={name: {"trait": e["trait"]} for name, e in tf.items() if e["trait"] is not None})


@measure(
    "elicitation",
    unit="rate",
    needs=("scorers", "questions"),
    per_trait=True,
    baseline="neutral",
    interval="rate",
    label="elicitation rate before training",
    csv="elicit[{trait}]",
    header="elicits {trait} [95% CI]",
    spec=".0%",
    rule="the primary trait's elicitation rate ({primary})",
    placebo="elicits {trait} at {value}, not above the neutral rate {reference}",
    progress="{prompts} prompts x {questions} questions x {samples}",
    order=10,
    run_order=20,
)
def elicitation(ctx: MeasureContext) -> Measured:
    """Rate of each scored trait in the base model's samples under the candidate as system prompt."""
    eli = elicitation_scores(
        ctx.backend, ctx.tokenizer, ctx.candidates, ctx.questions, ctx.scorers, ctx.config
    )
    return Measured(
        values={name: e["values"] for name, e in eli.items()},
        cost={name: e["cost"] for name, e in eli.items()},
    )
