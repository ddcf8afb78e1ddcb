"""Resolve an experiment into a `Plan`: everything a run needs, built once, eagerly, and frozen.

`prepare(cfg)` loads and hashes the data, resolves the prompts, scorers and training settings, builds
the base model (`Inputs`), then derives from the conditions: their inoculation specs and transformed
training sets, every eval set, the learning-dynamics monitors, the keyed cells and the base model's
evaluation (a `Plan` is its `Inputs` plus these). Bad data fails here, before any training.
`plan.with_conditions(...)` adds conditions (the `screen:` block's picks) to a plan without loading
the data or building the model again.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from inoculate._version import __version__
from inoculate.code_prompts import load_code_prompts
from inoculate.datasource import DataSourceError, fetch_url, parse_source
from inoculate.errors import InputError, InputErrors
from inoculate.experiment.cache import cell_key, hash_examples, hash_obj, model_identity
from inoculate.experiment.config import (
    DATA_TRAIN,
    SINGLE_EVAL_SET,
    CodePromptsData,
    DataSource,
    EMQuestionsData,
    ExperimentConfig,
    FileData,
    OrganismData,
    OrganismModel,
    SourceData,
    TaskSettingData,
    data_label,
)
from inoculate.experiment.matrix import Cell, cell_order
from inoculate.experiment.monitor import MonitorPlan, plan_dynamics
from inoculate.experiment.screening import ScreenInputs
from inoculate.formats import load_examples, load_hf_dataset
from inoculate.judges.questions import QUESTION_SYSTEM, load_question_set
from inoculate.records import ChatExample, Message
from inoculate.rundir import CONDITION_REF
from inoculate.scorers import Scorer, get_scorer
from inoculate.selectors import in_holdout
from inoculate.settings import BuildContext, SettingError, get_task_setting
from inoculate.transform import (
    EmptySelectionError,
    InoculationSpec,
    Manifest,
    apply_inoculation,
    neutralize,
    resolve_prompts,
)


@dataclass(frozen=True)
class OwnData:
    """A control condition's own training data (`train_data:`), loaded and hashed."""

    label: str
    """The source's short name (the file name) in the record and report"""
    source: Any
    """The source as given in the YAML (JSON-able)"""
    examples: list[ChatExample]
    sha256: str

    def record(self) -> dict[str, Any]:
        return {"label": self.label, "source": self.source, "n": len(self.examples), "sha256": self.sha256}


TrainSets = dict[str, tuple[list[ChatExample], Manifest | None]]
"""condition -> its transformed training set and the transform's manifest (None: untransformed)"""
EvalSets = dict[tuple[str, str, str], list[ChatExample]]
"""(condition, or "" for a fixed eval prompt; eval set; eval prompt) -> the prompts evaluated"""


@dataclass(frozen=True)
class Inputs:
    """What every condition shares: the data (loaded, hashed), the base model (built), the resolved eval
    prompts, the scorers and the training settings."""

    seeds: list[int]
    model_path: str
    model_identity: dict[str, Any]
    train_examples: list[ChatExample]
    eval_examples: list[ChatExample]
    """The first eval set's examples (the only one's, with a single `data.eval` source)."""
    data_hashes: dict[str, str]
    eval_prompts: dict[str, str | None]
    """name -> system prompt text (None: no system prompt); `@condition` kept as is."""
    scorers: dict[str, Scorer]
    train_config: dict[str, Any]
    own_data: dict[str, OwnData]
    """control condition -> its own training data (conditions without `train_data` are not here)"""
    eval_data: dict[str, list[ChatExample]]
    """eval set name -> its examples (`{"eval": eval_examples}` with a single `data.eval` source)"""
    eval_axis: dict[str, tuple[str, str]]
    """label in metrics.json and summary.csv -> (eval set, eval prompt): `ExperimentConfig.eval_axis`"""
    eval_overlap: dict[str, int]
    """eval set name -> how many of its distinct prompts some condition also trains on (0: disjoint)"""

    def scorers_for(self, eval_set: str, config: ExperimentConfig) -> dict[str, Scorer]:
        """The scorers of the metrics scored on one eval set (a trait's `eval_sets` may leave it out)."""
        return {m: self.scorers[m] for m in config.metrics_for(eval_set)}

    def train_hash(self, condition: str) -> str:
        """The sha256 of the data `condition` trains on (its own, else `data.train`'s)."""
        own = self.own_data.get(condition)
        return own.sha256 if own is not None else self.data_hashes["train"]


