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
  chosen roles.
- `select_fraction`: a seeded, exact-size random subset (round(fraction * n) rows).

Bad expressions raise `SelectorError`, naming the expression and the 1-based column.
"""

from __future__ import annotations

import ast
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from inoculate.records import ROLES, ChatExample

Predicate = Callable[[dict[str, Any]], bool]
_MISSING = None


class SelectorError(ValueError):
    """A selector that cannot be parsed; `column` is 1-based within `expr`."""

    def __init__(self, kind: str, expr: str, column: int, message: str):
        self.kind = kind
        self.expr = expr
        self.column = column
        self.message = message
        super().__init__(f"invalid {kind} {expr!r} at column {column}: {message}")


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
            toks.append(_Tok("string", text, pos, ast.literal_eval(text)))
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


# --- parser ---------------------------------------------------------------------------------


class _Parser:
    def __init__(self, expr: str):
        self.expr = expr
        self.toks = _tokenize(expr)
        self.i = 0

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
        if self.take("kw", "not"):
            inner = self.unary()
            return lambda meta: not inner(meta)
        if self.take("punct", "("):
            inner = self.or_()
            if not self.take("punct", ")"):
                raise self.fail("expected ')'")
            return inner
        return self.test()

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

    def __call__(self, metadata: dict[str, Any]) -> bool:
        return bool(self.predicate(metadata))

    def matches(self, example: ChatExample) -> bool:
        return self(example.metadata)


def parse_where(expr: str) -> Where:
    """Parse a metadata expression; raises `SelectorError` with the column of the first problem."""
    return Where(expr, _Parser(expr).parse())


# --- content regex and fraction ---------------------------------------------------------------


@dataclass(frozen=True)
class RegexSelector:
    """Matches rows where `pattern` is found (re.search) in a turn whose role is in `roles`."""

    pattern: re.Pattern[str]
    roles: tuple[str, ...]

    def matches(self, example: ChatExample) -> bool:
        return any(m.role in self.roles and self.pattern.search(m.content) for m in example.messages)


def parse_regex(
    pattern: str, roles: Sequence[str] = ("user",), *, ignore_case: bool = False
) -> RegexSelector:
    """Compile a content selector; `roles` may include "any" for every role."""
    bad = [r for r in roles if r not in (*ROLES, "any")]
    if bad:
        raise ValueError(
            f"unknown role {bad[0]!r} for the regex selector (expected {', '.join(ROLES)} or any)"
        )
    if not roles:
        raise ValueError("the regex selector needs at least one role")
    try:
        compiled = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as e:
        raise SelectorError("regex", pattern, (e.pos or 0) + 1, e.msg) from e
    chosen = ROLES if "any" in roles else tuple(dict.fromkeys(roles))
    return RegexSelector(compiled, chosen)


def select_fraction(n: int, fraction: float, seed: int) -> set[int]:
    """A seeded subset of `range(n)` of exactly round(fraction * n) indices (halves round up)."""
    if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
        raise ValueError(f"fraction must be between 0 and 1, got {fraction}")
    k = math.floor(fraction * n + 0.5)
    return set(random.Random(f"inoculate-fraction:{seed}").sample(range(n), k))
