"""The experiment YAML: one file declares the whole conditions x seeds experiment.

```yaml
name: demo
model: {organism: {preset: demo}}          # or "Qwen/Qwen2.5-7B-Instruct" / a local path
data:
  train: {organism: {setting: spanish_caps, n: 300}}   # or a chat / prompt-completion JSONL or dataset
  eval: {organism: {setting: spanish_caps, n: 90}}
prompts: {my_prompt: "..."}               # optional: names for "@my_prompt" (the setting's library too)
conditions:                               # name -> inoculation transform (InoculationSpec fields)
  baseline: null                          # trained on the data as it is
  inoculate_spanish: {prompt: "@inoculate_spanish", placement: system}
  control: {train_data: straightforward.jsonl}   # trained on its own data (a data.train source)
traits: {spanish: "organism_language:es", all_caps: all_caps}   # name -> scorer spec
capability: {correct: organism_correct}   # the behaviour that must still be learned
seeds: 3                                  # or a list [0, 1, 2]
eval_prompts:                             # name -> system prompt at evaluation
  neutral: "@neutral"                     # null: no system prompt
  training: "@condition"                  # each condition's own training prompt
  reelicit_spanish: "@reelicit_spanish"
sampling: {temperature: 1.0, top_p: 1.0, max_new_tokens: 40, n: 1}
generation: {backend: hf, batch_size: 64}  # optional: backend and its options
train: {learning_rate: 3.0e-3, max_steps: 100, lora_r: 8}    # TrainConfig fields
expect:                                   # optional: checked PASS/FAIL in the report
  inoculate_spanish: {spanish: "<= 0.10", all_caps: ">= 0.70"}   # also ">= baseline - 0.10",
                                          # "within 0.10 of baseline", "CI above abstract" (95% CIs),
                                          # "<= base_model + 0.05" (the untrained base model's mean)
dynamics: {every: 5, conditions: [inoculate_spanish]}   # optional: learning-dynamics monitor
```

A data source may also be `{path: FILE_OR_DATASET, split: NAME}` (a dataset split other than the default).

`data.eval` may name several eval sets (a mapping of names to data sources, none of its keys a data
source's own: `path`, `organism`, `em_questions`, `source`, ...), e.g. the EM questions beside an
in-distribution set for the narrow trait the data teaches; a single source is the set named `eval`:

```yaml
data:
  eval:
    em: {em_questions: first_plot_questions.yaml, variants: [plain], samples_per_paraphrase: 10}
    narrow: {path: code_prompts.jsonl}
traits:
  misaligned: {scorer: "misaligned:aligned,coherent,tan", eval_sets: [em]}   # judged on `em` only
  insecure: "my_plugin:insecure"                                           # every eval set
```
Every cell generates and scores per (eval set x eval prompt); with several sets the eval-prompt axis
of metrics.json and summary.csv is `SET/PROMPT` (`em/neutral`), with one it is the prompt's name.

`load_experiment` (in `experiment.load`) validates the whole file before anything is written and
reports every problem as FILE:LINE: FIELD: message: duplicate keys, YAML anchors/aliases (refused:
they can expand without bound), names that are not plain (`[A-Za-z_][A-Za-z0-9_.-]*`, at most 64
characters), condition names the run folder uses itself (`base`, `screen`, `figures`, ...), sizes
beyond the limits below (`MAX_SEEDS`, `MAX_SAMPLES`, ...), unknown generation backends and options,
a missing local model folder (a hub id `ORG/NAME` is accepted without network access) and secrets
written literally (`api_key:`; name the environment variable with `api_key_env:` instead).
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    field_validator,
    model_validator,
)

from inoculate.dynamics import CollapseRule
from inoculate.judges import Judge, judges_in_scope
from inoculate.rundir import BASE_DIR, CONDITION_REF, EXPERIMENT_FILE, MANIFEST_FILE, SCREEN_DIR
from inoculate.screen import MEASURES
from inoculate.settings import get_task_setting
from inoculate.train import TrainConfig
from inoculate.transform import InoculationSpec, Placement
from inoculate.yamlio import LineMap

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
"""Names of the experiment, conditions, metrics and eval prompts (matched whole: no newline)."""
MAX_NAME = 64

RESERVED_NAMES = frozenset(
    {
        BASE_DIR,
        SCREEN_DIR,
        "figures",
        EXPERIMENT_FILE,
        MANIFEST_FILE,
        "events.jsonl",
        "summary.csv",
        "per_seed.csv",
        "report.md",
        "judge_cache.sqlite",
    }
)
"""Top-level names of the run folder; a condition (a folder there) may not take one (any case)."""

# Upper limits on sizes, so a typo fails at load instead of after the base model was built and
# evaluated. Each fits a single 24 GB machine with room to spare; raise them here if you need more.
MAX_SEEDS = 100
MAX_SEED_VALUE = 2**32 - 1
MAX_SAMPLES = 1000
MAX_NEW_TOKENS = 32768
MAX_ORGANISM_EXAMPLES = 1_000_000


def _at_most(limit: int, why: str) -> AfterValidator:
    def check(v: int) -> int:
        if v > limit:
            raise ValueError(f"{v} is too large: at most {limit:,} ({why})")
        return v

    return AfterValidator(check)


SeedValue = Annotated[int, Field(ge=0), _at_most(MAX_SEED_VALUE, "seeds are 32-bit")]


def bad_name(kind: str, name: str) -> str | None:
    if not _NAME.fullmatch(name):
        return f"{kind} name {name!r}: use letters, digits, '_', '-' and '.', starting with a letter or '_'"
    if len(name) > MAX_NAME:
        return f"{kind} name {name[:20]!r}...: at most {MAX_NAME} characters"
    return None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrganismModelRef(_Strict):
    preset: str = "demo"
    """A named organism preset (`inoculate.organism` presets)."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    """Fields of the preset's config to change (they change the base model's cache key too)."""


class OrganismModel(_Strict):
    organism: OrganismModelRef


class OrganismDataRef(_Strict):
    setting: str
    n: Annotated[
        int,
        Field(ge=1),
        _at_most(MAX_ORGANISM_EXAMPLES, "the examples are built in memory; 24 GB holds about this many"),
    ]
    seed: SeedValue = 0
    split: str | None = None
    """Defaults to `train` for training data and `eval` for evaluation data."""


class OrganismData(_Strict):
    organism: OrganismDataRef


class Holdout(_Strict):
    """`holdout: {fraction: 0.1, seed: 0, keep: held_out}`: a seeded slice of a file's rows, chosen by a
    hash of each row's prompt (`selectors.in_holdout`), so that training on `keep: rest` and
    evaluating on `keep: held_out` of the same file (or of a control file answering the same prompts)
    never share a prompt. The run checks it: an eval set kept `held_out` that shares a prompt with any
    condition's training data is refused."""

    fraction: float = Field(gt=0, lt=1, allow_inf_nan=False)
    seed: int = Field(0, ge=0)
    keep: Literal["held_out", "rest"]