@dataclass(frozen=True)
class BasePlan:
    """The base model's evaluation: one eval set per fixed eval prompt and per condition's training prompt."""

    prompts: dict[str, list[ChatExample]]
    """file stem -> eval set"""
    labels: dict[str, str]
    """file stem -> label in the report"""
    key: str
    sets: dict[str, str]
    """file stem -> its eval set"""


@dataclass(frozen=True)
class Plan(Inputs):
    """A resolved experiment: its `Inputs` and everything derived from its conditions, all built."""

    config: ExperimentConfig
    specs: dict[str, InoculationSpec | None]
    train_sets: TrainSets
    eval_sets: EvalSets
    dynamics: dict[str, MonitorPlan]
    """condition -> its learning-dynamics monitor (the `dynamics:` block's monitored conditions)"""
    cells: list[Cell]
    base: BasePlan

    @property
    def name(self) -> str:
        return self.config.name

    def eval_set(self, condition: str, eval_prompt: str, eval_set: str | None = None) -> list[ChatExample]:
        """The prompts a cell of `condition` is evaluated on under one eval prompt (of the first eval
        set unless `eval_set` is given)."""
        which = eval_set if eval_set is not None else next(iter(self.eval_data))
        return self.eval_sets[_eval_key(self.eval_prompts, condition, which, eval_prompt)]

    def cell_prompts(self, condition: str) -> dict[str, list[ChatExample]]:
        """label -> the prompts a cell of `condition` is evaluated on, over the eval axis."""
        return {label: self.eval_set(condition, p, s) for label, (s, p) in self.eval_axis.items()}

    def label_scorers(self, labels: Mapping[str, str]) -> dict[str, dict[str, Scorer]]:
        """file stem -> the scorers for it, given stem -> eval set."""
        return {stem: self.scorers_for(s, self.config) for stem, s in labels.items()}

    def with_conditions(self, conditions: Mapping[str, InoculationSpec]) -> Plan:
        """This plan with `conditions` added (after the declared ones) and the `screen:` block dropped:
        the data and the base model are reused; specs, eval sets, monitors, cells and the base
        evaluation are derived again (a new inoculation text changes every neutralized eval set)."""
        cfg = self.config.model_copy(
            update={"conditions": {**self.config.conditions, **conditions}, "screen": None}
        )
        specs = condition_specs(cfg)
        added = {c: s for c, s in specs.items() if c not in self.train_sets}
        train_sets = {
            **self.train_sets,
            **inoculated_train_sets(cfg, added, self.train_examples, self.own_data),
        }
        return _derive(cfg, self, specs, train_sets)

    def screen_inputs(self) -> ScreenInputs:
        """What the `screen:` block reads of this plan."""
        return ScreenInputs(
            seed=self.seeds[0],
            model_path=self.model_path,
            model_identity=self.model_identity,
            train_examples=self.train_examples,
            eval_examples=self.eval_examples,
            data_hashes=self.data_hashes,
            eval_prompts=self.eval_prompts,
            scorers=self.scorers,
        )


