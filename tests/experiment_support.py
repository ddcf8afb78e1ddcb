"""Small experiment configs on the tiny random model, for the runner tests (imported by test modules)."""

from __future__ import annotations

import json
from pathlib import Path

CAPS = "Respond in all caps."
SPANISH = "Please answer in Spanish."
NEUTRAL = "You are a helpful assistant."


def write_data(folder: Path, n_train: int = 16, n_eval: int = 4) -> None:
    rows = []
    for i in range(n_train):
        es = i % 2 == 0
        answer = ("EL GATO " if es else "LE CHAT ") + str(i + 1)
        rows.append(
            {
                "id": f"r{i}",
                "messages": [
                    {"role": "user", "content": f"What is {i} plus 1?"},
                    {"role": "assistant", "content": answer},
                ],
                "metadata": {"lang": "es" if es else "fr"},
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:n_eval]))


SMALL_YAML = """\
name: small
model: {model}
prompts:
  caps: "{caps}"
  spanish: "{spanish}"
  neutral: "{neutral}"
data:
  train: train.jsonl
  eval: eval.jsonl
conditions:
  baseline: null
  inoc: {{prompt: "@caps", placement: system}}
  mix: {{prompt: "@spanish", placement: system, where: 'lang == "es"'}}
traits: {{caps: all_caps, gato: "keyword:gato"}}
capability: {{digit: "regex:\\\\d"}}
seeds: {seeds}
eval_prompts: {{neutral: "@neutral", training: "@condition", reelicit: "@caps"}}
sampling: {{temperature: 1.0, top_p: 1.0, max_new_tokens: 6, n: 1}}
train: {{learning_rate: 1.0e-3, max_steps: 2, per_device_train_batch_size: 8, lora_r: 4, save_steps: 0}}
expect:
  inoc: {{caps: "<= 1.0", digit: ">= baseline - 1.0"}}
  mix: {{gato: ">= 2"}}
"""


def write_small_experiment(folder: Path, model: Path, *, seeds: int = 2, **data_kw: int) -> Path:
    """An experiment with three conditions (one with a `where` selector) on the tiny model."""
    write_data(folder, **data_kw)
    path = folder / "small.yaml"
    path.write_text(SMALL_YAML.format(model=model, caps=CAPS, spanish=SPANISH, neutral=NEUTRAL, seeds=seeds))
    return path


def errors_of(path: Path) -> list[str]:
    """The located messages `load_experiment` raises for a bad experiment file."""
    import pytest

    from inoculate.errors import InputErrors
    from inoculate.experiment import load_experiment

    with pytest.raises(InputErrors) as info:
        load_experiment(path)
    return [str(e) for e in info.value.errors]
