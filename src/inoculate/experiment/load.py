"""Load an experiment YAML: parse it into `ExperimentConfig`, then the cross-field checks that need
the other modules (prompts resolve, scorers exist, transforms and training options validate, the
`screen:` and `dynamics:` blocks, `expect:` rules), every problem as FILE:LINE: FIELD: message."""

from __future__ import annotations

import os
import re
import typing
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from inoculate.datasource import parse_source
from inoculate.errors import InputError, InputErrors
from inoculate.experiment.config import (
    RESERVED_NAMES,
    CodePromptsData,
    EMQuestionsData,
    ExperimentConfig,
    FileData,
    OrganismModel,
    SourceData,
    TaskSettingData,
    bad_name,
    screened_conditions,
)
from inoculate.experiment.monitor import dynamics_errors
from inoculate.experiment.plugins import load_experiment_plugins
from inoculate.experiment.screening import screen_errors
from inoculate.generate.base import INTERNAL_OPTIONS, backend_class, backend_options
from inoculate.judges import parse_judges
from inoculate.judges.questions import load_question_set
from inoculate.report.expect import BASE_MODEL, DEFAULT_EVAL_PROMPT, parse_rule, split_target
from inoculate.rundir import CONDITION_REF
from inoculate.scorers import ScorerError, get_scorer
from inoculate.settings import get_task_setting
from inoculate.transform import InoculationSpec
from inoculate.yamlio import LineMap, load_yaml

_HUB_ID = re.compile(r"(hf:)?[A-Za-z0-9][\w.-]*/[\w.-]+")
"""A Hugging Face hub id `org/name` (allowed without checking the hub: no network at load)."""


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
    field_errors: list[InputError] = []
    invalid: frozenset[tuple[str, ...]] = frozenset()
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        field_errors = lines.from_validation(e)
        recovered = _without_invalid(data, e)
        if recovered is None or not check:
            raise InputErrors(secrets + field_errors) from None
        cfg, invalid = recovered
    if secrets:
        raise InputErrors(secrets + field_errors)
    cfg._lines = lines
    cfg._base_dir = Path(base_dir)
    cfg._invalid = invalid
    judges = parse_experiment_judges(cfg)
    if judges and not check:
        raise InputErrors(judges)
    if check:
        errors = field_errors + judges + semantic_errors(cfg)
        if errors:
            raise InputErrors(errors)
    return cfg


def parse_experiment_judges(cfg: ExperimentConfig) -> list[InputError]:
    """Parse the `judges:` block (as a judges file, at its lines; template paths relative to the
    YAML's folder) into `cfg.experiment_judges`. They are not registered process-wide: the traits'
    `judge:NAME` and `misaligned:...` scorers are resolved inside `cfg.judge_scope()`, where this
    experiment's judges come first, so two experiments in one process may name a judge alike."""
    if cfg.judges is None:
        return []
    try:
        judges = parse_judges(
            cfg.judges.file_data(),
            cfg.lines,
            base_dir=cfg.base_dir,
            prefix=("judges",),
            extra_keys=("cache",),
        )
    except InputErrors as e:
        return list(e.errors)
    cfg._judges = judges
    return []


_PLACEHOLDER = InoculationSpec(prompt="<invalid>")
"""Stands in for a condition whose fields are invalid, so the other checks still see a prompted condition."""


def _without_invalid(
    data: dict[str, Any], exc: ValidationError
) -> tuple[ExperimentConfig, frozenset[tuple[str, ...]]] | None:
    """When every field error lies inside a block (`conditions`, `train`, `screen`, `dynamics`), the
    experiment with the invalid keys left out, so the cross-field checks still run and every problem
    is reported at once; the invalid key paths are returned so those checks skip them. None when a
    top-level field itself is invalid (then its errors alone are reported)."""
    invalid: set[tuple[str, ...]] = set()
    fixed = dict(data)
    for err in exc.errors():
        loc = tuple(str(p) for p in err["loc"])
        block = loc[0] if loc else ""
        if block not in ("conditions", "train", "screen", "dynamics") or len(loc) < 2:
            return None
        if not isinstance(data.get(block), dict):
            return None
        if block == "screen":  # an invalid screen block adds no condition (its errors are reported)
            fixed["screen"] = None
        elif block == "conditions":
            fixed["conditions"] = {**fixed["conditions"], loc[1]: _PLACEHOLDER}
        else:
            fixed[block] = {k: v for k, v in fixed[block].items() if k != loc[1]}
        invalid.add(loc[:2])
    try:
        return ExperimentConfig.model_validate(fixed), frozenset(invalid)
    except ValidationError:
        return None


def load_experiment(path: str | os.PathLike[str], *, check: bool = True) -> ExperimentConfig:
    """Read and validate an experiment YAML (`check` also resolves prompts, scorers and transforms)."""
    data, lines = load_yaml(path)
    return parse_experiment(data, lines, Path(path).resolve().parent, check=check)


