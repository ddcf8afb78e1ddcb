"""The base model's elicitation, cached across runs by content (`inoculate.experiment.base_cache`)."""

from __future__ import annotations

import json

import pytest

from experiment_support import write_small_experiment
from inoculate.experiment import load_experiment, prepare
from inoculate.experiment.base_cache import base_cache_key, base_cache_root
from inoculate.experiment.cell import base_elicitation
from inoculate.experiment.matrix import read_events


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "base-cache"
    monkeypatch.setenv("INOCULATE_BASE_CACHE", str(folder))
    return folder


def _plan(path):
    return prepare(load_experiment(path), seeds=1)


def _run(path, root, **kw):
    """Evaluate the base model into ROOT/base; (its source per the event log, metrics.json text)."""
    base_elicitation(_plan(path), root, **kw)
    events = [e for e in read_events(root) if e.get("event") == "base_elicitation"]
    done = json.loads((root / "base" / "done").read_text())
    assert events[-1]["source"] == done["source"]
    return events[-1]["source"], (root / "base" / "metrics.json").read_text()


def _outputs(root):
    base = root / "base"
    return {
        f.relative_to(base).as_posix(): f.read_bytes()
        for f in sorted(base.rglob("*"))
        if f.is_file() and f.name not in ("done", ".inoculate")
    }


def test_same_inputs_hit_with_identical_outputs(tiny_model_dir, tmp_path, cache):
    path = write_small_experiment(tmp_path / "exp", tiny_model_dir, seeds=1)
    first, metrics = _run(path, tmp_path / "run1")
    assert first == "computed"
    assert base_cache_root() == cache and len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1
    second, again = _run(path, tmp_path / "run2")
    assert second == "cache" and again == metrics
    assert _outputs(tmp_path / "run2") == _outputs(tmp_path / "run1")
    # --force computes it again, and the result is the same (seeded sampling)
    forced, metrics3 = _run(path, tmp_path / "run3", force=True)
    assert forced == "computed" and metrics3 == metrics


@pytest.mark.parametrize(
    "old,new",
    [
        ("temperature: 1.0", "temperature: 0.7"),  # sampling
        ('neutral: "You are a helpful assistant."', 'neutral: "You are a kind assistant."'),  # a prompt
        ('gato: "keyword:gato"', 'gato: "keyword:chat"'),  # a scorer
    ],
)
def test_any_changed_input_misses(tiny_model_dir, tmp_path, cache, old, new):
    path = write_small_experiment(tmp_path / "exp", tiny_model_dir, seeds=1)
    key = base_cache_key(_plan(path))
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    assert base_cache_key(_plan(path)) not in (None, key)


def test_changed_eval_set_misses(tiny_model_dir, tmp_path, cache):
    path = write_small_experiment(tmp_path / "exp", tiny_model_dir, seeds=1)
    assert _run(path, tmp_path / "run1")[0] == "computed"
    eval_file = tmp_path / "exp" / "eval.jsonl"
    rows = eval_file.read_text().splitlines()
    eval_file.write_text("\n".join(rows[:-1]) + "\n")  # one row fewer
    assert _run(path, tmp_path / "run2")[0] == "computed"
    assert _run(path, tmp_path / "run3")[0] == "cache"


def test_a_damaged_or_partial_entry_is_ignored_and_recomputed(tiny_model_dir, tmp_path, cache):
    path = write_small_experiment(tmp_path / "exp", tiny_model_dir, seeds=1)
    _, metrics = _run(path, tmp_path / "run1")
    key = base_cache_key(_plan(path))
    entry = cache / key
    gen = next((entry / "generations").glob("*.jsonl"))
    gen.write_text(gen.read_text() + '{"id": "forged"}\n')
    source, again = _run(path, tmp_path / "run2")
    assert source == "computed" and again == metrics
    assert not any("forged" in f.read_text() for f in (tmp_path / "run2" / "base").rglob("*.jsonl"))
    assert _run(path, tmp_path / "run3")[0] == "cache"  # the entry was stored again, intact
    # an entry cut short (its record missing, as a copy killed midway would leave it) is a miss too
    (entry / "done").unlink()
    assert _run(path, tmp_path / "run4")[0] == "computed"
    # a leftover temporary folder of a killed store is never read
    (cache / key).rename(cache / f".{key}.123-456.tmp")
    assert _run(path, tmp_path / "run5")[0] == "computed"


def test_the_report_says_when_the_base_numbers_came_from_the_cache(tiny_model_dir, tmp_path, cache):
    from typer.testing import CliRunner

    from inoculate.cli import app

    path = write_small_experiment(tmp_path / "exp", tiny_model_dir, seeds=1)
    said = "copied from the cross-run cache"
    for run, from_cache in (("run1", False), ("run2", True)):
        res = CliRunner().invoke(app, ["run", str(path), "--out", str(tmp_path / run)])
        assert res.exit_code == 0, res.output
        assert (said in (tmp_path / run / "report.md").read_text()) is from_cache
