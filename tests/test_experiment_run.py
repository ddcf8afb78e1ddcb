"""`inoculate run` end to end on the tiny random model: layout, eval prompts, cache keys, report."""

from __future__ import annotations

import csv
import json
import math
import shutil

import pytest
from typer.testing import CliRunner

import inoculate
from experiment_support import CAPS, NEUTRAL, SPANISH, write_small_experiment
from inoculate.experiment import load_experiment, prepare, run_experiment
from inoculate.experiment.cache import cell_key, hash_examples
from inoculate.formats import read_chat_jsonl
from inoculate.report import SUMMARY_COLUMNS, read_summary_csv
from inoculate.stats import summarize_seeds


@pytest.fixture(scope="module")
def small_run(tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("small")
    path = write_small_experiment(folder, tiny_model_dir)
    outcome = run_experiment(path, folder / "run")
    return path, outcome


def test_layout(small_run):
    _path, outcome = small_run
    root = outcome.out_dir
    assert len(outcome.matrix.ran) == 6 and outcome.matrix.cached == []
    for cond in ("baseline", "inoc", "mix"):
        for seed in (0, 1):
            d = root / cond / f"seed_{seed}"
            for name in ("config.json", "metrics.json", "done", "adapter/adapter_config.json"):
                assert (d / name).is_file(), d / name
            for prompt in ("neutral", "training", "reelicit"):
                assert (d / "generations" / f"{prompt}.jsonl").is_file()
                assert (d / "scores" / f"{prompt}.jsonl").is_file()
            config = json.loads((d / "config.json").read_text())
            assert (
                config["seed"] == seed and config["sampling"]["seed"] == seed and config["condition"] == cond
            )
            assert (d / "train.manifest.json").is_file() == (cond != "baseline")
    for name in ("summary.csv", "per_seed.csv", "report.md", "manifest.json", "experiment.json"):
        assert (root / name).is_file(), name
    figures = sorted(p.name for p in (root / "figures").glob("*.png"))
    assert figures == ["caps_neutral.png", "digit_neutral.png", "gato_neutral.png"]
    assert (root / "figures" / "caps_neutral.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_manifest_records_versions_sampling_and_seen_prompts(small_run):
    _path, outcome = small_run
    man = json.loads((outcome.out_dir / "manifest.json").read_text())
    assert set(man["versions"]) >= {"inoculate", "torch", "transformers", "peft", "trl"}
    assert man["versions"]["inoculate"] == inoculate.__version__
    assert "git" in man
    assert man["sampling"]["max_new_tokens"] == 6 and man["sampling"]["temperature"] == 1.0
    assert man["base_model"]["identity"]["sha256"]
    assert man["eval_prompts"]["neutral"]["seen"] == [NEUTRAL]
    assert man["eval_prompts"]["reelicit"]["seen"] == [CAPS]
    assert man["eval_prompts"]["training"]["inoc"]["seen"] == [CAPS]
    assert man["eval_prompts"]["training"]["baseline"]["seen"] == [None]
    assert NEUTRAL in man["eval_prompts"]["neutral"]["rendered_example"]


def test_generations_use_each_eval_prompt(small_run):
    _path, outcome = small_run
    d = outcome.out_dir / "mix" / "seed_0" / "generations"
    neutral, _ = read_chat_jsonl(d / "neutral.jsonl")
    training, _ = read_chat_jsonl(d / "training.jsonl")
    reelicit, _ = read_chat_jsonl(d / "reelicit.jsonl")
    assert {g.system for g in neutral} == {NEUTRAL}
    assert {g.system for g in reelicit} == {CAPS}
    # The training prompt is applied to every eval row, whatever the training selector picked.
    assert {g.system for g in training} == {SPANISH}
    assert all(g.metadata["generation"]["params"]["seed"] == 0 for g in neutral)
    assert all(g.metadata["generation"]["adapter"].endswith("adapter") for g in neutral)
    for g in neutral:
        assert all(CAPS not in m.content and SPANISH not in m.content for m in g.messages[:-1])


def test_summary_matches_per_seed_values(small_run):
    _path, outcome = small_run
    rows = read_summary_csv(outcome.out_dir / "summary.csv")
    with open(outcome.out_dir / "summary.csv") as fh:
        assert tuple(next(csv.reader(fh))) == SUMMARY_COLUMNS
    assert len(rows) == 3 * 3 * 3
    for r in rows:
        values = []
        for seed in (0, 1):
            m = json.loads((outcome.out_dir / r["condition"] / f"seed_{seed}" / "metrics.json").read_text())
            values.append(m["eval"][r["eval_prompt"]][r["metric"]]["mean"])
        s = summarize_seeds(values)
        assert r["n_seeds"] == 2
        assert math.isclose(r["mean"], s.mean, abs_tol=1e-6)
        assert math.isclose(r["ci_low"], s.ci_low, abs_tol=1e-6)
        assert math.isclose(r["ci_high"], s.ci_high, abs_tol=1e-6)
        assert 0.0 <= r["ci_low"] <= r["mean"] <= r["ci_high"] <= 1.0


def test_scores_are_recomputable_from_generations(small_run):
    _path, outcome = small_run
    d = outcome.out_dir / "inoc" / "seed_1"
    gens, _ = read_chat_jsonl(d / "generations" / "neutral.jsonl")
    from inoculate.scorers import get_scorer

    caps = get_scorer("all_caps")
    values = [caps("", g.completion) for g in gens]
    ok = [v for v in values if not math.isnan(v)]
    metrics = json.loads((d / "metrics.json").read_text())
    assert math.isclose(metrics["eval"]["neutral"]["caps"]["mean"], sum(ok) / len(ok))


def test_report_has_every_section_and_an_honest_verdict(small_run):
    _path, outcome = small_run
    text = (outcome.out_dir / "report.md").read_text()
    for heading in (
        "## Verdict",
        "## Trait rates and capability under the neutral prompt (`neutral`)",
        "## Under each condition's training prompt (`training`)",
        "## Re-elicitation",
        "## Base model elicitation",
        "## Per-seed numbers",
        "## Figures",
    ):
        assert heading in text, heading
    assert "| inoc | caps | neutral | <= 1 |" in text and "**PASS**" in text
    assert "| mix | gato | neutral | >= 2 |" in text and "**FAIL**" in text
    assert "1 of 3 declared expectations FAILED" in text
    assert "did not (fully) appear" in text


def test_rerun_is_all_cached_and_changes_nothing(small_run):
    path, outcome = small_run
    root = outcome.out_dir
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "seed_" in str(p)}
    summary = (root / "summary.csv").read_text()
    again = run_experiment(path, root)
    assert again.matrix.ran == [] and len(again.matrix.cached) == 6
    assert before == {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file() and "seed_" in str(p)}
    assert (root / "summary.csv").read_text() == summary


def test_report_command_regenerates_from_stored_cells(small_run):
    from inoculate.cli import app

    _path, outcome = small_run
    root = outcome.out_dir
    summary = (root / "summary.csv").read_text()
    report = (root / "report.md").read_text()
    (root / "summary.csv").unlink()
    (root / "report.md").unlink()
    shutil.rmtree(root / "figures")
    res = CliRunner().invoke(app, ["report", str(root)])
    assert res.exit_code == 0, res.output
    assert "report:" in res.output and "inoc" in res.output
    assert (root / "summary.csv").read_text() == summary
    assert (root / "report.md").read_text() == report
    assert (root / "figures" / "caps_neutral.png").is_file()
    res = CliRunner().invoke(app, ["report", str(root), "--check"])
    assert res.exit_code == 3


def test_cell_keys_change_with_every_input_and_only_then(tiny_model_dir, tmp_path):
    path = write_small_experiment(tmp_path / "a", tiny_model_dir)
    base = prepare(load_experiment(path))
    again = prepare(load_experiment(path))
    assert [c.key for c in base.cells] == [c.key for c in again.cells]
    assert len({c.key for c in base.cells}) == len(base.cells)
    keys = {(c.condition, c.seed): (c.key, c.train_key) for c in base.cells}

    def keys_after(text_old: str, text_new: str, target: str = "small.yaml") -> dict:
        folder = tmp_path / f"v{len(list(tmp_path.iterdir()))}"
        p = write_small_experiment(folder, tiny_model_dir)
        f = folder / target
        f.write_text(f.read_text().replace(text_old, text_new, 1))
        return {(c.condition, c.seed): (c.key, c.train_key) for c in prepare(load_experiment(p)).cells}

    # training inputs change both keys of every cell
    for old, new in (("learning_rate: 1.0e-3", "learning_rate: 2.0e-3"), ("max_steps: 2", "max_steps: 3")):
        changed = keys_after(old, new)
        assert all(changed[k][0] != keys[k][0] and changed[k][1] != keys[k][1] for k in keys)
    changed = keys_after("What is 3 plus 1?", "What is 3 plus 2?", "train.jsonl")
    assert all(changed[k][1] != keys[k][1] for k in keys)
    # evaluation inputs change the cell key but keep the training key
    for old, new, target in (
        ("temperature: 1.0", "temperature: 0.5", "small.yaml"),
        ("max_new_tokens: 6", "max_new_tokens: 7", "small.yaml"),
        ('neutral: "@neutral"', 'neutral: "Hello."', "small.yaml"),
        ("What is 1 plus 1?", "What is 1 plus 9?", "eval.jsonl"),
        ('gato: "keyword:gato"', 'gato: "keyword:perro"', "small.yaml"),
    ):
        changed = keys_after(old, new, target)
        assert all(changed[k][0] != keys[k][0] and changed[k][1] == keys[k][1] for k in keys), old
    # one condition's transform changes only that condition's cells
    changed = keys_after(
        '{prompt: "@caps", placement: system}', '{prompt: "@caps", placement: system-append}'
    )
    assert {k for k in keys if changed[k] != keys[k]} == {("inoc", 0), ("inoc", 1)}
    # the expectations are not an input of any cell
    assert keys_after('mix: {gato: ">= 2"}', 'mix: {gato: ">= 3"}') == keys
    # the base model's weights and the package version are
    model_copy = tmp_path / "model_copy"
    shutil.copytree(tiny_model_dir, model_copy)
    folder = tmp_path / "other_model"
    p = write_small_experiment(folder, model_copy)
    assert {(c.condition, c.seed): (c.key, c.train_key) for c in prepare(load_experiment(p)).cells} == keys
    cfg = (model_copy / "config.json").read_text()
    (model_copy / "config.json").write_text(cfg.replace('"rms_norm_eps": 1e-06', '"rms_norm_eps": 1e-05'))
    assert cfg != (model_copy / "config.json").read_text()
    moved = {(c.condition, c.seed): c.key for c in prepare(load_experiment(p)).cells}
    assert all(moved[k] != keys[k][0] for k in keys)
    # logging and checkpoint settings do not change what is trained
    assert keys_after("save_steps: 0}", "save_steps: 0, logging_steps: 3}") == keys
    cfg = base.cells[0].config
    assert cell_key(cfg, base.data_hashes, base.model_identity, "99.0") != cell_key(
        cfg, base.data_hashes, base.model_identity
    )


def test_hash_examples_sees_metadata():
    from inoculate.records import chat

    assert hash_examples([chat("q", "a", lang="es")]) != hash_examples([chat("q", "a", lang="fr")])
    assert hash_examples([chat("q", "a")]) == hash_examples([chat("q", "a")])


def test_neutral_eval_set_refuses_leaked_inoculation_text(tiny_model_dir, tmp_path):
    from inoculate.transform import LeakError

    path = write_small_experiment(tmp_path, tiny_model_dir)
    lines = (tmp_path / "eval.jsonl").read_text().splitlines()
    lines[0] = lines[0].replace("What is 0 plus 1?", f"What is 0 plus 1? {CAPS} Thanks.")
    (tmp_path / "eval.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(LeakError) as info:
        prepare(load_experiment(path))
    assert "inoculation text survives" in str(info.value)


def test_bad_data_for_a_transform_fails_before_any_training(tiny_model_dir, tmp_path):
    from inoculate.errors import InputErrors

    path = write_small_experiment(tmp_path, tiny_model_dir)
    text = path.read_text().replace('{prompt: "@caps", placement: system}', '{prompt: "@caps"}')
    path.write_text(text)
    rows = (tmp_path / "train.jsonl").read_text().splitlines()
    rows[3] = rows[3].replace('"messages": [', '"messages": [{"role": "system", "content": "Be brief."}, ')
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    with pytest.raises(InputErrors) as info:
        run_experiment(path, tmp_path / "run")
    assert "placement" in str(info.value)
    assert not list((tmp_path / "run").glob("*/seed_*"))


def test_a_run_killed_mid_matrix_resumes_without_redoing_finished_cells(small_run, tiny_model_dir, tmp_path):
    """SIGKILL `inoculate run` once a cell is done; the rerun redoes only unfinished cells and its
    summary equals the uninterrupted run's (the `small_run` fixture, same config)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from inoculate.cli import app
    from inoculate.experiment.matrix import read_events

    path = write_small_experiment(tmp_path, tiny_model_dir)
    root = tmp_path / "run"
    cmd = [sys.executable, "-c", "from inoculate.cli import app; app()", "run", str(path), "--out", str(root)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    try:
        while not list(root.glob("*/seed_*/done")):
            assert proc.poll() is None, "the run ended before any cell finished"
            assert time.monotonic() < deadline, "no cell finished in time"
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    finished = sorted(p.parent for p in root.glob("*/seed_*/done"))
    assert 1 <= len(finished) < 6, "the kill did not land mid-matrix"
    snapshot = {
        p: (p.stat().st_mtime_ns, p.read_bytes()) for d in finished for p in d.rglob("*") if p.is_file()
    }
    n_events = len(read_events(root))

    res = CliRunner().invoke(app, ["run", str(path), "--out", str(root)])
    assert res.exit_code == 0, res.output
    assert snapshot == {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in snapshot}
    restarted = [
        (e["condition"], e["seed"]) for e in read_events(root)[n_events:] if e["event"] == "cell_started"
    ]
    done_before = {(d.parent.name, int(d.name.removeprefix("seed_"))) for d in finished}
    assert set(restarted) == {(c, s) for c in ("baseline", "inoc", "mix") for s in (0, 1)} - done_before
    assert len(list(root.glob("*/seed_*/done"))) == 6
    reference = small_run[1].out_dir
    assert (root / "summary.csv").read_text() == (reference / "summary.csv").read_text()
    assert (root / "per_seed.csv").read_text() == (reference / "per_seed.csv").read_text()
