"""`python -m inoculate`: the CLI, also as `accelerate launch -m inoculate train ...`."""

from inoculate.cli import app

app(prog_name="inoculate")
