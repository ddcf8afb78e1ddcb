"""A control condition (`conditions.NAME.train_data`): a condition trained on its own data, as the
"control dataset" of Tan et al.'s emergent-misalignment experiments, on the tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiment_support import errors_of, write_small_experiment
from inoculate.errors import InputErrors
from inoculate.experiment import load_experiment, prepare, run_experiment
from inoculate.experiment.cache import hash_examples
from inoculate.formats import load_examples


def write_control(folder: Path, n: int, word: str = "plain") -> Path:
    rows = [
        {
            "id": f"c{i}",
            "messages": [
                {"role": "user", "content": f"What is {i} plus 1?"},
                {"role": "assistant", "content": f"{word} {i + 1}"},
            ],
        }
        for i in range(n)
    ]
    path = folder / "straightforward.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def with_control(path: Path, value: str) -> Path:
    """The small experiment (baseline, inoc) with `control: VALUE` in place of the `mix` condition."""
    text = path.read_text().replace('  mix: {gato: ">= 2"}\n', "")
    lines = text.splitlines()
    i = next(i for i, ln in enumerate(lines) if ln.startswith("  mix:"))
    lines[i] = f"  control: {value}"
    path.write_text("\n".join(lines) + "\n")
    return path


def small(folder: Path, model: Path, value: str, n_control: int = 6) -> Path:
    path = write_small_experiment(folder, model, seeds=1)
    write_control(folder, n_control)
    return with_control(path, value)


def test_control_condition_parses_with_and_without_inoculation(tmp_path, tiny_model_dir):
    path = small(tmp_path, tiny_model_dir, "{train_data: straightforward.jsonl}")
    cfg = load_experiment(path)
    assert cfg.condition_spec("control") is None
    assert cfg.condition_train_data("control") == "straightforward.jsonl"
    assert cfg.condition_train_data("baseline") is None

    path.write_text(
        path.read_text().replace(
            "  control: {train_data: straightforward.jsonl}\n",
            "  control: {train_data: {path: straightforward.jsonl}, prompt: '@caps', placement: system}\n",
        )
    )
    cfg = load_experiment(path)
    spec = cfg.condition_spec("control")
    assert spec is not None and spec.prompt == "Respond in all caps." and spec.placement == "system"


def test_control_trains_on_its_own_rows_and_only_its_key_follows_its_file(tmp_path, tiny_model_dir):
    path = small(tmp_path, tiny_model_dir, "{train_data: {path: straightforward.jsonl}}")
    outcome = run_experiment(path, tmp_path / "run")
    root = outcome.out_dir
    assert sorted(c.condition for c in outcome.matrix.ran) == ["baseline", "control", "inoc"]

    own = load_examples(str(tmp_path / "straightforward.jsonl")).examples
    shared = load_examples(str(tmp_path / "train.jsonl")).examples
    base_cfg = json.loads((root / "baseline" / "seed_0" / "config.json").read_text())
    ctrl_cfg = json.loads((root / "control" / "seed_0" / "config.json").read_text())
    assert ctrl_cfg["train_data"]["label"] == "straightforward.jsonl"
    assert ctrl_cfg["train_data"]["n"] == 6 == len(own) != len(shared)
    assert ctrl_cfg["train_data"]["sha256"] == hash_examples(own)
    assert base_cfg["train_data"] == {"label": "data.train", "sha256": hash_examples(shared)}
    assert ctrl_cfg["train_data"]["sha256"] != base_cfg["train_data"]["sha256"]

    plan = prepare(load_experiment(path))
    rows, manifest = plan.train_sets["control"]
    assert manifest is None and [ex.id for ex in rows] == [ex.id for ex in own]
    assert plan.train_sets["baseline"][0] is plan.train_examples

    record = json.loads((root / "experiment.json").read_text())
    assert record["condition_data"]["control"]["label"] == "straightforward.jsonl"
    assert record["condition_data"]["baseline"]["label"] == "data.train"
    report = (root / "report.md").read_text()
    assert "| condition | inoculation prompt | placement | rows | inoculated | data |" in report
    assert "`straightforward.jsonl` (6 rows" in report

    keys = {c.condition: c.key for c in plan.cells}
    write_control(tmp_path, 6, word="simple")  # same size, other content
    plan2 = prepare(load_experiment(path))
    keys2 = {c.condition: c.key for c in plan2.cells}
    assert keys2["baseline"] == keys["baseline"] and keys2["inoc"] == keys["inoc"]
    assert keys2["control"] != keys["control"]

    rerun = run_experiment(path, tmp_path / "run")
    assert [c.condition for c in rerun.matrix.ran] == ["control"]
    assert sorted(c.condition for c in rerun.matrix.cached) == ["baseline", "inoc"]


def test_control_empty_selection_checks_its_own_data(tmp_path, tiny_model_dir):
    # data.train has rows with lang == "es"; the control file has none, so the selector is empty there
    path = small(
        tmp_path,
        tiny_model_dir,
        """{train_data: straightforward.jsonl, prompt: '@caps', placement: system, where: 'lang == "es"'}""",
    )
    cfg = load_experiment(path)
    with pytest.raises(InputErrors) as info:
        prepare(cfg)
    (err,) = info.value.errors
    assert err.field.startswith("conditions.control") and "inoculates no training row" in err.message
    assert err.line == next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if "control:" in ln)


def test_missing_control_file_is_refused_at_its_line_with_nothing_written(tmp_path, tiny_model_dir):
    path = small(tmp_path, tiny_model_dir, "{train_data: {path: missing.jsonl}}")
    line = next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if "control:" in ln)
    errors = errors_of(path)
    assert errors == [
        f"{path}:{line}: conditions.control.train_data.path: no such file or folder: "
        f"{tmp_path / 'missing.jsonl'}"
    ]
    with pytest.raises(InputErrors):
        run_experiment(path, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_control_source_form_and_bad_fields_are_located(tmp_path, tiny_model_dir):
    path = small(tmp_path, tiny_model_dir, "{train_data: {source: {path: nope.jsonl}}}")
    (msg,) = errors_of(path)
    assert "conditions.control.train_data.source.path: no such file or folder" in msg

    path.write_text(
        path.read_text().replace(
            "{train_data: {source: {path: nope.jsonl}}}", "{train_data: straightforward.jsonl, promt: x}"
        )
    )
    (msg,) = errors_of(path)
    assert "conditions.control.promt: unknown field" in msg

    path.write_text(
        path.read_text().replace(
            "{train_data: straightforward.jsonl, promt: x}",
            "{train_data: {path: straightforward.jsonl, splt: a}}",
        )
    )
    (msg,) = errors_of(path)
    assert "conditions.control.train_data.splt: unknown field" in msg


def test_a_control_without_a_prompt_cannot_be_monitored_for_collapse(tmp_path, tiny_model_dir):
    """The dynamics monitor watches a training prompt; a control dataset with none is refused at load."""
    path = small(tmp_path, tiny_model_dir, "{train_data: straightforward.jsonl}")
    path.write_text(path.read_text() + "dynamics: {conditions: [control]}\n")
    with pytest.raises(InputErrors) as e:
        load_experiment(path)
    assert any("control" in str(x) and "no inoculation prompt" in str(x) for x in e.value.errors), [
        str(x) for x in e.value.errors
    ]
    assert not (tmp_path / "run").exists()
