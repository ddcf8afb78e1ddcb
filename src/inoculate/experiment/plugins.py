"""The experiment YAML's `plugins:`: modules imported before the rest of the file is validated.

`plugins: [my_pkg.scorers, ./local_setting.py]` imports each module (or `.py` file, relative to the
YAML's folder) so the scorers, organism settings and generation backends it registers by decorator
are known when the traits, data and `generation:` blocks are checked. A plugin that does not import
is reported as FILE:LINE: plugins[i]: why.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inoculate.errors import InputError
from inoculate.registry import PluginError, import_plugin
from inoculate.yamlio import LineMap


def load_experiment_plugins(
    data: Mapping[str, Any], lines: LineMap, base_dir: str | os.PathLike[str] = "."
) -> list[InputError]:
    """Import the modules listed under `plugins:`; one error per plugin that does not import.

    A `plugins:` value of the wrong shape (not a list of strings) is left to the schema to report.
    """
    raw = data.get("plugins")
    if not isinstance(raw, list):
        return []
    errors: list[InputError] = []
    for i, target in enumerate(raw):
        if not isinstance(target, str):
            continue
        if target.strip().endswith(".py") and not Path(target.strip()).is_absolute():
            target = str(Path(base_dir) / target.strip())
        try:
            import_plugin(target)
        except PluginError as e:
            errors.append(InputError(lines.file, lines.line("plugins", i), f"plugins[{i}]", str(e)))
    return errors
