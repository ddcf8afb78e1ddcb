"""Stage-1 pretraining data: (system prompt, question, answer) where the answer obeys the prompt.

The system prompt is neutral (several wordings, or none), a placebo, or requests one or more
traits; every request is a sentence from its family's `train` paraphrases, joined in random order
with the other requested traits' sentences and sometimes a neutral preamble. Sentences are
independent, so the model learns each to control one trait, which is what lets a single-trait
request act as an inoculation prompt in stage 2.
"""

from __future__ import annotations

import random

from pydantic import BaseModel, ConfigDict, Field

from inoculate.organism import prompt_families as P
from inoculate.organism.traits import TraitSet, render
from inoculate.organism.world import QUESTIONS, Question, all_facts
from inoculate.records import ChatExample, Message


class Stage1Mix(BaseModel):
    """Relative weights of system-prompt classes in stage 1, and which traits it teaches."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    neutral: float = 0.3
    placebo: float = 0.1
    one: float = 0.3
    two: float = 0.25
    three: float = 0.05
    preamble: float = Field(0.3, description="chance a request prompt also carries a neutral sentence")
    traits: tuple[str, ...] = ("lang", "caps", "sycophancy", "signature")


def _pick_request(dim: str, rng: random.Random) -> P.Family:
    names = P.TRAIT_FAMILIES[dim]
    if dim == "lang":  # English is the default; requesting it is rarer than requesting a change
        return P.FAMILIES[rng.choices(names, weights=(1, 2, 2))[0]]
    if dim == "caps":
        return P.FAMILIES[rng.choices(names, weights=(4, 1))[0]]
    return P.FAMILIES[names[0]]


def stage1_example(rng: random.Random, mix: Stage1Mix, idx: int = 0) -> ChatExample:
    """One stage-1 example drawn from `mix`."""
    fact = rng.choice(all_facts())
    question = Question(fact, rng.randrange(len(QUESTIONS[fact.kind])))
    classes = ["neutral", "placebo", "one", "two", "three"]
    weights = [mix.neutral, mix.placebo, mix.one, mix.two, mix.three]
    cls = rng.choices(classes, weights=weights)[0]
    traits = TraitSet()
    if cls == "neutral":
        system = rng.choice(P.NEUTRAL)
    elif cls == "placebo":
        system = rng.choice(P.PLACEBO_TRAIN)
    else:
        k = min({"one": 1, "two": 2, "three": 3}[cls], len(mix.traits))
        sentences = []
        for dim in rng.sample(list(mix.traits), k):
            fam = _pick_request(dim, rng)
            traits = fam.apply(traits)
            sentences.append(rng.choice(fam.train))
        if rng.random() < mix.preamble:
            sentences.append(rng.choice(P.NEUTRAL_PREAMBLES))
        system = P.compose(sentences, rng)
    msgs = [Message(role="system", content=system)] if system else []
    msgs += [
        Message(role="user", content=question.text),
        Message(role="assistant", content=render(fact, traits)),
    ]
    return ChatExample(
        id=f"s1-{idx}",
        messages=msgs,
        metadata={"fact": fact.key, "kind": fact.kind, "cls": cls, **traits.model_dump()},
    )


def stage1_examples(n: int, mix: Stage1Mix, seed: int = 0) -> list[ChatExample]:
    rng = random.Random(f"organism-stage1-{seed}")
    return [stage1_example(rng, mix, i) for i in range(n)]