def prepare(
    cfg: ExperimentConfig, *, seeds: int | None = None, log: Callable[[str], None] | None = None
) -> Plan:
    """Resolve the experiment: load data, resolve prompts and specs, build the base model, key the cells."""
    seed_list = cfg.seed_list(seeds)
    train_examples = load_source(cfg, "train")
    eval_data = load_eval_sets(cfg)
    eval_examples = next(iter(eval_data.values()))
    data_hashes = {"train": hash_examples(train_examples)}
    if cfg.data.named_eval_sets():
        data_hashes.update({f"eval/{name}": hash_examples(ex) for name, ex in eval_data.items()})
    else:
        data_hashes["eval"] = hash_examples(eval_examples)
    own_data = load_own_data(cfg)
    eval_overlap = check_held_out(cfg, eval_data, train_examples, own_data)
    specs = condition_specs(cfg)
    # Before the base model is built: a condition that inoculates no training row is refused here.
    train_sets = inoculated_train_sets(cfg, specs, train_examples, own_data)
    eval_prompts = {
        name: (value if value == CONDITION_REF else cfg.resolve_text(value))
        for name, value in cfg.eval_prompts.items()
    }
    scorers = resolve_scorers(cfg)
    train_config = cfg.train.model_dump(exclude={"output_dir", "seed"})
    model_path, identity = _base_model(cfg, log)
    train_config["disable_tqdm"] = True
    inputs = Inputs(
        seeds=seed_list,
        model_path=model_path,
        model_identity=identity,
        train_examples=train_examples,
        eval_examples=eval_examples,
        data_hashes=data_hashes,
        eval_prompts=eval_prompts,
        scorers=scorers,
        train_config=train_config,
        own_data=own_data,
        eval_data=eval_data,
        eval_axis=cfg.eval_axis(),
        eval_overlap=eval_overlap,
    )
    return _derive(cfg, inputs, specs, train_sets)


def resolve_scorers(cfg: ExperimentConfig) -> dict[str, Scorer]:
    """metric name -> its scorer, resolved with the experiment's own judges in scope (a `judge:NAME`
    scorer keeps the judge of this experiment, whatever another experiment calls `NAME`)."""
    with cfg.judge_scope():
        return {name: get_scorer(spec) for name, (_kind, spec) in cfg.metrics().items()}


def _derive(
    cfg: ExperimentConfig, inputs: Inputs, specs: dict[str, InoculationSpec | None], train_sets: TrainSets
) -> Plan:
    """Everything the conditions decide: monitors, keyed cells, every eval set, the base evaluation."""
    dynamics: dict[str, MonitorPlan] = {}
    if cfg.dynamics is not None:
        dynamics = plan_dynamics(cfg, specs, inputs.eval_prompts, inputs.eval_examples)
    order = cell_order(list(cfg.conditions), inputs.seeds)
    cells = [make_cell(cfg, inputs, specs, dynamics, c, s) for c, s in order]
    # Every eval set now, so bad data fails before any training.
    eval_sets: EvalSets = {}
    for name in specs:
        for set_name in inputs.eval_data:
            for prompt in inputs.eval_prompts:
                key = _eval_key(inputs.eval_prompts, name, set_name, prompt)
                if key not in eval_sets:
                    eval_sets[key] = build_eval_set(inputs, specs, name, prompt, set_name)
    return Plan(
        **{f.name: getattr(inputs, f.name) for f in fields(Inputs)},
        config=cfg,
        specs=specs,
        train_sets={name: train_sets[name] for name in specs},
        eval_sets=eval_sets,
        dynamics=dynamics,
        cells=cells,
        base=base_plan(cfg, inputs, specs, eval_sets),
    )


# --- data and the base model ---------------------------------------------------------------------------


def load_source(cfg: ExperimentConfig, which: str) -> list[ChatExample]:
    """The experiment's `train` examples, or its first eval set's (an organism split, or a file)."""
    if which == "eval":
        return next(iter(load_eval_sets(cfg).values()))
    return load_data(cfg, getattr(cfg.data, which), which, ("data", which))


def load_eval_sets(cfg: ExperimentConfig) -> dict[str, list[ChatExample]]:
    """Each eval set's examples: `{"eval": ...}` for a single `data.eval` source."""
    if not cfg.data.named_eval_sets():
        src = cfg.data.eval_sources()[SINGLE_EVAL_SET]
        return {SINGLE_EVAL_SET: load_data(cfg, src, "eval", ("data", "eval"))}
    return {
        name: load_data(cfg, src, "eval", ("data", "eval", name))
        for name, src in cfg.data.eval_sources().items()
    }


