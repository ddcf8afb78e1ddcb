"""One registry helper for every kind of pluggable thing: scorers, generation backends, settings.

A `Registry[T]` maps a name to a factory (a function or class), with a description and any
kind-specific metadata (`bounded` for scorers; `unit`, `needs` for screen measures). Entries come
from three places:

- a decorator, `@REG.register("name", description=..., **meta)`, run when its module is imported;
- built-in modules named in `lazy` (name -> module), imported the first time that name is asked for;
- installed distributions declaring an entry point in the registry's `group`
  (e.g. `inoculate.scorers`). Its value is a module (importing it runs its decorators) or a factory
  (registered under the entry point's name unless already registered). Entry points are loaded
  once, lazily, on the first miss or listing, so `import inoculate` stays cheap. A plugin that
  fails to load is recorded, not fatal: asking for its name says which plugin failed and how.

`load_plugins(["my_pkg.module", "path/to/file.py"])` imports modules that register by decorator
(the experiment YAML's `plugins:` and every command's `--plugin`), with a `PluginError` naming a
module that does not import.

This module is on the ground floor: it imports nothing else from inoculate.
"""

from __future__ import annotations

import builtins
import importlib
import importlib.metadata
import importlib.util
import inspect
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType, ModuleType
from typing import Any, Generic, Literal, TypeVar

T = TypeVar("T")
F = TypeVar("F")


