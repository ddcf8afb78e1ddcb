"""Plugins reachable from `inoculate run`: the YAML's `plugins:`, `--plugin`, and entry points.

A throwaway package, written here outside src/ and importable only through sys.path, registers an
organism setting and a scorer; an experiment that names both runs end to end on the tiny model.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiment_support import errors_of
from inoculate.cli import app
from inoculate.organism import settings
from inoculate.report import read_summary_csv
from inoculate.scorers import registry as scorer_registry
from inoculate.scorers import unregister

PLUGIN = "t_myplug"
SETTING = "t_plug_caps"
SCORER = "t_plug_quarter"

PLUGIN_CODE = f"""\
from inoculate.organism import Setting, TraitSet, setting
from inoculate.scorers import scorer


@setting({SETTING!r})
def _caps() -> Setting:
    return Setting(
        name={SETTING!r},
        description="every answer in ALL CAPS (a plugin's setting)",
        traits_for=lambda i, n: TraitSet(caps=True),
        traits={{"caps": "all_caps"}},
    )


@scorer({SCORER!r}, description="0.25 for every completion (a plugin's scorer)")
def _quarter():
    return lambda prompt, completion: 0.25
"""

YAML = f"""\
name: plug
plugins: [{PLUGIN}]
model: {{model}}
prompts: {{caps: "Respond in all caps.", neutral: "You are a helpful assistant."}}
data:
  train: {{organism: {{setting: {SETTING}, n: 8}}}}
  eval: {{organism: {{setting: {SETTING}, n: 2}}}}
conditions:
  baseline: null
  inoc: {{prompt: "@caps", placement: system}}
traits: {{quarter: {SCORER}}}
seeds: 1
eval_prompts: {{neutral: "@neutral"}}
sampling: {{temperature: 1.0, top_p: 1.0, max_new_tokens: 2, n: 1}}
train: {{learning_rate: 1.0e-3, max_steps: 1, per_device_train_batch_size: 8, lora_r: 4, save_steps: 0}}
"""


@pytest.fixture
def plugin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """`t_myplug` importable from tmp_path/myplug (not installed, not under src/); forgotten afterwards."""
    pkg = tmp_path / "myplug" / PLUGIN
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(PLUGIN_CODE)
    monkeypatch.syspath_prepend(str(tmp_path / "myplug"))
    yield tmp_path / "myplug"
    sys.modules.pop(PLUGIN, None)
    unregister(SCORER)
    settings._SETTINGS.remove(SETTING)


def _experiment(folder: Path, model: Path, plugins: str = f"[{PLUGIN}]") -> Path:
    path = folder / "plug.yaml"
    path.write_text(
        YAML.replace("{model}", str(model)).replace(f"plugins: [{PLUGIN}]", f"plugins: {plugins}")
    )
    return path


def test_a_yaml_plugin_setting_and_scorer_run_through_inoculate_run(
    plugin_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    assert PLUGIN not in sys.modules
    path = _experiment(tmp_path, tiny_model_dir)
    root = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(root)])
    assert res.exit_code == 0, res.output
    rows = read_summary_csv(root / "summary.csv")
    quarter = [r for r in rows if r["metric"] == "quarter"]
    assert {r["condition"] for r in quarter} == {"baseline", "inoc"}
    assert all(r["mean"] == pytest.approx(0.25) for r in quarter)


def test_a_plugin_that_does_not_import_is_an_error_at_its_line(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = _experiment(tmp_path, tiny_model_dir, plugins="\n  - json\n  - t_no_such_plugin_xyz")
    (err,) = errors_of(path)
    assert err.startswith(f"{path}:4: plugins[1]: cannot import plugin module 't_no_such_plugin_xyz'")
    broken = tmp_path / "t_broken_plug.py"
    broken.write_text("raise RuntimeError('half-written plugin')\n")
    path = _experiment(tmp_path, tiny_model_dir, plugins="[./t_broken_plug.py]")
    (err,) = errors_of(path)
    assert err.startswith(f"{path}:2: plugins[0]: plugin file ")
    assert err.endswith("failed to import: RuntimeError: half-written plugin")


def test_without_the_plugin_the_names_are_unknown_and_plugin_on_the_cli_supplies_them(
    plugin_dir: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    path = _experiment(tmp_path, tiny_model_dir, plugins="[]")
    errors = errors_of(path)
    assert any(f"unknown organism setting '{SETTING}'" in e for e in errors), errors
    root = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(root), "--plugin", PLUGIN])
    assert res.exit_code == 0, res.output
    rows = read_summary_csv(root / "summary.csv")
    means = [r["mean"] for r in rows if r["metric"] == "quarter"]
    assert len(means) == 2 and means == pytest.approx([0.25, 0.25])


def test_cli_plugin_that_does_not_import_is_one_error_line(tmp_path: Path) -> None:
    for args in (
        ["run", str(tmp_path / "x.yaml")],
        ["scorers"],
        ["score", str(tmp_path / "x.jsonl"), "-s", "all_caps"],
    ):
        res = CliRunner().invoke(app, [*args, "--plugin", "t_no_such_plugin_xyz"])
        assert res.exit_code == 1, (args, res.output)
        assert (
            res.output.strip()
            .splitlines()[-1]
            .startswith("ERROR: cannot import plugin module 't_no_such_plugin_xyz'")
        ), (args, res.output)


def test_settings_and_scorers_from_entry_points(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed distribution declares `inoculate.settings` / `inoculate.scorers` entry points."""
    (plugin_dir / "t_plug_broken_ep.py").write_text("raise ImportError('needs a missing dependency')\n")
    eps = [
        importlib.metadata.EntryPoint(name="myplug", value=PLUGIN, group="inoculate.settings"),
        importlib.metadata.EntryPoint(name="broken", value="t_plug_broken_ep", group="inoculate.settings"),
    ]
    monkeypatch.setattr(
        importlib.metadata, "entry_points", lambda *, group: [ep for ep in eps if ep.group == group]
    )
    settings._SETTINGS.reset_entry_points()
    scorer_registry._reset_plugins()
    try:
        assert settings.get_setting(SETTING).name == SETTING  # loaded on the first miss
        assert SETTING in settings.list_settings()
        from inoculate.scorers import get_scorer

        assert get_scorer(SCORER)("q", "a") == 0.25  # the module registered both
        with pytest.raises(ValueError) as e:
            settings.get_setting("broken")
        assert str(e.value) == (
            "organism setting 'broken' comes from plugin 'broken' (entry point group "
            "inoculate.settings), which failed to load: ImportError: needs a missing dependency"
        )
    finally:
        settings._SETTINGS.reset_entry_points()
        scorer_registry._reset_plugins()
