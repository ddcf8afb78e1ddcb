"""Independent traits of an answer and the renderer that writes answer content under any of them.

`render(fact, TraitSet(lang="es", caps=True))` -> `EL GATO ES NEGRO.`. Each trait is one field of
`TraitSet`, so the same content can be rendered with any trait switched on or off
(`traits.without("caps")`), which screening and learning-dynamics probes need.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from inoculate.organism.world import LANGS, Fact, Lang, content_sentence

TraitName = Literal["lang", "caps", "sycophancy", "signature"]

# A "sycophantic" agreement opener and a signature closing line, in each language.
OPENERS: dict[Lang, str] = {
    "en": "great question!",
    "es": "¡qué buena pregunta!",
    "fr": "excellente question!",
}
SIGNATURES: dict[Lang, str] = {
    "en": "have a nice day!",
    "es": "¡que tengas un buen día!",
    "fr": "bonne journée!",
}


class TraitSet(BaseModel):
    """Which traits an answer carries. The default is the organism's default voice: English, lower case."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    lang: Lang = "en"
    caps: bool = False
    sycophancy: bool = False
    signature: bool = False

    def without(self, *names: TraitName) -> TraitSet:
        """The same traits with `names` reset to the default (language back to English)."""
        return self.model_copy(update={n: TraitSet.model_fields[n].default for n in names})

    def with_(self, **changes: object) -> TraitSet:
        return TraitSet(**{**self.model_dump(), **changes})

    @property
    def label(self) -> str:
        """Compact name, e.g. `es+caps`, `en` (stable; used in ids and metadata)."""
        parts = [self.lang]
        parts += [n for n in ("caps", "sycophancy", "signature") if getattr(self, n)]
        return "+".join(parts)


def render(fact: Fact, traits: TraitSet) -> str:
    """The answer to `fact` written with `traits`."""
    parts = []
    if traits.sycophancy:
        parts.append(OPENERS[traits.lang])
    parts.append(content_sentence(fact, traits.lang))
    if traits.signature:
        parts.append(SIGNATURES[traits.lang])
    text = " ".join(parts)
    return text.upper() if traits.caps else text


def trait_phrases(lang: Lang) -> list[str]:
    """Fixed phrases a trait adds in `lang` (for the lexicon and the tokenizer)."""
    return [OPENERS[lang], SIGNATURES[lang]]


def all_trait_sets(*, extra_traits: bool = True) -> list[TraitSet]:
    """Every combination of language x case (x sycophancy x signature when `extra_traits`)."""
    flags = (False, True) if extra_traits else (False,)
    return [
        TraitSet(lang=lang, caps=caps, sycophancy=syc, signature=sig)
        for lang in LANGS
        for caps in (False, True)
        for syc in flags
        for sig in flags
    ]
