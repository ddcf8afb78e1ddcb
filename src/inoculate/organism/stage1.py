"""Stage-1 pretraining data: (system prompt, question, answer) where the answer obeys the prompt.

The system prompt is neutral (several wordings, or none), a placebo, or requests one or more
traits; every request is a sentence from its family's `train` paraphrases, joined in random order
with the other requested traits' sentences and sometimes a neutral preamble. Sentences are
independent, so the model learns each to control one trait, which is what lets a single-trait
request act as an inoculation prompt in stage 2.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field, model_validator

from inoculate.organism import prompt_families as P
from inoculate.organism.extensions import extension_counts, get_extension
from inoculate.organism.traits import TraitSet, render
from inoculate.organism.world import QUESTIONS, Question, all_facts
from inoculate.records import ChatExample, Message

# Languages are requested most: each language's answers must be seen often enough for the facts to be
# learned in it too (measured: with equal weights Spanish correctness lagged far behind English).
TRAIT_WEIGHTS: dict[str, float] = {"lang": 3.0, "caps": 2.0, "sycophancy": 1.0, "signature": 1.0}


class Stage1Mix(BaseModel):
    """Relative weights of system-prompt classes in stage 1, and which traits it teaches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    neutral: float = 0.2
    placebo: float = 0.1
    one: float = 0.3
    two: float = 0.3
    three: float = 0.1
    preamble: float = Field(0.3, description="chance a request prompt also carries a neutral sentence")
    spontaneous: float = Field(
        0.0, ge=0, le=1, description="chance, per trait the prompt leaves open, that the answer has it anyway"
    )
    traits: tuple[str, ...] = ("lang", "caps", "sycophancy", "signature")
    trait_weights: tuple[float, ...] | None = Field(
        None, description="how often each of `traits` is among the requested ones (None: TRAIT_WEIGHTS)"
    )

    @model_validator(mode="after")
    def _check(self) -> Stage1Mix:
        if self.trait_weights is not None and len(self.trait_weights) != len(self.traits):
            raise ValueError("trait_weights needs one weight per trait in `traits`")
        unknown = set(self.traits) - set(TRAIT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown trait(s) {sorted(unknown)}; known: {', '.join(TRAIT_WEIGHTS)}")
        return self

    def weights(self) -> list[float]:
        return list(self.trait_weights or [TRAIT_WEIGHTS[t] for t in self.traits])


def _pick_request(dim: str, rng: random.Random) -> P.Family:
    names = P.TRAIT_FAMILIES[dim]
    if dim == "lang":  # English is the default; requesting it is rarer than requesting a change
        return P.FAMILIES[rng.choices(names, weights=(1, 2, 2))[0]]
    if dim == "caps":
        return P.FAMILIES[rng.choices(names, weights=(4, 1))[0]]
    return P.FAMILIES[names[0]]


def _sample_traits(rng: random.Random, mix: Stage1Mix, k: int) -> list[str]:
    """`k` distinct trait dimensions, drawn by weight without replacement."""
    pool = list(mix.traits)
    weights = mix.weights()
    out = []
    for _ in range(k):
        i = rng.choices(range(len(pool)), weights=weights)[0]
        out.append(pool.pop(i))
        weights.pop(i)
    return out


def stage1_example(rng: random.Random, mix: Stage1Mix, idx: int = 0) -> ChatExample:
    """One stage-1 example drawn from `mix`."""
    fact = rng.choice(all_facts())
    question = Question(fact, rng.randrange(len(QUESTIONS[fact.kind])))
    classes = ["neutral", "placebo", "one", "two", "three"]
    weights = [mix.neutral, mix.placebo, mix.one, mix.two, mix.three]
    cls = rng.choices(classes, weights=weights)[0]
    traits = TraitSet()
    requested: list[str] = []
    if cls == "neutral":
        system = rng.choice(P.NEUTRAL)
    elif cls == "placebo":
        system = rng.choice(P.PLACEBO_TRAIN)
    else:
        k = min({"one": 1, "two": 2, "three": 3}[cls], len(mix.traits))
        sentences = []
        requested = _sample_traits(rng, mix, k)
        for dim in requested:
            fam = _pick_request(dim, rng)
            traits = fam.apply(traits)
            sentences.append(rng.choice(fam.train))
        if rng.random() < mix.preamble:
            sentences.append(rng.choice(P.NEUTRAL_PREAMBLES))
        system = P.compose(sentences, rng)
    spontaneous = []
    if mix.spontaneous > 0:
        for dim in mix.traits:
            if dim not in requested and rng.random() < mix.spontaneous:
                spontaneous.append(dim)
                traits = traits.with_(**{dim: rng.choice(("es", "fr")) if dim == "lang" else True})
    msgs = [Message(role="system", content=system)] if system else []
    msgs += [
        Message(role="user", content=question.text),
        Message(role="assistant", content=render(fact, traits)),
    ]
    return ChatExample(
        id=f"s1-{idx}",
        messages=msgs,
        metadata={
            "fact": fact.key,
            "kind": fact.kind,
            "cls": cls,
            "spontaneous": spontaneous,
            **traits.model_dump(),
        },
    )


def stage1_examples(
    n: int, mix: Stage1Mix, seed: int = 0, extensions: tuple[str, ...] = ()
) -> list[ChatExample]:
    """`n` stage-1 rows: each extension's share (`extensions.Stage1Extension.weight`), the base mix the rest.

    The base rows come first and are drawn from the same rng whether or not there are extensions, so
    a preset without extensions gets exactly the rows it always had; each extension draws from an rng
    of its own (the trainer shuffles the rows).
    """
    counts = extension_counts(extensions, n) if extensions else {}
    n_base = n - sum(counts.values())
    rng = random.Random(f"organism-stage1-{seed}")
    out = [stage1_example(rng, mix, i) for i in range(n_base)]
    for name, k in counts.items():
        rows = get_extension(name).examples(random.Random(f"organism-stage1-{seed}-{name}"), k)
        if len(rows) != k:
            raise ValueError(f"stage-1 extension {name!r} returned {len(rows)} rows; {k} were asked for")
        out += [
            ex.model_copy(update={"id": f"s1-{name}-{i}", "metadata": {**ex.metadata, "extension": name}})
            for i, ex in enumerate(rows)
        ]
    return out
