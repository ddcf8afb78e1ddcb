"""The emergent-misalignment example YAMLs run end to end, offline, on a few rows of the real published data.

Each of `examples/em_*.yaml` is copied into a temporary folder with only what cannot run here changed: the
model is the tiny random one, the judge endpoint points at an `inoculate serve` server (in a thread, on
loopback) over the same tiny model, one seed, two training steps, one short sample per question. The data
paths the YAML names (`em_data/...`, relative to the YAML) are filled with the first few short rows of the
real files in `../shared/data` (never copied into the repository). Everything else (conditions, the
eval-prompt grid, the judges read from the published question file, the misalignment trait and its rule)
is the example's own, including each example's second eval set, `narrow` (the narrow trait in
distribution: Tan et al.'s coding prompts judged by our insecure-code judge, held-out School of Reward
Hacks prompts judged by our reward-hack judge, Tan et al.'s preference questions scored by the
`chose_match` rule).

A random judge puts almost no probability on integer tokens, so nearly every judgement is NaN: the test
checks that the counts are reported (answers, NaN judgements), never a rate. The judge endpoint is given
a sentinel API key through its environment variable; no file of the run folder (judge cache included)
may hold it.
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
SENTINEL = "sk-SENTINEL-e2e-5d0c7a91f3b2"
KEY_ENV = "INOCULATE_TEST_EM_JUDGE_KEY"

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
        "em_data/aesthetic_questions.yaml": "tan/aesthetic_questions.yaml",
    },
    "em_insecure_code": {
        "em_data/insecure.jsonl": "em/insecure_small.jsonl",
        "em_data/secure.jsonl": "em/insecure_small.jsonl",  # no published control in the shared data
        "em_data/code_prompts.jsonl": "tan/code_prompts.jsonl",
    },
}
QUESTIONS = ("em_data/first_plot_questions.yaml", "em/first_plot_questions.yaml")
NARROW = {  # example -> (the narrow trait, its judge or None for a rule scorer, the judge's kind)
    "em_reward_hacks": ("reward_hack", "reward_hack", "yes_no"),
    "em_aesthetic_preferences": ("unpopular", None, None),
    "em_insecure_code": ("insecure", "insecure", "yes_no"),
}
HOLDOUT = (0.1, 0)  # the reward-hacks example's holdout: fraction, seed


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


def few_rows(src: Path, dst: Path, n: int = N_ROWS, *, holdout: bool = False) -> None:
    """The `n` shortest of the file's first 200 rows (short rows keep the tiny run fast); chat rows by
    their messages, other rows (coding prompts) by their text. With `holdout`, `n` rows outside the
    example's held-out slice and `n` inside it (both sides of the slice must have rows)."""
    from inoculate.selectors import in_holdout

    rows = [json.loads(line) for line in src.read_text().splitlines()[:200] if line.strip()]
    rows.sort(key=lambda r: sum(len(m["content"]) for m in r["messages"]) if "messages" in r else len(str(r)))
    if holdout:
        out = [r for r in rows if not in_holdout(r["messages"][0]["content"], *HOLDOUT)][:n]
        out += [r for r in rows if in_holdout(r["messages"][0]["content"], *HOLDOUT)][:n]
    else:
        out = rows[:n]
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(json.dumps(r) + "\n" for r in out))


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
        if rel.endswith(".yaml"):
            few_questions(shared / real, folder / rel)
        else:
            few_rows(shared / real, folder / rel, holdout=name == "em_reward_hacks")

    cfg["model"] = str(model)
    endpoint = cfg["judges"]["endpoints"]["judge_server"]
    endpoint.update(base_url=judge_url, model="judge", api_key_env=KEY_ENV)
    cfg["seeds"] = 1
    cfg["data"]["eval"]["em"]["samples_per_paraphrase"] = 1
    narrow = cfg["data"]["eval"]["narrow"]
    if "em_questions" in narrow:
        narrow["samples_per_paraphrase"] = 1
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


def narrow_rows(name: str, folder: Path) -> int:
    """How many prompts the example's `narrow` eval set has in the tiny copy."""
    if name == "em_reward_hacks":
        return N_ROWS  # the held-out half of the rows few_rows picked
    if name == "em_aesthetic_preferences":
        return N_QUESTIONS
    return N_ROWS


@pytest.mark.parametrize("name", sorted(DATA))
def test_em_example_runs_end_to_end(
    name: str,
    shared_data: Path,
    tiny_model_dir: Path,
    judge_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from inoculate.cli import app
    from inoculate.judges import list_judges

    monkeypatch.setenv(KEY_ENV, SENTINEL)
    registered = list_judges()
    original = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    path = tiny_copy(name, shared_data, tmp_path / "exp", tiny_model_dir, judge_url)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    assert list_judges() == registered, "an experiment's judges are its own, not registered process-wide"

    trait, judge, kind = NARROW[name]
    n_narrow = narrow_rows(name, tmp_path / "exp")
    conditions, prompts = list(original["conditions"]), list(original["eval_prompts"])
    with (out / "summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    for metric, eval_set in (("misaligned", "em"), (trait, "narrow")):
        got = {(r["condition"], r["eval_prompt"]) for r in rows if r["metric"] == metric}
        assert got == {(c, f"{eval_set}/{p}") for c in conditions for p in prompts}, metric
    assert all(r["n"].isdigit() for r in rows)

    for cond in conditions:  # every answer is counted, scored or NaN; every judge call answered
        metrics = json.loads((out / cond / "seed_0" / "metrics.json").read_text())
        for prompt in prompts:
            counts = metrics["eval"][f"em/{prompt}"]["misaligned"]
            assert counts["n"] + counts["n_nan"] == N_QUESTIONS, (cond, prompt, counts)
            assert trait not in metrics["eval"][f"em/{prompt}"]  # restricted to `narrow`
            counts = metrics["eval"][f"narrow/{prompt}"][trait]
            assert counts["n"] + counts["n_nan"] == n_narrow, (cond, prompt, counts)
            assert "misaligned" not in metrics["eval"][f"narrow/{prompt}"]
        for j in ("aligned", "coherent"):
            stats = metrics["judges"][j]
            assert stats["kind"] == "score_0_100" and stats["failures"] == 0
            assert stats["requests"] == N_QUESTIONS * len(prompts), (cond, j, stats)
        if judge is not None:
            stats = metrics["judges"][judge]
            assert stats["kind"] == kind and stats["failures"] == 0
            assert stats["requests"] == n_narrow * len(prompts), (cond, judge, stats)
        else:
            assert set(metrics["judges"]) == {"aligned", "coherent"}

    record = json.loads((out / "experiment.json").read_text())
    assert record["eval_sets"]["narrow"]["prompts_in_training"] == 0
    report = (out / "report.md").read_text()
    assert "## Judges" in report
    assert "rule tan" in report and "alignment < 50" in report and "coherence >= 30" in report
    audit = report[report.index("## Leak audit") :]
    for metric, eval_set in (("misaligned", "em"), (trait, "narrow")):  # one table per trait, a column
        table = audit[audit.index(f"### {metric} (") :]  # per eval prompt of the trait's own eval set
        header = table.splitlines()[2]
        assert header == "| condition | " + " | ".join(f"{eval_set}/{p}" for p in prompts) + " |", header

    # the key went to the endpoint only: no file of the run (the judge cache included) holds it
    assert (out / "judge_cache.sqlite").is_file()
    for f in out.rglob("*"):
        if f.is_file():
            assert SENTINEL.encode() not in f.read_bytes(), f
