"""The trait-scorer registry: `@scorer("name")` on a factory, looked up by `NAME[:ARG]`.

A factory takes the optional text after the first `:` of a spec (`language:es` -> `"es"`) and
returns either a plain `(prompt, completion) -> float` function or a `Scorer` (to supply an
efficient batch form). `get_scorer` wraps the result in a `Scorer` named by the full spec.

Plugins: any installed distribution can declare an entry point in the group `inoculate.scorers`.
Its value is a module (importing it runs its `@scorer` decorators) or a factory function (registered
under the entry point's name unless it is already decorated). Entry points are loaded once, lazily,
on the first lookup or listing, so `import inoculate` stays cheap.
"""

from __future__ import annotations

import importlib.metadata  # noqa: F401  (tests patch `registry.importlib.metadata.entry_points`)
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from types import ModuleType
from typing import Any, TypeVar, Union

from inoculate.registry import Entry, PluginError, Registry, first_doc_line
from inoculate.registry import import_plugin as _import_plugin

ENTRY_POINT_GROUP = "inoculate.scorers"

ScoreFn = Callable[[str, str], float]
BatchFn = Callable[[Sequence[str], Sequence[str]], list[float]]
Factory = Callable[..., Union[ScoreFn, "Scorer"]]
F = TypeVar("F", bound=Callable[..., Any])


class ScorerError(ValueError):
    """An unknown scorer, a bad `:ARG`, a conflicting registration, or a scorer breaking its contract."""


