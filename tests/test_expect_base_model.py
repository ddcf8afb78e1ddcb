"""`expect:` rules relative to the untrained base model (`base_model`): its mean under the same eval
prompt, read from the run's `base/` elicitation; refused where it cannot mean anything."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from experiment_support import errors_of, write_small_experiment
from inoculate.cli import app
from inoculate.report import read_summary_csv


def _with_expect(path, old: str, new: str):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


def test_base_model_reference_reads_the_base_elicitation(tiny_model_dir, tmp_path):
    path = write_small_experiment(tmp_path / "exp", tiny_model_dir, seeds=1)
    _with_expect(
        path,
        '  mix: {gato: ">= 2"}\n',
        '  mix: {gato: ">= 2"}\n'
        '  baseline: {caps: "within 1.0 of base_model", caps@reelicit: "<= base_model - 2"}\n',
    )
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output
    base = json.loads((out / "base" / "metrics.json").read_text())
    base_caps = {r["prompt"]: r["metrics"]["caps"]["mean"] for r in base["rows"]}
    summary = {
        (r["condition"], r["eval_prompt"], r["metric"]): r for r in read_summary_csv(out / "summary.csv")
    }
    report = (out / "report.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| baseline | caps |")]
    assert len(rows) == 2, rows
    within, below = sorted(rows, key=lambda line: "reelicit" in line)
    # a mean and the base model's mean on [0, 1] are always within 1.0: PASS, against the base's own number
    assert f"{base_caps['neutral']:.2f} (base_model mean)" in within and "**PASS**" in within
    # no rate is 2 below the base model's: FAIL, with the base model's reelicit mean as the reference
    assert f"{base_caps['reelicit'] - 2:.2f}" in below and "**FAIL**" in below
    assert summary[("baseline", "neutral", "caps")]["n_seeds"] == 1


def test_base_model_reference_is_refused_where_it_cannot_mean_anything(tiny_model_dir, tmp_path):
    path = write_small_experiment(tmp_path / "exp", tiny_model_dir, seeds=1)
    _with_expect(path, '  mix: {gato: ">= 2"}\n', '  mix: {gato: "CI above base_model"}\n')
    (err,) = errors_of(path)
    assert "the base model has no CI over seeds" in err and "expect.mix.gato" in err.replace(": ", ".")

    path = write_small_experiment(tmp_path / "exp2", tiny_model_dir, seeds=1)
    _with_expect(path, "  baseline: null\n", "  base_model: null\n")
    _with_expect(path, '  mix: {gato: ">= 2"}\n', '  mix: {gato: ">= base_model"}\n')
    errors = errors_of(path)
    assert any("names the base model in expect: rules" in e for e in errors), errors

    path = write_small_experiment(tmp_path / "exp3", tiny_model_dir, seeds=1)
    _with_expect(path, '  mix: {gato: ">= 2"}\n', '  mix: {gato: ">= nobody"}\n')
    (err,) = errors_of(path)
    assert "unknown reference condition 'nobody' (or 'base_model')" in err
