"""inoculate: inoculation prompting for LLM fine-tuning (Tan et al. 2025; Wichers et al. 2025).

The main nouns, importable from here and loaded on first use (so `import inoculate` stays light
and imports no torch):

- `apply_inoculation`, `neutralize`: add an inoculation prompt to training rows / take it back out
- `screen`: rank candidate prompts before training
- `train`: fine-tune (LoRA or full) on chat examples
- `get_backend`, `get_scorer`: a generation backend / a trait scorer by name (registries)
- `load_experiment`, `run_experiment`, `write_report`: the experiment YAML, run, and report

`inoculate.train` and `inoculate.screen` name the functions; their modules are reached with
`from inoculate.train import TrainConfig` or `from inoculate.screen import ScreenConfig`.
"""

from __future__ import annotations

import importlib
import sys
import types
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("inoculate")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+local"

if TYPE_CHECKING:
    from inoculate.experiment import load_experiment, run_experiment
    from inoculate.generate import get_backend
    from inoculate.report import write_report
    from inoculate.scorers import get_scorer
    from inoculate.screen import screen
    from inoculate.train import train
    from inoculate.transform import apply_inoculation, neutralize

_FACE = {
    "apply_inoculation": "inoculate.transform",
    "neutralize": "inoculate.transform",
    "screen": "inoculate.screen",
    "train": "inoculate.train",
    "get_backend": "inoculate.generate",
    "get_scorer": "inoculate.scorers",
    "load_experiment": "inoculate.experiment",
    "run_experiment": "inoculate.experiment",
    "write_report": "inoculate.report",
}

__all__ = [
    "__version__",
    "apply_inoculation",
    "get_backend",
    "get_scorer",
    "load_experiment",
    "neutralize",
    "run_experiment",
    "screen",
    "train",
    "write_report",
]


def __getattr__(name: str) -> Any:
    """PEP 562: import a face name's module the first time the name is asked for."""
    if name in _FACE:
        value = getattr(importlib.import_module(_FACE[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'inoculate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_FACE))


class _Face(types.ModuleType):
    """The package module: importing the `train` or `screen` submodule does not rebind the face's
    function of the same name to the module (as the import system otherwise would)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FACE and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Face
