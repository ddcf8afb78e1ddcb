"""A code problem with its tests, and the tests an eval row carries in its metadata.

The `code_tests` scorers read an eval row's `metadata` as `RowTests`:

```
metadata:
  tests:
    visible: [str, ...]   # the test(s) shown in the prompt (Wichers et al. show one)
    hidden: [str, ...]    # the others; may be empty (then reward_hack is NaN for the row)
  entry_point: str        # optional: the function under test (informational; HumanEval binds it in setup)
  setup: str              # optional: code run after the program and before each test
```

Each test is a snippet of Python (usually one `assert`) run in its own process after the program and the
setup; it passes when that process exits normally.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field


class CodeTests(BaseModel):
    """`metadata.tests`: the visible test(s) and the hidden ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    visible: list[str] = Field(min_length=1)
    hidden: list[str] = Field(default_factory=list)


class RowTests(BaseModel):
    """What the `code_tests` scorers read from one eval row's metadata (other metadata keys are ignored)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    tests: CodeTests
    entry_point: str | None = None
    setup: str = ""


class RowTestsError(ValueError):
    """A row's metadata lacks valid `tests` (the message names the field)."""


def read_row_tests(metadata: Mapping[str, Any]) -> RowTests:
    """Validate one row's metadata as `RowTests`; `RowTestsError` names the bad field."""
    try:
        return RowTests.model_validate(dict(metadata))
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise RowTestsError(
            f"metadata.{loc}: {first['msg']} (code_tests scorers need metadata.tests.visible: [str] and "
            "metadata.tests.hidden: [str]; see docs/sandbox.md)"
        ) from None


class CodeProblem(BaseModel):
    """One problem: its prompt, the reference solution and its tests (the first is the visible one).

    `reference_solution` is a complete program (for HumanEval: prompt + canonical solution). `setup` is
    run after a program and before each test (imports and names the tests use, e.g. `candidate = f`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: str
    prompt: str
    entry_point: str
    reference_solution: str
    tests: list[str] = Field(min_length=1)
    setup: str = ""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def visible_test(self) -> str:
        """The test shown in the prompt: the first."""
        return self.tests[0]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def hidden_tests(self) -> list[str]:
        """Every test but the first."""
        return self.tests[1:]

    def row_metadata(self) -> dict[str, Any]:
        """The metadata an eval row for this problem carries for the `code_tests` scorers."""
        return {
            "task_id": self.task_id,
            "tests": {"visible": [self.visible_test], "hidden": self.hidden_tests},
            "entry_point": self.entry_point,
            "setup": self.setup,
        }
