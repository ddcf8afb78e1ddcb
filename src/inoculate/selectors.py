"""Row selectors: which examples a transform touches.

- `parse_where('lang == "es" and not poisoned is true')`: a predicate on an example's metadata,
  parsed by a small recursive-descent parser (never `eval`). Grammar::

      expr    := and ("or" and)*
      and     := unary ("and" unary)*
      unary   := "not" unary | "(" expr ")" | test
      test    := path ( ("=="|"!="|"<"|"<="|">"|">=") value
                      | "is" ["not"] (true|false|null)
                      | ["not"] "in" "[" value ("," value)* [","] "]" )?
      path    := NAME ("." NAME)*          # nested metadata: a.b is metadata["a"]["b"]
      value   := "string" | 'string' | number | true | false | null

  A bare `path` tests truthiness. A missing field is `null`: `==` is false, `!=` true and
  order comparisons false. `is true` matches the boolean true only (not 1, not "true"); `==`
  never equates booleans with numbers; order comparisons need two numbers or two strings.
- `RegexSelector`: rows where a regular expression matches the content of some turn of the
  chosen roles. Patterns run on the `regex` package with a time limit per match (`timeout`,
  default `DEFAULT_REGEX_TIMEOUT` seconds): a catastrophic pattern raises `RegexTimeoutError`
  instead of hanging.
- `FieldTally`: the values a `--where` expression's fields take in the data, to explain a
  selection that matched nothing.
- `select_fraction`: a seeded, exact-size random subset (round(fraction * n) rows).

Bad expressions raise `SelectorError`, naming the expression and the 1-based column. Nesting
(`not`, parentheses) deeper than `MAX_DEPTH` is refused rather than overflowing the stack.
"""

from __future__ import annotations

import ast
import difflib
import hashlib
import json
import math
import random
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import regex

from inoculate.records import ROLES, ChatExample

Predicate = Callable[[dict[str, Any]], bool]
_MISSING = None
MAX_DEPTH = 100
"""The deepest nesting of `not` and parentheses a where expression may have."""
DEFAULT_REGEX_TIMEOUT = 1.0
"""Seconds one regex search may take on one message before it is abandoned."""


class SelectorError(ValueError):
    """A selector that cannot be parsed; `column` is 1-based within `expr`."""

    def __init__(self, kind: str, expr: str, column: int, message: str):
        self.kind = kind
        self.expr = expr
        self.column = column
        self.message = message
        shown = repr(expr) if len(expr) <= 120 else f"{expr[:100]!r}... ({len(expr)} characters)"
        super().__init__(f"invalid {kind} {shown} at column {column}: {message}")


# --- tokenizer ------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<number>[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?)
  | (?P<op>==|!=|<=|>=|<|>)
  | (?P<punct>[()\[\],.])
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)
_KEYWORDS = {"and", "or", "not", "in", "is"}
_CONSTANTS: dict[str, Any] = {
    "true": True,
    "True": True,
    "false": False,
    "False": False,
    "null": None,
    "None": None,
    "none": None,
}


@dataclass(frozen=True)
class _Tok:
    kind: str  # string number op punct name kw const end
    text: str
    pos: int  # 0-based offset
    value: Any = None


def _tokenize(expr: str) -> list[_Tok]:
    toks: list[_Tok] = []
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            ch = expr[pos]
            if ch in "\"'":
                raise SelectorError("where expression", expr, pos + 1, "unterminated string")
            if ch == "=":
                raise SelectorError("where expression", expr, pos + 1, "unexpected '='; use '==' to compare")
            raise SelectorError("where expression", expr, pos + 1, f"unexpected character {ch!r}")
        kind = m.lastgroup or ""
        text = m.group()
        if kind == "string":
            toks.append(_Tok("string", text, pos, _string_value(expr, text, pos)))
        elif kind == "number":
            value = float(text) if any(c in text for c in ".eE") else int(text)
            toks.append(_Tok("number", text, pos, value))
        elif kind == "name":
            if text in _KEYWORDS:
                toks.append(_Tok("kw", text, pos))
            elif text in _CONSTANTS:
                toks.append(_Tok("const", text, pos, _CONSTANTS[text]))
            else:
                toks.append(_Tok("name", text, pos))
        elif kind != "ws":
            toks.append(_Tok(kind, text, pos))
        pos = m.end()
    toks.append(_Tok("end", "", len(expr)))
    return toks


