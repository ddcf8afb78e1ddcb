"""What a run records about itself: experiment.json (the `RunRecord` the report reads) and manifest.json
(package versions, git hash, base model, sampling, the prompts the model saw)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

from inoculate._version import __version__
from inoculate.experiment.config import DATA_TRAIN, OrganismModel
from inoculate.experiment.plan import Plan, rel_to, spec_dump
from inoculate.fileio import write_json_atomic
from inoculate.models import load_tokenizer, render, seen_system_prompt
from inoculate.records import ChatExample
from inoculate.rundir import CONDITION_REF, MANIFEST_FILE, RunRecord
from inoculate.transform import resolve_prompts


def experiment_record(plan: Plan, root: Path | None = None) -> RunRecord:
    """What `inoculate report` needs to know about the experiment (written to experiment.json).

    With `root`, a model path inside the run folder is recorded relative to it."""

    cfg = plan.config
    record = {
        "name": cfg.name,
        "description": cfg.description,
        "conditions": list(cfg.conditions),
        "condition_prompts": {
            c: (resolve_prompts(s) if s is not None else None) for c, s in plan.specs.items()
        },
        "condition_specs": {c: spec_dump(s) for c, s in plan.specs.items()},
        "condition_data": {c: condition_data(plan, c) for c in plan.specs},
        "eval_prompts": {label: plan.eval_prompts[p] for label, (_s, p) in plan.eval_axis.items()},
        **({"eval_sets": eval_sets_record(plan)} if cfg.data.named_eval_sets() else {}),
        "metrics": {
            name: {"kind": kind, "scorer": spec, "bounded": plan.scorers[name].bounded}
            for name, (kind, spec) in cfg.metrics().items()
        },
        "seeds": plan.seeds,
        "expect": cfg.expect,
        "model": {
            "kind": "organism" if isinstance(cfg.model, OrganismModel) else "hf",
            "spec": cfg.model if isinstance(cfg.model, str) else cfg.model.model_dump(),
            "path": rel_to(plan.model_path, root),
            "identity": plan.model_identity,
        },
        "data": {
            "train": cfg.data.train if isinstance(cfg.data.train, str) else cfg.data.train.model_dump(),
            "eval": _dump_source(cfg.data.eval),
            "n_train": len(plan.train_examples),
            "n_eval": len(plan.eval_examples),
            "sha256": plan.data_hashes,
        },
        "sampling": cfg.sampling.model_dump(),
        "train": plan.train_config,
        "cells": [{"condition": c.condition, "seed": c.seed, "key": c.key} for c in plan.cells],
        "base_key": plan.base.key,
        **({"dynamics": {c: m.record() for c, m in plan.dynamics.items()}} if plan.dynamics else {}),
    }
    return RunRecord.model_validate(record)


def _dump_source(src: Any) -> Any:
    if isinstance(src, dict):
        return {name: _dump_source(v) for name, v in src.items()}
    return src if isinstance(src, str) else src.model_dump()


def eval_sets_record(plan: Plan) -> dict[str, Any]:
    """Per named eval set: its rows, hash and the traits scored on it."""
    return {
        name: {
            "n": len(examples),
            "sha256": plan.data_hashes.get(f"eval/{name}"),
            "metrics": plan.config.metrics_for(name),
            "prompts_in_training": plan.eval_overlap.get(name, 0),
        }
        for name, examples in plan.eval_data.items()
    }


def condition_data(plan: Plan, condition: str) -> dict[str, Any]:
    """The training data `condition` used: its own (`train_data:`) or the experiment's `data.train`."""
    own = plan.own_data.get(condition)
    if own is not None:
        return own.record()
    return {"label": DATA_TRAIN, "n": len(plan.train_examples), "sha256": plan.data_hashes["train"]}


def write_manifest(plan: Plan, root: Path) -> dict[str, Any]:
    """manifest.json: versions, the git hash, the base model, sampling, training, the prompts seen."""
    manifest = {
        "experiment": plan.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": versions(),
        "git": git_hash(),
        "base_model": {"path": rel_to(plan.model_path, root), "identity": plan.model_identity},
        "sampling": {**plan.config.sampling.model_dump(), "seed": "the cell's seed"},
        "train": plan.train_config,
        "eval_prompts": seen_prompts(plan),
        "data_sha256": plan.data_hashes,
    }
    write_json_atomic(root / MANIFEST_FILE, manifest)
    return manifest


def versions() -> dict[str, str | None]:
    """inoculate's version and those of the packages training and generation run on."""
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"inoculate": __version__}
    for pkg in ("torch", "transformers", "peft", "trl", "accelerate", "datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def git_hash(where: Path | None = None) -> str | None:
    """The commit of the source tree the package runs from (with `+dirty` if modified), if any."""
    here = where or Path(__file__).resolve().parent.parent  # the package folder, src/inoculate
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def seen_prompts(plan: Plan) -> dict[str, Any]:
    """Per eval prompt (per condition for `@condition`): the system prompt given, the one the model saw
    (what the chat template rendered; some templates insert a default), and one rendered prompt."""

    tok = load_tokenizer(plan.model_path)

    def describe(examples: list[ChatExample]) -> dict[str, Any]:
        systems = sorted({ex.system or "" for ex in examples})
        first = examples[0] if examples else None
        return {
            "system": [s or None for s in systems],
            "seen": [seen_system_prompt(tok, s or None) for s in systems],
            "rendered_example": render(tok, first.messages, add_generation_prompt=True) if first else None,
        }

    out: dict[str, Any] = {}
    for name, value in plan.eval_prompts.items():
        if value == CONDITION_REF:
            out[name] = {cond: describe(plan.eval_set(cond, name)) for cond in plan.specs}
        else:
            out[name] = describe(plan.eval_set(next(iter(plan.specs)), name))
    return out
