"""`inoculate run`: resolve an experiment, run its conditions x seeds matrix, write the report.

A cell: transform the training data with the condition's inoculation spec -> train (LoRA or full,
`inoculate.train`) -> generate under each eval prompt (eval set neutralized, then the eval prompt's
system prompt set) -> score every trait and capability -> `metrics.json`.

Layout of `OUT` (default `runs/<name>`):

    OUT/experiment.json         the resolved experiment (what `inoculate report` reads)
    OUT/manifest.json           package versions, git hash, base model, sampling, prompts the model saw
    OUT/<condition>/seed_<k>/   config.json, train.manifest.json, adapter/, train_log.jsonl,
                                dynamics.jsonl (monitored conditions, `dynamics:`),
                                generations/<eval_prompt>.jsonl, scores/<eval_prompt>.jsonl,
                                metrics.json, done
    OUT/base/                   the base model's elicitation table
    OUT/summary.csv, per_seed.csv, report.md, figures/
    OUT/.inoculate, .inoculate.lock(.json)   ownership marker; the run lock and its holder

Only folders inoculate wrote are ever cleared (`inoculate.rundir`); one run at a time holds `OUT`.
Paths inside `OUT` are recorded relative to it, so a copied or moved run folder reruns from its own
files.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inoculate._version import __version__
from inoculate.errors import InputError, InputErrors
from inoculate.experiment.cache import (
    cell_key,
    done_problem,
    hash_examples,
    hash_obj,
    mark_done,
    model_identity,
)
from inoculate.experiment.config import (
    ExperimentConfig,
    FileData,
    OrganismData,
    OrganismModel,
)
from inoculate.experiment.load import load_experiment
from inoculate.experiment.matrix import (
    Cell,
    MatrixProgress,
    MatrixResult,
    NullProgress,
    cell_order,
    log_event,
    run_matrix,
)
from inoculate.experiment.monitor import MonitorPlan, cell_summary, plan_dynamics, surface_warnings
from inoculate.experiment.screening import ScreenInputs, resolve_screen
from inoculate.fileio import write_json_atomic, write_jsonl_atomic, write_text_atomic
from inoculate.formats import load_examples
from inoculate.generate import SamplingParams, get_backend
from inoculate.models import load_tokenizer, render, seen_system_prompt
from inoculate.records import ChatExample, Message
from inoculate.report import Report
from inoculate.report import write_report as _write
from inoculate.rundir import (
    BASE_DIR,
    CONDITION_REF,
    DYNAMICS_FILE,
    EXPERIMENT_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    TRAIN_MANIFEST_FILE,
    BaseElicitation,
    CellMetrics,
    RunFolderError,
    RunLock,
    RunRecord,
    claim_run_folder,
    foreign_message,
    is_ours,
    remove_owned,
    staging_dir,
    write_marker,
    write_record,
)
from inoculate.scorers import Scorer, get_scorer, render_prompt
from inoculate.train import TrainConfig, train
from inoculate.transform import (
    EmptySelectionError,
    InoculationSpec,
    Manifest,
    apply_inoculation,
    neutralize,
    resolve_prompts,
)

# --- resolving an experiment ----------------------------------------------------------------------


@dataclass
class Prepared:
    """Everything a run needs, resolved once: data loaded, prompts resolved, model built, cells keyed."""

    config: ExperimentConfig
    seeds: list[int]
    model_path: str
    model_identity: dict[str, Any]
    train_examples: list[ChatExample]
    eval_examples: list[ChatExample]
    data_hashes: dict[str, str]
    specs: dict[str, InoculationSpec | None]
    eval_prompts: dict[str, str | None]
    """name -> system prompt text (None: no system prompt); `@condition` kept as is."""
    scorers: dict[str, Scorer]
    train_config: dict[str, Any]
    cells: list[Cell] = field(default_factory=list)
    train_sets: dict[str, tuple[list[ChatExample], Manifest | None]] = field(default_factory=dict)
    """condition -> its transformed training set and the transform's manifest"""
    eval_sets: dict[tuple[str, str], list[ChatExample]] = field(default_factory=dict)
    """(condition, or "" for a fixed eval prompt; eval prompt) -> eval prompts"""
    base: BasePlan | None = None
    dynamics: dict[str, MonitorPlan] = field(default_factory=dict)
    """condition -> its learning-dynamics monitor (the `dynamics:` block's monitored conditions)"""

    @property
    def name(self) -> str:
        return self.config.name