def load_own_data(cfg: ExperimentConfig) -> dict[str, OwnData]:
    """Each control condition's own training data (`train_data:`), loaded and hashed once per
    distinct source, with the same loader as `data.train`."""
    loaded: dict[str, OwnData] = {}
    out: dict[str, OwnData] = {}
    for name in cfg.conditions:
        src = cfg.condition_train_data(name)
        if src is None:
            continue
        dumped = src if isinstance(src, str) else src.model_dump(mode="json")
        ident = hash_obj(dumped)
        if ident not in loaded:
            examples = load_data(cfg, src, "train", ("conditions", name, "train_data"))
            loaded[ident] = OwnData(data_label(src), dumped, examples, hash_examples(examples))
        out[name] = loaded[ident]
    return out


def load_data(
    cfg: ExperimentConfig, src: DataSource, which: str, where: tuple[str, ...]
) -> list[ChatExample]:
    """The examples of one data source; `which` (`train` or `eval`) picks the organism split by default
    and whether rows need an assistant turn; `where` locates a `{source: ...}`'s errors."""
    if isinstance(src, OrganismData):
        from inoculate import organism  # lazy: importing it registers the organism's scorers

        ref = src.organism
        split = ref.split or ("train" if which == "train" else "eval")
        return list(organism.make_examples(ref.setting, split, ref.n, ref.seed))

    if isinstance(src, EMQuestionsData):
        return em_examples(cfg, src)
    if isinstance(src, CodePromptsData):
        return load_code_prompts(cfg.data_path(src.code_prompts), samples=src.samples, limit=src.limit)
    if isinstance(src, TaskSettingData):
        return setting_examples(cfg, src, which, (*where, "setting"))
    if isinstance(src, SourceData):
        return source_examples(cfg, src, (*where, "source"), require_assistant=which == "train")
    split = None
    holdout = None
    if isinstance(src, FileData):
        src, split, holdout = src.path, src.split, src.holdout
    path = cfg.data_path(src)
    target = str(path) if path.exists() else src
    kwargs: dict[str, Any] = {} if split is None else {"split": split}
    examples = load_examples(target, require_assistant=which == "train", **kwargs).examples
    if holdout is None:
        return examples
    keep = holdout.keep == "held_out"
    kept = [ex for ex in examples if in_holdout(prompt_key(ex), holdout.fraction, holdout.seed) == keep]
    if not kept:
        lines = _lines(cfg)
        raise InputErrors.one(
            lines.file if lines else "<experiment>",
            lines.line(*where, "holdout") if lines else 0,
            ".".join((*where, "holdout")),
            f"keeps none of the {len(examples)} rows of {Path(src).name} "
            f"(fraction {holdout.fraction:g}, seed {holdout.seed}, keep {holdout.keep})",
            hint="raise the fraction, or check the file",
        )
    return kept


def _lines(cfg: ExperimentConfig) -> Any:
    try:
        return cfg.lines
    except AttributeError:  # a config built in code has no YAML lines
        return None


def prompt_key(ex: ChatExample) -> str:
    """What makes two rows the same prompt: their user turns' text (system prompts and the answer left
    out, so a dataset and its control answering the same prompt agree)."""
    return "\n\n".join(m.content for m in ex.messages if m.role == "user")


