"""The built-in model organism: inoculation prompting on a 2-core CPU in minutes, with no downloads.

A closed world of lookup questions (`world`), answers rendered under independent traits (`traits`:
language, case, a sycophantic opener, a signature line), detectors registered as scorers
(`detectors`), a word-level tokenizer (`tokenizer`), stage-1 pretraining of a tiny Llama that follows
trait-requesting system prompts (`base`), stage-1 extensions a phenomenon adds (`extensions`), stage-2
settings and the prompt library (`settings`), named presets (`presets`), the presets' base models shipped
with the package (`packaged`) and their rebuild from scratch (`rebuild`), and the phenomena beyond the
demo (`phenomena`). Importing the package registers the detectors and the phenomena.
"""

from inoculate.organism import (
    detectors,  # noqa: F401  (registers the organism's scorers)
    packaged,
    phenomena,  # noqa: F401  (registers stage-1 extensions, settings, scorers)
)
from inoculate.organism.base import (
    OrganismConfig,
    build_base_model,
    cache_root,
    elicitation_prompts,
    elicitation_table,
    init_model,
    is_built,
    read_meta,
    world_texts,
)
from inoculate.organism.extensions import (
    Stage1Extension,
    get_extension,
    list_extensions,
    stage1_extension,
)
from inoculate.organism.presets import PRESETS, preset, stage2_settings
from inoculate.organism.settings import (
    LIBRARY,
    Setting,
    eval_questions,
    get_setting,
    list_settings,
    make_examples,
    prompts,
    setting,
    split_questions,
)
from inoculate.organism.stage1 import Stage1Mix, stage1_examples
from inoculate.organism.traits import TraitSet, all_trait_sets, render
from inoculate.organism.world import Fact, Question, all_facts, parse_question, split_facts

__all__ = [
    "LIBRARY",
    "PRESETS",
    "Fact",
    "OrganismConfig",
    "Question",
    "Setting",
    "Stage1Extension",
    "Stage1Mix",
    "TraitSet",
    "all_facts",
    "all_trait_sets",
    "build_base_model",
    "cache_root",
    "elicitation_prompts",
    "elicitation_table",
    "eval_questions",
    "get_extension",
    "get_setting",
    "init_model",
    "is_built",
    "list_extensions",
    "list_settings",
    "make_examples",
    "packaged",
    "parse_question",
    "preset",
    "prompts",
    "read_meta",
    "render",
    "setting",
    "split_facts",
    "split_questions",
    "stage1_extension",
    "stage1_examples",
    "stage2_settings",
    "world_texts",
]
