"""One reader for files of prompts: `--prompt-file` paraphrase pools and `screen` candidate files.

Accepted, by suffix:

- `.txt`: one prompt per line; blank lines and lines starting with `#` are skipped; surrounding
  whitespace is stripped.
- `.jsonl`: one JSON value per line, either a string or an object holding the prompt in a field.
- `.json`: an array of strings or objects (or `{"prompts": [...]}` / `{"candidates": [...]}`).
- `.yaml` / `.yml`: a list of strings or mappings, shaped like the `.json` form.

The field of an object is the one named (`--prompt-field`), else the only string-valued field of
the first object (a `name` field is left out where the caller reads names, as `screen` does);
when there are several, the reader refuses and lists them. Other suffixes are refused rather than
guessed at: a JSONL pool read as lines would train on literal `{"rephrasing": ...}` system prompts.

Duplicates are refused (naming both lines): a repeated paraphrase is sampled twice as often, which
silently reweights the pool, and a repeated screen candidate spends compute on a tie; the inline
`prompts:` pool refuses them the same way. An empty pool is an error.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inoculate.errors import InputError, InputErrors, not_utf8

SUFFIXES: tuple[str, ...] = (".txt", ".json", ".jsonl", ".yaml", ".yml")
LIST_KEYS: tuple[str, ...] = ("prompts", "candidates")
FIELD_HINT = "name the field with --prompt-field (prompt_field in a YAML spec)"


@dataclass(frozen=True)
class PromptEntry:
    """One prompt read from a file: its text, the 1-based line it starts on (0 when unknown),
    and its name where the row gave one (in `name_field`)."""

    text: str
    line: int
    name: str | None = None


def read_prompts(path: str | os.PathLike[str], field: str | None = None) -> list[str]:
    """The prompts of a `.txt`, `.json`, `.jsonl`, `.yaml` or `.yml` file (see the module doc).

    Raises `InputErrors` naming FILE:LINE: FIELD for every problem found.
    """
    return [e.text for e in read_prompt_entries(path, field)]


def read_prompt_entries(
    path: str | os.PathLike[str], field: str | None = None, *, name_field: str | None = None
) -> list[PromptEntry]:
    """`read_prompts` keeping each prompt's line and, where `name_field` is given, its name."""
    p = Path(path)
    file = str(path)
    suffix = p.suffix.lower()
    if suffix not in SUFFIXES:
        got = f"suffix {p.suffix!r}" if p.suffix else "no suffix"
        raise InputErrors.one(
            file, 0, "<file>", f"unsupported prompt file ({got}); accepted: {', '.join(SUFFIXES)}"
        )
    if not p.is_file():
        raise InputErrors.one(file, 0, "<file>", "no such file" if not p.exists() else "not a regular file")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise not_utf8(p) from None
    if suffix == ".txt":
        entries = _from_text(text)
    else:
        items = _items(file, text, suffix)
        entries = _from_items(file, items, field, name_field)
    if not entries:
        raise InputErrors.one(file, 0, "<file>", "no prompts in the file (the pool is empty)")
    _refuse_duplicates(file, entries, suffix)
    return entries


def _from_text(text: str) -> list[PromptEntry]:
    out = []
    for n, raw in enumerate(text.splitlines(), start=1):
        s = raw.strip()
        if s and not s.startswith("#"):
            out.append(PromptEntry(s, n))
    return out


