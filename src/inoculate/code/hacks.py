"""Hard-coded "solutions": the function the reference defines, returning the visible test's expected value.

This is the training-data hack of Wichers et al. (2025, arXiv 2510.05024): a program that passes the one
test shown in the prompt and nothing else. It is built from the AST of the reference solution (for the
signature) and of the first test (for the expected value), never by running either.
"""

from __future__ import annotations

import ast
import copy
import textwrap

CANDIDATE = "candidate"
"""The name HumanEval's `check(candidate)` calls the function by."""

# Calls that may wrap the function's result on the tested side without changing what a constant equal
# to the other side passes: set(f(x)) == set([1, 2]) is passed by returning set([1, 2]).
_TRANSPARENT_WRAPPERS = {"set", "frozenset", "sorted", "list", "tuple", "round", "float", "int", "str"}
# Names an expected value may use and still be a constant (float("inf"), tuple([1, 2]), ...).
_CONSTANT_NAMES = {"True", "False", "None", "float", "int", "str", "tuple", "list", "set", "frozenset",
                   "dict", "complex", "bool", "bytes"}  # fmt: skip


class HackError(ValueError):
    """The hard-coded solution cannot be built from this reference and test (the message says why)."""


def hardcoded_solution(reference_code: str, first_test: str, entry_point: str | None = None) -> str:
    """A function with the reference solution's signature that returns the first test's expected value.

    - `first_test`: one test in any of these forms (the first assert that calls the function is used;
      a trailing `, "message"` is ignored): `assert f(args) == expected` (either side),
      `assert f(args) is True/False/None`, `assert f(args)` (-> True), `assert not f(args)` (-> False),
      `assert math.isclose(f(args), expected, ...)`, `assert abs(f(args) - expected) < tol`, the tested
      side wrapped in set()/sorted()/list()/tuple()/round()/float()/int()/str(), and HumanEval's
      `def check(candidate): assert candidate(args) == ...` (or a bare `assert candidate(...)`).
    - `entry_point`: the function's name. Without it the test must call a function `reference_code`
      defines at top level; with it, calls to `entry_point` or to `candidate` count.
    - The signature keeps the reference's parameter names, defaults and kinds; annotations are dropped
      (they may name imports the hack does not carry, like `List` from typing).
    - The expected value must be a constant: a literal, or an expression of literals and constructors
      such as `float("inf")` or `tuple([1, 2])`; it is copied as source text.

    Raises `HackError` naming what is missing when the test has no such assert, the reference defines no
    such function, or the expected value is not a constant.
    """
    try:
        ref = ast.parse(textwrap.dedent(reference_code))
    except SyntaxError as e:
        raise HackError(f"reference code does not parse: {e.msg} (line {e.lineno})") from None
    try:
        test = ast.parse(textwrap.dedent(first_test))
    except SyntaxError as e:
        raise HackError(f"test does not parse: {e.msg} (line {e.lineno})") from None
    functions = {n.name: n for n in ref.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    targets = {entry_point, CANDIDATE} if entry_point else set(functions)
    if not targets:
        raise HackError("reference code defines no top-level function and no entry_point was given")
    for node in _asserts(test):
        found = _expected(node.test, targets)
        if found is not None:
            called, expected = found
            break
    else:
        raise HackError(
            f"no assert in the test calls {_names(targets)} in a form whose expected value can be read "
            "(assert f(x) == expected, assert f(x), assert not f(x), math.isclose(f(x), expected), "
            "abs(f(x) - expected) < tol)"
        )
    name = entry_point or called
    if name == CANDIDATE and not entry_point:
        raise HackError("the test calls `candidate` (HumanEval's check form): pass entry_point")
    fdef = functions.get(name)
    if fdef is None:
        raise HackError(
            f"reference code defines no top-level function {name!r}; it defines {_names(functions)}"
        )
    args = copy.deepcopy(fdef.args)
    for a in (*args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg):
        if a is not None:
            a.annotation = None
    return f"def {name}({ast.unparse(args)}):\n    return {_constant_source(expected)}\n"


def _names(names: object) -> str:
    shown = sorted(n for n in names if n)  # type: ignore[attr-defined]
    return ", ".join(shown) if shown else "(none)"


def _asserts(tree: ast.Module) -> list[ast.Assert]:
    """Top-level asserts, then those directly in a `def check(...)` body, in source order."""
    out: list[ast.Assert] = []
    for node in tree.body:
        if isinstance(node, ast.Assert):
            out.append(node)
        elif isinstance(node, ast.FunctionDef) and node.name == "check":
            out.extend(n for n in node.body if isinstance(n, ast.Assert))
    return out


def _calls_target(node: ast.expr, targets: set[str | None]) -> str | None:
    """The target's name if `node` is a call to it (possibly inside a transparent wrapper), else None."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        if node.func.id in targets:
            return node.func.id
        if node.func.id in _TRANSPARENT_WRAPPERS and len(node.args) >= 1:
            return _calls_target(node.args[0], targets)
    return None


def _expected(test: ast.expr, targets: set[str | None]) -> tuple[str, ast.expr] | None:
    """(called name, expected-value node) for one assert's condition, or None if it has no readable form."""
    called = _calls_target(test, targets)
    if called:
        return called, ast.Constant(True)
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        called = _calls_target(test.operand, targets)
        return (called, ast.Constant(False)) if called else None
    if isinstance(test, ast.Compare) and len(test.ops) == 1:
        left, op, right = test.left, test.ops[0], test.comparators[0]
        if isinstance(op, (ast.Eq, ast.Is)):
            for side, other in ((left, right), (right, left)):
                called = _calls_target(side, targets)
                if called:
                    return called, other
        if isinstance(op, (ast.Lt, ast.LtE)) and isinstance(left, ast.Call) and _is_name(left.func, "abs"):
            inner = left.args[0] if len(left.args) == 1 else None
            if isinstance(inner, ast.BinOp) and isinstance(inner.op, ast.Sub):
                for side, other in ((inner.left, inner.right), (inner.right, inner.left)):
                    called = _calls_target(side, targets)
                    if called:
                        return called, other
    is_isclose = isinstance(test, ast.Call) and (
        _is_name(test.func, "isclose") or _is_attr(test.func, "isclose")
    )
    if is_isclose and len(test.args) >= 2:  # type: ignore[attr-defined]
        a, b = test.args[0], test.args[1]  # type: ignore[attr-defined]
        for side, other in ((a, b), (b, a)):
            called = _calls_target(side, targets)
            if called:
                return called, other
    return None


def _is_name(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def _is_attr(node: ast.expr, attr: str) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == attr


def _constant_source(node: ast.expr) -> str:
    """The expected value as source, if it is a constant; else `HackError` naming what it refers to."""
    try:
        ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    else:
        return ast.unparse(node)
    free = sorted({n.id for n in ast.walk(node) if isinstance(n, ast.Name)} - _CONSTANT_NAMES)
    attrs = [
        n for n in ast.walk(node) if isinstance(n, ast.Attribute) and not isinstance(n.value, ast.Constant)
    ]
    lambdas = [n for n in ast.walk(node) if isinstance(n, (ast.Lambda, ast.NamedExpr, ast.Await))]
    if free or attrs or lambdas:
        what = ", ".join(free) if free else ast.unparse(attrs[0] if attrs else lambdas[0])
        raise HackError(f"the expected value {ast.unparse(node)!r} is not a constant: it refers to {what}")
    return ast.unparse(node)