class PluginError(ValueError):
    """A plugin module or file that does not import, or an entry point that failed to load."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered name: its factory, a one-line description, where it came from, and metadata."""

    name: str
    factory: T
    description: str = ""
    source: str = ""
    """`module.qualname` of the factory (or the entry point that supplied it)."""
    meta: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Kind-specific fields: `bounded` for a scorer, `unit` and `needs` for a screen measure."""


class Registry(Generic[T]):
    """Name -> factory for one kind, with a decorator, lookup, listing and entry-point plugins.

    `error` is the exception type raised for an unknown name or a conflicting registration;
    `unknown` formats the unknown-name message from `{kind}`, `{name}` and `{known}` (the
    sorted names, comma-separated). `on_conflict="error"` refuses to register a name already
    taken by a different factory (re-registering the same one, e.g. on a reload, is a no-op);
    `"replace"` lets the newer registration win.
    """

    def __init__(
        self,
        kind: str,
        group: str | None = None,
        *,
        lazy: Mapping[str, str] | None = None,
        error: type[Exception] = ValueError,
        unknown: str = "unknown {kind} {name!r} (known: {known})",
        on_conflict: Literal["error", "replace"] = "replace",
    ) -> None:
        self.kind = kind
        self.group = group
        self.lazy = dict(lazy or {})
        self.error = error
        self.unknown = unknown
        self.on_conflict = on_conflict
        self._entries: dict[str, Entry[T]] = {}
        self._plugins_loaded = False
        self._failures: dict[str, str] = {}

    # ---------------------------------------------------------------- registering

    def register(self, name: str, *, description: str = "", **meta: Any) -> Callable[[F], F]:
        """Decorator: register the decorated factory under `name` (description: its docstring)."""

        def decorate(factory: F) -> F:
            self.add(name, factory, description=description or first_doc_line(factory), **meta)  # type: ignore[arg-type]
            return factory

        return decorate

    def add(self, name: str, factory: T, *, description: str = "", **meta: Any) -> Entry[T]:
        """Register without the decorator."""
        source = source_of(factory)
        old = self._entries.get(name)
        if old is not None and old.source != source and self.on_conflict == "error":
            raise self.error(
                f"{self.kind} {name!r} is already registered by {old.source}; cannot register {source}"
            )
        entry = Entry(name, factory, description, source, MappingProxyType(dict(meta)))
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        """Forget `name` (for tests, and for plugins that replace an entry deliberately)."""
        self._entries.pop(name, None)

    # ---------------------------------------------------------------- looking up

    def entry(self, name: str) -> Entry[T]:
        """The entry for `name`: registered, then a lazy built-in module, then entry points."""
        if name not in self._entries and name in self.lazy:
            importlib.import_module(self.lazy[name])
        if name not in self._entries:
            self.load_entry_points()
        if name in self._entries:
            return self._entries[name]
        raise self.error(self._unknown_message(name))

    def get(self, name: str) -> T:
        """The factory registered as `name` (not called)."""
        return self.entry(name).factory

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._entries or name in self.lazy)

    def names(self) -> builtins.list[str]:
        """Every name (registered, lazy built-ins, and what entry points registered), sorted."""
        self.load_entry_points()
        return sorted(set(self._entries) | set(self.lazy))

    def list(self) -> builtins.list[Entry[T]]:
        """Every entry, sorted by name; lazy built-in modules are imported to describe them."""
        for name, module in self.lazy.items():
            if name not in self._entries:
                importlib.import_module(module)
        self.load_entry_points()
        return [self._entries[k] for k in sorted(self._entries)]

    def loaded(self) -> builtins.list[Entry[T]]:
        """The entries registered so far, without importing anything."""
        return [self._entries[k] for k in sorted(self._entries)]

    # ---------------------------------------------------------------- entry points

    def failures(self) -> dict[str, str]:
        """Entry points that failed to load: entry point name -> `ExceptionType: message`."""
        self.load_entry_points()
        return dict(self._failures)

    def load_entry_points(self) -> None:
        """Load every entry point of `group` once; a broken one is recorded, not raised."""
        if self._plugins_loaded or self.group is None:
            return
        self._plugins_loaded = True
        for ep in importlib.metadata.entry_points(group=self.group):
            try:
                obj = ep.load()
                if not isinstance(obj, ModuleType) and callable(obj) and not self._is_registered(obj):
                    self.add(ep.name, obj, description=first_doc_line(obj))
            except Exception as e:  # a third-party plugin may fail in any way; report it on lookup
                self._failures[ep.name] = f"{type(e).__name__}: {e}"

    def reset_entry_points(self) -> None:
        """Forget that entry points were loaded, so the next miss loads them again (tests)."""
        self._plugins_loaded = False
        self._failures.clear()

    def _is_registered(self, obj: Any) -> bool:
        return any(e.factory is obj for e in self._entries.values())

    def _unknown_message(self, name: str) -> str:
        if name in self._failures:
            return (
                f"{self.kind} {name!r} comes from plugin {name!r} (entry point group {self.group}), "
                f"which failed to load: {self._failures[name]}"
            )
        known = ", ".join(sorted(set(self._entries) | set(self.lazy))) or "(none)"
        msg = self.unknown.format(kind=self.kind, name=name, known=known)
        if self._failures:
            failed = "; ".join(f"{k} ({v})" for k, v in self._failures.items())
            msg += f"; plugins that failed to load: {failed}"
        return msg


# ---------------------------------------------------------------- plugin modules


def import_plugin(target: str) -> ModuleType:
    """Import a plugin by dotted module name or `.py` file path, so its decorators register.

    Importing the same target twice is harmless. A module that is missing or fails while
    importing raises `PluginError` naming it and the exception, instead of a traceback.
    """
    target = target.strip()
    if target.endswith(".py"):
        return _import_file(target)
    if not target:
        raise PluginError("empty plugin module name")
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as e:
        raise PluginError(f"cannot import plugin module {target!r}: {e}") from e
    except Exception as e:  # a plugin may fail in any way while importing
        raise PluginError(f"plugin module {target!r} failed to import: {type(e).__name__}: {e}") from e


def load_plugins(targets: Iterable[str]) -> list[ModuleType]:
    """Import each plugin module (or `.py` file) in order; see `import_plugin`."""
    return [import_plugin(t) for t in targets]


def _import_file(target: str) -> ModuleType:
    path = Path(target)
    if not path.is_file():
        raise PluginError(f"plugin file {target} not found")
    mod_name = f"inoculate_plugin_{path.stem}_{abs(hash(str(path.resolve())))}"
    if mod_name in sys.modules:
        return sys.modules[mod_name]
    spec = importlib.util.spec_from_file_location(mod_name, path)
    if spec is None or spec.loader is None:
        raise PluginError(f"cannot import plugin file {target}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[mod_name]
        raise PluginError(f"plugin file {target} failed to import: {type(e).__name__}: {e}") from e
    except BaseException:
        del sys.modules[mod_name]
        raise
    return module


# ---------------------------------------------------------------- helpers


def source_of(obj: Any) -> str:
    """`module.qualname` of a function or class, as registries report where an entry came from."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def first_doc_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
