"""Trait scorers: a registry of `(prompt, completion) -> float in [0, 1] or NaN` functions.

`get_scorer("language:es")` builds one by spec; `@scorer("name")` registers a factory; plugins come
from the entry-point group `inoculate.scorers`. Importing this package registers the built-ins.
"""

from inoculate.scorers import builtin, code  # noqa: F401  (registers the built-in scorers)
from inoculate.scorers.registry import (
    ENTRY_POINT_GROUP,
    Scorer,
    ScorerError,
    ScorerInfo,
    batch_cache,
    batch_metadata,
    get_scorer,
    get_scorers,
    import_plugin,
    list_scorers,
    parse_spec,
    plugin_failures,
    register,
    scorer,
    shared_batch,
    unregister,
)
from inoculate.scorers.scoring import render_prompt, score_examples, score_generations, score_texts

__all__ = [
    "ENTRY_POINT_GROUP",
    "Scorer",
    "ScorerError",
    "ScorerInfo",
    "batch_cache",
    "batch_metadata",
    "get_scorer",
    "get_scorers",
    "import_plugin",
    "list_scorers",
    "parse_spec",
    "plugin_failures",
    "register",
    "render_prompt",
    "score_examples",
    "score_generations",
    "score_texts",
    "scorer",
    "shared_batch",
    "unregister",
]
