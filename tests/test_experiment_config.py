"""The experiment YAML schema: valid files load; every bad one names FILE:LINE: FIELD."""

from __future__ import annotations

import json
import math
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from experiment_support import errors_of
from inoculate.experiment import load_experiment
from inoculate.report.expect import check, parse_rule

VALID = """\
name: small
model: some/model
prompts:
  caps: "Respond in all caps."
  neutral: ""
data:
  train: train.jsonl
  eval: eval.jsonl
conditions:
  baseline: null
  inoc: {prompt: "@caps", placement: system}
  pool:
    prompts: ["@caps", "Write in capital letters."]
    placement: system-prepend
    where: 'lang == "es"'
traits: {caps: all_caps}
capability: {digit: "regex:\\\\d"}
seeds: 2
eval_prompts:
  neutral: "@neutral"
  training: "@condition"
  literal: "Shout please."
sampling: {temperature: 0.0, top_p: 1.0, max_new_tokens: 8, n: 1}
train: {learning_rate: 1.0e-3, max_steps: 3, lora_r: 4}
expect:
  inoc: {caps: "<= 0.10", "digit@literal": ">= baseline - 0.10"}
"""


def write(tmp_path: Path, text: str) -> Path:
    for name in ("train.jsonl", "eval.jsonl"):
        msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A"}]
        row = {"id": "a", "messages": msgs}
        (tmp_path / name).write_text(json.dumps(row) + "\n")
    p = tmp_path / "exp.yaml"
    p.write_text(textwrap.dedent(text))
    return p


def edit(old: str, new: str) -> str:
    assert old in VALID, old
    return VALID.replace(old, new)


def test_valid_config_loads_and_resolves(tmp_path):
    cfg = load_experiment(write(tmp_path, VALID))
    assert list(cfg.conditions) == ["baseline", "inoc", "pool"]
    assert cfg.seed_list() == [0, 1]
    assert cfg.seed_list(3) == [0, 1, 2]
    assert cfg.metrics() == {"caps": ("trait", "all_caps"), "digit": ("capability", "regex:\\d")}
    assert cfg.resolve_text("@caps") == "Respond in all caps."
    assert cfg.resolve_text("@neutral") is None  # an empty prompt means no system prompt
    assert cfg.resolve_text(None) is None
    assert cfg.condition_spec_data("pool")["prompts"] == ["Respond in all caps.", "Write in capital letters."]
    assert cfg.condition_spec_data("baseline") is None
    assert cfg.data_path("train.jsonl") == tmp_path / "train.jsonl"
    assert cfg.generation.backend == "hf"


def test_seed_list_form(tmp_path):
    cfg = load_experiment(write(tmp_path, edit("seeds: 2", "seeds: [3, 7]")))
    assert cfg.seed_list() == [3, 7]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("name: small", "name: small\ncolour: red", "exp.yaml:2: colour: unknown field"),
        ("name: small", "name: 'bad name'", "exp.yaml:1: name: "),
        ("seeds: 2", "seeds: 0", "exp.yaml:18: seeds: "),
        ("seeds: 2", "seeds: [1, 1]", "exp.yaml:18: seeds: "),
        ("n: 1}", "}", "exp.yaml:23: sampling.n: Field required"),
        ("top_p: 1.0", "top_p: 2.0", "exp.yaml:23: sampling.top_p: "),
        ("model: some/model", "model: 3", "exp.yaml:2: model: expected a hub id or path"),
        (
            "model: some/model",
            "model: {organism: {preset: demo, size: 3}}",
            "exp.yaml:2: model.organism.size",
        ),
        ("  train: train.jsonl", "  train: missing.jsonl", "exp.yaml:7: data.train: no such file or folder"),
        ("placement: system}", "placement: sideways}", "exp.yaml:11: conditions.inoc.placement: "),
        (
            "placement: system}",
            "placement: system, colour: red}",
            "exp.yaml:11: conditions.inoc.colour: unknown",
        ),
        (
            'prompt: "@caps"',
            'prompt: "@nope"',
            "exp.yaml:11: conditions.inoc.prompt: unknown prompt reference",
        ),
        ("    where: 'lang == \"es\"'", "    where: 'lang =='", "exp.yaml:15: conditions.pool.where: "),
        ("traits: {caps: all_caps}", "traits: {caps: nosuch}", "exp.yaml:16: traits.caps: unknown scorer"),
        ("traits: {caps: all_caps}", "traits: {}", "exp.yaml:16: traits: "),
        (
            'capability: {digit: "regex:\\\\d"}',
            "capability: {caps: all_caps}",
            "exp.yaml:17: capability.caps: ",
        ),
        ('literal: "Shout please."', 'literal: "@gone"', "exp.yaml:22: eval_prompts.literal: unknown prompt"),
        ("lora_r: 4}", "lora_r: four}", "exp.yaml:24: train.lora_r: "),
        ("lora_r: 4}", "lora_r: 4, seed: 1}", "exp.yaml:24: train.seed: set by the runner"),
        ("lora_r: 4}", "lora_r: 4, colour: 1}", "exp.yaml:24: train.colour: unknown field"),
        ('caps: "<= 0.10"', 'caps: "about 0.1"', "exp.yaml:26: expect.inoc.caps: cannot parse rule"),
        ('caps: "<= 0.10"', 'nosuch: "<= 0.10"', "exp.yaml:26: expect.inoc.nosuch: unknown metric"),
        ('"digit@literal"', '"digit@nowhere"', "exp.yaml:26: expect.inoc.digit@nowhere: unknown eval prompt"),
        ("baseline - 0.10", "ghost - 0.10", "exp.yaml:26: expect.inoc.digit@literal: unknown reference"),
        ("expect:\n  inoc:", "expect:\n  ghost:", "exp.yaml:26: expect.ghost: unknown condition"),
        ("expect:", "screen: {candidates: [a], pick: maybe}\nexpect:", "exp.yaml:25: screen.pick: "),
    ],
)
def test_bad_configs_name_file_line_and_field(tmp_path, old, new, expected):
    errors = errors_of(write(tmp_path, edit(old, new)))
    assert any(expected in e for e in errors), errors
    assert all(e.startswith(str(tmp_path / "exp.yaml") + ":") for e in errors)