def check_held_out(
    cfg: ExperimentConfig,
    eval_data: dict[str, list[ChatExample]],
    train_examples: list[ChatExample],
    own_data: dict[str, OwnData],
) -> dict[str, int]:
    """eval set -> how many of its distinct prompts some condition trains on. An eval set read as a
    held-out slice (`holdout: {keep: held_out}`) must share none: one that does is refused, naming the
    training data, so a held-out evaluation is disjoint from training by construction and by check."""
    trained: dict[str, set[str]] = {DATA_TRAIN: {prompt_key(ex) for ex in train_examples}}
    for cond, own in own_data.items():
        trained.setdefault(f"conditions.{cond}.train_data", {prompt_key(ex) for ex in own.examples})
    overlap: dict[str, int] = {}
    errors: list[InputError] = []
    lines = _lines(cfg)
    sources = cfg.data.eval_sources()
    for name, examples in eval_data.items():
        prompts = {prompt_key(ex) for ex in examples}
        shared = {where: len(prompts & keys) for where, keys in trained.items()}
        overlap[name] = len(prompts & set().union(*trained.values()))
        src = sources[name]
        if isinstance(src, FileData) and src.holdout is not None and src.holdout.keep == "held_out":
            for where, n in shared.items():
                if n:
                    at = ("data", "eval", name) if cfg.data.named_eval_sets() else ("data", "eval")
                    errors.append(
                        InputError(
                            lines.file if lines else "<experiment>",
                            lines.line(*at) if lines else 0,
                            ".".join((*at, "holdout")),
                            f"the held-out eval set shares {n} of its {len(prompts)} prompts with {where}",
                            "read that training data with the same holdout and `keep: rest`",
                        )
                    )
    if errors:
        raise InputErrors(errors)
    return overlap


def em_examples(cfg: ExperimentConfig, src: EMQuestionsData) -> list[ChatExample]:
    """The prompt-only rows of an EM question set: the chosen variants' questions, one row per
    paraphrase (with the question's system prompt when it has one), each repeated
    `samples_per_paraphrase` times (default: the file's own count per question) as rows `ID/k`."""
    questions = load_question_set(cfg.data_path(src.em_questions)).select(list(src.variants))
    out: list[ChatExample] = []
    for q in questions:
        n = src.samples_per_paraphrase or q.samples_per_paraphrase
        for ex in q.examples(n):
            for k in range(n):
                meta = {**ex.metadata, "sample": k}
                out.append(ChatExample(id=f"{ex.id}/{k}", messages=list(ex.messages), metadata=meta))
    return out


def setting_examples(
    cfg: ExperimentConfig, src: TaskSettingData, which: str, where: tuple[str, ...]
) -> list[ChatExample]:
    """The rows of a task setting (`inoculate.settings`); a bad option or an unusable pin is reported at
    the source's line, a bad row of a data file at the file's."""
    try:
        lines = cfg.lines
    except AttributeError:  # a config built in code has no YAML lines
        lines = None
    ref = src.setting

    def fail(at: tuple[str, ...], message: str) -> InputErrors:
        if lines is not None:
            return InputErrors([lines.error(at, message)])
        return InputErrors.one("<experiment>", 0, ".".join(at), message)

    try:
        setting = get_task_setting(ref.name)
    except ValueError as e:
        raise fail((*where, "name"), str(e)) from None
    try:
        options = setting.parse_options(ref.options())
    except ValidationError as e:
        if lines is not None:
            raise InputErrors(lines.from_validation(e, where)) from None
        raise fail(where, str(e)) from None
    try:
        rows = setting.examples(ref.split, options, BuildContext(base_dir=cfg.base_dir), which)
    except SettingError as e:
        raise fail(where, str(e)) from None
    if which == "train":
        bad = [ex.id for ex in rows if ex.completion is None]
        if bad:
            raise fail(
                (*where, "split"),
                f"split {ref.split!r} has rows without an assistant turn (first: {bad[0]}): an eval split "
                "cannot be trained on",
            )
    return rows


def source_examples(
    cfg: ExperimentConfig, src: SourceData, where: tuple[str, ...], *, require_assistant: bool
) -> list[ChatExample]:
    """The examples of a `{source: ...}`: a pinned hub dataset, a sha256-verified URL, or a path."""
    try:
        lines = cfg.lines
    except AttributeError:  # a config built in code has no YAML lines
        lines = None
    parsed = parse_source(src.source, lines, where, base=cfg.base_dir)
    try:
        if parsed.kind == "hf":
            return load_hf_dataset(
                parsed.hf, split=parsed.split, revision=parsed.revision, require_assistant=require_assistant
            ).examples
        path = fetch_url(parsed) if parsed.kind == "url" else cfg.data_path(parsed.path)
    except DataSourceError as e:
        raise InputErrors.one(
            lines.file if lines else "<experiment>",
            lines.line(*where) if lines else 0,
            ".".join(where),
            str(e),
        ) from None
    return load_examples(str(path), require_assistant=require_assistant).examples


