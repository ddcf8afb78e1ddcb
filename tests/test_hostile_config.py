"""Hostile experiment files: each is refused at load with one exact FILE:LINE: FIELD message, exit
status 1 from `inoculate run`, no traceback, and no run folder created (nothing is written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

BASE = """\
name: hostile
model: some-org/some-model
prompts:
  caps: "Respond in all caps."
  neutral: ""
data:
  train: train.jsonl
  eval: eval.jsonl
conditions:
  baseline: null
  inoc: {prompt: "@caps", placement: system}
traits: {caps: all_caps}
seeds: 2
eval_prompts:
  neutral: "@neutral"
sampling: {temperature: 1.0, top_p: 1.0, max_new_tokens: 8, n: 1}
generation: {backend: hf, batch_size: 8}
train: {learning_rate: 1.0e-3, max_steps: 2, lora_r: 4}
"""


def _write(tmp_path: Path, text: str) -> Path:
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A"}]
    for name in ("train.jsonl", "eval.jsonl"):
        (tmp_path / name).write_text(json.dumps({"id": "a", "messages": msgs}) + "\n")
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def _edit(old: str, new: str) -> str:
    assert BASE.count(old) == 1, old
    return BASE.replace(old, new)


def _line(text: str, needle: str) -> int:
    """The 1-based line of the first line containing `needle` (so the tests state lines exactly)."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.fixture(autouse=True)
