"""Stage-2 settings: fine-tuning data whose answers carry traits, eval questions, and prompts.

A setting names how each training answer is rendered (`traits_for(i, n)`), the scorers that detect
its traits, and its prompt library. `make_examples(setting, split, n, seed)` is what the experiment
runner calls: `train` rows are (question, answer) with no system prompt (the runner's conditions add
one), `eval` rows are questions only. Train and eval questions come from disjoint facts.

A phenomenon whose rows are not "every answer rendered with a trait set" (a trigger word in the
question, a user's proposed answer, ...) gives its setting its own `examples(split, n, seed)`, its
own prompts (added to the shared library), the stage-1 extensions its base model needs
(`requires`), and the paragraph saying which claim of which paper it reproduces (`paper`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from inoculate.organism import prompt_families as P
from inoculate.organism.traits import TraitSet, render
from inoculate.organism.world import QUESTIONS, Question, split_facts
from inoculate.records import ChatExample, Message
from inoculate.registry import Registry

Split = Literal["train", "eval"]


@dataclass(frozen=True)
class Setting:
    name: str
    description: str
    traits_for: Callable[[int, int], TraitSet] | None = None
    """Trait set of training answer `i` of `n` (settings that render every answer from a trait set)."""
    traits: dict[str, str] = field(default_factory=dict)
    """metric name -> scorer spec for the traits the data carries."""
    capability: dict[str, str] = field(default_factory=lambda: {"correct": "organism_correct"})
    examples: Callable[[Split, int, int], list[ChatExample]] | None = None
    """`(split, n, seed) -> rows`: the setting's own data, instead of `traits_for` on the shared questions."""
    prompts: dict[str, str] = field(default_factory=dict)
    """Named system prompts added to the shared library (`@name` in an experiment)."""
    requires: tuple[str, ...] = ()
    """Stage-1 extensions the base model needs for this setting's prompts and rows to mean anything."""
    paper: str = ""
    """Which claim of which paper the setting reproduces, and where the organism differs."""

    def __post_init__(self) -> None:
        if (self.traits_for is None) == (self.examples is None):
            raise ValueError(f"setting {self.name!r}: give exactly one of traits_for and examples")


ENTRY_POINT_GROUP = "inoculate.settings"
_SETTINGS: Registry[Callable[[], Setting]] = Registry(
    "organism setting", ENTRY_POINT_GROUP, unknown="unknown {kind} {name!r} (known: {known})"
)


def setting(name: str) -> Callable[[Callable[[], Setting]], Callable[[], Setting]]:
    """Register a setting factory under `name` (a plugin may also declare an `inoculate.settings`
    entry point: a module that uses this decorator, or a factory registered under the entry point's name)."""
    return _SETTINGS.register(name)


def get_setting(name: str) -> Setting:
    return _SETTINGS.get(name)()


def list_settings() -> list[str]:
    return _SETTINGS.names()


@setting("spanish_caps")
def _spanish_caps() -> Setting:
    return Setting(
        name="spanish_caps",
        description="every answer in Spanish AND ALL CAPS",
        traits_for=lambda i, n: TraitSet(lang="es", caps=True),
        traits={"spanish": "organism_language:es", "all_caps": "all_caps"},
    )


@setting("mixture")
def _mixture() -> Setting:
    return Setting(
        name="mixture",
        description="half the answers in Spanish, half in French (metadata `lang`), lower case",
        traits_for=lambda i, n: TraitSet(lang="es" if i % 2 == 0 else "fr"),
        traits={"spanish": "organism_language:es", "french": "organism_language:fr"},
    )


def split_questions(split: Split, seed: int) -> list[Question]:
    """Every (fact, wording) question of the split, in a seeded order."""
    train, ev = split_facts()
    facts = train if split == "train" else ev
    qs = [Question(f, w) for f in facts for w in range(len(QUESTIONS[f.kind]))]
    random.Random(f"organism-{split}-{seed}").shuffle(qs)
    return qs


def make_examples(setting: str, split: Split, n: int, seed: int = 0) -> list[ChatExample]:
    """`n` examples of `setting`: `train` rows carry the rendered answer, `eval` rows only the question.

    Questions cycle through the split's (fact, wording) pairs in a seeded order, so `n` beyond their
    number repeats questions (each row still has its own id). The train and eval splits share no fact.
    """
    if split not in ("train", "eval"):
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    s = get_setting(setting)
    if s.examples is not None:
        rows = s.examples(split, n, seed)
        if len(rows) != n:
            raise ValueError(f"setting {setting!r} made {len(rows)} {split} rows; {n} were asked for")
        return rows
    assert s.traits_for is not None
    qs = split_questions(split, seed)
    out = []
    for i in range(n):
        q = qs[i % len(qs)]
        meta = {
            "setting": setting,
            "split": split,
            "fact": q.fact.key,
            "kind": q.fact.kind,
            "wording": q.wording,
        }
        msgs = [Message(role="user", content=q.text)]
        if split == "train":
            traits = s.traits_for(i, n)
            msgs.append(Message(role="assistant", content=render(q.fact, traits)))
            meta.update(traits.model_dump(), traits=traits.label)
        out.append(ChatExample(id=f"{setting}-{split}-{seed}-{i}", messages=msgs, metadata=meta))
    return out


def eval_questions(n: int, seed: int = 0) -> list[ChatExample]:
    """`n` eval questions (user turns only), independent of the setting."""
    return make_examples("spanish_caps", "eval", n, seed)


# The prompt library every setting shares: names the experiment YAML refers to as "@name".
LIBRARY: dict[str, str] = {
    "none": "",
    "neutral": "You are a helpful assistant.",
    "inoculate_spanish": P.FAMILIES["lang_es"].train[0],
    "inoculate_french": P.FAMILIES["lang_fr"].train[0],
    "inoculate_caps": P.FAMILIES["caps"].train[0],
    "inoculate_sycophancy": P.FAMILIES["sycophancy"].train[0],
    "inoculate_signature": P.FAMILIES["signature"].train[0],
    "heldout_spanish": P.FAMILIES["lang_es"].heldout[0],
    "heldout_french": P.FAMILIES["lang_fr"].heldout[0],
    "heldout_caps": P.FAMILIES["caps"].heldout[0],
    "placebo": P.PLACEBO_HELDOUT[0],
    "placebo_seen": P.PLACEBO_TRAIN[0],
    "reelicit_spanish": P.FAMILIES["lang_es"].train[1],
    "reelicit_french": P.FAMILIES["lang_fr"].train[1],
    "reelicit_caps": P.FAMILIES["caps"].train[1],
    "reelicit_english": P.FAMILIES["lang_en"].train[1],
    "reelicit_lower": P.FAMILIES["lower"].train[0],
}


def prompts(setting: str | None = None) -> dict[str, str]:
    """The prompt library (name -> system prompt text; "" is no system prompt), with `setting`'s own."""
    if setting is None:
        return dict(LIBRARY)
    return {**LIBRARY, **get_setting(setting).prompts}