def _base_model(
    cfg: ExperimentConfig, log: Callable[[str], None] | None = None
) -> tuple[str, dict[str, Any]]:
    """(path or hub id, identity) of the base model; builds the organism (cached) when asked for."""
    if isinstance(cfg.model, OrganismModel):
        from inoculate import organism  # lazy: importing it registers the organism's scorers

        ref = cfg.model.organism
        config = organism.preset(ref.preset, **ref.overrides)
        with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints loss dicts without a tty bar
            path = organism.build_base_model(config, log=log, progress=sys.stderr.isatty())
        return str(path), model_identity(path, source={"organism": ref.model_dump()})
    p = cfg.data_path(cfg.model) if not Path(cfg.model).is_absolute() else Path(cfg.model)
    if p.is_dir():
        return str(p), model_identity(p)
    return cfg.model, model_identity(cfg.model)


# --- conditions -----------------------------------------------------------------------------------------


def condition_specs(cfg: ExperimentConfig) -> dict[str, InoculationSpec | None]:
    return {name: cfg.condition_spec(name) for name in cfg.conditions}


def inoculated_train_sets(
    cfg: ExperimentConfig,
    specs: dict[str, InoculationSpec | None],
    train_examples: list[ChatExample],
    own_data: Mapping[str, OwnData] | None = None,
) -> TrainSets:
    """Each condition's training set and manifest, from its own data (`own_data`) or `train_examples`.
    A condition whose spec inoculates no row of its training data is refused (every such condition,
    each error at its line of the experiment YAML) unless it sets `allow_empty: true`."""

    out: TrainSets = {}
    errors: list[InputError] = []
    for name, spec in specs.items():
        own = (own_data or {}).get(name)
        examples = own.examples if own is not None else train_examples
        if spec is None:
            out[name] = (examples, None)
            continue
        try:
            out[name] = apply_inoculation(examples, spec, source=f"training data ({name})")
        except EmptySelectionError as e:
            path = ("conditions", name) if e.field.startswith("<") else ("conditions", name, e.field)
            msg = f"condition {name!r} inoculates no training row: {e.message}"
            try:
                errors.append(cfg.lines.error(path, msg))
            except AttributeError:  # a config built in code has no YAML lines
                errors.append(InputError("<experiment>", 0, ".".join(path), msg))
    if errors:
        raise InputErrors(errors)
    return out


def check_conditions(cfg: ExperimentConfig) -> None:
    """Refuse, before anything is written, a condition that inoculates no training row."""
    inoculated_train_sets(cfg, condition_specs(cfg), load_source(cfg, "train"), load_own_data(cfg))


def spec_dump(spec: InoculationSpec | None) -> dict[str, Any] | None:
    """A condition's spec as recorded (in its cells' keys and experiment.json), prompts resolved."""
    if spec is None:
        return None

    dump = spec.model_dump(mode="json")
    if spec.prompt_file is not None:  # the prompts themselves are below; where the file lies is no input
        dump["prompt_file"] = Path(spec.prompt_file).name
    dump["resolved_prompts"] = resolve_prompts(spec)
    return dump


_SECRET_NAMES = frozenset({"api_key", "apikey", "key", "secret", "password", "token", "authorization"})


def _redact(obj: Any) -> Any:
    """A copy with secret-looking values (`api_key`, `*_secret`, `*_token`...) replaced: nothing the
    runner writes (config.json, keys, events) may hold a credential; `api_key_env` names stay."""
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            name = str(k).lower().replace("-", "_")
            secret = name in _SECRET_NAMES or name.endswith(("_key", "_secret", "_password", "_token"))
            out[k] = "<redacted>" if secret and v is not None and not name.endswith("_env") else _redact(v)
        return out
    if isinstance(obj, list):
        return [_redact(v) for v in obj]
    return obj


def rel_to(path: str | os.PathLike[str] | None, root: Path | None) -> str | None:
    """`path` relative to the run folder when it lies inside it (as written otherwise)."""
    if path is None or root is None:
        return None if path is None else str(path)
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


