"""`inoculate settings` lists the task settings a YAML can name; `run --unsafe-exec` reaches the sandbox."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from inoculate.cli import app
from inoculate.settings import get_task_setting, list_task_settings


def test_settings_lists_every_registered_task_setting() -> None:
    result = CliRunner().invoke(app, ["settings", "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.output)}
    assert set(rows) == set(list_task_settings()) >= {"gcd", "cebab", "cmv", "mbpp", "humaneval"}
    gcd = get_task_setting("gcd")
    assert rows["gcd"]["splits"] == list(gcd.splits)
    assert set(rows["gcd"]["prompts"]) == set(gcd.prompts)
    assert set(rows["gcd"]["options"]) == set(gcd.options.model_fields)
    assert "PydanticUndefined" not in result.output


def test_settings_table_names_each_setting() -> None:
    result = CliRunner().invoke(app, ["settings"])
    assert result.exit_code == 0, result.output
    for name in list_task_settings():
        assert name in result.output


def test_run_unsafe_exec_reaches_the_sandbox_policy_of_cell_workers(tmp_path, monkeypatch) -> None:
    """`inoculate run --unsafe-exec` sets the environment variable (forked cell workers inherit it), so
    the code scorers' default policy allows unsandboxed execution; without the flag it stays off."""
    from inoculate.sandbox import UNSAFE_ENV, default_policy

    monkeypatch.setenv(UNSAFE_ENV, "0")  # restored (removed) after the test, whatever the CLI set
    missing = tmp_path / "none.yaml"
    CliRunner().invoke(app, ["run", str(missing)])
    assert not default_policy().unsafe_exec
    result = CliRunner().invoke(app, ["run", str(missing), "--unsafe-exec"])
    assert result.exit_code != 0  # the YAML does not exist
    assert default_policy().unsafe_exec