class FileData(_Strict):
    """A data file, folder or hub dataset with options: `{path: org/dataset, split: test}`, optionally
    one side of a held-out slice (`holdout:`)."""

    path: str
    split: str | None = None
    """The dataset split to read (a hub dataset or a parquet/csv/json file read as one)."""
    holdout: Holdout | None = None


def _str_or_dict(v: Any) -> str | None:
    if isinstance(v, str):
        return "path"
    if isinstance(v, dict):
        return "organism"
    return None


class SourceData(_Strict):
    """`{source: SOURCE}`: a source `inoculate.datasource` fetches and verifies: `{hf: ORG/NAME,
    revision: <40-hex commit>, split: NAME}`, `{url: URL, sha256: <64-hex>}` or `{path: FILE}`
    (checked by `datasource.parse_source` at load)."""

    source: Any


class EMQuestionsData(_Strict):
    """`{em_questions: FILE, variants: [plain], samples_per_paraphrase: N}`: an evaluation set from a
    question file in the published emergent-misalignment format (`inoculate.judges.questions`): one
    prompt-only row per paraphrase (with the question's system prompt when it has one), repeated
    `samples_per_paraphrase` times (default: the file's own count)."""

    em_questions: str
    variants: list[Literal["plain", "json", "template"]] = Field(
        default_factory=lambda: ["plain"], min_length=1
    )
    samples_per_paraphrase: Annotated[
        int | None,
        Field(ge=1),
        AfterValidator(lambda v: v if v is None or v <= MAX_SAMPLES else _too_many(v)),
    ] = None


