"""Experiments: the YAML schema, the plan, the conditions x seeds matrix, the content-addressed cell cache,
the runner.

`run_experiment("examples/demo.yaml")` is `inoculate run examples/demo.yaml`; `demo_config()` is the
packaged demo experiment (`inoculate demo`), `demo_config(NAME)` the packaged copy of
`examples/organism_NAME.yaml` (`inoculate demo NAME`), and `list_demos()` names them.
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
PHENOMENON_PREFIX = "organism_"


def _data_dir() -> Path:
    return Path(str(resources.files("inoculate").joinpath("data")))


def list_demos() -> list[str]:
    """The named demos: one per packaged `organism_NAME.yaml` (copies of examples/organism_NAME.yaml)."""
    return sorted(p.stem[len(PHENOMENON_PREFIX) :] for p in _data_dir().glob(f"{PHENOMENON_PREFIX}*.yaml"))


def demo_path(name: str | None = None) -> Path:
    """The packaged copy of examples/demo.yaml, or of examples/organism_NAME.yaml for a named demo."""
    if name is None:
        return _data_dir() / DEMO_RESOURCE
    if name not in list_demos():
        raise ValueError(f"unknown demo {name!r} (known: {', '.join(list_demos()) or 'none'})")
    return _data_dir() / f"{PHENOMENON_PREFIX}{name}.yaml"


def demo_config(name: str | None = None) -> ExperimentConfig:
    return load_experiment(demo_path(name))


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
    "list_demos",
    "load_experiment",
    "parse_experiment",
    "prepare",
    "run_experiment",
    "run_matrix",
]
