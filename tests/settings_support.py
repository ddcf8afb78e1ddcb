"""Run a `examples/wichers_*.yaml` on the tiny model: the example with only what cannot run here changed."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import yaml
from typer.testing import CliRunner

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def tiny_example(name: str, folder: Path, model: Path, edit: Any = None) -> Path:
    """The example on the tiny model: one seed, two steps, short samples; `edit(cfg)` may shrink data."""
    cfg = yaml.safe_load((EXAMPLES / f"{name}.yaml").read_text())
    cfg["model"] = str(model)
    cfg["seeds"] = 1
    cfg["sampling"].update(max_new_tokens=8, n=1)
    cfg["generation"] = {"backend": "hf", "batch_size": 16}
    cfg["train"] = {
        "max_steps": 2,
        "per_device_train_batch_size": 2,
        "lora_r": 4,
        "lora_alpha": 8,
        "max_length": 512,
        "save_steps": 0,
        "learning_rate": 1.0e-3,
    }
    cfg.pop("expect", None)
    if edit is not None:
        edit(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(path: Path, out: Path) -> list[dict[str, str]]:
    """`inoculate run`; the summary.csv rows."""
    from inoculate.cli import app

    res = CliRunner().invoke(app, ["run", str(path), "--out", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    with (out / "summary.csv").open() as f:
        return list(csv.DictReader(f))


def cell_metrics(out: Path, condition: str) -> dict[str, Any]:
    return json.loads((out / condition / "seed_0" / "metrics.json").read_text())