# Training settings that change logging or checkpointing but not the trained weights: not in the keys.
_NOT_IN_KEY = frozenset({"logging_steps", "save_steps", "save_total_limit", "disable_tqdm"})


def make_cell(
    cfg: ExperimentConfig,
    inputs: Inputs,
    specs: dict[str, InoculationSpec | None],
    dynamics: dict[str, MonitorPlan],
    condition: str,
    seed: int,
) -> Cell:
    """A cell with its fully resolved config and both cache keys (the cell's, and its training's)."""
    spec = spec_dump(specs[condition])
    keyed_train = {k: v for k, v in inputs.train_config.items() if k not in _NOT_IN_KEY}
    train_part: dict[str, Any] = {"transform": spec, "train": keyed_train, "seed": seed}
    if condition in dynamics:  # only monitored cells: the others' keys stay as without the block
        train_part["dynamics"] = dynamics[condition].key()
    rest = {
        "experiment": cfg.name,
        "condition": condition,
        "sampling": {**cfg.sampling.model_dump(), "seed": seed},
        "generation": _redact(cfg.generation.model_dump()),
        "eval_prompts": inputs.eval_prompts,
        "metrics": {name: list(v) for name, v in cfg.metrics().items()},
        **_eval_set_key(cfg),
    }
    # A control condition's own data replaces `data.train`'s hash in its keys (the others' keys are
    # unchanged): editing the control file retrains that condition alone.
    hashes = {**inputs.data_hashes, "train": inputs.train_hash(condition)}
    key = cell_key({**train_part, **rest}, hashes, inputs.model_identity)
    train_key = cell_key(train_part, {"train": hashes["train"]}, inputs.model_identity)
    own = inputs.own_data.get(condition)
    config = {
        **rest,
        "seed": seed,
        "model": inputs.model_identity,
        **train_part,
        "train": inputs.train_config,
        "train_data": own.record() if own is not None else {"label": DATA_TRAIN, "sha256": hashes["train"]},
    }
    return Cell(condition=condition, seed=seed, config=config, key=key, train_key=train_key)


def _eval_set_key(cfg: ExperimentConfig) -> dict[str, Any]:
    """What named eval sets add to the keys (nothing with a single `data.eval` source: keys unchanged)."""
    if not cfg.data.named_eval_sets() and not cfg.trait_sets():
        return {}
    return {"eval_sets": cfg.eval_set_names(), "trait_sets": cfg.trait_sets()}


# --- evaluation sets ------------------------------------------------------------------------------------


def _eval_key(
    eval_prompts: dict[str, str | None], condition: str, eval_set: str, eval_prompt: str
) -> tuple[str, str, str]:
    """A fixed eval prompt's set is shared by every condition; `@condition`'s is the condition's own."""
    return (condition if eval_prompts[eval_prompt] == CONDITION_REF else "", eval_set, eval_prompt)


def _without_completion(ex: ChatExample) -> ChatExample:
    msgs = list(ex.messages)
    if msgs and msgs[-1].role == "assistant":
        msgs = msgs[:-1]
    return ChatExample(id=ex.id, messages=msgs, metadata=ex.metadata)


def _with_system(ex: ChatExample, system: str | None) -> ChatExample:
    """The row with `system` as its system prompt (None: none), any other system prompt removed, except a
    question's own (`metadata.question_system`, from an EM question file): that is part of the question
    and stays, after the eval prompt's text (a blank line between), or alone under a neutral prompt."""
    msgs = [m for m in ex.messages if m.role != "system"]
    own = ex.metadata.get(QUESTION_SYSTEM)
    parts = [p for p in (system, own if isinstance(own, str) and own.strip() else None) if p is not None]
    if parts:
        msgs = [Message(role="system", content="\n\n".join(parts)), *msgs]
    return ChatExample(id=ex.id, messages=msgs, metadata=ex.metadata)