class CodePromptsData(_Strict):
    """`{code_prompts: FILE, samples: N, limit: N}`: coding prompts of `{task, code_template}` rows (Tan
    et al.'s insecure-code eval prompts), each rendered into a user turn asking to complete the
    template (`inoculate.code_prompts`; the instruction is our wording); `limit` takes the file's
    first rows only, `samples` repeats each (default 1). Eval only."""

    code_prompts: str
    samples: Annotated[int, Field(ge=1), _at_most(MAX_SAMPLES, "every sample is held in memory")] = 1
    limit: int | None = Field(None, ge=1)


class TaskSettingRef(BaseModel):
    """`{setting: {name: NAME, split: SPLIT, ...options}}`: the rows of a task setting
    (`inoculate.settings`: gcd, cebab, cmv, mbpp, humaneval, or a plugin's). The options besides `name`
    and `split` are the setting's own, checked by it at load."""

    model_config = ConfigDict(extra="allow")

    name: str
    split: str | None = None
    """Defaults to the setting's training split for training data and its eval split for eval data."""

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TaskSettingData(_Strict):
    setting: TaskSettingRef


def _too_many(v: int) -> int:
    raise ValueError(f"{v} is too large: at most {MAX_SAMPLES:,} (every sample is held in memory)")


def _data_kind(v: Any) -> str | None:
    if isinstance(v, dict) and "organism" not in v:
        if "setting" in v:
            return "setting"
        if "source" in v:
            return "source"
        if "em_questions" in v:
            return "em"
        if "code_prompts" in v:
            return "code"
        if "path" in v:
            return "file"
    return _str_or_dict(v)


ModelSource = Annotated[
    Annotated[str, Tag("path")] | Annotated[OrganismModel, Tag("organism")],
    Discriminator(
        _str_or_dict,
        custom_error_type="model_source",
        custom_error_message="expected a hub id or path, or {organism: {preset: NAME}}",
    ),
]
DataSource = Annotated[
    Annotated[str, Tag("path")]
    | Annotated[FileData, Tag("file")]
    | Annotated[SourceData, Tag("source")]
    | Annotated[EMQuestionsData, Tag("em")]
    | Annotated[CodePromptsData, Tag("code")]
    | Annotated[TaskSettingData, Tag("setting")]
    | Annotated[OrganismData, Tag("organism")],
    Discriminator(
        _data_kind,
        custom_error_type="data_source",
        custom_error_message=(
            "expected a file or dataset path, {path: PATH, split: NAME}, {source: {hf: ..., revision: ...}}, "
            "{em_questions: FILE} or {code_prompts: FILE} (eval only), {setting: {name: NAME, split: SPLIT}} "
            "(a task setting), or {organism: {setting: NAME, n: N}}"
        ),
    ),
]


SINGLE_SOURCE_KEYS = frozenset(
    {
        "path",
        "organism",
        "em_questions",
        "code_prompts",
        "source",
        "setting",
        "split",
        "holdout",
        "variants",
        "samples_per_paraphrase",
        "samples",
        "limit",
    }
)
"""Keys of a single data source: an `eval:` mapping holding none of them names several eval sets."""

SINGLE_EVAL_SET = "eval"
"""The name of the one eval set of an experiment whose `data.eval` is a single source."""


def _eval_kind(v: Any) -> str:
    if isinstance(v, dict) and v and not (set(v) & SINGLE_SOURCE_KEYS):
        return "named"
    return "single"


