"""CLI commands (filled by its module owner)."""

from inoculate.cli._app import app  # noqa: F401
