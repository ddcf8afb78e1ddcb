"""The `inoculate` command line: a thin shell over the Python API.

Each subcommand lives in its own module and registers itself on `app`.
"""

from __future__ import annotations

# Importing registers the subcommands.
from inoculate.cli import (  # noqa: F401
    data_cmds,
    engine_cmds,
    experiment_cmds,
    organism_cmds,
    score_cmds,
    screen_cmds,
)
from inoculate.cli._app import app

__all__ = ["app"]
