"""The typer app, the global --debug flag, and the one error format every command uses."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from inoculate.errors import InputErrors

app = typer.Typer(
    name="inoculate",
    help="Inoculation prompting: learn what the data teaches except a named side effect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

_state = {"debug": False}

F = TypeVar("F", bound=Callable[..., Any])


@app.callback()
def _main(debug: bool = typer.Option(False, "--debug", help="Show tracebacks on errors.")) -> None:
    _state["debug"] = debug


class UserError(Exception):
    """A problem the user can fix, reported as one `ERROR:` line without a traceback."""


def handle_errors(fn: F) -> F:
    """Turn known errors into `ERROR: FILE:LINE: FIELD: message` lines and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except InputErrors as e:
            if _state["debug"]:
                raise
            for err in e.errors:
                print(f"ERROR: {err}", file=sys.stderr)
            raise typer.Exit(1) from None
        except (UserError, FileNotFoundError, ValueError) as e:
            if _state["debug"]:
                raise
            print(f"ERROR: {e}", file=sys.stderr)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]
