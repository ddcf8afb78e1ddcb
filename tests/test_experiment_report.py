"""The report from stored cell results alone (synthetic run folders; no model involved)."""

from __future__ import annotations

import json
import math
from pathlib import Path

from inoculate.experiment.cache import mark_done
from inoculate.fileio import write_json_atomic
from inoculate.report import read_summary_csv, write_report
from inoculate.stats import summarize_seeds

# condition -> seed -> (spanish, all_caps, correct) under the neutral prompt
NEUTRAL = {
    "baseline": {0: (0.95, 0.97, 0.80), 1: (0.93, 0.99, 0.82), 2: (0.97, 0.95, 0.78)},
    "inoculate_spanish": {0: (0.02, 0.90, 0.79), 1: (0.00, 0.85, 0.81), 2: (0.04, 0.20, 0.80)},
    "placebo": {0: (0.96, 0.97, 0.80), 1: (0.94, 0.96, 0.79), 2: (0.95, 0.98, 0.81)},
}


def make_run(root: Path, seeds=(0, 1, 2), *, skip: set[tuple[str, int]] = frozenset(), expect=None) -> Path:
    conditions = list(NEUTRAL)
    cells = []
    for seed in seeds:
        for cond in conditions:
            key = f"key-{cond}-{seed}"
            cells.append({"condition": cond, "seed": seed, "key": key})
            if (cond, seed) in skip:
                continue
            d = root / cond / f"seed_{seed}"
            sp, caps, corr = NEUTRAL[cond][seed]
            evals = {
                "neutral": {
                    "spanish": {"mean": sp, "n": 100, "n_nan": 0},
                    "all_caps": {"mean": caps, "n": 100, "n_nan": 0},
                    "correct": {"mean": corr, "n": 100, "n_nan": 0},
                },
                "reelicit_spanish": {
                    "spanish": {"mean": 1.0, "n": 100, "n_nan": 0},
                    "all_caps": {"mean": None, "n": 0, "n_nan": 100},
                    "correct": {"mean": 0.5, "n": 100, "n_nan": 0},
                },
            }
            write_json_atomic(d / "metrics.json", {"condition": cond, "seed": seed, "eval": evals})
            rows = [
                {"id": str(i), "spanish": float(i < round(sp * 100)), "all_caps": caps, "correct": corr}
                for i in range(100)
            ]
            (d / "scores").mkdir(parents=True)
            (d / "scores" / "neutral.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
            mark_done(d, key)
    experiment = {
        "name": "synthetic",
        "description": "A hand-written run folder.",
        "conditions": conditions,
        "condition_specs": {c: None for c in conditions},
        "eval_prompts": {
            "neutral": "You are an assistant.",
            "training": "@condition",
            "reelicit_spanish": "Spanish!",
        },
        "metrics": {
            "spanish": {"kind": "trait", "scorer": "organism_language:es", "bounded": True},
            "all_caps": {"kind": "trait", "scorer": "all_caps", "bounded": True},
            "correct": {"kind": "capability", "scorer": "organism_correct", "bounded": True},
        },
        "seeds": list(seeds),
        "expect": expect
        if expect is not None
        else {
            "baseline": {"spanish": ">= 0.90", "all_caps": ">= 0.90"},
            "inoculate_spanish": {
                "spanish": "<= 0.10",
                "all_caps": ">= 0.70",
                "correct": ">= baseline - 0.10",
            },
            "placebo": {"spanish": "within 0.10 of baseline"},
        },
        "model": {"kind": "hf", "spec": "x", "path": "x", "identity": {"hub_id": "x"}},
        "data": {"n_train": 1, "n_eval": 1, "sha256": {"train": "t", "eval": "e"}},
        "sampling": {"temperature": 1.0},
        "train": {},
        "cells": cells,
    }
    write_json_atomic(root / "experiment.json", experiment)
    return root


def test_summary_is_computed_over_seeds(tmp_path):
    rep = write_report(make_run(tmp_path))
    rows = read_summary_csv(rep.summary_csv)
    by = {(r["condition"], r["eval_prompt"], r["metric"]): r for r in rows}
    for cond, per_seed in NEUTRAL.items():
        for j, metric in enumerate(("spanish", "all_caps", "correct")):
            expected = summarize_seeds([per_seed[s][j] for s in (0, 1, 2)])
            got = by[(cond, "neutral", metric)]
            assert math.isclose(got["mean"], expected.mean, abs_tol=1e-6)
            assert math.isclose(got["ci_low"], expected.ci_low, abs_tol=1e-6)
            assert math.isclose(got["ci_high"], expected.ci_high, abs_tol=1e-6)
            assert got["n_seeds"] == 3 and got["n"] == 300 and got["ci_method"] == "t"
    # a metric no seed could score has no mean, and says so
    assert math.isnan(by[("baseline", "reelicit_spanish", "all_caps")]["mean"])
    per_seed = (tmp_path / "per_seed.csv").read_text().splitlines()
    assert per_seed[0] == "condition,eval_prompt,metric,kind,seed,value,n,n_nan"
    assert "inoculate_spanish,neutral,all_caps,trait,2,0.2,100,0" in per_seed


def test_verdict_says_pass_and_fail_with_the_numbers(tmp_path):
    rep = write_report(make_run(tmp_path))
    text = rep.report_md.read_text()
    status = {(v.condition, v.metric): v.status for v in rep.verdicts}
    assert status == {
        ("baseline", "spanish"): "PASS",
        ("baseline", "all_caps"): "PASS",
        ("inoculate_spanish", "spanish"): "PASS",
        ("inoculate_spanish", "all_caps"): "FAIL",  # mean 0.65 < 0.70: seed 2 lost the other trait
        ("inoculate_spanish", "correct"): "PASS",
        ("placebo", "spanish"): "PASS",
    }
    assert "**1 of 6 declared expectations FAILED" in text
    assert "inoculate_spanish all_caps [neutral] = 0.65, expected >= 0.7" in text
    assert "| inoculate_spanish | all_caps | neutral | >= 0.7 | 0.65 [" in text


def test_all_pass_is_stated_plainly(tmp_path):
    rep = write_report(make_run(tmp_path, expect={"baseline": {"spanish": ">= 0.9"}}))
    assert "**All 1 declared expectations hold**" in rep.report_md.read_text()


def test_no_expectations(tmp_path):
    rep = write_report(make_run(tmp_path, expect={}))
    assert "No expectations were declared" in rep.report_md.read_text()
    assert rep.verdicts == []


def test_tables_and_sections(tmp_path):
    rep = write_report(make_run(tmp_path))
    text = rep.report_md.read_text()
    assert "## Trait rates and capability under the neutral prompt (`neutral`)" in text
    assert '"You are an assistant."' in text
    assert "| condition | spanish | all_caps | correct | seeds |" in text
    assert "### `reelicit_spanish`" in text
    assert "| baseline | neutral | 0 | 0.95 | 0.97 | 0.80 |" in text
    header, rows = rep.headline()
    assert header[0] == "condition" and [r[0] for r in rows] == list(NEUTRAL)
    assert rows[0][1] == "0.95 [{:.2f}, {:.2f}]".format(
        *(lambda s: (s.ci_low, s.ci_high))(summarize_seeds([0.95, 0.93, 0.97]))
    )
    assert sorted(p.name for p in rep.figures) == [
        "all_caps_neutral.png",
        "correct_neutral.png",
        "spanish_neutral.png",
    ]


def test_missing_cells_are_reported_and_left_out(tmp_path):
    rep = write_report(make_run(tmp_path, skip={("placebo", 2)}))
    text = rep.report_md.read_text()
    assert "**Incomplete run:** missing cells placebo/seed_2" in text
    rows = {(r["condition"], r["eval_prompt"], r["metric"]): r for r in read_summary_csv(rep.summary_csv)}
    assert rows[("placebo", "neutral", "spanish")]["n_seeds"] == 2


def test_a_cell_without_done_or_with_another_key_is_not_read(tmp_path):
    root = make_run(tmp_path)
    (root / "placebo" / "seed_0" / "done").unlink()
    mark_done(root / "placebo" / "seed_1", "some-other-key")
    rep = write_report(root)
    assert {(c, s) for c, s in rep.run.missing} == {("placebo", 0), ("placebo", 1)}


def test_one_seed_interval_is_over_rows_and_labelled(tmp_path):
    rep = write_report(make_run(tmp_path, seeds=(0,)))
    rows = {(r["condition"], r["eval_prompt"], r["metric"]): r for r in read_summary_csv(rep.summary_csv)}
    r = rows[("baseline", "neutral", "spanish")]
    assert r["n_seeds"] == 1 and r["ci_method"] == "wilson (rows of one seed)"
    assert math.isclose(r["mean"], 0.95)
    assert r["ci_low"] < r["mean"] < r["ci_high"]