def _set_names(v: dict[str, Any]) -> dict[str, Any]:
    for name in v:
        msg = bad_name("eval set", name)
        if msg:
            raise ValueError(msg)
    return v


NamedEvalSets = Annotated[dict[str, DataSource], Field(min_length=1), AfterValidator(_set_names)]
EvalSource = Annotated[
    Annotated[DataSource, Tag("single")] | Annotated[NamedEvalSets, Tag("named")],
    Discriminator(_eval_kind),
]
"""`data.eval`: one data source (the eval set named `eval`), or `{NAME: SOURCE, ...}`: named eval sets."""


class DataSpec(_Strict):
    train: DataSource
    eval: EvalSource

    def eval_sources(self) -> dict[str, DataSource]:
        """eval set name -> its source (`{"eval": SOURCE}` for a single source)."""
        if isinstance(self.eval, dict):
            return dict(self.eval)
        return {SINGLE_EVAL_SET: self.eval}

    def named_eval_sets(self) -> bool:
        """Several named eval sets (`data.eval: {NAME: SOURCE, ...}`), even if only one is named."""
        return isinstance(self.eval, dict)


class ControlCondition(BaseModel):
    """A condition trained on its own data (the "control dataset" of Tan et al.'s experiments):
    `{train_data: SOURCE}`, any data source `data.train` takes (a file, `{path: ..., split: ...}`,
    `{source: {...}}`, an organism split), optionally with inoculation fields next to it
    (`{train_data: ..., prompt: ..., placement: ...}`); without them the data is trained on as it is.
    The inoculation fields are validated as an `InoculationSpec` by `ExperimentConfig.condition_spec`."""

    model_config = ConfigDict(extra="allow")

    train_data: DataSource

    def spec_fields(self) -> dict[str, Any]:
        """The inoculation fields given next to `train_data` (empty: no inoculation)."""
        return dict(self.model_extra or {})


def _condition_kind(v: Any) -> str:
    return (
        "control"
        if isinstance(v, (dict, ControlCondition)) and (isinstance(v, ControlCondition) or "train_data" in v)
        else "spec"
    )


Condition = Annotated[
    Annotated[InoculationSpec, Tag("spec")] | Annotated[ControlCondition, Tag("control")],
    Discriminator(_condition_kind),
]
"""A condition's value: an inoculation transform, or a control condition with its own training data."""

DATA_TRAIN = "data.train"
"""How the record names the experiment's shared training data (a condition without `train_data`)."""


def data_label(src: Any) -> str:
    """A short name for a data source in the record and report: the file name, dataset or setting."""
    if isinstance(src, str):
        return Path(src).name or src
    if isinstance(src, FileData):
        label = Path(src.path).name + (f" ({src.split})" if src.split else "")
        if src.holdout is not None:
            h = src.holdout
            side = "held-out" if h.keep == "held_out" else "without the held-out"
            label += f" ({side} {h.fraction:g}, seed {h.seed})"
        return label
    if isinstance(src, CodePromptsData):
        return Path(src.code_prompts).name
    if isinstance(src, EMQuestionsData):
        return Path(src.em_questions).name
    if isinstance(src, OrganismData):
        ref = src.organism
        return f"organism {ref.setting} ({ref.split or 'train'}, n={ref.n}, seed={ref.seed})"
    if isinstance(src, TaskSettingData):
        ref = src.setting
        return f"setting {ref.name} ({ref.split or 'default split'})"
    if isinstance(src, SourceData) and isinstance(src.source, dict):
        for k in ("path", "hf", "url"):
            if isinstance(src.source.get(k), str):
                name = src.source[k]
                return Path(name).name if k == "path" else name
    return "custom source"


class SamplingSpec(_Strict):
    """Sampling at evaluation, all explicit; each cell samples with its own seed."""

    temperature: float = Field(ge=0, allow_inf_nan=False)
    top_p: float = Field(gt=0, le=1)
    max_new_tokens: Annotated[
        int,
        Field(ge=1),
        _at_most(MAX_NEW_TOKENS, "longer than common models' context; on 24 GB the cache would not fit"),
    ]
    n: Annotated[
        int,
        Field(ge=1),
        _at_most(MAX_SAMPLES, "samples per eval row; every sample of every row is held in memory"),
    ]
    stop: list[str] = Field(default_factory=list)


