"""Screen candidate inoculation prompts before training, by registered measures reported side by side.

- `result`: the types (candidates, settings, scores, the result with its columns, CSV and JSON) and
  the measure registry (`@measure`, entry-point group `inoculate.measures`);
- `measures`: the built-in measures, elicitation, surprise and its trait-specific term (their
  definitions are in that module's docstring);
- `rank`: `screen()`: runs the measures, flags placebo-like candidates, ranks and recommends;
- `files`: candidates, contrast pairs and questions from files, and `screen_files` for the CLI.

Rendering lives with its readers: the terminal table in `inoculate.cli.screen_cmds`, the markdown
in `inoculate.report.screen`.
"""

from inoculate.rundir import SCREEN_DIR
from inoculate.screen.files import (
    WITHOUT_TRAIT_KEY,
    candidates_from,
    candidates_from_list,
    contrast_from_examples,
    load_candidates,
    measures_from,
    questions_of,
    screen_files,
)
from inoculate.screen.measures import (
    MeasureContext,
    Measured,
    TraitScorer,
    elicitation_scores,
    response_logprobs,
    surprise_scores,
    teacher_forced,
)
from inoculate.screen.rank import pick_key, pick_value, rank_candidates, screen, with_neutral
from inoculate.screen.result import (
    MEASURE_REGISTRY,
    MEASURES,
    NEUTRAL_NAME,
    Candidate,
    CandidateScore,
    Column,
    ContrastPair,
    Cost,
    Measure,
    MeasureInfo,
    MeasureLabels,
    ScreenConfig,
    ScreenResult,
    all_measures,
    fmt_summary,
    interval,
    measure,
    measure_info,
    selectable_measures,
    selectable_names,
    t_summary,
)

__all__ = [
    "MEASURES",
    "MEASURE_REGISTRY",
    "NEUTRAL_NAME",
    "SCREEN_DIR",
    "WITHOUT_TRAIT_KEY",
    "Candidate",
    "CandidateScore",
    "Column",
    "ContrastPair",
    "Cost",
    "Measure",
    "MeasureContext",
    "MeasureInfo",
    "MeasureLabels",
    "Measured",
    "ScreenConfig",
    "ScreenResult",
    "TraitScorer",
    "all_measures",
    "candidates_from",
    "candidates_from_list",
    "contrast_from_examples",
    "elicitation_scores",
    "fmt_summary",
    "interval",
    "load_candidates",
    "measure",
    "measure_info",
    "measures_from",
    "pick_key",
    "pick_value",
    "questions_of",
    "rank_candidates",
    "response_logprobs",
    "screen",
    "screen_files",
    "selectable_measures",
    "selectable_names",
    "surprise_scores",
    "t_summary",
    "teacher_forced",
    "with_neutral",
]
