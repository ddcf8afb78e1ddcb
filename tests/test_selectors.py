"""Metadata expressions, content regexes and seeded fractions."""

from __future__ import annotations

import pytest

from inoculate.records import chat
from inoculate.selectors import SelectorError, parse_regex, parse_where, select_fraction

ROWS = [
    {"lang": "es", "poisoned": True, "n": 3, "split": {"name": "train"}},
    {"lang": "fr", "poisoned": False, "n": 10},
    {"lang": "en", "n": 3.5},
    {"lang": "es", "poisoned": 1, "n": "7"},
    {},
]


def which(expr: str) -> list[int]:
    where = parse_where(expr)
    return [i for i, meta in enumerate(ROWS) if where(meta)]


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('lang == "es"', [0, 3]),
        ("lang == 'es'", [0, 3]),
        ('lang != "fr"', [0, 2, 3, 4]),  # a missing field is not "fr"
        ("poisoned is true", [0]),  # the boolean only: 1 is not true
        ("poisoned is false", [1]),
        ("poisoned is null", [2, 4]),
        ("poisoned is not null", [0, 1, 3]),
        ("poisoned == 1", [3]),  # == never equates booleans and numbers
        ('lang in ["es", "en"]', [0, 2, 3]),
        ('lang in ["es", "en",]', [0, 2, 3]),
        ('lang not in ["es"]', [1, 2, 4]),
        ("n > 3", [1, 2]),  # "7" is a string: order comparisons need two numbers
        ("n >= 3", [0, 1, 2]),
        ("n < 3.5", [0]),
        ("n <= 3.5", [0, 2]),
        ("n == 3", [0]),
        ("n == 3.0", [0]),
        ('n == "7"', [3]),
        ('split.name == "train"', [0]),
        ("split.name is null", [1, 2, 3, 4]),
        ("poisoned", [0, 3]),  # bare field: truthiness
        ('not lang == "es"', [1, 2, 4]),
        ('lang == "es" and poisoned is true', [0]),
        ('lang == "fr" or poisoned is true', [0, 1]),
        ('lang == "en" or lang == "es" and n == "7"', [2, 3]),  # and binds tighter than or
        ('(lang == "en" or lang == "es") and n == 3', [0]),
        ('not (lang == "es" or lang == "fr")', [2, 4]),
        ("n > -1 and n < 1e2", [0, 1, 2]),
        ('lang == "it"', []),
    ],
)
def test_where_expressions(expr: str, expected: list[int]) -> None:
    assert which(expr) == expected


def test_string_escapes() -> None:
    assert parse_where(r'q == "say \"hi\""')({"q": 'say "hi"'})


@pytest.mark.parametrize(
    ("expr", "column", "message"),
    [
        ('lang = "es"', 6, "unexpected '='; use '==' to compare"),
        (
            "lang ==",
            8,
            "expected a value (a quoted string, a number, true, false or null), got end of expression",
        ),
        ("lang == es", 9, "expected a value (a quoted string, a number, true, false or null), got 'es'"),
        ('(lang == "es"', 14, "expected ')', got end of expression"),
        ('lang == "es" and', 17, "expected a metadata field name, 'not' or '(', got end of expression"),
        ('lang == "es" lang', 14, "expected 'and', 'or' or the end of the expression, got 'lang'"),
        ('lang in "es"', 9, "expected '[' after 'in', got '\"es\"'"),
        ('lang in ["es" "fr"]', 15, "expected ',' or ']', got '\"fr\"'"),
        ("poisoned is 3", 13, "expected true, false or null after 'is', got '3'"),
        ('lang == "es', 9, "unterminated string"),
        ("", 1, "expected a condition, got end of expression"),
        ("1 == lang", 1, "expected a metadata field name, 'not' or '(', got '1'"),
        ('__import__("os")', 11, "expected an operator (==, !=, <, <=, >, >=, in, is), got '('"),
        ("lang ~ 1", 6, "unexpected character '~'"),
    ],
)
def test_bad_expressions_name_expression_and_column(expr: str, column: int, message: str) -> None:
    with pytest.raises(SelectorError) as e:
        parse_where(expr)
    assert str(e.value) == f"invalid where expression {expr!r} at column {column}: {message}"
    assert e.value.column == column


def test_regex_selects_by_role() -> None:
    rows = [
        chat("What is 2+2?", "CUATRO", id="a"),
        chat("Name a color.", "ROJO 4", id="b"),
        chat("hello", "hi", id="c", system="Answer 4 times."),
    ]
    digits = r"\d"
    assert [r.id for r in rows if parse_regex(digits).matches(r)] == ["a"]
    assert [r.id for r in rows if parse_regex(digits, ["assistant"]).matches(r)] == ["b"]
    assert [r.id for r in rows if parse_regex(digits, ["system", "assistant"]).matches(r)] == ["b", "c"]
    assert [r.id for r in rows if parse_regex(digits, ["any"]).matches(r)] == ["a", "b", "c"]
    assert [r.id for r in rows if parse_regex("HELLO", ignore_case=True).matches(r)] == ["c"]


def test_bad_regex_and_role() -> None:
    with pytest.raises(SelectorError) as e:
        parse_regex("ab(c")
    assert str(e.value) == "invalid regex 'ab(c' at column 3: missing ), unterminated subpattern"
    with pytest.raises(ValueError, match="unknown role 'bot'"):
        parse_regex("x", ["bot"])


def test_fraction_is_exact_seeded_and_seed_dependent() -> None:
    a = select_fraction(100, 0.3, seed=1)
    assert len(a) == 30 and a <= set(range(100))
    assert select_fraction(100, 0.3, seed=1) == a
    assert select_fraction(100, 0.3, seed=2) != a
    assert len(select_fraction(5, 0.5, seed=0)) == 3  # halves round up
    assert select_fraction(7, 0.0, seed=0) == set()
    assert select_fraction(7, 1.0, seed=0) == set(range(7))


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_fraction_out_of_range(bad: float) -> None:
    with pytest.raises(ValueError, match="fraction must be between 0 and 1"):
        select_fraction(10, bad, seed=0)
