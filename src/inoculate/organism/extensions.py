"""Stage-1 extensions: named additions to the organism's pretraining that a phenomenon needs.

The base stage-1 mix (`stage1`) teaches trait-requesting system prompts. A phenomenon may need the
base model to know more before stage 2: conditional requests ("when the question contains X, answer
in capital letters"), what a general description of a trait means, personas, and so on. Each such
addition is a `Stage1Extension`, registered by name with `@stage1_extension(NAME)`:

- `examples(rng, n)`: `n` stage-1 rows (`ChatExample`s: system, user, assistant), drawn from `rng`;
- `weight`: the share of the stage-1 rows it contributes (the base mix fills the rest);
- `texts()`: every text its rows, its settings' data and prompts, and its experiments' prompts can
  hold, so the word-level tokenizer's vocabulary covers them;
- `version`: bump it when the rows change in a way the name does not show (it is in the cache key).

A preset lists the extensions it uses (`OrganismConfig.extensions`); a preset without extensions
builds exactly the stage-1 data, tokenizer and cache key it had before extensions existed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from inoculate.records import ChatExample
from inoculate.registry import Registry


@dataclass(frozen=True)
class Stage1Extension:
    name: str
    description: str
    examples: Callable[[random.Random, int], list[ChatExample]]
    """`n` stage-1 rows drawn from the rng (ids are reassigned by `stage1`)."""
    texts: Callable[[], list[str]]
    """Every text the extension's rows, settings and experiment prompts may contain (vocabulary)."""
    weight: float = 0.1
    """Share of the stage-1 rows (0 < weight < 1; the extensions of one preset sum to < 1)."""
    version: int = 1

    def __post_init__(self) -> None:
        if not 0 < self.weight < 1:
            raise ValueError(f"stage-1 extension {self.name!r}: weight must be in (0, 1), got {self.weight}")


ENTRY_POINT_GROUP = "inoculate.stage1_extensions"
_EXTENSIONS: Registry[Callable[[], Stage1Extension]] = Registry(
    "stage-1 extension", ENTRY_POINT_GROUP, unknown="unknown {kind} {name!r} (known: {known})"
)


def stage1_extension(name: str) -> Callable[[Callable[[], Stage1Extension]], Callable[[], Stage1Extension]]:
    """Register a stage-1 extension factory under `name`."""
    return _EXTENSIONS.register(name)


def get_extension(name: str) -> Stage1Extension:
    ext = _EXTENSIONS.get(name)()
    if ext.name != name:
        raise ValueError(f"stage-1 extension registered as {name!r} calls itself {ext.name!r}")
    return ext


def list_extensions() -> list[str]:
    return _EXTENSIONS.names()


def extension_texts(names: tuple[str, ...]) -> list[str]:
    """The texts of the named extensions, in order (empty for no extensions)."""
    out: list[str] = []
    for name in names:
        out += get_extension(name).texts()
    return out


def extension_counts(names: tuple[str, ...], n: int) -> dict[str, int]:
    """How many of `n` stage-1 rows each named extension contributes (its weight's share, rounded)."""
    exts = [get_extension(name) for name in names]
    total = sum(e.weight for e in exts)
    if total >= 1:
        raise ValueError(f"stage-1 extensions {', '.join(names)}: weights sum to {total:g}; must be < 1")
    return {e.name: round(n * e.weight) for e in exts}
