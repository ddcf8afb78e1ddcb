"""Input errors that name the file, line and field, as users need to fix them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class InputError:
    """One problem in one place of an input file. `line` is 1-based; 0 means the whole file."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class InputErrors(Exception):
    """Raised with every problem found in an input, so a user fixes them all in one pass."""

    def __init__(self, errors: list[InputError]):
        self.errors = list(errors)
        super().__init__("\n".join(f"ERROR: {e}" for e in self.errors))

    @classmethod
    def one(cls, file: str, line: int, field: str, message: str) -> InputErrors:
        return cls([InputError(str(file), line, field, message)])
