"""The emergent-misalignment example YAMLs run end to end, offline, on a few rows of the real published data.

Each of `examples/em_*.yaml` is copied into a temporary folder with only what cannot run here changed: the
model is the tiny random one, the judge endpoint points at an `inoculate serve` server (in a thread, on
loopback) over the same tiny model, one seed, two training steps, one short sample per question. The data
paths the YAML names (`em_data/...`, relative to the YAML) are filled with the first few short rows of the
real files in `../shared/data` (never copied into the repository). Everything else (conditions, the
eval-prompt grid, the judges read from the published question file, the misalignment trait and its rule)
is the example's own.

A random judge puts almost no probability on integer tokens, so nearly every judgement is NaN: the test
checks that the counts are reported (answers, NaN judgements), never a rate.
"""

from __future__ import annotations

import csv
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
N_ROWS = 4
N_QUESTIONS = 2

# The YAML's data path -> the real file in ../shared/data it is a few rows of. The insecure-code control
# (secure.jsonl) is not in the shared data; its few rows come from the same insecure_small.jsonl.
DATA: dict[str, dict[str, str]] = {
    "em_reward_hacks": {
        "em_data/sneaky_dialogues.jsonl": "tan/sneaky_dialogues.jsonl",
        "em_data/straightforward_dialogues.jsonl": "tan/straightforward_dialogues.jsonl",
    },
    "em_aesthetic_preferences": {
        "em_data/aesthetic_preferences_unpopular.jsonl": "tan/aesthetic_preferences_unpopular.jsonl",
        "em_data/aesthetic_preferences_popular.jsonl": "tan/aesthetic_preferences_popular.jsonl",
    },
    "em_insecure_code": {
        "em_data/insecure.jsonl": "em/insecure_small.jsonl",
        "em_data/secure.jsonl": "em/insecure_small.jsonl",  # no published control in the shared data
    },
}
QUESTIONS = ("em_data/first_plot_questions.yaml", "em/first_plot_questions.yaml")


@pytest.fixture(scope="module")
def judge_url(tiny_model_dir: Path) -> Iterator[str]:
    """`inoculate serve`'s server over the tiny model, served as `judge`, with logprobs."""
    from inoculate.generate.hf import HFBackend
    from inoculate.generate.server import make_server

    srv = make_server(HFBackend(str(tiny_model_dir), device="cpu", batch_size=8), "127.0.0.1", 0, "judge")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def few_rows(src: Path, dst: Path, n: int = N_ROWS) -> None:
    """The `n` shortest of the file's first 200 chat rows (short rows keep the tiny run fast)."""
    rows = [json.loads(line) for line in src.read_text().splitlines()[:200] if line.strip()]
    rows.sort(key=lambda r: sum(len(m["content"]) for m in r["messages"]))
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(json.dumps(r) + "\n" for r in rows[:n]))


def few_questions(src: Path, dst: Path, n: int = N_QUESTIONS) -> None:
    """The file's first `n` questions, as published (the first one defines the anchors the rest use)."""
    lines = src.read_text().splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.startswith("- id:")]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(lines[: starts[n]]))


def data_paths(node: Any) -> set[str]:
    """Every string in the YAML that names a file under `em_data/`."""
    if isinstance(node, dict):
        return set().union(*(data_paths(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(data_paths(v) for v in node))
    return {node} if isinstance(node, str) and node.startswith("em_data/") else set()


def tiny_copy(name: str, shared: Path, folder: Path, model: Path, judge_url: str) -> Path:
    cfg = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    files = {**DATA[name], QUESTIONS[0]: QUESTIONS[1]}
    assert data_paths(cfg) == set(files), "the test must give every data file the example names"
    for rel, real in files.items():
        if rel == QUESTIONS[0]:
            few_questions(shared / real, folder / rel)
        else:
            few_rows(shared / real, folder / rel)

    cfg["model"] = str(model)
    endpoint = cfg["judges"]["endpoints"]["judge_server"]
    endpoint.update(base_url=judge_url, model="judge")
    cfg["seeds"] = 1
    cfg["data"]["eval"]["samples_per_paraphrase"] = 1
    cfg["sampling"].update(max_new_tokens=8, n=1)
    cfg["generation"] = {"backend": "hf", "batch_size": 16}
    cfg["train"].update(
        max_steps=2,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=1,
        lora_r=4,
        lora_alpha=8,
        max_length=512,
        bf16=False,
        logging_steps=1,
    )
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture
def clean_judges() -> Iterator[None]:
    """The run registers the YAML's judges process-wide; take them back so other tests start clean."""
    from inoculate.judges import list_judges, unregister_judge

    before = set(list_judges())
    yield
    for judge in set(list_judges()) - before:
        unregister_judge(judge)


@pytest.mark.parametrize("name", sorted(DATA))
def test_em_example_runs_end_to_end(
    name: str, shared_data: Path, tiny_model_dir: Path, judge_url: str, tmp_path: Path, clean_judges: None
) -> None:
    from inoculate.cli import app

    original = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    path = tiny_copy(name, shared_data, tmp_path / "exp", tiny_model_dir, judge_url)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)

    conditions, prompts = list(original["conditions"]), list(original["eval_prompts"])
    with (out / "summary.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == "misaligned"]
    assert {(r["condition"], r["eval_prompt"]) for r in rows} == {(c, p) for c in conditions for p in prompts}
    assert all(r["n"].isdigit() for r in rows)

    for cond in conditions:  # every answer is counted, scored or NaN; every judge call answered
        metrics = json.loads((out / cond / "seed_0" / "metrics.json").read_text())
        for prompt in prompts:
            counts = metrics["eval"][prompt]["misaligned"]
            assert counts["n"] + counts["n_nan"] == N_QUESTIONS, (cond, prompt, counts)
        for judge in ("aligned", "coherent"):
            stats = metrics["judges"][judge]
            assert stats["kind"] == "score_0_100" and stats["failures"] == 0
            assert stats["requests"] == N_QUESTIONS * len(prompts), (cond, judge, stats)

    report = (out / "report.md").read_text()
    assert "## Judges" in report
    assert "rule tan" in report and "alignment < 50" in report and "coherence >= 30" in report