def _items(file: str, text: str, suffix: str) -> list[tuple[int, Any]]:
    """(line, value) for every entry of a JSONL, JSON or YAML file; parse errors name their line."""
    if suffix == ".jsonl":
        items, errors = [], []
        for n, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                items.append((n, json.loads(raw)))
            except json.JSONDecodeError as e:
                errors.append(InputError(file, n, "<json>", f"invalid JSON: {e.msg} at column {e.colno}"))
            except RecursionError:
                errors.append(InputError(file, n, "<json>", "nested too deeply"))
        if errors:
            raise InputErrors(errors)
        return items
    try:
        if suffix == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise InputErrors.one(
            file, e.lineno, "<json>", f"invalid JSON: {e.msg} at column {e.colno}"
        ) from None
    except RecursionError:
        raise InputErrors.one(file, 0, "<file>", "nested too deeply") from None
    except Exception as e:  # yaml.YAMLError, without importing yaml for JSON
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        line = mark.line + 1 if mark is not None else 0
        raise InputErrors.one(file, line, "<yaml>", f"invalid YAML: {problem}") from None
    key = None
    if isinstance(data, dict):
        keys = [k for k in LIST_KEYS if isinstance(data.get(k), list)]
        if not keys:
            raise InputErrors.one(
                file,
                1,
                "<file>",
                f"expected a list of prompts (or a mapping with {' or '.join(LIST_KEYS)}: [...]), "
                f"got a mapping with {', '.join(map(str, data)) or 'no keys'}",
            )
        key = keys[0]
        data = data[key]
    if not isinstance(data, list):
        raise InputErrors.one(file, 1, "<file>", f"expected a list of prompts, got {type(data).__name__}")
    lines = _item_lines(text, key, len(data))
    return list(zip(lines, data, strict=True))


def _item_lines(text: str, key: str | None, n: int) -> list[int]:
    """The line each list item starts on, from YAML's node marks (JSON is YAML enough for this);
    zeros where the text does not compose."""
    try:
        import yaml

        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if key is not None and isinstance(node, yaml.MappingNode):
            node = next(v for k, v in node.value if k.value == key)
        if isinstance(node, yaml.SequenceNode) and len(node.value) == n:
            return [item.start_mark.line + 1 for item in node.value]
    except Exception:  # a mark is a nicety; the values came from the real parser
        pass
    return [0] * n


def _from_items(
    file: str, items: Sequence[tuple[int, Any]], field: str | None, name_field: str | None
) -> list[PromptEntry]:
    """Entries from decoded values: strings as they are, objects through `field` (chosen once)."""
    errors: list[InputError] = []
    out: list[PromptEntry] = []
    chosen = field
    for i, (line, value) in enumerate(items):
        where = f"[{i}]" if line == 0 else "<row>"
        if isinstance(value, str):
            if not value.strip():
                errors.append(InputError(file, line, where, "empty prompt"))
            else:
                out.append(PromptEntry(value, line))
            continue
        if not isinstance(value, dict):
            errors.append(
                InputError(
                    file, line, where, f"expected a prompt string or an object, got {type(value).__name__}"
                )
            )
            continue
        if chosen is None:
            strings = [k for k, v in value.items() if isinstance(v, str) and k != name_field]
            if len(strings) != 1:
                fields = ", ".join(map(str, value)) or "none"
                msg = (
                    f"no string-valued field to read the prompt from (fields: {fields})"
                    if not strings
                    else f"several string fields ({', '.join(strings)}): which one is the prompt?"
                )
                raise InputErrors([InputError(file, line, where, msg, FIELD_HINT)])
            chosen = strings[0]
        prompt = value.get(chosen)
        if prompt is None:
            fields = ", ".join(map(str, value)) or "none"
            errors.append(InputError(file, line, chosen, f"missing (fields here: {fields})", FIELD_HINT))
        elif not isinstance(prompt, str):
            errors.append(InputError(file, line, chosen, f"must be a string, got {type(prompt).__name__}"))
        elif not prompt.strip():
            errors.append(InputError(file, line, chosen, "empty prompt"))
        else:
            name = value.get(name_field) if name_field is not None else None
            if name is not None and not isinstance(name, str | int):
                errors.append(InputError(file, line, name_field or "name", "must be a string"))
                continue
            out.append(PromptEntry(prompt, line, str(name) if name is not None else None))
    if errors:
        raise InputErrors(errors)
    return out


def _refuse_duplicates(file: str, entries: Sequence[PromptEntry], suffix: str) -> None:
    first: dict[str, int] = {}
    errors = []
    for i, e in enumerate(entries):
        if e.text in first:
            j = first[e.text]
            prev = entries[j]
            at = f"line {prev.line}" if prev.line else f"item {j}"
            fld = "<line>" if suffix == ".txt" else "<row>"
            errors.append(InputError(file, e.line, fld, f"duplicate of {at}"))
        else:
            first[e.text] = i
    if errors:
        raise InputErrors(errors)