def test_every_problem_is_reported_at_once(tmp_path):
    text = edit("traits: {caps: all_caps}", "traits: {caps: nosuch}")
    text = text.replace('prompt: "@caps"', 'prompt: "@nope"')
    errors = errors_of(write(tmp_path, text))
    assert any("traits.caps" in e for e in errors) and any("conditions.inoc.prompt" in e for e in errors)


def test_yaml_syntax_error_names_its_line(tmp_path):
    errors = errors_of(write(tmp_path, VALID.replace("seeds: 2", "seeds: [2")))
    assert errors[0].startswith(f"{tmp_path / 'exp.yaml'}:")
    assert ": <yaml>: invalid YAML" in errors[0]


def test_missing_file(tmp_path):
    assert errors_of(tmp_path / "none.yaml") == [f"{tmp_path / 'none.yaml'}:0: <file>: no such file"]


def test_cli_run_reports_errors_and_writes_nothing(tmp_path):
    from inoculate.cli import app

    path = write(tmp_path, edit("traits: {caps: all_caps}", "traits: {caps: nosuch}"))
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert res.exit_code == 1
    assert f"ERROR: {path}:16: traits.caps: unknown scorer" in res.output
    assert "Traceback" not in res.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("rule", "observed", "reference", "passed"),
    [
        ("<= 0.10", 0.10, None, True),
        ("<= 0.10", 0.11, None, False),
        (">= 0.9", 0.95, None, True),
        ("< 0.5", 0.5, None, False),
        ("> 0.5", 0.51, None, True),
        (">= baseline - 0.10", 0.85, 0.95, True),
        (">= baseline - 0.10", 0.84, 0.95, False),
        ("<= baseline + 0.05", 0.5, 0.44, False),
        ("within 0.10 of baseline", 0.81, 0.90, True),
        ("within 0.10 of baseline", 0.79, 0.90, False),
        ("<= 0.10", float("nan"), None, None),
        ("within 0.10 of baseline", 0.5, float("nan"), None),
    ],
)
def test_expectation_rules(rule, observed, reference, passed):
    assert check(parse_rule(rule), observed, reference)[1] is passed


@pytest.mark.parametrize(
    ("rule", "observed_ci", "reference_ci", "threshold", "passed"),
    [
        ("CI above abstract", (0.46, 1.00), (0.00, 0.01), 0.01, True),
        ("CI above abstract", (0.00, 0.05), (0.00, 0.01), 0.01, False),  # means 0.02 > 0.00, CIs overlap
        ("ci above abstract", (0.011, 0.2), (0.0, 0.01), 0.01, True),
        ("CI below baseline", (0.00, 0.30), (0.65, 0.76), 0.65, True),
        ("CI below baseline", (0.00, 0.70), (0.65, 0.76), 0.65, False),
        ("CI above abstract", (float("nan"), 0.5), (0.0, 0.01), None, None),
        ("CI above abstract", (0.4, 0.5), None, None, None),
    ],
)
def test_ci_rules_compare_the_intervals_not_the_means(rule, observed_ci, reference_ci, threshold, passed):
    got_threshold, got = check(parse_rule(rule), 0.5, 0.0, observed_ci=observed_ci, reference_ci=reference_ci)
    assert got is passed
    if threshold is not None:
        assert got_threshold == threshold


def test_ci_rule_without_intervals_is_unchecked_not_passed():
    threshold, passed = check(parse_rule("CI above baseline"), 0.9, 0.1)
    assert passed is None and math.isnan(threshold)


def test_rule_description_round_trips():
    for text in (
        "<= 0.1",
        ">= baseline - 0.1",
        "within 0.1 of placebo",
        "> ref + 0.2",
        ">= ref",
        "CI above abstract",
        "CI below baseline",
    ):
        assert parse_rule(parse_rule(text).describe()) == parse_rule(text)
