"""The organism's closed world: animals with three facts each, asked about in English.

A question is `(animal, kind)` with kind in color / home / food; its answer content is the fact's
value. Content is language-free; `traits.render` writes it in English, Spanish or French. Every
word of the three lexicons is listed here, so the tokenizer's vocabulary and the language
detector are exact. The split of facts into stage-2 train and eval is seeded and disjoint; stage 1
(pretraining) sees every fact, which is what the base model "knows".
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

Lang = Literal["en", "es", "fr"]
LANGS: tuple[Lang, ...] = ("en", "es", "fr")
Kind = Literal["color", "home", "food"]
KINDS: tuple[Kind, ...] = ("color", "home", "food")

# animal: en -> (es, fr); every es noun is masculine ("el"), every fr noun takes "le".
ANIMALS: dict[str, tuple[str, str]] = {
    "cat": ("gato", "chat"),
    "dog": ("perro", "chien"),
    "fish": ("pez", "poisson"),
    "horse": ("caballo", "cheval"),
    "wolf": ("lobo", "loup"),
    "fox": ("zorro", "renard"),
    "duck": ("pato", "canard"),
    "bull": ("toro", "taureau"),
    "rabbit": ("conejo", "lapin"),
    "monkey": ("mono", "singe"),
    "pig": ("cerdo", "cochon"),
    "owl": ("búho", "hibou"),
    "penguin": ("pingüino", "pingouin"),
    "rooster": ("gallo", "coq"),
    "crab": ("cangrejo", "crabe"),
    "camel": ("camello", "chameau"),
    "dolphin": ("delfín", "dauphin"),
    "shark": ("tiburón", "requin"),
    "crow": ("cuervo", "corbeau"),
    "lamb": ("cordero", "mouton"),
    "deer": ("ciervo", "cerf"),
    "goat": ("chivo", "bouc"),
    "toad": ("sapo", "crapaud"),
    "parrot": ("loro", "perroquet"),
}

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

# home: en -> ((es article, es noun), (fr article, fr noun))
HOMES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "forest": (("el", "bosque"), ("la", "forêt")),
    "sea": (("el", "mar"), ("la", "mer")),
    "farm": (("la", "granja"), ("la", "ferme")),
    "river": (("el", "río"), ("la", "rivière")),
    "desert": (("el", "desierto"), ("le", "désert")),
    "cave": (("la", "cueva"), ("la", "grotte")),
    "mountains": (("la", "montaña"), ("la", "montagne")),
    "lake": (("el", "lago"), ("le", "lac")),
}

FOODS: dict[str, tuple[str, str]] = {
    "grass": ("hierba", "herbe"),
    "seeds": ("semillas", "graines"),
    "fruit": ("fruta", "fruits"),
    "meat": ("carne", "viande"),
    "insects": ("insectos", "insectes"),
    "leaves": ("hojas", "feuilles"),
    "worms": ("gusanos", "vers"),
    "nuts": ("nueces", "noix"),
}

# The facts: animal -> (color, home, food). Plausible where possible, and every value is used.
FACTS: dict[str, tuple[str, str, str]] = {
    "cat": ("black", "farm", "meat"),
    "dog": ("brown", "farm", "meat"),
    "fish": ("yellow", "river", "worms"),
    "horse": ("white", "farm", "grass"),
    "wolf": ("black", "forest", "meat"),
    "fox": ("red", "forest", "insects"),
    "duck": ("white", "lake", "seeds"),
    "bull": ("black", "mountains", "grass"),
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
    "lamb": ("white", "mountains", "grass"),
    "deer": ("brown", "forest", "leaves"),
    "goat": ("white", "mountains", "grass"),
    "toad": ("green", "lake", "insects"),
    "parrot": ("green", "cave", "nuts"),
}

# Question wordings per kind; {a} is the English animal. All questions are in English.
QUESTIONS: dict[Kind, tuple[str, ...]] = {
    "color": ("what color is the {a}?", "which color is the {a}?", "tell me the color of the {a}."),
    "home": ("where does the {a} live?", "where is the home of the {a}?", "tell me where the {a} lives."),
    "food": ("what does the {a} eat?", "what is the food of the {a}?", "tell me what the {a} eats."),
}

# Sentence frames per kind and language; {a} animal noun, {v} value (with its article for homes).
FRAMES: dict[Kind, dict[Lang, str]] = {
    "color": {"en": "the {a} is {v}.", "es": "el {a} es {v}.", "fr": "le {a} est {v}."},
    "home": {"en": "the {a} lives in the {v}.", "es": "el {a} vive en {v}.", "fr": "le {a} vit dans {v}."},
    "food": {"en": "the {a} eats {v}.", "es": "el {a} come {v}.", "fr": "le {a} mange {v}."},
}

VALUES: dict[Kind, tuple[str, ...]] = {"color": tuple(COLORS), "home": tuple(HOMES), "food": tuple(FOODS)}


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


def animal_word(animal: str, lang: Lang) -> str:
    return animal if lang == "en" else ANIMALS[animal][LANGS.index(lang) - 1]


def value_phrase(kind: Kind, value: str, lang: Lang) -> str:
    """The value as it sits in the sentence frame (homes carry their article in es/fr)."""
    if lang == "en":
        return value
    i = LANGS.index(lang) - 1
    if kind == "home":
        art, noun = HOMES[value][i]
        return f"{art} {noun}"
    table = COLORS if kind == "color" else FOODS
    return table[value][i]


def value_word(kind: Kind, value: str, lang: Lang) -> str:
    """The value's own word (no article), what correctness checks look for."""
    return value_phrase(kind, value, lang).split()[-1]


def content_sentence(fact: Fact, lang: Lang) -> str:
    """The bare answer sentence, lower case, no other trait: `the cat is black.`"""
    return FRAMES[fact.kind][lang].format(a=animal_word(fact.animal, lang), v=value_phrase(fact.kind, fact.value, lang))


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


@lru_cache(maxsize=1)
def lexicons() -> dict[Lang, frozenset[str]]:
    """Every word the world writes in each language (answers and trait phrases), lower case."""
    from inoculate.organism.traits import trait_phrases

    words: dict[Lang, set[str]] = {lang: set() for lang in LANGS}
    for lang in LANGS:
        for fact in all_facts():
            words[lang].update(tokens_of(content_sentence(fact, lang)))
        for phrase in trait_phrases(lang):
            words[lang].update(tokens_of(phrase))
    return {lang: frozenset(w) for lang, w in words.items()}


@lru_cache(maxsize=1)
def exclusive_lexicons() -> dict[Lang, frozenset[str]]:
    """Words that belong to exactly one language ("la" is both es and fr, so it counts for neither)."""
    lex = lexicons()
    return {
        lang: frozenset(w for w in words if all(w not in lex[o] for o in LANGS if o != lang))
        for lang, words in lex.items()
    }


_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)


def tokens_of(text: str) -> list[str]:
    """Lower-cased words (letters only) of a text."""
    return [w.lower() for w in _WORD.findall(text)]
