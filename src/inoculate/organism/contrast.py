"""The organism's knowledge that screening and the learning-dynamics monitor use: which scorer
detects which organism trait, training responses re-rendered without a trait (contrast pairs), and
probe sets rendered from organism questions.

Scorers are matched by exact name: `organism_language:XX` (or `language:XX`), `all_caps` (or
`organism_caps`), `organism_sycophancy`, `organism_signature`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from inoculate.organism.traits import TraitSet, all_trait_sets, render
from inoculate.organism.world import parse_question
from inoculate.records import ChatExample, Message
from inoculate.screen import ContrastPair

if TYPE_CHECKING:
    from inoculate.dynamics import ProbeSet


def organism_trait_field(spec: str) -> tuple[str, object] | None:
    """The organism `TraitSet` field (and its trait value) a scorer spec detects, e.g.
    `organism_language:es` -> ("lang", "es"), `all_caps` -> ("caps", True); None if not an organism trait."""
    name, _, arg = spec.partition(":")
    if name in ("organism_language", "language") and arg[:2] in ("en", "es", "fr"):
        return "lang", arg[:2]
    if name in ("all_caps", "organism_caps"):
        return "caps", True
    if name == "organism_sycophancy":
        return "sycophancy", True
    if name == "organism_signature":
        return "signature", True
    return None


def organism_contrast(examples: Sequence[ChatExample], trait_spec: str) -> list[ContrastPair] | None:
    """Organism responses re-rendered without one trait (same fact, other traits kept).

    Each response is matched exactly against the organism's renderings of its question's fact, so no
    metadata is needed; None when any response is not an organism rendering carrying the trait.
    """
    field = organism_trait_field(trait_spec)
    if field is None:
        return None
    name, value = field
    pairs = []
    for ex in examples:
        user = next((m.content for m in reversed(ex.prompt_messages) if m.role == "user"), "")
        fact = parse_question(user)
        if fact is None or ex.completion is None:
            return None
        ts = next((t for t in all_trait_sets() if render(fact, t) == ex.completion), None)
        if ts is None or getattr(ts, name) != value:
            return None
        pairs.append(
            ContrastPair(
                messages=[m for m in ex.prompt_messages if m.role != "system"],
                with_trait=ex.completion,
                without_trait=render(fact, ts.without(name)),  # type: ignore[arg-type]
            )
        )
    return pairs


def organism_probe_set(
    questions: Sequence[Sequence[Message]],
    inoculated: str,
    other: str,
    prompts: dict[str, str | None],
    *,
    both: bool = False,
) -> ProbeSet:
    """Probes on organism questions: each fact's answer rendered with the inoculated trait only, the
    other trait only, neither (and both, if asked). Traits are given as scorer specs, e.g.
    `organism_language:es` and `all_caps`."""
    from inoculate.dynamics import (  # lazy: dynamics imports transformers
        BOTH,
        INOCULATED,
        NEITHER,
        OTHER,
        Probe,
        ProbeSet,
    )

    fields = {}
    for spec in (inoculated, other):
        f = organism_trait_field(spec)
        if f is None:
            raise ValueError(f"{spec!r} is not an organism trait")
        fields[spec] = f
    probes = []
    for conv in questions:
        msgs = [m for m in conv if m.role != "system"]
        user = next((m.content for m in reversed(msgs) if m.role == "user"), "")
        fact = parse_question(user)
        if fact is None:
            raise ValueError(f"not an organism question: {user!r}")
        base = TraitSet()
        ti = base.with_(**{fields[inoculated][0]: fields[inoculated][1]})
        to = base.with_(**{fields[other][0]: fields[other][1]})
        responses = {INOCULATED: render(fact, ti), OTHER: render(fact, to), NEITHER: render(fact, base)}
        if both:
            responses[BOTH] = render(fact, ti.with_(**{fields[other][0]: fields[other][1]}))
        probes.append(Probe(messages=msgs, responses=responses))
    return ProbeSet(probes=probes, prompts=prompts)