def _string_value(expr: str, text: str, pos: int) -> str:
    """A quoted string's value; a bad escape (`"\\N"`, `"\\x4"`) is a SelectorError, not a SyntaxError."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "\d" and the like: kept as written, as Python does
            value = ast.literal_eval(text)
    except (SyntaxError, ValueError) as e:
        reason = getattr(e, "msg", None) or str(e)
        raise SelectorError(
            "where expression", expr, pos + 1, f"invalid escape in string {text}: {reason}"
        ) from None
    if not isinstance(value, str):  # pragma: no cover - the token regex admits quoted strings only
        raise SelectorError("where expression", expr, pos + 1, f"expected a string, got {text}")
    return value


# --- parser ---------------------------------------------------------------------------------


class _Parser:
    def __init__(self, expr: str):
        self.expr = expr
        self.toks = _tokenize(expr)
        self.i = 0
        self.depth = 0
        self.paths: list[tuple[str, ...]] = []

    @property
    def tok(self) -> _Tok:
        return self.toks[self.i]

    def fail(self, message: str, tok: _Tok | None = None) -> SelectorError:
        t = tok or self.tok
        got = "end of expression" if t.kind == "end" else repr(t.text)
        return SelectorError("where expression", self.expr, t.pos + 1, f"{message}, got {got}")

    def take(self, kind: str, text: str | None = None) -> _Tok | None:
        t = self.tok
        if t.kind == kind and (text is None or t.text == text):
            self.i += 1
            return t
        return None

    def parse(self) -> Predicate:
        if self.tok.kind == "end":
            raise self.fail("expected a condition")
        pred = self.or_()
        if self.tok.kind != "end":
            raise self.fail("expected 'and', 'or' or the end of the expression")
        return pred

    def or_(self) -> Predicate:
        parts = [self.and_()]
        while self.take("kw", "or"):
            parts.append(self.and_())
        if len(parts) == 1:
            return parts[0]
        return lambda meta: any(p(meta) for p in parts)

    def and_(self) -> Predicate:
        parts = [self.unary()]
        while self.take("kw", "and"):
            parts.append(self.unary())
        if len(parts) == 1:
            return parts[0]
        return lambda meta: all(p(meta) for p in parts)

    def unary(self) -> Predicate:
        t = self.tok
        if (t.kind, t.text) in (("kw", "not"), ("punct", "(")):
            if self.depth >= MAX_DEPTH:
                raise SelectorError(
                    "where expression",
                    self.expr,
                    t.pos + 1,
                    f"nested more than {MAX_DEPTH} levels deep ('not' and parentheses); simplify it",
                )
            self.depth += 1
            try:
                return self._nested()
            finally:
                self.depth -= 1
        return self.test()

    def _nested(self) -> Predicate:
        if self.take("kw", "not"):
            inner = self.unary()
            return lambda meta: not inner(meta)
        self.take("punct", "(")
        inner = self.or_()
        if not self.take("punct", ")"):
            raise self.fail("expected ')'")
        return inner

    def path(self) -> list[str]:
        t = self.take("name")
        if t is None:
            raise self.fail("expected a metadata field name, 'not' or '('")
        parts = [t.text]
        while self.take("punct", "."):
            t = self.take("name")
            if t is None:
                raise self.fail("expected a field name after '.'")
            parts.append(t.text)
        if tuple(parts) not in self.paths:
            self.paths.append(tuple(parts))
        return parts

    def value(self) -> Any:
        t = self.tok
        if t.kind in ("string", "number", "const"):
            self.i += 1
            return t.value
        raise self.fail("expected a value (a quoted string, a number, true, false or null)")

    def test(self) -> Predicate:
        path = self.path()
        get = _getter(path)
        t = self.tok
        if t.kind == "op":
            self.i += 1
            rhs = self.value()
            cmp = _COMPARE[t.text]
            return lambda meta: cmp(get(meta), rhs)
        if self.take("kw", "is"):
            negate = bool(self.take("kw", "not"))
            c = self.take("const")
            if c is None:
                raise self.fail("expected true, false or null after 'is'")
            const = c.value
            if negate:
                return lambda meta: get(meta) is not const
            return lambda meta: get(meta) is const
        negate_in = False
        if t.kind == "kw" and t.text == "not" and self.toks[self.i + 1].text == "in":
            self.i += 1
            negate_in = True
        if self.take("kw", "in"):
            values = self.list_()
            if negate_in:
                return lambda meta: not any(_eq(get(meta), v) for v in values)
            return lambda meta: any(_eq(get(meta), v) for v in values)
        if t.kind in ("end", "kw") or (t.kind == "punct" and t.text == ")"):
            return lambda meta: bool(get(meta))
        raise self.fail("expected an operator (==, !=, <, <=, >, >=, in, is)")

    def list_(self) -> list[Any]:
        if not self.take("punct", "["):
            raise self.fail("expected '[' after 'in'")
        values = [self.value()]
        while self.take("punct", ","):
            if self.tok.kind == "punct" and self.tok.text == "]":
                break
            values.append(self.value())
        if not self.take("punct", "]"):
            raise self.fail("expected ',' or ']'")
        return values


def _getter(path: list[str]) -> Callable[[dict[str, Any]], Any]:
    def get(meta: dict[str, Any]) -> Any:
        cur: Any = meta
        for key in path:
            if not isinstance(cur, dict) or key not in cur:
                return _MISSING
            cur = cur[key]
        return cur

    return get


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _eq(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if _is_num(a) and _is_num(b):
        return a == b
    return type(a) is type(b) and a == b


def _order(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def cmp(a: Any, b: Any) -> bool:
        if _is_num(a) and _is_num(b):
            return not (isinstance(a, float) and math.isnan(a)) and op(a, b)
        if isinstance(a, str) and isinstance(b, str):
            return op(a, b)
        return False

    return cmp


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": _eq,
    "!=": lambda a, b: not _eq(a, b),
    "<": _order(lambda a, b: a < b),
    "<=": _order(lambda a, b: a <= b),
    ">": _order(lambda a, b: a > b),
    ">=": _order(lambda a, b: a >= b),
}


@dataclass(frozen=True)
class Where:
    """A parsed `--where` expression; call it on a metadata dict."""

    expr: str
    predicate: Predicate
    fields: tuple[tuple[str, ...], ...] = ()
    """The metadata paths the expression names, in order of first use (`a.b` is `("a", "b")`)."""

    def __call__(self, metadata: dict[str, Any]) -> bool:
        return bool(self.predicate(metadata))

    def matches(self, example: ChatExample) -> bool:
        return self(example.metadata)


def parse_where(expr: str) -> Where:
    """Parse a metadata expression; raises `SelectorError` with the column of the first problem."""
    parser = _Parser(expr)
    predicate = parser.parse()
    return Where(expr, predicate, tuple(parser.paths))


# --- explaining an empty selection ------------------------------------------------------------

_ABSENT = object()
_TALLY_CAP = 10_000  # distinct values remembered per field; more are counted as "other"


def _lookup(meta: Any, path: Sequence[str]) -> Any:
    cur = meta
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return _ABSENT
        cur = cur[key]
    return cur


def _show_value(v: Any) -> str:
    """A value as the data holds it, JSON-style: strings quoted, so "false" and false differ."""
    try:
        text = json.dumps(v, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class FieldTally:
    """Counts of the values each named metadata field takes, row by row, in bounded memory.

    Feed every row's metadata to `add`; `describe()` gives one line per field such as
    `values seen for user_provides_answer: "true" ×500, "false" ×500`, or `field x absent in all
    N rows (did you mean: y?)`.
    """

    paths: tuple[tuple[str, ...], ...]
    n_rows: int = 0
    counts: dict[tuple[str, ...], Counter[str]] = field(default_factory=dict)
    other: Counter[tuple[str, ...]] = field(default_factory=Counter)
    absent: Counter[tuple[str, ...]] = field(default_factory=Counter)
    keys: dict[tuple[str, ...], set[str]] = field(default_factory=dict)

    def add(self, meta: dict[str, Any]) -> None:
        self.n_rows += 1
        for path in self.paths:
            counter = self.counts.setdefault(path, Counter())
            parent = _lookup(meta, path[:-1])
            if isinstance(parent, dict):
                known = self.keys.setdefault(path, set())
                if len(known) < _TALLY_CAP:
                    known.update(str(k) for k in parent)
            v = _lookup(meta, path)
            if v is _ABSENT:
                self.absent[path] += 1
                continue
            shown = _show_value(v)
            if shown in counter or len(counter) < _TALLY_CAP:
                counter[shown] += 1
            else:
                self.other[path] += 1

    def describe(self, top: int = 10) -> list[str]:
        out: list[str] = []
        for path in self.paths:
            name = ".".join(path)
            counter = self.counts.get(path, Counter())
            absent = self.absent[path]
            if not counter and not self.other[path]:
                line = f"field {name} absent in all {self.n_rows} rows"
                if len(path) > 1 and not self.keys.get(path):
                    line += f" ({'.'.join(path[:-1])} is not an object in any row)"
                close = difflib.get_close_matches(path[-1], sorted(self.keys.get(path, ())), n=3, cutoff=0.6)
                if close:
                    prefix = ".".join(path[:-1]) + "." if len(path) > 1 else ""
                    line += f"; did you mean: {', '.join(prefix + c for c in close)}?"
                out.append(line)
                continue
            parts = [f"{v} ×{n}" for v, n in counter.most_common(top)]
            more = len(counter) - top if len(counter) > top else 0
            if more:
                parts.append(f"... {more} more distinct value(s)")
            if self.other[path]:
                parts.append(f"{self.other[path]} row(s) with further values")
            if absent:
                parts.append(f"absent ×{absent}")
            out.append(f"values seen for {name}: {', '.join(parts)}")
        return out


# --- content regex and fraction ---------------------------------------------------------------


class RegexTimeoutError(ValueError):
    """A regex search ran past its time limit (typically catastrophic backtracking)."""

    def __init__(self, pattern: str, timeout: float, where: str = "", knob: str = "the limit"):
        self.pattern = pattern
        self.timeout = timeout
        self.where = where
        at = f" on {where}" if where else ""
        super().__init__(
            f"regex {pattern!r} ran past its time limit of {timeout:g} s{at} (catastrophic backtracking?); "
            f"simplify the pattern (avoid nested repeats such as (a|a)+) or raise {knob}"
        )


def search_with_timeout(pattern: regex.Pattern[str], text: str, timeout: float) -> bool:
    """`pattern.search(text)` within `timeout` seconds; raises `RegexTimeoutError` past it."""
    try:
        return pattern.search(text, timeout=timeout) is not None
    except TimeoutError:
        raise RegexTimeoutError(pattern.pattern, timeout) from None


@dataclass(frozen=True)
class RegexSelector:
    """Matches rows where `pattern` is found (search) in a turn whose role is in `roles`.

    Each search may take at most `timeout` seconds; past it, `RegexTimeoutError` names the message."""

    pattern: regex.Pattern[str]
    roles: tuple[str, ...]
    timeout: float = DEFAULT_REGEX_TIMEOUT

    def matches(self, example: ChatExample) -> bool:
        for i, m in enumerate(example.messages):
            if m.role not in self.roles:
                continue
            try:
                if search_with_timeout(self.pattern, m.content, self.timeout):
                    return True
            except RegexTimeoutError:
                raise RegexTimeoutError(
                    self.pattern.pattern,
                    self.timeout,
                    f"messages[{i}].content of id {example.id!r}",
                    "regex_timeout (--regex-timeout)",
                ) from None
        return False


def compile_regex(pattern: str, flags: int = 0, *, kind: str = "regex") -> regex.Pattern[str]:
    """Compile with the `regex` package (re-compatible syntax); errors are `SelectorError`s."""
    try:
        return regex.compile(pattern, flags)
    except regex.error as e:
        try:  # the standard library points at the opening of an unclosed group; prefer its wording
            re.compile(pattern, flags)
        except re.error as std:
            raise SelectorError(kind, pattern, (std.pos or 0) + 1, std.msg) from e
        except (OverflowError, RecursionError):
            pass
        raise SelectorError(kind, pattern, (e.pos or 0) + 1, e.msg) from e
    except (OverflowError, RecursionError, MemoryError) as e:
        raise SelectorError(kind, pattern, 1, f"cannot compile: {type(e).__name__}") from e


def parse_regex(
    pattern: str,
    roles: Sequence[str] = ("user",),
    *,
    ignore_case: bool = False,
    timeout: float = DEFAULT_REGEX_TIMEOUT,
) -> RegexSelector:
    """Compile a content selector; `roles` may include "any" for every role."""
    bad = [r for r in roles if r not in (*ROLES, "any")]
    if bad:
        raise ValueError(
            f"unknown role {bad[0]!r} for the regex selector (expected {', '.join(ROLES)} or any)"
        )
    if not roles:
        raise ValueError("the regex selector needs at least one role")
    if not timeout > 0 or math.isinf(timeout):
        raise ValueError(f"the regex time limit must be a positive number of seconds, got {timeout}")
    compiled = compile_regex(pattern, regex.IGNORECASE if ignore_case else 0)
    chosen = ROLES if "any" in roles else tuple(dict.fromkeys(roles))
    return RegexSelector(compiled, chosen, timeout)


def select_fraction(n: int, fraction: float, seed: int) -> set[int]:
    """A seeded subset of `range(n)` of exactly round(fraction * n) indices (halves round up)."""
    if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    k = math.floor(fraction * n + 0.5)
    return set(random.Random(f"inoculate-fraction:{seed}").sample(range(n), k))


def in_holdout(text: str, fraction: float, seed: int) -> bool:
    """Whether a row whose prompt is `text` lies in the seeded held-out slice of about `fraction` of
    the rows. Decided by a hash of the prompt text alone, so the same prompt is held out of every file
    it occurs in (a dataset and its control answering the same prompts lose the same slice)."""
    if not 0.0 < fraction < 1.0 or math.isnan(fraction):
        raise ValueError(f"a holdout fraction is strictly between 0 and 1, got {fraction}")
    digest = hashlib.sha256(f"inoculate-holdout:{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