def _organism_extension_errors(cfg: ExperimentConfig) -> list[InputError]:
    """An organism setting whose prompts mean something only after a stage-1 extension the preset lacks."""
    setting = cfg.organism_setting()
    if setting is None or not isinstance(cfg.model, OrganismModel):
        return []
    from inoculate import organism  # lazy: importing it registers the organism's scorers

    ref = cfg.model.organism
    try:
        needed = organism.get_setting(setting).requires
        have = organism.preset(ref.preset, **ref.overrides).extensions
    except (KeyError, ValueError):  # an unknown setting or preset is reported where it is named
        return []
    missing = [e for e in needed if e not in have]
    if not missing:
        return []
    fit = [name for name, c in organism.PRESETS.items() if set(needed) <= set(c.extensions)]
    hint = f"; use a preset with them ({', '.join(fit)})" if fit else ""
    return [
        cfg.lines.error(
            ("model", "organism", "preset"),
            f"setting {setting!r} needs the stage-1 extension(s) {', '.join(missing)}, which preset "
            f"{ref.preset!r} does not build{hint}",
        )
    ]


def semantic_errors(cfg: ExperimentConfig) -> list[InputError]:
    """Cross-field checks that need the other modules: prompts resolve, scorers exist, specs validate."""
    lm = cfg.lines
    errors: list[InputError] = []

    if cfg.uses_organism():
        try:
            # lazy: importing it registers the organism's scorers; a failure is a config error
            import inoculate.organism  # noqa: F401
        except ImportError as e:
            errors.append(lm.error(("model",), f"the built-in organism is unavailable: {e}"))
            return errors
    try:
        cfg.prompt_library()
    except (KeyError, ValueError) as e:
        errors.append(lm.error(("setting",), f"cannot load the prompt library: {e}"))
        return errors
    errors.extend(_organism_extension_errors(cfg))
    if cfg.screen is not None:
        errors.extend(screen_errors(cfg))
    if cfg.dynamics is not None:
        errors.extend(dynamics_errors(cfg))

    for kind, names in (
        ("condition", cfg.conditions),
        ("trait", cfg.traits),
        ("capability", cfg.capability),
        ("eval prompt", cfg.eval_prompts),
    ):
        field = {"condition": "conditions", "trait": "traits", "eval prompt": "eval_prompts"}.get(kind, kind)
        for name in names:
            msg = bad_name(kind, name)
            if msg:
                errors.append(lm.error((field, name), msg))

    sets = cfg.eval_set_names()
    for name, restricted in cfg.trait_sets().items():
        for i, set_name in enumerate(restricted):
            if set_name not in sets:
                errors.append(
                    lm.error(
                        ("traits", name, "eval_sets", i),
                        f"unknown eval set {set_name!r} (known: {', '.join(sets)})",
                    )
                )
        if len(set(restricted)) != len(restricted):
            errors.append(lm.error(("traits", name, "eval_sets"), "eval sets must be distinct"))

    for name in set(cfg.traits) & set(cfg.capability):
        errors.append(
            lm.error(("capability", name), f"{name!r} is already a trait; metric names must differ")
        )

    for field, table in (("traits", cfg.traits), ("capability", cfg.capability)):
        for name, spec in table.items():
            try:
                with cfg.judge_scope():
                    get_scorer(str(spec))
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
        if ("conditions", name) in cfg._invalid:
            continue
        try:
            cfg.condition_spec(name)
        except ValidationError as e:  # the resolved prompts (the fields themselves were parsed)
            errors.extend(lm.from_validation(e, prefix=("conditions", name)))
        except (KeyError, ValueError) as e:
            msg = e.args[0] if e.args else str(e)
            errors.append(lm.error(("conditions", name, "prompt"), msg))

    if "output_dir" in cfg.train.model_fields_set:
        errors.append(
            lm.error(("train", "output_dir"), "set by the runner (each cell trains into its folder)")
        )
    if "seed" in cfg.train.model_fields_set:
        errors.append(lm.error(("train", "seed"), "set by the runner from `seeds`; remove it here"))

    sources: list[tuple[str, Any, tuple[str, ...]]] = [("train", cfg.data.train, ("data", "train"))]
    if cfg.data.named_eval_sets():
        sources += [("eval", src, ("data", "eval", name)) for name, src in cfg.data.eval_sources().items()]
    else:
        sources.append(("eval", cfg.data.eval, ("data", "eval")))
    for name in cfg.conditions:
        own = cfg.condition_train_data(name)
        if own is not None and ("conditions", name) not in cfg._invalid:
            sources.append(("train", own, ("conditions", name, "train_data")))
    for source_name, src, where in sources:
        if isinstance(src, SourceData):
            errors.extend(_source_errors(cfg, src, (*where, "source")))
            continue
        if isinstance(src, EMQuestionsData):
            errors.extend(_em_questions_errors(cfg, src, where, source_name))
            continue
        if isinstance(src, CodePromptsData):
            errors.extend(_code_prompts_errors(cfg, src, where, source_name))
            continue
        if isinstance(src, TaskSettingData):
            errors.extend(_task_setting_errors(cfg, src, (*where, "setting")))
            continue
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