def _never_prepare(monkeypatch):
    """Reaching the runner's prepare step (data, base model) means validation let the file through:
    fail at once instead of building a model or a billion seeds (and no network in these tests)."""
    import inoculate.experiment.runner as runner

    def refuse(*args, **kwargs):
        raise AssertionError("the experiment was not refused at load")

    monkeypatch.setattr(runner, "prepare", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _refused(tmp_path: Path, text: str) -> tuple[Path, list[str]]:
    """Run `inoculate run` on `text`; assert exit 1, no traceback, no --out; return the ERROR lines."""
    from inoculate.cli import app

    path = _write(tmp_path, text)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert not out.exists(), "the run folder must not be created for a refused experiment"
    return path, [ln for ln in res.output.splitlines() if ln.startswith("ERROR: ")]


def test_base_experiment_is_valid(tmp_path):
    """The control: the unedited file loads, so each refusal below is due to its one edit."""
    from inoculate.experiment import load_experiment

    cfg = load_experiment(_write(tmp_path, BASE))
    assert cfg.seed_list() == [0, 1]
    assert cfg.generation.options() == {"batch_size": 8}


def test_negative_seed(tmp_path):
    text = _edit("seeds: 2", "seeds: [0, -3]")
    path, errors = _refused(tmp_path, text)
    line = _line(text, "seeds:")
    assert errors == [
        f"ERROR: {path}:{line}: seeds: seed -3 is out of range: seeds are 0 to 4,294,967,295 (32-bit)"
    ]


def test_huge_seed_count(tmp_path):
    text = _edit("seeds: 2", "seeds: 1000000000")
    path, errors = _refused(tmp_path, text)
    line = _line(text, "seeds:")
    assert errors == [
        f"ERROR: {path}:{line}: seeds: 1000000000 seeds is too many: at most 100 "
        "(each seed trains every condition once)"
    ]


def test_unknown_backend(tmp_path):
    text = _edit("backend: hf, batch_size: 8", "backend: nosuch")
    path, errors = _refused(tmp_path, text)
    line = _line(text, "generation:")
    assert len(errors) == 1
    assert errors[0].startswith(
        f"ERROR: {path}:{line}: generation.backend: unknown generation backend 'nosuch' (available: "
    )
    assert "hf" in errors[0] and "openai_http" in errors[0]


def test_unknown_backend_option(tmp_path):
    text = _edit("batch_size: 8", "batch_sise: 8")
    path, errors = _refused(tmp_path, text)
    line = _line(text, "generation:")
    assert errors == [
        f"ERROR: {path}:{line}: generation.batch_sise: unknown option for backend 'hf' "
        "(known: batch_size, chat_template, device, dtype)"
    ]


def test_backend_option_of_the_wrong_type(tmp_path):
    text = _edit("batch_size: 8", "batch_size: lots")
    path, errors = _refused(tmp_path, text)
    line = _line(text, "generation:")
    assert errors == [
        f"ERROR: {path}:{line}: generation.batch_size: Input should be a valid integer, "
        "unable to parse string as an integer (got 'lots')"
    ]


def test_missing_model_path(tmp_path):
    text = _edit("model: some-org/some-model", "model: ./models/nowhere/tiny")
    path, errors = _refused(tmp_path, text)
    missing = tmp_path / "models" / "nowhere" / "tiny"
    assert errors == [
        f"ERROR: {path}:2: model: no such model folder: {missing} "
        "(and './models/nowhere/tiny' is not a hub id ORG/NAME)"
    ]


def test_huge_sampling_n(tmp_path):
    text = _edit("n: 1}", "n: 5000}")
    path, errors = _refused(tmp_path, text)
    line = _line(text, "sampling:")
    assert errors == [
        f"ERROR: {path}:{line}: sampling.n: 5000 is too large: at most 1,000 "
        "(samples per eval row; every sample of every row is held in memory)"
    ]


def test_huge_max_new_tokens(tmp_path):
    text = _edit("max_new_tokens: 8", "max_new_tokens: 100000000")
    path, errors = _refused(tmp_path, text)
    line = _line(text, "sampling:")
    assert errors == [
        f"ERROR: {path}:{line}: sampling.max_new_tokens: 100000000 is too large: at most 32,768 "
        "(longer than common models' context; on 24 GB the cache would not fit)"
    ]


def test_huge_organism_n(tmp_path):
    text = _edit(
        "  train: train.jsonl",
        "  train:\n    organism:\n      setting: spanish_caps\n      n: 1.0e+9",
    )
    path, errors = _refused(tmp_path, text)
    line = _line(text, "n: 1.0e+9")
    assert errors == [
        f"ERROR: {path}:{line}: data.train.organism.n: 1000000000 is too large: at most 1,000,000 "
        "(the examples are built in memory; 24 GB holds about this many)"
    ]


def test_duplicate_key(tmp_path):
    text = BASE + "seeds: 5\n"
    path, errors = _refused(tmp_path, text)
    first, second = _line(text, "seeds: 2"), _line(text, "seeds: 5")
    assert errors == [
        f"ERROR: {path}:{second}: seeds: duplicate key 'seeds' (first on line {first}); "
        "each key may appear once"
    ]


def test_nested_duplicate_key(tmp_path):
    text = _edit("  inoc: {prompt", "  baseline: {prompt")
    path, errors = _refused(tmp_path, text)
    assert errors == [
        f"ERROR: {path}:11: conditions.baseline: duplicate key 'baseline' (first on line 10); "
        "each key may appear once"
    ]


ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""

_NO_ALIASES = " (anchors and aliases can expand without bound); write each value out"


def test_alias_bomb_is_refused_fast(tmp_path):
    """A subprocess with a timeout, so a regression (expanding 9**9 nodes) fails instead of hanging."""
    path = _write(tmp_path, BASE + ALIAS_BOMB)
    out = tmp_path / "run"
    res = subprocess.run(
        [sys.executable, "-m", "inoculate", "run", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,  # a regression expands 9**9 nodes (hours); 120 s leaves room for a loaded machine
    )
    line = _line(BASE + ALIAS_BOMB, "a: &a")
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [
        f"ERROR: {path}:{line}: <yaml>: YAML anchor '&a' is not allowed{_NO_ALIASES}"
    ]
    assert not out.exists()


def test_recursive_alias(tmp_path):
    text = _edit("seeds: 2", "seeds: &s [*s]")
    path, errors = _refused(tmp_path, text)
    line = _line(text, "seeds:")
    assert errors == [f"ERROR: {path}:{line}: <yaml>: YAML anchor '&s' is not allowed{_NO_ALIASES}"]


def test_undefined_alias(tmp_path):
    text = _edit("seeds: 2", "seeds: *nowhere")
    path, errors = _refused(tmp_path, text)
    line = _line(text, "seeds:")
    assert errors == [f"ERROR: {path}:{line}: <yaml>: YAML alias '*nowhere' is not allowed{_NO_ALIASES}"]


def test_condition_name_with_newline(tmp_path):
    text = _edit("  baseline: null", '  "baseline\\n": null')
    path, errors = _refused(tmp_path, text)
    assert errors == [
        f"ERROR: {path}:10: conditions.baseline\\n: condition name 'baseline\\n': use letters, "
        "digits, '_', '-' and '.', starting with a letter or '_'"
    ]


@pytest.mark.parametrize("name", ["1st", "-x", "a b", "a/b", "x" * 65])
def test_condition_names_that_are_not_plain(tmp_path, name):
    text = _edit("  baseline: null", f'  "{name}": null')
    path, errors = _refused(tmp_path, text)
    assert len(errors) == 1
    assert errors[0].startswith(f"ERROR: {path}:10: conditions.{name}: condition name ")


@pytest.mark.parametrize("name", ["base", "Figures", "screen", "report.md", "experiment.json"])
def test_reserved_condition_name(tmp_path, name):
    text = _edit("  baseline: null", f"  {name}: null")
    path, errors = _refused(tmp_path, text)
    assert len(errors) == 1
    assert errors[0].startswith(
        f"ERROR: {path}:10: conditions.{name}: {name!r} is reserved in the run folder (reserved: base, "
    )


def test_condition_names_differing_only_in_case(tmp_path):
    text = _edit("  inoc: {prompt", "  Baseline: {prompt")
    path, errors = _refused(tmp_path, text)
    assert errors == [
        f"ERROR: {path}:11: conditions.Baseline: 'Baseline' and 'baseline' differ only in case "
        "(the same folder on some systems)"
    ]


def test_literal_api_key(tmp_path):
    text = _edit("backend: hf, batch_size: 8", "backend: openai_http, api_key: sk-not-a-real-key")
    path, errors = _refused(tmp_path, text)
    line = _line(text, "generation:")
    assert errors == [
        f"ERROR: {path}:{line}: generation.api_key: do not write secrets in the experiment file; "
        "write `api_key_env: OPENAI_API_KEY` (the variable's name) and export OPENAI_API_KEY "
        "(read when a request is sent)"
    ]


def test_literal_api_key_reported_beside_other_errors(tmp_path):
    """A secret is refused even when the rest of the file is also invalid."""
    text = _edit("backend: hf, batch_size: 8", "backend: openai_http, api_key: sk-x").replace(
        "seeds: 2", "seeds: -1"
    )
    _, errors = _refused(tmp_path, text)
    assert any("generation.api_key: do not write secrets" in e for e in errors)
    assert any(": seeds: -1: must be at least 1" in e for e in errors)


def test_api_key_env_is_accepted_and_read_at_request_time(tmp_path, monkeypatch):
    from inoculate.experiment import load_experiment
    from inoculate.generate.openai_http import OpenAIHTTPBackend

    text = _edit("backend: hf, batch_size: 8", "backend: openai_http, api_key_env: MY_KEY")
    cfg = load_experiment(_write(tmp_path, text))
    monkeypatch.delenv("MY_KEY", raising=False)
    be = OpenAIHTTPBackend("m", **cfg.generation.options())
    monkeypatch.setenv("MY_KEY", "sk-late")
    seen: dict[str, str] = {}

    class _Resp:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return b"{}"

    def fake_urlopen(req, timeout):
        seen.update(req.headers)
        return _Resp()

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    be._post("/x", {})
    assert seen["Authorization"] == "Bearer sk-late"
    assert "sk-late" not in json.dumps(be.info())
    assert not any("sk-late" in str(v) for v in vars(be).values())


def test_data_source_with_split(tmp_path):
    from inoculate.experiment import load_experiment
    from inoculate.experiment.config import FileData

    text = _edit("  eval: eval.jsonl", "  eval: {path: eval.jsonl, split: test}")
    cfg = load_experiment(_write(tmp_path, text))
    assert cfg.data.eval == FileData(path="eval.jsonl", split="test")


def test_data_source_with_split_missing_path(tmp_path):
    text = _edit("  eval: eval.jsonl", "  eval: {path: nowhere.jsonl, split: test}")
    path, errors = _refused(tmp_path, text)
    assert errors == [
        f"ERROR: {path}:8: data.eval.path: no such file or folder: {tmp_path / 'nowhere.jsonl'}"
    ]


# --- `inoculate train --config FILE`: the same line-mapped reader and located TrainConfig errors ----


def _train_refused(tmp_path: Path, text: str) -> tuple[Path, list[str]]:
    from inoculate.cli import app

    data = tmp_path / "d.jsonl"
    msgs = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "A"}]
    data.write_text(json.dumps({"messages": msgs}) + "\n")
    cfg = tmp_path / "train.yaml"
    cfg.write_text(text)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["train", str(data), "-m", "no/model", "-o", str(out), "--config", str(cfg)]
    )
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    return cfg, [ln for ln in res.output.splitlines() if ln.startswith("ERROR: ")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "max_steps: 3\nlearning_rate: fast\n",
            "2: learning_rate: Input should be a valid number, unable to parse string as a number",
        ),
        (
            "max_steps: 3\nmax_steps: 4\n",
            "2: max_steps: duplicate key 'max_steps' (first on line 1); each key may appear once",
        ),
        (
            "max_steps: 3\nlora_rnk: 4\n",
            "2: lora_rnk: unknown training option (not a TrainConfig, SFTConfig or LoraConfig field)",
        ),
        (
            "max_steps: 3\nwarmup_steps: 2\nwarmup_ratio: 0.1\n",
            "2: warmup_steps: set warmup_ratio or warmup_steps, not both",
        ),
        ("max_steps: &n 3\n", "1: <yaml>: YAML anchor '&n' is not allowed" + _NO_ALIASES),
        ("- 1\n- 2\n", "1: <yaml>: expected a mapping of training options"),
    ],
)
def test_train_config_errors_are_located(tmp_path, text, expected):
    cfg, errors = _train_refused(tmp_path, text)
    assert errors == [f"ERROR: {cfg}:{expected}"]


def test_seeds_flag_has_the_same_limit(tmp_path):
    from inoculate.cli import app
    from inoculate.cli.experiment_cmds import _MAX_SEEDS
    from inoculate.experiment.config import MAX_SEEDS

    assert _MAX_SEEDS == MAX_SEEDS
    path = _write(tmp_path, BASE)
    out = tmp_path / "run"
    res = CliRunner().invoke(app, ["run", str(path), "--out", str(out), "--seeds", "1000000000"])
    assert res.exit_code == 2 and "--seeds" in res.output
    assert not out.exists()


@pytest.mark.parametrize("size", ["0", "-4", "10000000"])
def test_backend_batch_size_out_of_range(tmp_path, size):
    text = _edit("batch_size: 8", f"batch_size: {size}")
    path, errors = _refused(tmp_path, text)
    line = _line(text, "generation:")
    assert errors == [f"ERROR: {path}:{line}: generation.batch_size: {size} is out of range: 1 to 4,096"]
