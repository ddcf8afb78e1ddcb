"""Experiments: the YAML schema, the plan, the conditions x seeds matrix, the content-addressed cell cache,
the runner.

`run_experiment("examples/demo.yaml")` is `inoculate run examples/demo.yaml`; `demo_config()` is the
packaged demo experiment (`inoculate demo`).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from inoculate.experiment.config import ExperimentConfig
from inoculate.experiment.load import load_experiment, parse_experiment
from inoculate.experiment.matrix import Cell, MatrixResult, run_matrix
from inoculate.experiment.plan import Plan, prepare
from inoculate.experiment.runner import RunOutcome, apply_screen, run_experiment
from inoculate.rundir import CONDITION_REF

DEMO_RESOURCE = "demo.yaml"


def demo_path() -> Path:
    """The packaged copy of examples/demo.yaml."""
    return Path(str(resources.files("inoculate").joinpath("data").joinpath(DEMO_RESOURCE)))


def demo_config() -> ExperimentConfig:
    return load_experiment(demo_path())


__all__ = [
    "CONDITION_REF",
    "Cell",
    "ExperimentConfig",
    "MatrixResult",
    "Plan",
    "RunOutcome",
    "apply_screen",
    "demo_config",
    "demo_path",
    "load_experiment",
    "parse_experiment",
    "prepare",
    "run_experiment",
    "run_matrix",
]
