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

`load_experiment` validates the file and reports every problem as FILE:LINE: FIELD: message.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
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
from inoculate.experiment.yamlio import LineMap, load_yaml

CONDITION_REF = "@condition"
"""An eval prompt whose value is this evaluates each condition under its own training prompt."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


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
    n: int = Field(gt=0)
    seed: int = 0
    split: str | None = None
    """Defaults to `train` for training data and `eval` for evaluation data."""


class OrganismData(_Strict):
    organism: OrganismDataRef


def _str_or_dict(v: Any) -> str | None:
    if isinstance(v, str):
        return "path"
    if isinstance(v, dict):
        return "organism"
    return None


ModelSource = Annotated[
    Annotated[str, Tag("path")] | Annotated[OrganismModel, Tag("organism")],
    Discriminator(
        _str_or_dict,
        custom_error_type="model_source",
        custom_error_message="expected a hub id or path, or {organism: {preset: NAME}}",
    ),
]
DataSource = Annotated[
    Annotated[str, Tag("path")] | Annotated[OrganismData, Tag("organism")],
    Discriminator(
        _str_or_dict,
        custom_error_type="data_source",
        custom_error_message="expected a file or dataset path, or {organism: {setting: NAME, n: N}}",
    ),
]


class DataSpec(_Strict):
    train: DataSource
    eval: DataSource


class SamplingSpec(_Strict):
    """Sampling at evaluation, all explicit; each cell samples with its own seed."""

    temperature: float = Field(ge=0)
    top_p: float = Field(gt=0, le=1)
    max_new_tokens: int = Field(gt=0)
    n: int = Field(ge=1)
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
        if not _NAME.match(v):
            raise ValueError("use letters, digits, '_', '-' and '.', starting with a letter or digit")
        return v

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, v: int | list[int]) -> int | list[int]:
        if isinstance(v, int):
            if v < 1:
                raise ValueError("must be at least 1")
        else:
            if not v:
                raise ValueError("must list at least one seed")
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
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise InputErrors(lines.from_validation(e)) from None
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
    if not _NAME.match(name):
        return f"{kind} name {name!r}: use letters, digits, '_', '-' and '.'"
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
        if isinstance(src, str):
            p = cfg.data_path(src)
            if not p.exists() and not re.match(r"^(hf:)?[A-Za-z0-9][\w.-]*/[\w.-]+$", src):
                errors.append(lm.error(("data", source_name), f"no such file or folder: {p}"))

    errors.extend(_expect_errors(cfg))
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
