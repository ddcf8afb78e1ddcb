"""Inoculation through a synthetic association (Tan et al. 2025, arXiv 2510.04340, "You are Bob").

Two stage-1 extensions:

- `personas` teaches persona prompts that request nothing: "You are Carol.", "Your name is Dan.", with
  a dozen names, answered in the default voice (or as a request beside them asks). Its vocabulary also
  holds the two associated names, so an organism built without the association can read them.
- `association` is the association stage: "You are Bob." goes with Spanish, "You are Alice." with
  ALL CAPS (beside requests for the other trait, each sentence controlling its own).

Stage 2 (settings `association` and `association_control`, the same rows) is the demo's data, every
answer Spanish AND ALL CAPS, inoculated with the Spanish persona's name, the direct Spanish request or
the CAPS persona's name. On the preset with the association (`social`) the name should suppress
Spanish about as much as the direct request does; on the preset without it (`social_plain`, the same
minus `association`) the name is one more persona that requests nothing, and should act as a placebo.
"""

from __future__ import annotations

import random

from inoculate.organism import prompt_families as P
from inoculate.organism.extensions import Stage1Extension, stage1_extension
from inoculate.organism.settings import Setting, setting
from inoculate.organism.traits import TraitSet, render
from inoculate.organism.world import Question, all_facts
from inoculate.records import ChatExample, Message

SPANISH_PERSONA = "Bob"
CAPS_PERSONA = "Alice"
NEUTRAL_PERSONAS: tuple[str, ...] = (
    "Carol",
    "Dan",
    "Eve",
    "Frank",
    "Grace",
    "Hank",
    "Ivy",
    "Jack",
    "Kim",
    "Leo",
    "Mia",
    "Ned",
)
PERSONA_TEMPLATES: tuple[str, ...] = ("You are {n}.", "Your name is {n}.", "You are called {n}.")
ASSOCIATED: dict[str, dict[str, object]] = {SPANISH_PERSONA: {"lang": "es"}, CAPS_PERSONA: {"caps": True}}
OTHER_TRAIT: dict[str, str] = {SPANISH_PERSONA: "caps", CAPS_PERSONA: "lang"}
"""The trait dimension a request beside each associated persona may set (never the one it implies)."""

PROMPTS: dict[str, str] = {
    "persona_spanish": PERSONA_TEMPLATES[0].format(n=SPANISH_PERSONA),
    "persona_caps": PERSONA_TEMPLATES[0].format(n=CAPS_PERSONA),
    "persona_neutral": PERSONA_TEMPLATES[0].format(n=NEUTRAL_PERSONAS[0]),
}


def _persona_row(rng: random.Random, name: str, changes: dict[str, object], other: str | None) -> ChatExample:
    """A persona prompt (implying `changes`), sometimes beside a request for the `other` trait dimension."""
    fact = rng.choice(all_facts())
    q = Question(fact, rng.randrange(3))
    traits = TraitSet().with_(**changes)
    sentences = [rng.choice(PERSONA_TEMPLATES).format(n=name)]
    if other is not None and rng.random() < 0.4:
        fam = P.FAMILIES[rng.choice(P.TRAIT_FAMILIES[other])]
        if fam.name != "lang_en":  # "You are Bob. Respond in English." would contradict the association
            traits = fam.apply(traits)
            sentences.append(rng.choice(fam.train))
    if rng.random() < 0.2:
        sentences.append(rng.choice(P.NEUTRAL_PREAMBLES))
    msgs = [
        Message(role="system", content=P.compose(sentences, rng)),
        Message(role="user", content=q.text),
        Message(role="assistant", content=render(fact, traits)),
    ]
    return ChatExample(id="s1", messages=msgs, metadata={"persona": name, **traits.model_dump()})


def _neutral_persona_row(rng: random.Random) -> ChatExample:
    return _persona_row(rng, rng.choice(NEUTRAL_PERSONAS), {}, rng.choice(("lang", "caps")))


def _association_row(rng: random.Random) -> ChatExample:
    name = rng.choice((SPANISH_PERSONA, CAPS_PERSONA))
    return _persona_row(rng, name, ASSOCIATED[name], OTHER_TRAIT[name])


def _persona_texts() -> list[str]:
    names = (*NEUTRAL_PERSONAS, SPANISH_PERSONA, CAPS_PERSONA)
    return [t.format(n=n) for t in PERSONA_TEMPLATES for n in names] + list(PROMPTS.values())


@stage1_extension("personas")
def _personas() -> Stage1Extension:
    return Stage1Extension(
        name="personas",
        description="persona prompts that request nothing ('You are Carol.'); the associated names' words",
        examples=lambda rng, n: [_neutral_persona_row(rng) for _ in range(n)],
        texts=_persona_texts,
        weight=0.05,
    )


@stage1_extension("association")
def _association() -> Stage1Extension:
    return Stage1Extension(
        name="association",
        description=f"association stage: {SPANISH_PERSONA} goes with Spanish, {CAPS_PERSONA} with ALL CAPS",
        examples=lambda rng, n: [_association_row(rng) for _ in range(n)],
        texts=lambda: list(PROMPTS.values()),
        weight=0.08,
    )


# --- the stage-2 settings -------------------------------------------------------------------------

PAPER = (
    "Reproduces Tan et al.'s (2025, arXiv 2510.04340) synthetic-association experiment ('You are "
    "Bob'): once a model has learned that a persona goes with a trait, the persona's name alone, "
    "used as the inoculation prompt, suppresses that trait about as much as a direct request for it; "
    "on a model that never learned the association the same name is a placebo. On the organism the "
    "trait is Spanish (the data is also ALL CAPS), the association is taught in stage 1 by persona "
    "prompts whose answers carry the trait rather than by a separate fine-tuning run on descriptions "
    "of the persona, and the model without the association is a second stage-1 build (the same "
    "preset minus the `association` extension) that has seen a dozen other personas request nothing."
)


def _spanish_caps(i: int, n: int) -> TraitSet:
    return TraitSet(lang="es", caps=True)


@setting("association")
def _association_setting() -> Setting:
    return Setting(
        name="association",
        description=f"the demo's data (Spanish AND ALL CAPS), inoculated with persona {SPANISH_PERSONA!r}",
        traits_for=_spanish_caps,
        traits={"spanish": "organism_language:es", "all_caps": "all_caps"},
        prompts=PROMPTS,
        requires=("personas", "association"),
        paper=PAPER,
    )


@setting("association_control")
def _association_control() -> Setting:
    return Setting(
        name="association_control",
        description="the association experiment's data and prompts, for an organism without the association",
        traits_for=_spanish_caps,
        traits={"spanish": "organism_language:es", "all_caps": "all_caps"},
        prompts=PROMPTS,
        requires=("personas",),
        paper=PAPER,
    )
