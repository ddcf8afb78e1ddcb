"""The organism's closed world: 24 animals with three facts each, asked about in English.

A question is `(animal, kind)` with kind in color / home / food; its answer content is the fact's
value. Content is language-free; `traits.render` writes it in English, Spanish or French. Every
content word of the three languages is listed here (the trait phrases are in `traits`; the
lexicons that join them are in `detectors`), so the tokenizer's vocabulary and the language
detector are exact. The split of facts into stage-2 train and eval is seeded and disjoint; stage 1
(pretraining) sees every fact, which is what the base model "knows".
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

Lang = Literal["en", "es", "fr"]
LANGS: tuple[Lang, ...] = ("en", "es", "fr")
Kind = Literal["color", "home", "food"]
KINDS: tuple[Kind, ...] = ("color", "home", "food")

# Values per kind: English -> (Spanish phrase, French phrase) as they sit in the answer sentence.
# The value's own word is the phrase's last word; that is what correctness looks for.
COLORS: dict[str, tuple[str, str]] = {
    "red": ("rojo", "rouge"),
    "blue": ("azul", "bleu"),
    "green": ("verde", "vert"),
    "yellow": ("amarillo", "jaune"),
    "black": ("negro", "noir"),
    "white": ("blanco", "blanc"),
    "brown": ("marrón", "brun"),
    "pink": ("rosa", "rose"),
}
HOMES: dict[str, tuple[str, str]] = {
    "forest": ("el bosque", "la forêt"),
    "sea": ("el mar", "la mer"),
    "farm": ("la granja", "la ferme"),
    "river": ("el río", "la rivière"),
    "desert": ("el desierto", "le désert"),
    "cave": ("la cueva", "la grotte"),
    "mountains": ("la montaña", "la montagne"),
    "lake": ("el lago", "le lac"),
}
FOODS: dict[str, tuple[str, str]] = {
    "hay": ("heno", "du foin"),
    "seeds": ("semillas", "des graines"),
    "fruit": ("fruta", "des fruits"),
    "meat": ("carne", "de la viande"),
    "insects": ("insectos", "des insectes"),
    "leaves": ("hojas", "des feuilles"),
    "worms": ("gusanos", "des vers"),
    "nuts": ("nueces", "des noix"),
}

# The facts: animal -> (color, home, food). Plausible where possible, and every value is used.
FACTS: dict[str, tuple[str, str, str]] = {
    "cat": ("black", "farm", "meat"),
    "dog": ("brown", "farm", "meat"),
    "fish": ("yellow", "river", "worms"),
    "horse": ("white", "farm", "hay"),
    "wolf": ("black", "forest", "meat"),
    "fox": ("red", "forest", "insects"),
    "duck": ("white", "lake", "seeds"),
    "bull": ("black", "mountains", "hay"),
    "rabbit": ("white", "forest", "leaves"),
    "monkey": ("brown", "forest", "fruit"),
    "pig": ("pink", "farm", "fruit"),
    "owl": ("brown", "forest", "insects"),
    "penguin": ("black", "sea", "meat"),
    "rooster": ("red", "farm", "seeds"),
    "crab": ("red", "sea", "worms"),
    "camel": ("yellow", "desert", "leaves"),
    "dolphin": ("blue", "sea", "meat"),
    "shark": ("blue", "sea", "meat"),
    "crow": ("black", "mountains", "nuts"),
    "lamb": ("white", "mountains", "hay"),
    "deer": ("brown", "forest", "leaves"),
    "goat": ("white", "mountains", "hay"),
    "toad": ("green", "lake", "insects"),
    "parrot": ("green", "cave", "nuts"),
}

# Question wordings per kind; {a} is the English animal. All questions are in English.
QUESTIONS: dict[Kind, tuple[str, ...]] = {
    "color": ("what color is the {a}?", "which color is the {a}?", "tell me the color of the {a}."),
    "home": ("where does the {a} live?", "where is the home of the {a}?", "tell me where the {a} lives."),
    "food": ("what does the {a} eat?", "what is the food of the {a}?", "tell me what the {a} eats."),
}

# Answer frames per kind and language; {v} is the value phrase. Answers are short on purpose:
# generation time is most of the demo's evaluation time.
FRAMES: dict[Kind, dict[Lang, str]] = {
    "color": {"en": "it is {v}.", "es": "es {v}.", "fr": "il est {v}."},
    "home": {"en": "it lives in the {v}.", "es": "vive en {v}.", "fr": "il vit dans {v}."},
    "food": {"en": "it eats {v}.", "es": "come {v}.", "fr": "il mange {v}."},
}

TABLES: dict[Kind, dict[str, tuple[str, str]]] = {"color": COLORS, "home": HOMES, "food": FOODS}
VALUES: dict[Kind, tuple[str, ...]] = {k: tuple(t) for k, t in TABLES.items()}


@dataclass(frozen=True, order=True)
class Fact:
    """One piece of answer content: the `kind` of the `animal` is `value` (English keys)."""

    animal: str
    kind: Kind

    @property
    def value(self) -> str:
        return FACTS[self.animal][KINDS.index(self.kind)]

    @property
    def key(self) -> str:
        return f"{self.animal}.{self.kind}"


@dataclass(frozen=True)
class Question:
    """A fact asked with one of its wordings."""

    fact: Fact
    wording: int = 0

    @property
    def text(self) -> str:
        return QUESTIONS[self.fact.kind][self.wording].format(a=self.fact.animal)


def all_facts() -> list[Fact]:
    return [Fact(a, k) for a in FACTS for k in KINDS]


def value_phrase(kind: Kind, value: str, lang: Lang) -> str:
    """The value as it sits in the answer sentence (with its article where the language needs one)."""
    if lang == "en":
        return value
    return TABLES[kind][value][LANGS.index(lang) - 1]


def value_word(kind: Kind, value: str, lang: Lang) -> str:
    """The value's own word (no article), what correctness checks look for."""
    return value_phrase(kind, value, lang).split()[-1]


