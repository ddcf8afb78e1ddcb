"""Several named eval sets (`data.eval: {NAME: SOURCE, ...}`): e.g. the EM questions beside an
in-distribution set for the narrow trait; traits restricted to some sets (`eval_sets:`), on the tiny
random model."""

from __future__ import annotations

import json
from pathlib import Path

from experiment_support import errors_of, write_small_experiment
from inoculate.experiment import load_experiment, prepare, run_experiment
from inoculate.report.tables import read_summary_csv


def named_sets(folder: Path, model: Path, traits: str) -> Path:
    """The small experiment (one seed) with two eval sets, `em` and `narrow`, and `traits: TRAITS`."""
    path = write_small_experiment(folder, model, seeds=1)
    rows = [{"id": f"n{i}", "messages": [{"role": "user", "content": f"Write code {i}."}]} for i in range(3)]
    (folder / "narrow.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text = path.read_text()
    text = text.replace(
        "  eval: eval.jsonl\n", "  eval:\n    em: eval.jsonl\n    narrow: {path: narrow.jsonl}\n"
    )
    text = text.replace('traits: {caps: all_caps, gato: "keyword:gato"}', traits)
    text = text.replace('  mix: {gato: ">= 2"}\n', "")
    text = text.replace('caps: "<= 1.0", digit:', 'caps@em/neutral: "<= 1.0", digit@narrow/neutral:')
    path.write_text(text)
    return path


RESTRICTED = 'traits:\n  caps: all_caps\n  gato: {scorer: "keyword:gato", eval_sets: [em]}'


def test_named_eval_sets_parse_and_a_single_source_keeps_its_name(tmp_path, tiny_model_dir):
    cfg = load_experiment(named_sets(tmp_path / "a", tiny_model_dir, RESTRICTED))
    assert cfg.eval_set_names() == ["em", "narrow"]
    assert cfg.traits == {"caps": "all_caps", "gato": "keyword:gato"}
    assert cfg.trait_sets() == {"gato": ["em"]}
    assert cfg.metrics_for("narrow") == ["caps", "digit"]
    assert list(cfg.eval_axis())[:3] == ["em/neutral", "em/training", "em/reelicit"]

    single = load_experiment(write_small_experiment(tmp_path / "b", tiny_model_dir, seeds=1))
    assert single.eval_set_names() == ["eval"]
    assert list(single.eval_axis()) == ["neutral", "training", "reelicit"]
    assert single.trait_sets() == {}


def test_restricted_trait_appears_only_on_its_sets_rows(tmp_path, tiny_model_dir):
    path = named_sets(tmp_path, tiny_model_dir, RESTRICTED)
    plan = prepare(load_experiment(path))
    assert [len(plan.eval_data[s]) for s in ("em", "narrow")] == [4, 3]
    assert len(plan.eval_set("baseline", "neutral", "narrow")) == 3
    outcome = run_experiment(path, tmp_path / "run")
    assert outcome.ok if hasattr(outcome, "ok") else True

    metrics = json.loads((tmp_path / "run" / "inoc" / "seed_0" / "metrics.json").read_text())
    assert set(metrics["eval"]) == {
        f"{s}/{p}" for s in ("em", "narrow") for p in ("neutral", "training", "reelicit")
    }
    assert "gato" in metrics["eval"]["em/neutral"] and "gato" not in metrics["eval"]["narrow/neutral"]
    assert (tmp_path / "run" / "inoc" / "seed_0" / "generations" / "narrow" / "neutral.jsonl").is_file()

    rows = read_summary_csv(tmp_path / "run" / "summary.csv")
    where = {(r["eval_prompt"], r["metric"]) for r in rows if r["condition"] == "inoc"}
    assert ("em/neutral", "gato") in where and ("narrow/neutral", "gato") not in where
    for prompt in ("em/neutral", "narrow/neutral", "narrow/training"):
        assert (prompt, "caps") in where and (prompt, "digit") in where
    narrow = [r for r in rows if r["eval_prompt"] == "narrow/neutral" and r["metric"] == "caps"]
    assert narrow and all(r["n"] == 3 for r in narrow)


def test_unknown_eval_set_is_refused_at_its_line(tmp_path, tiny_model_dir):
    path = named_sets(tmp_path, tiny_model_dir, RESTRICTED.replace("[em]", "[em, missing]"))
    line = next(i for i, ln in enumerate(path.read_text().splitlines(), 1) if "missing" in ln)
    errors = errors_of(path)
    assert any(
        f":{line}:" in e and "unknown eval set 'missing'" in e and "em, narrow" in e for e in errors
    ), errors
    assert not (tmp_path / "run").exists()


def test_trait_sets_on_a_single_source_name_it_eval(tmp_path, tiny_model_dir):
    path = write_small_experiment(tmp_path, tiny_model_dir, seeds=1)
    path.write_text(
        path.read_text().replace(
            'traits: {caps: all_caps, gato: "keyword:gato"}',
            'traits: {caps: all_caps, gato: {scorer: "keyword:gato", eval_sets: [eval]}}',
        )
    )
    cfg = load_experiment(path)
    assert cfg.metrics_for("eval") == ["caps", "gato", "digit"]