def _load_source(cfg: ExperimentConfig, which: str) -> list[ChatExample]:
    src = getattr(cfg.data, which)
    if isinstance(src, OrganismData):
        from inoculate import organism  # lazy: importing it registers the organism's scorers

        ref = src.organism
        split = ref.split or ("train" if which == "train" else "eval")
        return list(organism.make_examples(ref.setting, split, ref.n, ref.seed))

    split = None
    if isinstance(src, FileData):
        src, split = src.path, src.split
    path = cfg.data_path(src)
    target = str(path) if path.exists() else src
    kwargs: dict[str, Any] = {} if split is None else {"split": split}
    return load_examples(target, require_assistant=which == "train", **kwargs).examples


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


def _rel_to(path: str | os.PathLike[str] | None, root: Path | None) -> str | None:
    """`path` relative to the run folder when it lies inside it (as written otherwise)."""
    if path is None or root is None:
        return None if path is None else str(path)
    try:
        return Path(path).resolve().relative_to(root.resolve()).as_posix()
    except (ValueError, OSError):
        return str(path)


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


def prepare(
    cfg: ExperimentConfig, *, seeds: int | None = None, log: Callable[[str], None] | None = None
) -> Prepared:
    """Resolve the experiment: load data, resolve prompts and specs, build the base model, key the cells."""

    seed_list = cfg.seed_list(seeds)
    train_examples = _load_source(cfg, "train")
    eval_examples = _load_source(cfg, "eval")
    data_hashes = {"train": hash_examples(train_examples), "eval": hash_examples(eval_examples)}
    specs = condition_specs(cfg)
    # Before the base model is built: a condition that inoculates no training row is refused here.
    train_sets = inoculated_train_sets(cfg, specs, train_examples)
    eval_prompts = {
        name: (value if value == CONDITION_REF else cfg.resolve_text(value))
        for name, value in cfg.eval_prompts.items()
    }
    scorers = {name: get_scorer(spec) for name, (_kind, spec) in cfg.metrics().items()}
    train_config = cfg.train.model_dump(exclude={"output_dir", "seed"})
    model_path, identity = _base_model(cfg, log)
    train_config["disable_tqdm"] = True
    prep = Prepared(
        config=cfg,
        seeds=seed_list,
        model_path=model_path,
        model_identity=identity,
        train_examples=train_examples,
        eval_examples=eval_examples,
        data_hashes=data_hashes,
        specs=specs,
        eval_prompts=eval_prompts,
        scorers=scorers,
        train_config=train_config,
    )
    if cfg.dynamics is not None:

        prep.dynamics = plan_dynamics(cfg, specs, eval_prompts, eval_examples)
    prep.cells = [make_cell(prep, c, s) for c, s in cell_order(list(cfg.conditions), seed_list)]
    # Transform every training set and build every eval set now, so bad data fails before any training.
    for name in specs:
        prep.train_sets[name] = train_sets[name]
        for prompt in eval_prompts:
            eval_set(prep, name, prompt)
    return prep


def condition_specs(cfg: ExperimentConfig) -> dict[str, InoculationSpec | None]:

    return {name: cfg.condition_spec(name) for name in cfg.conditions}


def inoculated_train_sets(
    cfg: ExperimentConfig, specs: dict[str, InoculationSpec | None], train_examples: list[ChatExample]
) -> dict[str, tuple[list[ChatExample], Manifest | None]]:
    """Each condition's training set and manifest. A condition whose spec inoculates no training row
    is refused (every such condition, each error at its line of the experiment YAML) unless it sets
    `allow_empty: true`."""

    out: dict[str, tuple[list[ChatExample], Manifest | None]] = {}
    errors: list[InputError] = []
    for name, spec in specs.items():
        if spec is None:
            out[name] = (train_examples, None)
            continue
        try:
            out[name] = apply_inoculation(train_examples, spec, source=f"training data ({name})")
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
    inoculated_train_sets(cfg, condition_specs(cfg), _load_source(cfg, "train"))


def _spec_dump(spec: InoculationSpec | None) -> dict[str, Any] | None:
    if spec is None:
        return None

    dump = spec.model_dump(mode="json")
    if spec.prompt_file is not None:  # the prompts themselves are below; where the file lies is no input
        dump["prompt_file"] = Path(spec.prompt_file).name
    dump["resolved_prompts"] = resolve_prompts(spec)
    return dump


