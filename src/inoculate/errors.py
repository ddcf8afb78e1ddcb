"""Input errors that name the file, line and field, as users need to fix them."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# Hints carried by errors (`InputError.hint`), printed once below the errors they explain.
SHAPES_HINT = (
    'accepted shapes: chat JSONL {"messages": [{"role": ..., "content": ...}, ...]} (optional "id", '
    '"metadata"), prompt/completion JSONL {"prompt": ..., "completion": ...}, '
    "or a `datasets` folder or hub id"
)
NO_ASSISTANT_HINT = (
    "rows with prompts only look like an eval set: `inoculate validate --allow-no-assistant` accepts "
    "them (generation and --eval inputs need no completion); training data needs one"
)


@dataclass(frozen=True)
class InputError:
    """One problem in one place of an input file. `line` is 1-based; 0 means the whole file.

    `hint` is an optional line pointing at the fix (an accepted shape, a flag that fits); it is
    printed once under all the errors that carry it, not on each.
    """

    file: str
    line: int
    field: str
    message: str
    hint: str | None = None

    @property
    def kind(self) -> tuple[str, str, str]:
        """Errors of one kind: same file, same field (indices dropped), same message template."""
        return (self.file, _INDEX.sub("[]", self.field), _template(self.message))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class InputErrors(Exception):
    """Raised with every problem found in an input, so a user fixes them all in one pass."""

    def __init__(self, errors: list[InputError]):
        self.errors = list(errors)
        super().__init__("\n".join(f"ERROR: {e}" for e in self.errors))

    @classmethod
    def one(cls, file: str, line: int, field: str, message: str, hint: str | None = None) -> InputErrors:
        return cls([InputError(str(file), line, field, message, hint)])

    def render(self, limit: int = 20) -> list[str]:
        """The `ERROR:` lines to print: see `render_errors`."""
        return render_errors(self.errors, limit=limit)


_INDEX = re.compile(r"\[\d+\]")
_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")
_NUMBER = re.compile(r"\b\d+(?:\.\d+)?\b")


def _template(message: str) -> str:
    """A message with its quoted values and numbers blanked, so rows differing only in them group."""
    return _NUMBER.sub("#", _QUOTED.sub("'…'", message))


def render_errors(errors: Iterable[InputError], limit: int = 20) -> list[str]:
    """`ERROR: FILE:LINE: FIELD: message` lines, at most `limit` per kind of problem.

    A file in the wrong shape fails on every row the same way; after `limit` lines of one kind
    (same file, field and message template) the rest are counted in one `… and N more like this`
    line. Each distinct hint the errors carry follows, once, as a `hint:` line.
    """
    errors = list(errors)
    groups: dict[tuple[str, str, str], list[InputError]] = {}
    for e in errors:
        groups.setdefault(e.kind, []).append(e)
    lines: list[str] = []
    if all(len(g) <= limit for g in groups.values()):
        lines.extend(f"ERROR: {e}" for e in errors)  # nothing elided: keep the file's order
    else:
        for group in groups.values():
            lines.extend(f"ERROR: {e}" for e in group[:limit])
            if len(group) > limit:
                lines.append(f"  … and {len(group) - limit} more like this")
    hints: list[str] = []
    for e in errors:
        if e.hint and e.hint not in hints:
            hints.append(e.hint)
    lines.extend(f"hint: {h}" for h in hints)
    return lines


def not_utf8(path: str | os.PathLike[str]) -> InputErrors:
    """The error for a file that is not UTF-8, naming the line and column of its first bad byte."""
    data = Path(path).read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        byte = data[e.start : e.start + 1]
        return InputErrors.one(
            str(path), line, "<file>", f"not UTF-8 text: byte 0x{byte.hex()} at column {col} ({e.reason})"
        )
    return InputErrors.one(str(path), 0, "<file>", "not UTF-8 text")


def nested_too_deeply(file: str, line: int) -> InputError:
    return InputError(file, line, "<json>", "nested too deeply (thousands of levels of lists or objects)")
