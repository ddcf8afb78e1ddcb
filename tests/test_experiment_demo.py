"""The shipped experiments (demo, mixture) and the demo's output contract, on the tiny organism preset."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from inoculate.experiment import demo_config, demo_path, load_experiment

ROOT = Path(__file__).resolve().parents[1]
DEMO_CONDITIONS = ["baseline", "inoculate_spanish", "inoculate_caps", "placebo", "heldout_paraphrase"]


def test_packaged_demo_is_examples_demo():
    assert demo_path().read_bytes() == (ROOT / "examples" / "demo.yaml").read_bytes()


def test_demo_declares_the_contract():
    cfg = demo_config()
    assert list(cfg.conditions) == DEMO_CONDITIONS
    assert cfg.conditions["baseline"] is None
    assert {"neutral", "training"} <= set(cfg.eval_prompts)
    assert any(name.startswith("reelicit") for name in cfg.eval_prompts)
    assert {"spanish", "all_caps", "correct"} <= set(cfg.metrics())
    assert cfg.seed_list() == [0, 1, 2]
    assert cfg.organism_setting() == "spanish_caps"


def test_demo_trains_with_the_organisms_tuned_stage2_settings():
    from inoculate import organism

    cfg = demo_config()
    tuned = organism.stage2_settings(cfg.model.organism.preset)
    assert {k: getattr(cfg.train, k) for k in tuned} == tuned


def test_demo_expectations_are_the_issue_targets():
    cfg = demo_config()
    assert cfg.expect["baseline"] == {"spanish": ">= 0.90", "all_caps": ">= 0.90"}
    assert cfg.expect["inoculate_spanish"]["spanish"] == "<= 0.10"
    assert cfg.expect["inoculate_spanish"]["all_caps"] == ">= 0.70"
    assert cfg.expect["inoculate_caps"]["all_caps"] == "<= 0.10"
    assert cfg.expect["inoculate_caps"]["spanish"] == ">= 0.70"
    assert cfg.expect["placebo"]["spanish"] == "within 0.10 of baseline"
    for cond in DEMO_CONDITIONS[1:]:
        assert cfg.expect[cond]["correct"] == ">= baseline - 0.10"


def test_mixture_inoculates_only_the_spanish_half():
    cfg = load_experiment(ROOT / "examples" / "mixture.yaml")
    spec = cfg.condition_spec_data("inoculate_spanish")
    assert spec["where"] == 'lang == "es"'
    assert set(cfg.traits) == {"spanish", "french"}
    assert cfg.expect["inoculate_spanish"] == {"spanish": "<= 0.10", "french": ">= 0.90"}


def test_demo_cli_options():
    from inoculate.cli import app

    res = CliRunner().invoke(app, ["demo", "--help"])
    assert res.exit_code == 0
    assert "--out" in res.output and "--seeds" in res.output


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's YAML on the tiny organism preset (seconds): every condition and prompt, 2 seeds."""
    from inoculate.cli import app

    folder = tmp_path_factory.mktemp("tiny_demo")
    data = yaml.safe_load(demo_path().read_text())
    data["model"] = {"organism": {"preset": "tiny"}}
    data["data"]["train"]["organism"]["n"] = 32
    data["data"]["eval"]["organism"]["n"] = 6
    data["sampling"].update(n=1, max_new_tokens=12)
    data["train"].update(max_steps=2)
    data["seeds"] = 2
    path = folder / "tiny_demo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    mp = pytest.MonkeyPatch()
    mp.setenv("INOCULATE_CACHE", str(folder / "cache"))
    try:
        res = CliRunner().invoke(app, ["run", str(path), "--out", str(folder / "run")])
    finally:
        mp.undo()
    assert res.exit_code == 0, res.output
    assert "report:" in res.output and "inoculate_spanish" in res.output
    return folder / "run"


def test_demo_output_contract(tiny_demo):
    out = tiny_demo
    with open(out / "summary.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"condition", "eval_prompt", "metric", "mean", "ci_low", "ci_high", "n_seeds"} <= set(rows[0])
    assert {r["condition"] for r in rows} == set(DEMO_CONDITIONS)
    assert {"neutral", "training", "reelicit_spanish", "reelicit_caps"} == {r["eval_prompt"] for r in rows}
    assert {"spanish", "all_caps", "correct"} == {r["metric"] for r in rows}
    for r in rows:
        for c in ("mean", "ci_low", "ci_high"):
            v = float(r[c])
            assert v != v or 0.0 <= v <= 1.0  # NaN (nothing scorable) or a rate
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert figures >= {"spanish_neutral.png", "all_caps_neutral.png"}
    assert (out / "report.md").is_file() and (out / "per_seed.csv").is_file()


def test_demo_report_includes_the_organism_elicitation_table(tiny_demo):
    text = (tiny_demo / "report.md").read_text()
    assert "The organism's own elicitation table" in text
    assert "lang_es_heldout" in text  # a held-out paraphrase row
    base = json.loads((tiny_demo / "base" / "metrics.json").read_text())
    assert {r["prompt"] for r in base["rows"]} >= {"neutral", "training (inoculate_spanish)"}
    man = json.loads((tiny_demo / "manifest.json").read_text())
    assert man["eval_prompts"]["training"]["inoculate_spanish"]["seen"] == ["You always answer in Spanish."]
    assert man["eval_prompts"]["neutral"]["seen"] == ["You are a helpful assistant."]


def test_demo_monitors_the_spanish_inoculation(tiny_demo):
    """The demo's `dynamics:` block: curves for inoculate_spanish only, in the report."""
    dynamics = demo_config().dynamics
    assert dynamics is not None
    assert dynamics.model_dump(exclude_unset=True) == {"every": 5, "conditions": ["inoculate_spanish"]}
    assert {p.name for p in (tiny_demo / "figures").glob("dynamics_*.png")} == {
        "dynamics_inoculate_spanish.png"
    }
    assert (tiny_demo / "inoculate_spanish" / "seed_1" / "dynamics.jsonl").is_file()
    assert not (tiny_demo / "baseline" / "seed_0" / "dynamics.jsonl").exists()
    text = (tiny_demo / "report.md").read_text()
    assert "## Learning dynamics" in text and "![figures/dynamics_inoculate_spanish.png]" in text
