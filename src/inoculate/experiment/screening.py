"""The experiment's `screen:` block: its checks, and the screen run on the runner's prepared data.

`runner.apply_screen` hands the prepared plan's data here as `ScreenInputs` (`Plan.screen_inputs`);
`picked_conditions` screens (cached in ROOT/screen) and returns the condition(s) to add, which the
runner adds to the plan (`Plan.with_conditions`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inoculate._version import __version__
from inoculate.errors import InputError
from inoculate.experiment.cache import hash_obj, is_done, mark_done
from inoculate.experiment.config import ExperimentConfig
from inoculate.generate import get_backend
from inoculate.generate.hf import HFBackend
from inoculate.models import load_model
from inoculate.records import ChatExample
from inoculate.rundir import CONDITION_REF, SCREEN_DIR
from inoculate.screen import (
    Candidate,
    ScreenConfig,
    ScreenResult,
    questions_of,
    screen,
    selectable_names,
    with_neutral,
)
from inoculate.transform import InoculationSpec


@dataclass(frozen=True)
class ScreenInputs:
    """What the screen reads from the prepared experiment (prepared without its `screen:` block)."""

    seed: int
    """The first seed: elicitation samples with it."""
    model_path: str
    model_identity: dict[str, Any]
    train_examples: list[ChatExample]
    eval_examples: list[ChatExample]
    data_hashes: dict[str, str]
    eval_prompts: dict[str, str | None]
    scorers: dict[str, Any]


def screen_errors(cfg: ExperimentConfig) -> list[InputError]:
    """Problems in an experiment's `screen:` block, located (for `semantic_errors`)."""
    lm = cfg.lines
    spec = cfg.screen
    assert spec is not None
    errors = []
    known = selectable_names()
    for i, name in enumerate(spec.measures):
        if name not in known:
            errors.append(
                lm.error(("screen", "measures", i), f"unknown measure {name!r} (known: {', '.join(known)})")
            )
    if spec.measure not in known:
        errors.append(
            lm.error(("screen", "measure"), f"unknown measure {spec.measure!r} (known: {', '.join(known)})")
        )
    elif spec.measure not in spec.measures:
        errors.append(lm.error(("screen", "measure"), f"{spec.measure!r} is not among screen.measures"))
    if spec.trait is not None and spec.trait not in cfg.traits:
        errors.append(
            lm.error(("screen", "trait"), f"unknown trait {spec.trait!r} (known: {', '.join(cfg.traits)})")
        )
    names = [n for n, _ in spec.named()]
    bad = [n for n in spec.condition_names() if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", n)]
    if bad:
        errors.append(
            lm.error(("screen", "candidates"), f"use letters, digits, '_', '-', '.' in names: {bad}")
        )
    if len(set(names)) != len(names):
        errors.append(lm.error(("screen", "candidates"), f"candidate names must be distinct: {names}"))
    for name in spec.condition_names():
        if name in cfg.conditions:
            errors.append(lm.error(("screen",), f"condition {name!r} is already declared in `conditions`"))
    for i, (_name, prompt) in enumerate(spec.named()):
        try:
            if cfg.resolve_text(prompt) is None:
                errors.append(lm.error(("screen", "candidates", i), "resolves to an empty prompt"))
        except KeyError as e:
            errors.append(lm.error(("screen", "candidates", i), e.args[0]))
    if spec.neutral is not None:
        try:
            cfg.resolve_text(spec.neutral)
        except KeyError as e:
            errors.append(lm.error(("screen", "neutral"), e.args[0]))
    return errors


def run_screen_block(cfg: ExperimentConfig, data: ScreenInputs, root: str | os.PathLike[str]) -> ScreenResult:
    """Screen the experiment's candidates on `data` (cached in ROOT/screen by a hash of all it reads)."""
    spec = cfg.screen
    assert spec is not None
    trait = spec.trait or next(iter(cfg.traits))
    scorer_names = [trait] + [t for t in cfg.traits if t != trait]

    if spec.neutral is not None:
        neutral = cfg.resolve_text(spec.neutral)
    else:
        value = data.eval_prompts.get("neutral")
        neutral = None if value == CONDITION_REF else value
    cands = with_neutral([Candidate(name=n, prompt=cfg.resolve_text(p)) for n, p in spec.named()], neutral)
    sampling = cfg.sampling
    sc = ScreenConfig(
        measures=spec.measures,
        n=spec.n,
        samples_per_question=sampling.n,
        max_examples=spec.max_examples,
        batch_size=spec.batch_size,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_new_tokens=sampling.max_new_tokens,
        stop=sampling.stop,
        seed=data.seed,
        pick=spec.measure,
    )
    train = data.train_examples[: spec.max_examples]
    contrast = None
    if spec.contrast:
        # lazy: importing inoculate.organism registers its scorers
        from inoculate.organism.contrast import organism_contrast

        contrast = organism_contrast(train, cfg.traits[trait])
    out = Path(root) / SCREEN_DIR
    key = hash_obj(
        {
            "candidates": [c.model_dump() for c in cands],
            "config": sc.model_dump(),
            "model": data.model_identity,
            "data": data.data_hashes,
            "scorers": {t: cfg.traits[t] for t in scorer_names},
            "generation": cfg.generation.model_dump(),
            "version": __version__,
            "contrast": [p.model_dump() for p in contrast] if contrast else None,
        }
    )
    if is_done(out, key):
        return ScreenResult.model_validate_json((out / "screen.json").read_text(encoding="utf-8"))
    model, tok = load_model(data.model_path)
    backend = None
    if "elicitation" in spec.measures:
        options = cfg.generation.options()
        if cfg.generation.backend == "hf":
            backend = HFBackend(data.model_path, loaded=(model, tok), **options)
        else:
            backend = get_backend(cfg.generation.backend, model=data.model_path, **options)
    result = screen(
        model,
        tok,
        cands,
        train=train,
        questions=questions_of(data.eval_examples),
        scorers=[_Named(data.scorers[t], t) for t in scorer_names],
        contrast=contrast,
        config=sc,
        backend=backend,
        questions_source="eval set",
    )
    result.write_csv(out / "screen.csv")
    result.write_json(out / "screen.json")
    mark_done(out, key)
    return result


class _Named:
    """A scorer reported under the experiment's trait name."""

    def __init__(self, scorer: Any, name: str):
        self.scorer, self.name = scorer, name

    def batch(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        return self.scorer.batch(prompts, completions)


def picked_conditions(
    cfg: ExperimentConfig, data: ScreenInputs, root: str | os.PathLike[str]
) -> dict[str, InoculationSpec]:
    """The conditions the `screen:` block adds: `pick: best` one condition (`screen.condition`) trained
    with the recommended prompt; `pick: all` one per candidate. Raises ValueError when `best` finds no
    candidate to recommend."""
    spec = cfg.screen
    assert spec is not None
    result = run_screen_block(cfg, data, root)
    conditions: dict[str, InoculationSpec] = {}
    if spec.pick == "best":
        best = result.recommended
        if best is None:
            raise ValueError(f"screen: no candidate qualifies ({result.rule}); see {Path(root) / SCREEN_DIR}")
        conditions[spec.condition] = InoculationSpec(prompt=best.prompt, placement=spec.placement)
    else:
        for c in result.candidates:
            if not c.neutral:
                conditions[c.name] = InoculationSpec(prompt=c.prompt, placement=spec.placement)
    return conditions
