"""YAML loading that remembers where every key sits, so errors can say FILE:LINE: FIELD."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from inoculate.errors import InputError, InputErrors

Path_ = tuple[str, ...]


def _printable(field: str) -> str:
    """A field path with control characters escaped (a key `"a\\n"` must not break the error line)."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in field)


class LineMap:
    """Maps a key path such as ("conditions", "placebo", "prompt") to its 1-based line in the file."""

    def __init__(self, file: str, lines: dict[Path_, int]):
        self.file = file
        self._lines = lines

    def line(self, *path: Any) -> int:
        """The line of the deepest known prefix of `path` (0 when nothing matches)."""
        key = tuple(str(p) for p in path)
        while key:
            if key in self._lines:
                return self._lines[key]
            key = key[:-1]
        return self._lines.get((), 0)

    def has(self, *path: Any) -> bool:
        return tuple(str(p) for p in path) in self._lines

    def error(self, path: tuple[Any, ...] | list[Any], message: str) -> InputError:
        field = _printable(".".join(str(p) for p in path)) or "<file>"
        return InputError(self.file, self.line(*path), field, message)

    def from_validation(self, exc: ValidationError, prefix: tuple[Any, ...] = ()) -> list[InputError]:
        """Turn pydantic errors into located ones; union tags in `loc` that are not YAML keys are dropped."""
        out: list[InputError] = []
        seen: set[tuple[str, str]] = set()
        for err in exc.errors(include_url=False):
            matched: list[str] = [str(p) for p in prefix]
            loc = [str(p) for p in err["loc"]]
            inner = (err.get("ctx") or {}).get("error")
            named = getattr(inner, "field", None)
            if isinstance(named, str):
                loc += [part for part in re.split(r"[.\[\]]+", named) if part]
            for i, item in enumerate(loc):
                if self.has(*matched, item) or (i == len(loc) - 1 and (err["type"] == "missing" or named)):
                    matched.append(item)
            field = _printable(".".join(matched)) or "<file>"
            msg = str(inner) if isinstance(inner, Exception) else err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown field"
            if (field, msg) in seen:
                continue
            seen.add((field, msg))
            out.append(InputError(self.file, self.line(*matched), field, msg))
        return out


def _walk(node: yaml.Node, path: Path_, lines: dict[Path_, int], errors: list[InputError], file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = (*path, str(key_node.value))
            line = key_node.start_mark.line + 1
            if sub in lines:
                errors.append(
                    InputError(
                        file,
                        line,
                        _printable(".".join(sub)),
                        f"duplicate key {str(key_node.value)!r} (first on line {lines[sub]}); "
                        "each key may appear once",
                    )
                )
                continue
            lines[sub] = line
            _walk(value_node, sub, lines, errors, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            sub = (*path, str(i))
            lines[sub] = item.start_mark.line + 1
            _walk(item, sub, lines, errors, file)


_WHY_NO_ALIASES = " (anchors and aliases can expand without bound); write each value out"


def _first_alias(text: str) -> tuple[int, str] | None:
    """(line, message) of the first anchor (`&x`) or alias (`*x`) in `text`, read as events only,
    so nothing is expanded (an alias bomb or a recursive alias costs no more than its text)."""
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        line = event.start_mark.line + 1
        if isinstance(event, yaml.AliasEvent):
            return line, f"YAML alias '*{event.anchor}' is not allowed{_WHY_NO_ALIASES}"
        anchor = getattr(event, "anchor", None)
        if anchor is not None:
            return line, f"YAML anchor '&{anchor}' is not allowed{_WHY_NO_ALIASES}"
    return None


def read_yaml_text(path: str | os.PathLike[str]) -> str:
    """A YAML file's text; a missing file or one that is not UTF-8 is an error naming the file."""
    file = str(path)
    if not Path(path).is_file():
        raise InputErrors.one(file, 0, "<file>", "no such file")
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise InputErrors.one(file, 0, "<file>", f"not UTF-8 text ({e.reason})") from None


def load_yaml(path: str | os.PathLike[str], text: str | None = None) -> tuple[Any, LineMap]:
    """Parse a YAML file; return its data and the line of every key. Syntax errors name their line;
    a key given twice in one mapping is refused with both lines, and so are anchors and aliases
    (why: see below)."""
    file = str(path)
    if text is None:
        text = read_yaml_text(path)
    try:
        # Anchors and aliases are refused before anything is composed: an experiment file is short
        # and written by hand, so they save little, while expanding them can hang (a 9-line alias
        # bomb) or recurse forever, and an aliased key has no line of its own to report errors at.
        alias = _first_alias(text)
        if alias is not None:
            raise InputErrors.one(file, alias[0], "<yaml>", alias[1])
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else 0
        raise InputErrors.one(file, line, "<yaml>", f"invalid YAML: {e.problem or e}") from None
    except RecursionError:
        raise InputErrors.one(file, 0, "<yaml>", "invalid YAML: nested too deeply") from None
    lines: dict[Path_, int] = {(): 1}
    errors: list[InputError] = []
    if node is not None:
        _walk(node, (), lines, errors, file)
    if errors:
        raise InputErrors(errors)
    return data, LineMap(file, lines)