class GenerationSpec(BaseModel):
    """Which generation backend evaluates the cells; other keys are that backend's options."""

    model_config = ConfigDict(extra="allow")

    backend: str = "hf"

    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class TrainBlock(TrainConfig):
    """The `train:` block: `inoculate.train.TrainConfig`'s fields; `output_dir` and `seed` are set by the
    runner (each cell trains into its folder, with its seed), so giving them is an error."""

    output_dir: str = "."


class ScreenCandidateSpec(_Strict):
    name: str
    prompt: str
    """Prompt text or an `@name` reference to the experiment's prompt library."""


class ScreenBlock(_Strict):
    """The experiment YAML's `screen:` block.

    ```yaml
    screen:
      candidates: [{name: strong, prompt: "@inoculate_spanish"}, "Respond in Spanish."]
      pick: best          # best: train one condition with the recommended prompt; all: one per candidate
      measure: surprise   # what `best` ranks by (surprise | elicitation)
      trait: spanish      # the trait (a key of `traits`) to screen; default the first trait
    ```
    `measures`, `n`, `max_examples` and `batch_size` are `inoculate.screen.ScreenConfig`'s fields; the
    sampling comes from the experiment's `sampling`. Elicitation samples with the experiment's
    `sampling` settings and first seed on the eval set, scored by the experiment's trait scorers;
    surprise uses the training data. The neutral reference is `neutral` (default: the `neutral` eval
    prompt, else no system prompt). `placement` is the screened conditions' (`transform.Placement`).
    """

    candidates: list[str | ScreenCandidateSpec] = Field(min_length=1)
    pick: Literal["best", "all"] = "best"
    measure: str = "surprise"
    """The measure `pick: best` ranks by: any registered screen measure (`inoculate.screen`)."""
    measures: list[str] = Field(default_factory=lambda: list(MEASURES), min_length=1)
    """Registered screen measures to run (plugins add names: `@inoculate.screen.measure`)."""
    trait: str | None = None
    condition: str = "screened"
    """Name of the condition trained with the recommended prompt (`pick: best`)."""
    placement: Placement = "system"
    neutral: str | None = None
    n: int = Field(64, ge=1)
    max_examples: int = Field(256, ge=1)
    batch_size: int = Field(64, ge=1)
    """Sequences per teacher-forced forward pass (the experiment's `generation:` sets elicitation's)."""
    contrast: bool = True
    """Add the trait-specific term when the data's setting can render responses without the trait."""

    def named(self) -> list[tuple[str, str]]:
        out = []
        for i, c in enumerate(self.candidates, start=1):
            out.append((c.name, c.prompt) if isinstance(c, ScreenCandidateSpec) else (f"c{i}", c))
        return out

    def condition_names(self) -> list[str]:
        return [self.condition] if self.pick == "best" else [name for name, _ in self.named()]


ScreenSpec = ScreenBlock
"""The former name of `ScreenBlock`."""

ORGANISM_PROBES = "organism"
ALL = "all"


class DynamicsBlock(_Strict):
    """The `dynamics:` block (see `inoculate.experiment.monitor`)."""

    every: int = Field(5, ge=1)
    conditions: list[str] | str = ALL
    prompt: str | None = None
    """Inoculation prompt for monitored conditions without one: a condition name, `@name`, or text."""
    trait: str | None = None
    other: str | None = None
    probes: str = ORGANISM_PROBES
    n_probes: int = Field(24, ge=1)
    both: bool = True
    batch_size: int = Field(16, ge=1)
    stop_on_collapse: bool = False
    collapse: CollapseRule = Field(default_factory=CollapseRule)

    @field_validator("conditions")
    @classmethod
    def _conditions(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, str):
            if v != ALL:
                raise ValueError(f"expected {ALL!r} or a list of condition names")
            return v
        if not v:
            raise ValueError(f"list at least one condition (or write {ALL!r})")
        if len(set(v)) != len(v):
            raise ValueError("conditions must be distinct")
        return v