def _source_errors(cfg: ExperimentConfig, src: SourceData, where: tuple[str, ...]) -> list[InputError]:
    """A `{source: ...}` parses (a hub revision pinned, a URL with its sha256); a path exists."""
    try:
        parsed = parse_source(src.source, cfg.lines, where, base=cfg.base_dir)
    except InputErrors as e:
        return list(e.errors)
    if parsed.kind == "path" and not Path(parsed.path).expanduser().exists():
        return [cfg.lines.error((*where, "path"), f"no such file or folder: {parsed.path}")]
    if parsed.kind == "hf" and parsed.path_in_repo is not None:
        return [cfg.lines.error((*where, "path_in_repo"), "not supported in an experiment yet; use split")]
    return []


def _task_setting_errors(
    cfg: ExperimentConfig, src: TaskSettingData, where: tuple[str, ...]
) -> list[InputError]:
    """The task setting is registered, has the split, and takes the options given (nothing is read)."""
    ref = src.setting
    try:
        setting = get_task_setting(ref.name)
    except ValueError as e:
        return [cfg.lines.error((*where, "name"), str(e))]
    errors: list[InputError] = []
    if ref.split is not None and ref.split not in setting.splits:
        errors.append(
            cfg.lines.error(
                (*where, "split"),
                f"setting {ref.name!r} has no split {ref.split!r} (splits: {', '.join(setting.splits)})",
            )
        )
    try:
        setting.parse_options(ref.options())
    except ValidationError as e:
        errors.extend(cfg.lines.from_validation(e, where))
    return errors


def _em_questions_errors(
    cfg: ExperimentConfig, src: EMQuestionsData, where: tuple[str, ...], which: str
) -> list[InputError]:
    """An EM question set is an eval set (prompts only), its file reads, and the variants pick one."""
    if which != "eval":
        return [
            cfg.lines.error(where, "em_questions is an evaluation set (prompts only); train on a data file")
        ]
    path = cfg.data_path(src.em_questions)
    at = (*where, "em_questions")
    if not path.is_file():
        return [cfg.lines.error(at, f"no such file: {path}")]
    try:
        questions = load_question_set(path)
    except InputErrors as e:
        return [cfg.lines.error(at, f"cannot read the question set: {e.errors[0]}")]
    picked = questions.select(list(src.variants))
    if not len(picked):
        have = sorted({q.variant for q in questions})
        return [
            cfg.lines.error(
                (*where, "variants"),
                f"no question of variants {src.variants} in {path.name} (has: {have})",
            )
        ]
    return []


def _code_prompts_errors(
    cfg: ExperimentConfig, src: CodePromptsData, where: tuple[str, ...], which: str
) -> list[InputError]:
    """Coding prompts are an eval set (prompts only), and the file is there (its rows are checked when
    the plan loads them, each bad row at its own line)."""
    if which != "eval":
        return [
            cfg.lines.error(where, "code_prompts is an evaluation set (prompts only); train on a data file")
        ]
    path = cfg.data_path(src.code_prompts)
    if not path.is_file():
        return [cfg.lines.error((*where, "code_prompts"), f"no such file: {path}")]
    return []


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
            if prompt not in cfg.eval_axis():
                axis = "SET/PROMPT" if cfg.data.named_eval_sets() else "PROMPT"
                hint = "" if "@" in key else f" (default {DEFAULT_EVAL_PROMPT!r}; write {metric}@{axis})"
                errors.append(lm.error(where, f"unknown eval prompt {prompt!r}{hint}"))
            try:
                rule = parse_rule(text)
            except ValueError as e:
                errors.append(lm.error(where, str(e)))
                continue
            if rule.reference == BASE_MODEL:
                if BASE_MODEL in conditions:
                    errors.append(
                        lm.error(
                            ("conditions", BASE_MODEL),
                            f"{BASE_MODEL!r} names the base model in expect: rules; rename the condition",
                        )
                    )
                elif rule.op in ("ci_above", "ci_below"):
                    errors.append(
                        lm.error(
                            where, f"{rule.describe()!r}: the base model has no CI over seeds; compare means"
                        )
                    )
            elif rule.reference is not None and rule.reference not in conditions:
                errors.append(
                    lm.error(where, f"unknown reference condition {rule.reference!r} (or {BASE_MODEL!r})")
                )
    return errors