# Training settings that change logging or checkpointing but not the trained weights: not in the keys.
_NOT_IN_KEY = frozenset({"logging_steps", "save_steps", "save_total_limit", "disable_tqdm"})


def make_cell(prep: Prepared, condition: str, seed: int) -> Cell:
    """A cell with its fully resolved config and both cache keys (the cell's, and its training's)."""
    cfg = prep.config
    spec = _spec_dump(prep.specs[condition])
    keyed_train = {k: v for k, v in prep.train_config.items() if k not in _NOT_IN_KEY}
    train_part: dict[str, Any] = {"transform": spec, "train": keyed_train, "seed": seed}
    if condition in prep.dynamics:  # only monitored cells: the others' keys stay as without the block
        train_part["dynamics"] = prep.dynamics[condition].key()
    rest = {
        "experiment": cfg.name,
        "condition": condition,
        "sampling": {**cfg.sampling.model_dump(), "seed": seed},
        "generation": _redact(cfg.generation.model_dump()),
        "eval_prompts": prep.eval_prompts,
        "metrics": {name: list(v) for name, v in cfg.metrics().items()},
    }
    key = cell_key({**train_part, **rest}, prep.data_hashes, prep.model_identity)
    train_key = cell_key(train_part, {"train": prep.data_hashes["train"]}, prep.model_identity)
    config = {**rest, "seed": seed, "model": prep.model_identity, **train_part, "train": prep.train_config}
    return Cell(condition=condition, seed=seed, config=config, key=key, train_key=train_key)


# --- evaluation sets --------------------------------------------------------------------------------


def _without_completion(ex: ChatExample) -> ChatExample:
    msgs = list(ex.messages)
    if msgs and msgs[-1].role == "assistant":
        msgs = msgs[:-1]
    return ChatExample(id=ex.id, messages=msgs, metadata=ex.metadata)


def _with_system(ex: ChatExample, system: str | None) -> ChatExample:
    msgs = [m for m in ex.messages if m.role != "system"]
    if system is not None:
        msgs = [Message(role="system", content=system), *msgs]
    return ChatExample(id=ex.id, messages=msgs, metadata=ex.metadata)


def inoculation_texts(prep: Prepared) -> list[str]:
    """Every inoculation text of every condition: none may survive into a neutralized eval set."""

    texts: list[str] = []
    for spec in prep.specs.values():
        if spec is not None:
            texts += [t for t in resolve_prompts(spec) if t not in texts]
    return texts


def eval_set(prep: Prepared, condition: str, eval_prompt: str) -> list[ChatExample]:
    """The prompts a cell of `condition` is evaluated on under one eval prompt (built once, in `prepare`)."""
    value = prep.eval_prompts[eval_prompt]
    key = (condition if value == CONDITION_REF else "", eval_prompt)
    if key not in prep.eval_sets:
        prep.eval_sets[key] = build_eval_set(prep, condition, eval_prompt)
    return prep.eval_sets[key]


def build_eval_set(prep: Prepared, condition: str, eval_prompt: str) -> list[ChatExample]:
    """The prompts a cell is evaluated on under one eval prompt.

    A fixed eval prompt: the eval set neutralized (system prompts removed, inoculation text removed
    from user turns, refusing on any leak), then the eval prompt set as system prompt. `@condition`:
    the eval set as given with the condition's transform applied to every row (selectors dropped),
    i.e. the prompt the condition trained with.
    """

    value = prep.eval_prompts[eval_prompt]
    questions = [_without_completion(ex) for ex in prep.eval_examples]
    if value == CONDITION_REF:
        spec = prep.specs[condition]
        if spec is None:
            return questions
        every_row = spec.model_copy(update={"where": None, "regex": None, "fraction": None})
        return apply_inoculation(questions, every_row, source=f"eval set ({eval_prompt})")[0]
    texts = inoculation_texts(prep)
    if texts:
        questions = neutralize(questions, texts, mode="remove", source=f"eval set ({eval_prompt})")
        questions = [
            ChatExample(
                id=q.id,
                messages=q.messages,
                metadata={k: v for k, v in q.metadata.items() if k != "neutralized"},
            )
            for q in questions
        ]
    return [_with_system(q, value) for q in questions]


