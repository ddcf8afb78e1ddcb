"""The typer app, the global --debug flag, and the one error format every command uses."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
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


PLUGIN_HELP = (
    "Import a module (dotted name) or .py file that registers scorers, organism settings or "
    "generation backends; repeatable."
)


def plugin_option() -> Any:
    """The `--plugin MOD` option of every command that looks a scorer, setting or backend up by name;
    the command imports them with `inoculate.registry.load_plugins` (a module that does not import
    is one `ERROR:` line naming it and why)."""
    return typer.Option([], "--plugin", help=PLUGIN_HELP)


class UserError(Exception):
    """A problem the user can fix, reported as one `ERROR:` line without a traceback."""


def handle_errors(fn: F) -> F:
    """The one error path of every command: a user-caused failure is `ERROR: ...` lines and exit 1.

    - `InputErrors`: `ERROR: FILE:LINE: FIELD: message`, at most 20 lines per kind of problem,
      then each hint the errors carry.
    - `OSError`: `ERROR: PATH: <strerror>` (no space left, is a directory, read-only file system,
      permission denied, ...).
    - `RecursionError`: the input is nested too deeply; `MemoryError`: out of memory.
    - `UserError`, `ValueError`, `UnicodeDecodeError`: `ERROR: message`.
    - Anything else is a bug: `ERROR: internal error: ...`, exit 2, and a pointer to `--debug`.

    `--debug` re-raises instead, showing the traceback. A test checks every command is wrapped.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, click.exceptions.ClickException, KeyboardInterrupt):
            raise
        except Exception as e:  # the one place errors become messages
            if _state["debug"]:
                raise
            lines, code = describe_error(e)
            for line in lines:
                print(line, file=sys.stderr)
            raise typer.Exit(code) from None

    wrapper._handles_errors = True  # type: ignore[attr-defined]
    return wrapper  # type: ignore[return-value]


def describe_error(e: BaseException) -> tuple[list[str], int]:
    """The lines `handle_errors` prints for `e`, and the exit status (1 user error, 2 internal)."""
    if isinstance(e, InputErrors):
        return e.render(limit=ERRORS_PER_KIND), 1
    if isinstance(e, RecursionError):
        return ["ERROR: input nested too deeply (a JSON or YAML value inside thousands of levels)"], 1
    if isinstance(e, MemoryError):
        return ["ERROR: out of memory while running this command; try a smaller input or batch"], 1
    if isinstance(e, UnicodeDecodeError):  # readers that know the file raise InputErrors instead
        return [f"ERROR: not UTF-8 text: byte {e.object[e.start : e.start + 1]!r}: {e.reason}"], 1
    if isinstance(e, OSError):
        return [f"ERROR: {os_error_text(e)}"], 1
    if isinstance(e, UserError | ValueError):
        return [f"ERROR: {e}"], 1
    return [f"ERROR: internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)"], 2


ERRORS_PER_KIND = 20


def os_error_text(e: OSError) -> str:
    """`PATH: strerror` (or `PATH -> PATH2: strerror`), as the system words it, without `[Errno N]`."""
    reason = e.strerror or (os.strerror(e.errno) if e.errno else str(e))
    if e.filename is None:
        return reason
    where = os.fsdecode(e.filename) if isinstance(e.filename, bytes | str) else str(e.filename)
    if e.filename2 is not None:
        where += f" -> {os.fsdecode(e.filename2)}"
    return f"{where}: {reason}"