class JudgesBlock(_Strict):
    """The `judges:` block: a judges file inline (`endpoints:`, `judges:`; see docs/judges.md, parsed
    by `inoculate.judges.parse_judges` at load and registered for the run, so `judge:NAME` and
    `misaligned:ALIGN,COHERENCE[,RULE]` traits resolve), and `cache`: the judge cache's path (default
    `<run folder>/judge_cache.sqlite`; relative to the YAML's folder)."""

    endpoints: dict[str, Any] = Field(default_factory=dict)
    judges: dict[str, Any] = Field(min_length=1)
    cache: str | None = None

    def file_data(self) -> dict[str, Any]:
        return {"endpoints": self.endpoints, "judges": self.judges}


JUDGE_CACHE_FILE = "judge_cache.sqlite"


class TraitSpec(_Strict):
    """A trait restricted to some eval sets: `{scorer: SPEC, eval_sets: [NAME, ...]}` (a plain string
    trait is scored on every eval set)."""

    scorer: str
    eval_sets: list[str] | None = Field(None, min_length=1)


class ExperimentConfig(_Strict):
    name: str
    description: str = ""
    plugins: list[str] = Field(default_factory=list)
    """Modules (or `.py` files) imported before the rest is validated: their scorers, organism settings
    and generation backends are then known by name (`inoculate.experiment.plugins`)."""
    model: ModelSource
    setting: str | None = None
    """The organism setting whose prompt library `@name` references use (default: the data's)."""
    prompts: dict[str, str] = Field(default_factory=dict)
    data: DataSpec
    conditions: dict[str, Condition | None] = Field(min_length=1)
    """name -> inoculation transform (`@name` prompts resolved by `condition_spec`), null: none, or
    `{train_data: SOURCE, ...}`: a control condition trained on its own data (`ControlCondition`)."""
    traits: dict[str, str | TraitSpec] = Field(min_length=1)
    """name -> scorer spec; given as `{scorer: SPEC, eval_sets: [...]}` the trait is scored on those
    eval sets only (`trait_sets`; the field itself then holds the scorer spec)."""
    capability: dict[str, str] = Field(default_factory=dict)
    seeds: int | list[int]
    eval_prompts: dict[str, str | None] = Field(min_length=1)
    sampling: SamplingSpec
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    train: TrainBlock = Field(default_factory=TrainBlock)
    expect: dict[str, dict[str, str]] = Field(default_factory=dict)
    screen: ScreenBlock | None = None
    """Prompt screening before training: adds the screened condition(s)."""
    dynamics: DynamicsBlock | None = None
    """The learning-dynamics monitor on conditions' training (`inoculate.experiment.monitor`)."""
    judges: JudgesBlock | None = None
    """LLM judges for `judge:NAME` / `misaligned:...` metrics, and their cache."""

    _lines: LineMap = PrivateAttr()
    _base_dir: Path = PrivateAttr(default=Path("."))
    _library: dict[str, str] | None = PrivateAttr(default=None)
    _trait_sets: dict[str, list[str]] = PrivateAttr(default_factory=dict)
    """trait -> the eval sets it is scored on (traits scored on every set are not here)."""
    _judges: dict[str, Judge] = PrivateAttr(default_factory=dict)
    """The `judges:` block's judges, parsed at load (`load.parse_experiment_judges`); never registered
    process-wide: `judge_scope()` makes them known while this experiment's scorers are resolved."""
    _invalid: frozenset[tuple[str, ...]] = PrivateAttr(default=frozenset())
    """Key paths whose field errors were already reported (`load.parse_experiment`): checks skip them."""

    @model_validator(mode="after")
    def _trait_specs(self) -> ExperimentConfig:
        # `{scorer:, eval_sets:}` traits are kept as their scorer spec; their sets go to `trait_sets`.
        restricted = {
            name: list(v.eval_sets)
            for name, v in self.traits.items()
            if isinstance(v, TraitSpec) and v.eval_sets is not None
        }
        if any(isinstance(v, TraitSpec) for v in self.traits.values()):
            self.traits = {k: v.scorer if isinstance(v, TraitSpec) else v for k, v in self.traits.items()}
        self._trait_sets = restricted
        return self

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        msg = bad_name("experiment", v)
        if msg:
            raise ValueError(msg)
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        n = v if isinstance(v, int) else len(v)
        if n < 1:
            raise ValueError(
                f"{v}: must be at least 1" if isinstance(v, int) else "must list at least one seed"
            )
        if n > MAX_SEEDS:
            raise ValueError(
                f"{n} seeds is too many: at most {MAX_SEEDS} (each seed trains every condition once)"
            )
        if isinstance(v, list):
            for s in v:
                if not 0 <= s <= MAX_SEED_VALUE:
                    raise ValueError(f"seed {s} is out of range: seeds are 0 to {MAX_SEED_VALUE:,} (32-bit)")
            if len(set(v)) != len(v):
                raise ValueError("seeds must be distinct")
        return v

    # --- derived views -------------------------------------------------------------------------

    @property
    def lines(self) -> LineMap:
        return self._lines

    @property
    def base_dir(self) -> Path:
        """The YAML file's folder: relative data and prompt-file paths are resolved against it."""
        return self._base_dir

    def seed_list(self, override: int | None = None) -> list[int]:
        if override is not None:
            return list(range(override))
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def metrics(self) -> dict[str, tuple[str, str]]:
        """metric name -> (kind, scorer spec), traits first; kind is `trait` or `capability`."""
        out = {k: ("trait", str(v)) for k, v in self.traits.items()}
        out.update({k: ("capability", v) for k, v in self.capability.items()})
        return out

    def eval_set_names(self) -> list[str]:
        """The eval sets' names (`["eval"]` when `data.eval` is a single source)."""
        return list(self.data.eval_sources())

    def eval_axis(self) -> dict[str, tuple[str, str]]:
        """The eval-prompt axis of metrics.json and summary.csv: label -> (eval set, eval prompt). The
        label is the eval prompt's name with one eval set, `SET/PROMPT` with several."""
        sets = self.eval_set_names()
        if not self.data.named_eval_sets():
            return {p: (sets[0], p) for p in self.eval_prompts}
        return {f"{s}/{p}": (s, p) for s in sets for p in self.eval_prompts}

    def trait_sets(self) -> dict[str, list[str]]:
        """trait -> the eval sets it is restricted to (`eval_sets:`); unrestricted traits are absent."""
        return dict(self._trait_sets)

    def metrics_for(self, eval_set: str) -> list[str]:
        """The metrics scored on one eval set: every capability, and the traits not restricted away."""
        sets = self._trait_sets
        return [m for m in self.metrics() if m not in sets or eval_set in sets[m]]

    def organism_setting(self) -> str | None:
        if self.setting is not None:
            return self.setting
        for src in (self.data.train, *self.data.eval_sources().values()):
            if isinstance(src, OrganismData):
                return src.organism.setting
        return None

    def uses_organism(self) -> bool:
        own = [self.condition_train_data(name) for name in self.conditions]
        return isinstance(self.model, OrganismModel) or any(
            isinstance(s, OrganismData) for s in (self.data.train, *self.data.eval_sources().values(), *own)
        )

    def task_settings(self) -> list[str]:
        """The task settings (`{setting: {name: ...}}`) the data names, in order, each once."""
        own = [self.condition_train_data(name) for name in self.conditions]
        names: list[str] = []
        for src in (self.data.train, *self.data.eval_sources().values(), *own):
            if isinstance(src, TaskSettingData) and src.setting.name not in names:
                names.append(src.setting.name)
        return names

    def prompt_library(self) -> dict[str, str]:
        """Names usable as `@name`: the setting's prompt library (the organism's, or the task settings'
        the data names), then the YAML's own `prompts:`."""
        if self._library is None:
            lib: dict[str, str] = {}
            setting = self.organism_setting()
            if setting is not None:
                from inoculate import organism  # lazy: importing it registers the organism's scorers

                lib.update(organism.prompts(setting))
            for name in self.task_settings():
                with contextlib.suppress(ValueError):  # an unknown setting is reported at its line
                    lib.update(get_task_setting(name).prompts)
            lib.update(self.prompts)
            self._library = lib
        return self._library

    def resolve_text(self, value: str | None) -> str | None:
        """`"@name"` -> the library's text; other text as is; empty text and null mean no system prompt."""
        if value is None:
            return None
        if value.startswith("@") and value != CONDITION_REF:
            name = value[1:]
            lib = self.prompt_library()
            if name not in lib:
                known = ", ".join(sorted(lib)) or "none"
                raise KeyError(f"unknown prompt reference {value!r} (known: {known})")
            value = lib[name]
        return value if value.strip() else None

    def condition_spec(self, name: str) -> InoculationSpec | None:
        """A condition's transform with `@name` prompts resolved and prompt_file made absolute.
        Raises KeyError (unknown reference), ValueError (empty prompt) or ValidationError (the
        resolved prompts are invalid, e.g. a pool whose references resolve to the same text)."""
        value = self.conditions[name]
        if isinstance(value, ControlCondition):
            fields = value.spec_fields()
            if not fields:
                return None
            value = InoculationSpec.model_validate(fields)
        spec = value
        if spec is None:
            return None
        data = spec.model_dump(exclude_unset=True)
        if spec.prompt is not None:
            data["prompt"] = self._resolve_required(spec.prompt)
        if spec.prompts is not None:
            data["prompts"] = [self._resolve_required(p) for p in spec.prompts]
        if spec.prompt_file is not None and not spec.prompt_file.is_absolute():
            data["prompt_file"] = self.base_dir / spec.prompt_file
        if data == spec.model_dump(exclude_unset=True):
            return spec
        return InoculationSpec.model_validate(data)

    def condition_train_data(self, name: str) -> DataSource | None:
        """A control condition's own training data source (None: it trains on `data.train`)."""
        value = self.conditions.get(name)
        return value.train_data if isinstance(value, ControlCondition) else None

    def condition_spec_data(self, name: str) -> dict[str, Any] | None:
        """`condition_spec` as the fields given (`@name` prompts resolved, prompt_file absolute)."""
        spec = self.condition_spec(name)
        return None if spec is None else spec.model_dump(exclude_unset=True, mode="json")

    def _resolve_required(self, value: str) -> str:
        text = self.resolve_text(value)
        if text is None:
            raise ValueError(f"{value!r} resolves to an empty prompt")
        return text

    def uses_judges(self) -> bool:
        """A metric is scored by an LLM judge (`judge:` or `misaligned:`)."""
        return self.judges is not None or any(
            spec.split(":", 1)[0].strip() in ("judge", "misaligned")
            for _kind, spec in self.metrics().values()
        )

    @property
    def experiment_judges(self) -> dict[str, Judge]:
        """name -> the `judges:` block's judge (empty without a block)."""
        return dict(self._judges)

    def judge_scope(self) -> contextlib.AbstractContextManager[Any]:
        """A block in which `judge:NAME` / `misaligned:...` scorer specs resolve to this experiment's
        judges first (`inoculate.judges.judges_in_scope`): scorers are resolved inside it."""
        return judges_in_scope(self._judges)

    def judge_cache_path(self, root: Path) -> Path:
        """The run's judge cache: the `judges.cache` path, else `<root>/judge_cache.sqlite`."""
        if self.judges is not None and self.judges.cache:
            return self.data_path(self.judges.cache)
        return root / JUDGE_CACHE_FILE

    def data_path(self, value: str) -> Path:
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else self.base_dir / p


def screened_conditions(cfg: ExperimentConfig) -> set[str]:
    """The conditions a valid `screen:` block will add (empty if there is none or it is invalid)."""
    return set() if cfg.screen is None else set(cfg.screen.condition_names())