def inoculation_texts(specs: dict[str, InoculationSpec | None]) -> list[str]:
    """Every inoculation text of every condition: none may survive into a neutralized eval set."""

    texts: list[str] = []
    for spec in specs.values():
        if spec is not None:
            texts += [t for t in resolve_prompts(spec) if t not in texts]
    return texts


def build_eval_set(
    inputs: Inputs,
    specs: dict[str, InoculationSpec | None],
    condition: str,
    eval_prompt: str,
    eval_set: str | None = None,
) -> list[ChatExample]:
    """The prompts a cell is evaluated on under one eval prompt.

    A fixed eval prompt: the eval set neutralized (system prompts removed, inoculation text removed
    from user turns, refusing on any leak), then the eval prompt set as system prompt; a question's
    own system prompt (`metadata.question_system`: the EM files' `_json` / `_template` variants) is
    kept after it, and alone under a neutral (null) eval prompt, refused if it holds an inoculation
    text. `@condition`:
    the eval set as given with the condition's transform applied to every row (selectors dropped),
    i.e. the prompt the condition trained with.
    """

    value = inputs.eval_prompts[eval_prompt]
    examples = inputs.eval_examples if eval_set is None else inputs.eval_data[eval_set]
    questions = [_without_completion(ex) for ex in examples]
    where = eval_prompt if eval_set is None or eval_set == SINGLE_EVAL_SET else f"{eval_set}/{eval_prompt}"
    if value == CONDITION_REF:
        spec = specs[condition]
        if spec is None:
            return questions
        every_row = spec.model_copy(update={"where": None, "regex": None, "fraction": None})
        return apply_inoculation(questions, every_row, source=f"eval set ({where})")[0]
    texts = inoculation_texts(specs)
    for q in questions:
        own = q.metadata.get(QUESTION_SYSTEM)
        leaked = [t for t in texts if isinstance(own, str) and t in own]
        if leaked:
            raise InputErrors.one(
                f"eval set ({where})",
                0,
                f"{q.id}: metadata.{QUESTION_SYSTEM}",
                f"the question's own system prompt contains the inoculation text {leaked[0][:60]!r}",
                hint="evaluate other variants of the question set, or change the condition's prompt",
            )
    if texts:
        questions = neutralize(questions, texts, mode="remove", source=f"eval set ({where})")
        questions = [
            ChatExample(
                id=q.id,
                messages=q.messages,
                metadata={k: v for k, v in q.metadata.items() if k != "neutralized"},
            )
            for q in questions
        ]
    return [_with_system(q, value) for q in questions]


# --- the base model's evaluation ------------------------------------------------------------------------


def base_plan(
    cfg: ExperimentConfig, inputs: Inputs, specs: dict[str, InoculationSpec | None], eval_sets: EvalSets
) -> BasePlan:
    """The base model's evaluation sets and cache key."""
    seed = inputs.seeds[0]
    prompts: dict[str, list[ChatExample]] = {}
    labels: dict[str, str] = {}
    sets: dict[str, str] = {}
    for label, (set_name, name) in inputs.eval_axis.items():
        if inputs.eval_prompts[name] == CONDITION_REF:
            for cond, spec in specs.items():
                if spec is not None:
                    stem = f"{label}__{cond}"
                    prompts[stem] = eval_sets[_eval_key(inputs.eval_prompts, cond, set_name, name)]
                    labels[stem] = f"{label} ({cond})"
                    sets[stem] = set_name
        else:
            prompts[label] = eval_sets[_eval_key(inputs.eval_prompts, next(iter(specs)), set_name, name)]
            labels[label] = label
            sets[label] = set_name
    config = {
        "model": inputs.model_identity,
        "sampling": {**cfg.sampling.model_dump(), "seed": seed},
        "generation": _redact(cfg.generation.model_dump()),
        "prompts": {k: [ex.to_json() for ex in v] for k, v in prompts.items()},
        "metrics": {name: list(v) for name, v in cfg.metrics().items()},
        "organism_table": isinstance(cfg.model, OrganismModel),
        **_eval_set_key(cfg),
    }
    key = hash_obj({"config": config, "version": __version__})
    return BasePlan(prompts=prompts, labels=labels, key=key, sets=sets)