@dataclass(frozen=True)
class Scorer:
    """A ready-to-use scorer: `scorer(prompt, completion) -> float`, and `scorer.batch(...)`.

    `bounded` scorers return values in [0, 1] (or NaN for "not scorable") and are checked for it;
    unbounded ones (e.g. `length`) return raw values that summaries treat as means, never rates.
    """

    fn: ScoreFn
    batch_fn: BatchFn | None = None
    name: str = ""
    description: str = ""
    bounded: bool = True

    def __call__(self, prompt: str, completion: str) -> float:
        return self._check(float(self.fn(prompt, completion)))

    def batch(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        if len(prompts) != len(completions):
            raise ScorerError(
                f"{self.name}: batch got {len(prompts)} prompts but {len(completions)} completions"
            )
        if self.batch_fn is None:
            return [self(p, c) for p, c in zip(prompts, completions, strict=True)]
        out = [float(v) for v in self.batch_fn(prompts, completions)]
        if len(out) != len(completions):
            raise ScorerError(f"{self.name}: batch returned {len(out)} scores for {len(completions)} inputs")
        return [self._check(v) for v in out]

    def _check(self, value: float) -> float:
        if self.bounded and not math.isnan(value) and not 0.0 <= value <= 1.0:
            raise ScorerError(f"scorer {self.name!r} returned {value}, outside [0, 1]")
        return value


@dataclass(frozen=True)
class ScorerInfo:
    """A registered factory and what `inoculate scorers` shows about it."""

    name: str
    factory: Factory
    description: str = ""
    bounded: bool = True
    source: str = field(default="")

    @property
    def takes_arg(self) -> bool:
        return bool(inspect.signature(self.factory).parameters)


TASK_SETTING_SCORERS = {
    "confirms_user": "inoculate.settings.gcd",
    "gcd_correct": "inoculate.settings.gcd",
    "sentiment_correct": "inoculate.settings.cebab",
    "sentiment_at_least": "inoculate.settings.cebab",
}
"""The task settings' scorers (`inoculate.settings`), imported the first time their name is asked for."""

_SCORERS: Registry[Factory] = Registry(
    "scorer",
    ENTRY_POINT_GROUP,
    lazy=TASK_SETTING_SCORERS,
    error=ScorerError,
    unknown="unknown {kind} {name!r}; known: {known}",
    on_conflict="error",
)
_BATCH_CACHE: ContextVar[dict[Any, Any] | None] = ContextVar("inoculate_scorer_batch_cache", default=None)
_BATCH_METADATA: ContextVar[Sequence[Any] | None] = ContextVar(
    "inoculate_scorer_batch_metadata", default=None
)


@contextmanager
def rows_metadata(metadata: Sequence[Any] | None) -> Iterator[None]:
    """Make the metadata of the rows being scored visible to scorers (`batch_metadata`) for one batch."""
    token = _BATCH_METADATA.set(metadata)
    try:
        yield
    finally:
        _BATCH_METADATA.reset(token)


def batch_metadata() -> Sequence[Any] | None:
    """The `metadata` dicts of the rows in the current batch, in order (None when the caller gave none).

    `score_examples` / `score_generations` / `inoculate score` provide them; scorers that need per-row
    data (the `code_tests` scorers read the tests there) call this inside their batch function.
    """
    return _BATCH_METADATA.get()


@contextmanager
def shared_batch() -> Iterator[dict[Any, Any]]:
    """Open a cache shared by every scorer called on one batch of rows, dropped when the batch ends.

    `score_texts` wraps each batch in it, so scorers doing the same expensive work (two
    `language:XX` specs both detecting languages) do it once per text; see `batch_cache`.
    """
    cache: dict[Any, Any] = {}
    token = _BATCH_CACHE.set(cache)
    try:
        yield cache
    finally:
        _BATCH_CACHE.reset(token)
        cache.clear()


def batch_cache() -> dict[Any, Any] | None:
    """The current batch's shared cache (inside `shared_batch`), else None: compute without sharing.

    Key entries by something unique to the work (e.g. `("language", codes)`) so scorers don't clash.
    """
    return _BATCH_CACHE.get()


def scorer(name: str, *, description: str = "", bounded: bool = True) -> Callable[[F], F]:
    """Register a scorer factory under `name`.

    The factory takes the optional `:ARG` string (declare no parameter if the scorer takes none)
    and returns a `(prompt, completion) -> float` function or a `Scorer`.
    """
    if not name or ":" in name or any(ch.isspace() for ch in name):
        raise ScorerError(f"invalid scorer name {name!r}: non-empty, no ':' and no spaces")

    def decorate(factory: F) -> F:
        register(name, factory, description=description or first_doc_line(factory), bounded=bounded)
        return factory

    return decorate


def register(name: str, factory: Factory, *, description: str = "", bounded: bool = True) -> None:
    """Register without the decorator; re-registering the same function (e.g. a module reload) is a no-op."""
    _SCORERS.add(name, factory, description=description, bounded=bounded)


def unregister(name: str) -> None:
    """Remove a scorer (for tests and for plugins that replace one deliberately)."""
    _SCORERS.remove(name)


def parse_spec(spec: str) -> tuple[str, str | None]:
    """`"regex:(?i)a:b"` -> `("regex", "(?i)a:b")`; only the first `:` separates name from argument."""
    name, sep, arg = spec.strip().partition(":")
    return name, (arg if sep else None)


def get_scorer(spec: str) -> Scorer:
    """Build the scorer named by `NAME[:ARG]`, e.g. `language:es`, `all_caps`, `regex:(?i)hello`."""
    name, arg = parse_spec(spec)
    info = _lookup(name)
    if arg is not None and not info.takes_arg:
        raise ScorerError(f"scorer {name!r} takes no argument; got {spec!r}")
    made = info.factory(arg) if info.takes_arg else info.factory()
    if isinstance(made, Scorer):
        return replace(
            made,
            name=spec.strip(),
            description=made.description or info.description,
            bounded=made.bounded and info.bounded,
        )
    if not callable(made):
        raise ScorerError(f"scorer factory {info.source} returned {type(made).__name__}, not a function")
    return Scorer(fn=made, name=spec.strip(), description=info.description, bounded=info.bounded)


def get_scorers(specs: Sequence[str]) -> list[Scorer]:
    """Build several scorers; duplicate specs are an error since they would share one output column."""
    seen: set[str] = set()
    for spec in specs:
        if spec.strip() in seen:
            raise ScorerError(f"scorer {spec!r} given twice")
        seen.add(spec.strip())
    return [get_scorer(s) for s in specs]


def list_scorers() -> list[ScorerInfo]:
    """Every registered scorer (built-ins and plugins), sorted by name."""
    return [_info(e) for e in _SCORERS.list()]


def plugin_failures() -> dict[str, str]:
    """Entry points that failed to load: entry point name -> error."""
    return _SCORERS.failures()


def import_plugin(target: str) -> ModuleType:
    """Import a module by dotted name or a `.py` file path so its `@scorer` decorators run."""
    try:
        return _import_plugin(target)
    except PluginError as e:
        raise ScorerError(str(e)) from e


def _lookup(name: str) -> ScorerInfo:
    return _info(_SCORERS.entry(name))


def _info(entry: Entry[Factory]) -> ScorerInfo:
    return ScorerInfo(
        entry.name, entry.factory, entry.description, entry.meta.get("bounded", True), entry.source
    )


def _reset_plugins() -> None:
    """Forget that entry points were loaded, so the next lookup loads them again (tests)."""
    _SCORERS.reset_entry_points()
