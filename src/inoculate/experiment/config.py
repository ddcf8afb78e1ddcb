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
  inoculate_spanish: {spanish: "<= 0.10", all_caps: ">= 0.70"}
dynamics: {every: 5, conditions: [inoculate_spanish]}   # optional: learning-dynamics monitor
```

A data source may also be `{path: FILE_OR_DATASET, split: NAME}` (a dataset split other than the default).

`load_experiment` validates the whole file before anything is written and reports every problem as
FILE:LINE: FIELD: message: duplicate keys, YAML anchors/aliases (refused: they can expand without
bound), names that are not plain (`[A-Za-z_][A-Za-z0-9_.-]*`, at most 64 characters), condition
names the run folder uses itself (`base`, `screen`, `figures`, ...), sizes beyond the limits below
(`MAX_SEEDS`, `MAX_SAMPLES`, ...), unknown generation backends and options, a missing local model
folder (a hub id `ORG/NAME` is accepted without network access) and secrets written literally
(`api_key:`; name the environment variable with `api_key_env:` instead).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    Tag,
    ValidationError,
    field_validator,
)

from inoculate.errors import InputError, InputErrors
from inoculate.experiment.expect import DEFAULT_EVAL_PROMPT, parse_rule, split_target
from inoculate.experiment.plugins import load_experiment_plugins
from inoculate.experiment.yamlio import LineMap, load_yaml

CONDITION_REF = "@condition"
"""An eval prompt whose value is this evaluates each condition under its own training prompt."""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
"""Names of the experiment, conditions, metrics and eval prompts (matched whole: no newline)."""
MAX_NAME = 64

RESERVED_NAMES = frozenset(
    {
        "base",
        "screen",
        "figures",
        "experiment.json",
        "manifest.json",
        "events.jsonl",
        "summary.csv",
        "per_seed.csv",
        "report.md",
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

_HUB_ID = re.compile(r"(hf:)?[A-Za-z0-9][\w.-]*/[\w.-]+")
"""A Hugging Face hub id `org/name` (allowed without checking the hub: no network at load)."""


def _at_most(limit: int, why: str) -> AfterValidator:
    def check(v: int) -> int:
        if v > limit:
            raise ValueError(f"{v} is too large: at most {limit:,} ({why})")
        return v

    return AfterValidator(check)


SeedValue = Annotated[int, Field(ge=0), _at_most(MAX_SEED_VALUE, "seeds are 32-bit")]


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


class FileData(_Strict):
    """A data file, folder or hub dataset with options: `{path: org/dataset, split: test}`."""

    path: str
    split: str | None = None
    """The dataset split to read (a hub dataset or a parquet/csv/json file read as one)."""


def _str_or_dict(v: Any) -> str | None:
    if isinstance(v, str):
        return "path"
    if isinstance(v, dict):
        return "organism"
    return None


def _data_kind(v: Any) -> str | None:
    if isinstance(v, dict) and "organism" not in v and "path" in v:
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
    Annotated[str, Tag("path")] | Annotated[FileData, Tag("file")] | Annotated[OrganismData, Tag("organism")],
    Discriminator(
        _data_kind,
        custom_error_type="data_source",
        custom_error_message=(
            "expected a file or dataset path, {path: PATH, split: NAME}, or {organism: {setting: NAME, n: N}}"
        ),
    ),
]


class DataSpec(_Strict):
    train: DataSource
    eval: DataSource


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
    conditions: dict[str, dict[str, Any] | None] = Field(min_length=1)
    traits: dict[str, str] = Field(min_length=1)
    capability: dict[str, str] = Field(default_factory=dict)
    seeds: int | list[int]
    eval_prompts: dict[str, str | None] = Field(min_length=1)
    sampling: SamplingSpec
    generation: GenerationSpec = Field(default_factory=GenerationSpec)
    train: dict[str, Any] = Field(default_factory=dict)
    expect: dict[str, dict[str, str]] = Field(default_factory=dict)
    screen: dict[str, Any] | None = None
    """Prompt screening before training (`inoculate.screen.ScreenSpec`): adds the screened condition(s)."""
    dynamics: dict[str, Any] | None = None
    """The learning-dynamics monitor on conditions' training (`inoculate.experiment.monitor.DynamicsSpec`)."""

    _lines: LineMap = PrivateAttr()
    _base_dir: Path = PrivateAttr(default=Path("."))
    _library: dict[str, str] | None = PrivateAttr(default=None)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        msg = _bad_name("experiment", v)
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
        out = {k: ("trait", v) for k, v in self.traits.items()}
        out.update({k: ("capability", v) for k, v in self.capability.items()})
        return out

    def organism_setting(self) -> str | None:
        if self.setting is not None:
            return self.setting
        for src in (self.data.train, self.data.eval):
            if isinstance(src, OrganismData):
                return src.organism.setting
        return None

    def uses_organism(self) -> bool:
        return isinstance(self.model, OrganismModel) or any(
            isinstance(s, OrganismData) for s in (self.data.train, self.data.eval)
        )

    def prompt_library(self) -> dict[str, str]:
        """Names usable as `@name`: the setting's prompt library, then the YAML's own `prompts:`."""
        if self._library is None:
            lib: dict[str, str] = {}
            setting = self.organism_setting()
            if setting is not None:
                from inoculate import organism

                lib.update(organism.prompts(setting))
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

    def condition_spec_data(self, name: str) -> dict[str, Any] | None:
        """A condition's transform fields with `@name` prompts resolved and prompt_file made absolute."""
        raw = self.conditions[name]
        if raw is None:
            return None
        data = dict(raw)
        if isinstance(data.get("prompt"), str):
            data["prompt"] = self._resolve_required(data["prompt"])
        if isinstance(data.get("prompts"), list):
            data["prompts"] = [
                self._resolve_required(p) if isinstance(p, str) else p for p in data["prompts"]
            ]
        pf = data.get("prompt_file")
        if isinstance(pf, str) and not Path(pf).is_absolute():
            data["prompt_file"] = str(self.base_dir / pf)
        return data

    def _resolve_required(self, value: str) -> str:
        text = self.resolve_text(value)
        if text is None:
            raise ValueError(f"{value!r} resolves to an empty prompt")
        return text

    def data_path(self, value: str) -> Path:
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else self.base_dir / p


def parse_experiment(
    data: Any, lines: LineMap, base_dir: str | os.PathLike[str] = ".", *, check: bool = True
) -> ExperimentConfig:
    """Validate parsed YAML; raise `InputErrors` listing every problem with its line."""
    if not isinstance(data, dict):
        raise InputErrors.one(lines.file, 1, "<yaml>", "expected a mapping of experiment fields")
    plugin_errors = load_experiment_plugins(data, lines, base_dir)
    if plugin_errors:
        raise InputErrors(plugin_errors)
    secrets = secret_errors(data, lines)
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise InputErrors(secrets + lines.from_validation(e)) from None
    if secrets:
        raise InputErrors(secrets)
    cfg._lines = lines
    cfg._base_dir = Path(base_dir)
    if check:
        errors = semantic_errors(cfg)
        if errors:
            raise InputErrors(errors)
    return cfg


def load_experiment(path: str | os.PathLike[str], *, check: bool = True) -> ExperimentConfig:
    """Read and validate an experiment YAML (`check` also resolves prompts, scorers and transforms)."""
    data, lines = load_yaml(path)
    return parse_experiment(data, lines, Path(path).resolve().parent, check=check)


def _bad_name(kind: str, name: str) -> str | None:
    if not _NAME.fullmatch(name):
        return f"{kind} name {name!r}: use letters, digits, '_', '-' and '.', starting with a letter or '_'"
    if len(name) > MAX_NAME:
        return f"{kind} name {name[:20]!r}...: at most {MAX_NAME} characters"
    return None


def semantic_errors(cfg: ExperimentConfig) -> list[InputError]:
    """Cross-field checks that need the other modules: prompts resolve, scorers exist, specs validate."""
    from inoculate.train import TrainConfig
    from inoculate.transform import InoculationSpec

    lm = cfg.lines
    errors: list[InputError] = []

    if cfg.uses_organism():
        try:
            import inoculate.organism  # noqa: F401  (registers the organism's scorers)
        except ImportError as e:
            errors.append(lm.error(("model",), f"the built-in organism is unavailable: {e}"))
            return errors
    try:
        cfg.prompt_library()
    except (KeyError, ValueError) as e:
        errors.append(lm.error(("setting",), f"cannot load the prompt library: {e}"))
        return errors
    if cfg.screen is not None:
        from inoculate.screen import screen_errors

        errors.extend(screen_errors(cfg))
    if cfg.dynamics is not None:
        from inoculate.experiment.monitor import dynamics_errors

        errors.extend(dynamics_errors(cfg))

    for kind, names in (
        ("condition", cfg.conditions),
        ("trait", cfg.traits),
        ("capability", cfg.capability),
        ("eval prompt", cfg.eval_prompts),
    ):
        field = {"condition": "conditions", "trait": "traits", "eval prompt": "eval_prompts"}.get(kind, kind)
        for name in names:
            msg = _bad_name(kind, name)
            if msg:
                errors.append(lm.error((field, name), msg))

    for name in set(cfg.traits) & set(cfg.capability):
        errors.append(
            lm.error(("capability", name), f"{name!r} is already a trait; metric names must differ")
        )

    from inoculate.scorers import ScorerError, get_scorer

    for field, table in (("traits", cfg.traits), ("capability", cfg.capability)):
        for name, spec in table.items():
            try:
                get_scorer(spec)
            except (ScorerError, ValueError, ImportError) as e:
                errors.append(lm.error((field, name), str(e)))

    for name, value in cfg.eval_prompts.items():
        if value == CONDITION_REF:
            continue
        try:
            cfg.resolve_text(value)
        except KeyError as e:
            errors.append(lm.error(("eval_prompts", name), e.args[0]))

    for name in cfg.conditions:
        try:
            data = cfg.condition_spec_data(name)
        except (KeyError, ValueError) as e:
            msg = e.args[0] if e.args else str(e)
            errors.append(lm.error(("conditions", name, "prompt"), msg))
            continue
        if data is None:
            continue
        try:
            InoculationSpec.model_validate(data)
        except ValidationError as e:
            errors.extend(lm.from_validation(e, prefix=("conditions", name)))
        except ValueError as e:
            errors.append(lm.error(("conditions", name), str(e)))

    try:
        TrainConfig.model_validate({"output_dir": ".", **cfg.train})
    except ValidationError as e:
        errors.extend(lm.from_validation(e, prefix=("train",)))
    if "output_dir" in cfg.train:
        errors.append(
            lm.error(("train", "output_dir"), "set by the runner (each cell trains into its folder)")
        )
    if "seed" in cfg.train:
        errors.append(lm.error(("train", "seed"), "set by the runner from `seeds`; remove it here"))

    for source_name in ("train", "eval"):
        src = getattr(cfg.data, source_name)
        where: tuple[str, ...] = ("data", source_name)
        if isinstance(src, FileData):
            src, where = src.path, (*where, "path")
        if isinstance(src, str):
            p = cfg.data_path(src)
            if not p.exists() and not _HUB_ID.fullmatch(src):
                errors.append(lm.error(where, f"no such file or folder: {p}"))

    errors.extend(_model_errors(cfg))
    errors.extend(_generation_errors(cfg))
    errors.extend(_condition_folder_errors(cfg))
    errors.extend(_expect_errors(cfg))
    return errors


def _model_errors(cfg: ExperimentConfig) -> list[InputError]:
    """A local model path must exist; anything else must look like a hub id (not looked up: no network)."""
    if not isinstance(cfg.model, str):
        return []
    p = cfg.data_path(cfg.model)
    if p.is_dir():
        return []
    if p.exists():
        return [cfg.lines.error(("model",), f"{p} is a file; expected a model folder or a hub id ORG/NAME")]
    if _HUB_ID.fullmatch(cfg.model) and not cfg.model.startswith("hf:"):
        return []
    return [
        cfg.lines.error(("model",), f"no such model folder: {p} (and {cfg.model!r} is not a hub id ORG/NAME)")
    ]


_POSITIVE_OPTIONS = {"batch_size": 4096, "concurrency": 1024, "max_lora_rank": 1024}
"""Backend options that count something: 1 to this (more sequences at once than fit in 24 GB)."""


def _generation_errors(cfg: ExperimentConfig) -> list[InputError]:
    """The backend is registered and each option is one its constructor takes, of the right type."""
    import typing

    from pydantic import TypeAdapter

    from inoculate.generate.base import INTERNAL_OPTIONS, backend_class, backend_options

    lm = cfg.lines
    name = cfg.generation.backend
    try:
        backend_class(name)
        named, takes_any = backend_options(name)
    except ValueError as e:
        return [lm.error(("generation", "backend"), str(e))]
    except ImportError as e:
        return [lm.error(("generation", "backend"), f"backend {name!r} cannot be loaded: {e}")]
    target = backend_class(name)
    try:
        hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
    except Exception:  # annotations that only resolve under TYPE_CHECKING: check names only
        hints = {}
    errors: list[InputError] = []
    known = ", ".join(sorted(named)) or "none"
    for key, value in cfg.generation.options().items():
        where = ("generation", key)
        if key in INTERNAL_OPTIONS:
            errors.append(lm.error(where, "set by the runner (the base model or each cell's adapter)"))
        elif key not in named:
            if not takes_any:
                errors.append(lm.error(where, f"unknown option for backend {name!r} (known: {known})"))
        elif key in _POSITIVE_OPTIONS and isinstance(value, int) and not 1 <= value <= _POSITIVE_OPTIONS[key]:
            errors.append(lm.error(where, f"{value} is out of range: 1 to {_POSITIVE_OPTIONS[key]:,}"))
        elif key in hints:
            try:
                TypeAdapter(hints[key]).validate_python(value)
            except ValidationError as e:
                msg = e.errors(include_url=False)[0]["msg"]
                errors.append(lm.error(where, f"{msg} (got {value!r})"))
            except Exception:  # a type pydantic cannot check: leave it to the backend
                pass
    return errors


def _condition_folder_errors(cfg: ExperimentConfig) -> list[InputError]:
    """Each condition becomes the folder OUT/<name>: not one of the run folder's own names, and not
    two names that differ only in case (the same folder on macOS and Windows)."""
    lm = cfg.lines
    errors: list[InputError] = []
    seen: dict[str, str] = {}
    for name in cfg.conditions:
        folded = name.casefold()
        if folded in RESERVED_NAMES:
            reserved = ", ".join(sorted(RESERVED_NAMES))
            errors.append(
                lm.error(
                    ("conditions", name), f"{name!r} is reserved in the run folder (reserved: {reserved})"
                )
            )
        elif folded in seen:
            errors.append(
                lm.error(
                    ("conditions", name),
                    f"{name!r} and {seen[folded]!r} differ only in case (the same folder on some systems)",
                )
            )
        seen.setdefault(folded, name)
    return errors


SECRET_KEYS = {"api_key": "OPENAI_API_KEY", "hf_token": "HF_TOKEN", "token": "HF_TOKEN"}
"""Keys that would hold a secret -> the environment variable to use instead."""


def secret_errors(data: Any, lines: LineMap, path: tuple[str, ...] = ()) -> list[InputError]:
    """A secret written into the experiment YAML (it would be copied into experiment.json and every
    cell's config.json) is refused, naming the environment variable to set instead."""
    errors: list[InputError] = []
    if isinstance(data, dict):
        for key, value in data.items():
            sub = (*path, str(key))
            k = str(key).lower()
            env = SECRET_KEYS.get(k) or ("SECRET" if k.endswith(("_api_key", "password", "secret")) else None)
            if env is not None and value not in (None, ""):
                errors.append(
                    lines.error(
                        sub,
                        f"do not write secrets in the experiment file; write `{k}_env: {env}` "
                        f"(the variable's name) and export {env} (read when a request is sent)"
                        if k == "api_key"
                        else f"do not write secrets in the experiment file; export {env} instead",
                    )
                )
            else:
                errors.extend(secret_errors(value, lines, sub))
    elif isinstance(data, list):
        for i, item in enumerate(data):
            errors.extend(secret_errors(item, lines, (*path, str(i))))
    return errors


def screened_conditions(cfg: ExperimentConfig) -> set[str]:
    """The conditions a valid `screen:` block will add (empty if there is none or it is invalid)."""
    if cfg.screen is None:
        return set()
    from pydantic import ValidationError

    from inoculate.screen import ScreenSpec

    try:
        return set(ScreenSpec.model_validate(cfg.screen).condition_names())
    except ValidationError:
        return set()


def _expect_errors(cfg: ExperimentConfig) -> list[InputError]:
    lm = cfg.lines
    errors: list[InputError] = []
    metrics = cfg.metrics()
    conditions = set(cfg.conditions) | screened_conditions(cfg)
    for cond, rules in cfg.expect.items():
        if cond not in conditions:
            errors.append(lm.error(("expect", cond), f"unknown condition {cond!r}"))
            continue
        for key, text in rules.items():
            where = ("expect", cond, key)
            metric, prompt = split_target(key)
            if metric not in metrics:
                errors.append(lm.error(where, f"unknown metric {metric!r} (known: {', '.join(metrics)})"))
            if prompt not in cfg.eval_prompts:
                hint = "" if "@" in key else f" (default {DEFAULT_EVAL_PROMPT!r}; write {metric}@PROMPT)"
                errors.append(lm.error(where, f"unknown eval prompt {prompt!r}{hint}"))
            try:
                rule = parse_rule(text)
            except ValueError as e:
                errors.append(lm.error(where, str(e)))
                continue
            if rule.reference is not None and rule.reference not in conditions:
                errors.append(lm.error(where, f"unknown reference condition {rule.reference!r}"))
    return errors