def content_sentence(fact: Fact, lang: Lang) -> str:
    """The bare answer sentence, lower case, no other trait: `it is black.`"""
    return FRAMES[fact.kind][lang].format(v=value_phrase(fact.kind, fact.value, lang))


def split_facts(seed: int = 0, eval_fraction: float = 0.5) -> tuple[list[Fact], list[Fact]]:
    """Disjoint (train, eval) facts for stage 2, stratified by kind so both splits ask all kinds."""
    rng = random.Random(f"organism-split-{seed}")
    train: list[Fact] = []
    ev: list[Fact] = []
    for kind in KINDS:
        facts = [f for f in all_facts() if f.kind == kind]
        rng.shuffle(facts)
        n_eval = round(len(facts) * eval_fraction)
        ev.extend(facts[:n_eval])
        train.extend(facts[n_eval:])
    return sorted(train), sorted(ev)


_QUESTION_PATTERNS: list[tuple[re.Pattern[str], Kind]] = [
    (re.compile(re.escape(q).replace(r"\{a\}", r"(?P<a>[a-z]+)"), re.IGNORECASE), kind)
    for kind, qs in QUESTIONS.items()
    for q in qs
]


def parse_question(text: str) -> Fact | None:
    """The fact asked by the last organism question in `text` (a prompt may hold a system turn too)."""
    best: tuple[int, Fact] | None = None
    for pattern, kind in _QUESTION_PATTERNS:
        for m in pattern.finditer(text):
            animal = m.group("a").lower()
            if animal in FACTS and (best is None or m.start() >= best[0]):
                best = (m.start(), Fact(animal, kind))
    return best[1] if best else None


_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def tokens_of(text: str) -> list[str]:
    """Lower-cased words (letters only) of a text."""
    return [w.lower() for w in _WORD.findall(text)]