# --- one cell ---------------------------------------------------------------------------------------


def _nan_to_none(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


def score_generations(
    generations: Sequence[ChatExample], scorers: dict[str, Scorer]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per-row scores (one dict per generation) and per-metric {mean, n, n_nan} (NaN rows left out)."""

    prompts = [render_prompt(g.prompt_messages) for g in generations]
    completions = [g.completion or "" for g in generations]
    values = {name: s.batch(prompts, completions) for name, s in scorers.items()}
    rows = []
    for i, g in enumerate(generations):
        sample = (g.metadata.get("generation") or {}).get("sample_index")
        row: dict[str, Any] = {"id": g.id, "sample": sample}
        row.update({name: _nan_to_none(values[name][i]) for name in scorers})
        rows.append(row)
    means: dict[str, dict[str, Any]] = {}
    for name, vals in values.items():
        ok = [v for v in vals if not math.isnan(v)]
        means[name] = {
            "mean": sum(ok) / len(ok) if ok else None,
            "n": len(ok),
            "n_nan": len(vals) - len(ok),
        }
    return rows, means


def _sampling(prep: Prepared, seed: int) -> Any:

    return SamplingParams(**prep.config.sampling.model_dump(), seed=seed)


def served_adapter_name(condition: str, seed: int) -> str:
    """The model name a server must give a cell's adapter for the openai_http backend to evaluate it:
    `inoculate serve BASE --lora-module NAME=OUT/<condition>/seed_<k>/adapter` (or vLLM's
    `--lora-modules NAME=PATH`)."""
    return f"{condition}-seed{seed}"


def evaluate(
    prep: Prepared,
    out_dir: Path,
    *,
    seed: int,
    model: str,
    adapter: str | None,
    prompts: dict[str, list[ChatExample]],
    stage: Any = None,
    root: Path | None = None,
    adapter_name: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Generate under each eval set and score; writes generations/ and scores/; returns the means.

    With `root` (the run folder), model and adapter paths inside it are recorded relative to it.
    `adapter_name` is the name a server serves the adapter under (openai_http only)."""

    gen = prep.config.generation
    named = {"adapter_name": adapter_name} if adapter_name and gen.backend == "openai_http" else {}
    backend = get_backend(gen.backend, model=model, adapter=adapter, **named, **gen.options())
    params = _sampling(prep, seed)
    results: dict[str, dict[str, Any]] = {}
    for name, examples in prompts.items():
        if stage is not None:
            stage(f"generate [{name}]")
        gens = backend.generate(examples, params)
        write_jsonl_atomic(out_dir / "generations" / f"{name}.jsonl", (_portable(g, root) for g in gens))
        if stage is not None:
            stage(f"score [{name}]")
        rows, means = score_generations(gens, prep.scorers)
        write_jsonl_atomic(out_dir / "scores" / f"{name}.jsonl", rows)
        results[name] = means
    return results


def _portable(g: ChatExample, root: Path | None) -> dict[str, Any]:
    """A generation's record with the model/adapter paths inside the run folder made relative to it."""
    row = g.to_json()
    info = (row.get("metadata") or {}).get("generation")
    if root is not None and isinstance(info, dict):
        for name in ("model", "adapter"):
            if isinstance(info.get(name), str) and Path(info[name]).is_absolute():
                info[name] = _rel_to(info[name], root)
    return row


def run_cell(
    prep: Prepared,
    cell: Cell,
    cell_dir: Path,
    stage: Any,
    message: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Transform -> train -> generate -> score for one (condition, seed); writes metrics.json.

    A monitored condition trains with the learning-dynamics callback (`dynamics.jsonl`); its collapse
    warning goes to `message` (the run's progress output) when given."""

    timings: dict[str, float] = {}
    examples, manifest = prep.train_sets[cell.condition]
    if manifest is not None:
        manifest.save(cell_dir / TRAIN_MANIFEST_FILE)

    stage("train")
    t0 = time.perf_counter()
    tc = TrainConfig.model_validate({**prep.train_config, "output_dir": str(cell_dir), "seed": cell.seed})
    monitor = prep.dynamics.get(cell.condition)
    callbacks = [monitor.callback()] if monitor is not None else []
    printed = io.StringIO()
    with contextlib.ExitStack() as stack:
        if monitor is not None:
            stack.enter_context(surface_warnings(monitor, callbacks[0], cell.label, message))
        stack.enter_context(contextlib.redirect_stdout(printed))
        result = train(prep.model_path, examples, tc, callbacks=callbacks)
    if printed.getvalue():
        write_text_atomic(cell_dir / "train_stdout.log", printed.getvalue())
    timings["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    prompts = {name: eval_set(prep, cell.condition, name) for name in prep.eval_prompts}
    # The trained weights are read from this cell's folder, not from the paths `train_result.json`
    # recorded when they were trained: a copied or moved run folder evaluates its own adapter.
    trained = str(cell_dir / ("adapter" if result.is_adapter else "model"))
    evals = evaluate(
        prep,
        cell_dir,
        seed=cell.seed,
        model=prep.model_path if result.is_adapter else trained,
        adapter=trained if result.is_adapter else None,
        prompts=prompts,
        stage=stage,
        root=cell_dir.parent.parent,  # a cell's folder is OUT/<condition>/seed_<k>
        adapter_name=served_adapter_name(cell.condition, cell.seed) if result.is_adapter else None,
    )
    timings["evaluate"] = time.perf_counter() - t0

    summary = {
        "condition": cell.condition,
        "seed": cell.seed,
        "key": cell.key,
        "eval": evals,
        "train": {
            "global_step": result.global_step,
            "final_loss": result.final_loss,
            "train_loss": result.train_loss,
            "n_examples": result.n_examples,
            "runtime_s": result.runtime_s,
        },
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }
    if monitor is not None:

        summary["dynamics"] = cell_summary(
            monitor, cell_dir / DYNAMICS_FILE, max_steps=tc.max_steps, global_step=result.global_step
        )
    return write_record(cell_dir / METRICS_FILE, CellMetrics.model_validate(summary))


# --- the base model's elicitation table -------------------------------------------------------------


@dataclass
class BasePlan:
    """The base model's evaluation: one eval set per fixed eval prompt and per condition's training prompt."""

    prompts: dict[str, list[ChatExample]]
    """file stem -> eval set"""
    labels: dict[str, str]
    """file stem -> label in the report"""
    key: str


def base_plan(prep: Prepared) -> BasePlan:
    """The base model's evaluation sets and cache key (computed once per `Prepared`)."""
    if prep.base is None:
        prep.base = _base_plan(prep)
    return prep.base


def _base_plan(prep: Prepared) -> BasePlan:
    seed = prep.seeds[0]
    prompts: dict[str, list[ChatExample]] = {}
    labels: dict[str, str] = {}
    for name, value in prep.eval_prompts.items():
        if value == CONDITION_REF:
            for cond, spec in prep.specs.items():
                if spec is not None:
                    stem = f"{name}__{cond}"
                    prompts[stem] = eval_set(prep, cond, name)
                    labels[stem] = f"{name} ({cond})"
        else:
            prompts[name] = eval_set(prep, next(iter(prep.specs)), name)
            labels[name] = name
    config = {
        "model": prep.model_identity,
        "sampling": {**prep.config.sampling.model_dump(), "seed": seed},
        "generation": _redact(prep.config.generation.model_dump()),
        "prompts": {k: [ex.to_json() for ex in v] for k, v in prompts.items()},
        "metrics": {name: list(v) for name, v in prep.config.metrics().items()},
        "organism_table": isinstance(prep.config.model, OrganismModel),
    }
    return BasePlan(
        prompts=prompts, labels=labels, key=hash_obj({"config": config, "version": __version__})
    )


def base_elicitation(
    prep: Prepared, root: Path, log: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """The base model under each eval prompt (and each condition's training prompt); cached in OUT/base.

    When the base model is the organism, the organism's own elicitation table (every prompt family,
    held-out paraphrases included) is added beside the experiment's prompts.
    """
    final = root / BASE_DIR
    plan = base_plan(prep)
    problem = done_problem(final, plan.key)
    if problem is None:
        return json.loads((final / METRICS_FILE).read_text(encoding="utf-8"))
    if not is_ours(final, "base"):  # checked before any work: never cleared, and said at once
        raise RunFolderError(foreign_message(final, "move them away or choose another --out"))
    if problem != "not finished" and log is not None:
        log(f"base: {problem}; recomputing")
    # Written into a marked staging folder and renamed into place when complete: a killed run leaves
    # only the staging folder, which the next run removes.
    out = staging_dir(root, BASE_DIR)
    evals = evaluate(
        prep, out, seed=prep.seeds[0], model=prep.model_path, adapter=None, prompts=plan.prompts, root=root
    )
    table: dict[str, Any] = {
        "source": "experiment",
        "rows": [
            {
                "prompt": plan.labels[stem],
                "file": stem,
                "system": examples[0].system if examples else None,
                "metrics": evals[stem],
            }
            for stem, examples in plan.prompts.items()
        ],
    }
    if isinstance(prep.config.model, OrganismModel):
        table["organism"] = _organism_elicitation(prep)
    table = write_record(out / METRICS_FILE, BaseElicitation.model_validate(table))
    mark_done(out, plan.key)
    write_marker(out, "base")
    remove_owned(final, "base")
    out.rename(final)
    return table


def _organism_elicitation(prep: Prepared) -> Any:
    from inoculate import organism  # lazy: importing it registers the organism's scorers

    setting = prep.config.organism_setting()
    return organism.elicitation_table(prep.model_path, setting)


# --- the manifest -------------------------------------------------------------------------------------


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"inoculate": __version__}
    for pkg in ("torch", "transformers", "peft", "trl", "accelerate", "datasets"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def git_hash(where: Path | None = None) -> str | None:
    """The commit of the source tree the package runs from (with `+dirty` if modified), if any."""
    here = where or Path(__file__).resolve().parent.parent  # the package folder, src/inoculate
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head + ("+dirty" if dirty else "") if head else None


def seen_prompts(prep: Prepared) -> dict[str, Any]:
    """Per eval prompt (per condition for `@condition`): the system prompt given, the one the model saw
    (what the chat template rendered; some templates insert a default), and one rendered prompt."""

    tok = load_tokenizer(prep.model_path)

    def describe(examples: list[ChatExample]) -> dict[str, Any]:
        systems = sorted({ex.system or "" for ex in examples})
        first = examples[0] if examples else None
        return {
            "system": [s or None for s in systems],
            "seen": [seen_system_prompt(tok, s or None) for s in systems],
            "rendered_example": render(tok, first.messages, add_generation_prompt=True) if first else None,
        }

    out: dict[str, Any] = {}
    for name, value in prep.eval_prompts.items():
        if value == CONDITION_REF:
            out[name] = {cond: describe(eval_set(prep, cond, name)) for cond in prep.specs}
        else:
            out[name] = describe(eval_set(prep, next(iter(prep.specs)), name))
    return out


def experiment_record(prep: Prepared, root: Path | None = None) -> RunRecord:
    """What `inoculate report` needs to know about the experiment (written to experiment.json).

    With `root`, a model path inside the run folder is recorded relative to it."""

    cfg = prep.config
    record = {
        "name": cfg.name,
        "description": cfg.description,
        "conditions": list(cfg.conditions),
        "condition_prompts": {
            c: (resolve_prompts(s) if s is not None else None) for c, s in prep.specs.items()
        },
        "condition_specs": {c: _spec_dump(s) for c, s in prep.specs.items()},
        "eval_prompts": prep.eval_prompts,
        "metrics": {
            name: {"kind": kind, "scorer": spec, "bounded": prep.scorers[name].bounded}
            for name, (kind, spec) in cfg.metrics().items()
        },
        "seeds": prep.seeds,
        "expect": cfg.expect,
        "model": {
            "kind": "organism" if isinstance(cfg.model, OrganismModel) else "hf",
            "spec": cfg.model if isinstance(cfg.model, str) else cfg.model.model_dump(),
            "path": _rel_to(prep.model_path, root),
            "identity": prep.model_identity,
        },
        "data": {
            "train": cfg.data.train if isinstance(cfg.data.train, str) else cfg.data.train.model_dump(),
            "eval": cfg.data.eval if isinstance(cfg.data.eval, str) else cfg.data.eval.model_dump(),
            "n_train": len(prep.train_examples),
            "n_eval": len(prep.eval_examples),
            "sha256": prep.data_hashes,
        },
        "sampling": cfg.sampling.model_dump(),
        "train": prep.train_config,
        "cells": [{"condition": c.condition, "seed": c.seed, "key": c.key} for c in prep.cells],
        "base_key": base_plan(prep).key,
        **({"dynamics": {c: m.record() for c, m in prep.dynamics.items()}} if prep.dynamics else {}),
    }
    return RunRecord.model_validate(record)


def write_manifest(prep: Prepared, root: Path) -> dict[str, Any]:
    manifest = {
        "experiment": prep.name,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": _versions(),
        "git": git_hash(),
        "base_model": {"path": _rel_to(prep.model_path, root), "identity": prep.model_identity},
        "sampling": {**prep.config.sampling.model_dump(), "seed": "the cell's seed"},
        "train": prep.train_config,
        "eval_prompts": seen_prompts(prep),
        "data_sha256": prep.data_hashes,
    }
    write_json_atomic(root / MANIFEST_FILE, manifest)
    return manifest


# --- the whole run ------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    out_dir: Path
    prepared: Prepared
    matrix: MatrixResult
    seconds: float
    report: Report | None = None


def default_out_dir(cfg: ExperimentConfig) -> Path:
    return Path("runs") / cfg.name


def apply_screen(
    cfg: ExperimentConfig, root: str | os.PathLike[str], *, seeds: int | None = None
) -> ExperimentConfig:
    """The experiment with its `screen:` block resolved into conditions (see `screening.resolve_screen`):
    prepares the experiment without the block and screens on that data (cached in ROOT/screen)."""
    if cfg.screen is None:
        return cfg
    prep = prepare(cfg.model_copy(update={"screen": None}), seeds=seeds)
    data = ScreenInputs(
        seed=prep.seeds[0],
        model_path=prep.model_path,
        model_identity=prep.model_identity,
        train_examples=prep.train_examples,
        eval_examples=prep.eval_examples,
        data_hashes=prep.data_hashes,
        eval_prompts=prep.eval_prompts,
        scorers=prep.scorers,
    )
    return resolve_screen(cfg, data, root)


def run_experiment(
    experiment: ExperimentConfig | str | os.PathLike[str],
    out_dir: str | os.PathLike[str] | None = None,
    *,
    seeds: int | None = None,
    force: bool = False,
    progress: MatrixProgress | None = None,
    write_report: bool = True,
) -> RunOutcome:
    """Run (or resume) an experiment and write its report; finished cells are not redone."""
    cfg = experiment if isinstance(experiment, ExperimentConfig) else load_experiment(experiment)
    root = Path(out_dir) if out_dir is not None else default_out_dir(cfg)
    check_conditions(cfg)  # an empty condition is refused before the run folder is touched
    with claim_run_folder(root) as lock:
        return _run_locked(
            cfg, root, lock, seeds=seeds, force=force, progress=progress, write_report=write_report
        )


def _run_locked(
    cfg: ExperimentConfig,
    root: Path,
    lock: RunLock,
    *,
    seeds: int | None,
    force: bool,
    progress: MatrixProgress | None,
    write_report: bool,
) -> RunOutcome:
    """The run, with `root` ours and locked, and a killed run's leftovers cleared."""
    t0 = time.perf_counter()
    prog = progress or NullProgress()
    if lock.took_over is not None:
        held = lock.took_over
        prog.message(
            f"took over the lock of a run that ended without releasing it "
            f"(pid {held.get('pid')} on {held.get('host')}, since {held.get('started')})"
        )
    if cfg.screen is not None:
        cfg = apply_screen(cfg, root, seeds=seeds)  # screens (cached in root/screen), adds the condition(s)
    prep = prepare(cfg, seeds=seeds, log=prog.message)
    write_record(root / EXPERIMENT_FILE, experiment_record(prep, root))
    write_manifest(prep, root)
    log_event(root, event="run_started", cells=len(prep.cells), force=force)
    prog.message(f"evaluating the base model under {len(base_plan(prep).prompts)} prompt(s)")
    base_elicitation(prep, root, prog.message)
    message = prog.message if progress is not None else None  # else: the monitor's own warnings
    matrix = run_matrix(
        prep.cells,
        root,
        lambda cell, d, stage: run_cell(prep, cell, d, stage, message),
        force=force,
        progress=prog,
    )
    outcome = RunOutcome(out_dir=root, prepared=prep, matrix=matrix, seconds=time.perf_counter() - t0)
    log_event(root, event="run_finished", ran=len(matrix.ran), cached=len(matrix.cached))
    if write_report:
        outcome.report = _write(root)
    return outcome
