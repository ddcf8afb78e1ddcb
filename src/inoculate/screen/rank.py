"""The screen: run the registered measures, flag placebo-like candidates, rank and recommend.

**Placebo-like** (a warning per measure; excluded from the recommendation when it holds on the pick
measure): for a measure compared with the neutral prompt (`baseline="neutral"`: elicitation), the
candidate's interval for the primary trait reaches down to the neutral rate (ci_low <= neutral
rate); for a difference measure (surprise), the interval of the value it picks (the trait reduction
if computed, else the surprise reduction) reaches down to its floor: max(`<key>_floor`,
relative_floor x the best candidate's value), so "about zero" is judged on the scale of the effects
this model shows.

**Also elicits**: a candidate whose elicitation interval for another scored trait lies above the
neutral prompt's would inoculate that trait too; it is warned about and not recommended.

**Recommendation rule**: among non-neutral candidates not placebo-like on the pick measure and
eliciting no other scored trait, the one with the highest pick value (surprise: the trait reduction
if computed, else the surprise reduction; elicitation: the primary trait's rate), ties broken by the
other measures. None if no candidate qualifies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from inoculate.generate.hf import HFBackend
from inoculate.models import seen_system_prompt
from inoculate.records import ChatExample, Message
from inoculate.screen.measures import MeasureContext, Measured, TraitScorer, summarize
from inoculate.screen.result import (
    MEASURE_REGISTRY,
    NEEDS,
    NEUTRAL_NAME,
    Candidate,
    CandidateScore,
    ContrastPair,
    Cost,
    MeasureInfo,
    ScreenConfig,
    ScreenResult,
    all_measures,
    fmt_summary,
    measure_info,
    measure_of,
    selectable_measures,
)


def with_neutral(candidates: Sequence[Candidate], neutral: str | None) -> list[Candidate]:
    """The candidates with the neutral reference first: an existing candidate with the neutral text is
    marked as it, else one named `neutral` is added."""
    neutral = neutral if neutral and neutral.strip() else None
    out = [c.model_copy(update={"neutral": False}) for c in candidates]
    for i, c in enumerate(out):
        if (c.prompt or None) == neutral:
            ref = c.model_copy(update={"neutral": True})
            return [ref] + out[:i] + out[i + 1 :]
    name = NEUTRAL_NAME
    while any(c.name == name for c in out):
        name += "_"
    return [Candidate(name=name, prompt=neutral, neutral=True), *out]


# --- flags and the pick -------------------------------------------------------------------------------


def pick_key(c: CandidateScore, measure: str, primary: str | None) -> str | None:
    """The key of `c.measures` a measure's pick reads (None when it has none)."""
    info = measure_info(measure)
    if info.per_trait:
        return info.key(primary) if primary and info.key(primary) in c.measures else None
    return next((k for k in info.prefer or (measure,) if k in c.measures), None)


def pick_value(c: CandidateScore, measure: str, primary: str | None) -> float:
    """The number the recommendation ranks by (NaN when the measure was not run)."""
    key = pick_key(c, measure, primary)
    return c.measures[key].mean if key else math.nan


def _reaches(s: Any, floor: float) -> bool:
    low = s.mean if math.isnan(s.ci_low) else s.ci_low
    return low <= floor


def _is_placebo(
    info: MeasureInfo,
    key: str,
    c: CandidateScore,
    others: Sequence[CandidateScore],
    neutral: CandidateScore,
    cfg: ScreenConfig,
) -> bool:
    s = c.measures[key]
    if info.baseline == "neutral":
        base = neutral.measures[key].mean
        return bool(not math.isnan(s.ci_low) and s.ci_low <= base) or s.mean <= base
    best = max((o.measures[key].mean for o in others if key in o.measures), default=0.0)
    return _reaches(s, max(cfg.floor(key), cfg.relative_floor * best))


def _flag(
    result: dict[str, CandidateScore], neutral: CandidateScore, primary: str | None, cfg: ScreenConfig
) -> None:
    """Set each non-neutral candidate's `placebo` (measures on which it is placebo-like) and
    `also_elicits`."""
    others = [c for c in result.values() if not c.neutral]
    measures = selectable_measures()
    for c in others:
        c.placebo = []
        for info in measures:
            key = pick_key(c, info.name, primary)
            if key is not None and _is_placebo(info, key, c, others, neutral, cfg):
                c.placebo.append(info.name)
        ref = neutral.elicitation
        c.also_elicits = [
            name
            for name, iv in c.elicitation.items()
            if name != primary and name in ref and iv.ci_low > ref[name].ci_high
        ]


def _descending(x: float) -> float:
    return -x if not math.isnan(x) else math.inf


def rank_candidates(
    cands: Sequence[CandidateScore], pick: str, primary: str | None
) -> tuple[list[CandidateScore], str | None, str]:
    """Order by the pick measure (ties by the others), assign ranks, apply the recommendation rule."""
    others = [i.name for i in selectable_measures() if i.name != pick]
    order = [pick, *others]
    ranked = sorted(cands, key=lambda c: tuple(_descending(pick_value(c, m, primary)) for m in order))
    for i, c in enumerate(ranked, start=1):
        c.rank = i
    info = measure_info(pick)
    what = info.rule.format(primary=primary) if info.rule else f"the {info.noun or info.name}"
    rule = (
        f"highest {what} among non-neutral candidates not placebo-like on {pick} that elicit no other "
        f"scored trait; ties broken by {', '.join(others) or 'the order given'}"
    )
    best = next(
        (
            c
            for c in ranked
            if not c.neutral
            and pick not in c.placebo
            and not c.also_elicits
            and not math.isnan(pick_value(c, pick, primary))
        ),
        None,
    )
    return ranked, (best.name if best else None), rule


def _placebo_reason(c: CandidateScore, key: str, neutral: CandidateScore) -> str:
    info = measure_info(measure_of(key))
    ref = neutral.measures.get(key)
    return info.placebo.format(
        noun=info.noun or info.name,
        unit=info.unit,
        trait=key[len(info.name) + 1 : -1] if info.per_trait else None,
        value=fmt_summary(c.measures[key], info.spec),
        reference=f"{ref.mean:{info.spec}}" if ref else "",
    )


def _warnings(
    ranked: Sequence[CandidateScore], neutral: CandidateScore, primary: str | None, cfg: ScreenConfig
) -> list[str]:
    warn: list[str] = []
    measures = selectable_measures()
    for c in ranked:
        if c.neutral:
            continue
        keys = [pick_key(c, i.name, primary) for i in measures if i.name in c.placebo]
        reasons = [_placebo_reason(c, k, neutral) for k in keys if k is not None]
        if reasons:
            ran = [i.name for i in measures if i.name in cfg.measures]
            on = [i.name for i in measures if i.name in c.placebo]
            verdict = (
                "likely will not inoculate"
                if on == ran
                else f"on {', '.join(on)} only: the measures disagree"
            )
            warn.append(f"{c.name} is placebo-like ({verdict}): " + "; ".join(reasons))
        for name in c.also_elicits:
            iv, ref = c.elicitation[name], neutral.elicitation[name]
            warn.append(
                f"{c.name} also elicits {name} ({iv.mean:.0%}; neutral {ref.mean:.0%}): it would likely "
                f"suppress {name} too, so it is not recommended"
            )
    return warn


# --- the screen ---------------------------------------------------------------------------------------


def _plan(selected: Sequence[str]) -> list[MeasureInfo]:
    """The selected measures and those that run as part of them, in running order."""
    infos = [i for i in all_measures() if i.name in selected or i.part_of in selected]
    return sorted(infos, key=lambda i: (i.run_order, i.order, i.name))


def screen(
    model: Any,
    tokenizer: Any,
    candidates: Sequence[Candidate],
    *,
    train: Sequence[ChatExample] | None = None,
    questions: Sequence[Sequence[Message]] | None = None,
    scorers: Sequence[TraitScorer] = (),
    contrast: Sequence[ContrastPair] | None = None,
    config: ScreenConfig | None = None,
    backend: Any = None,
    questions_source: str = "",
    progress: Callable[[str], None] | None = None,
) -> ScreenResult:
    """Screen `candidates` (exactly one marked neutral; see `with_neutral`) on a loaded model.

    `train` supplies the responses for the surprise measure, `questions` (conversations without a
    system turn) and `scorers` the elicitation measure (the first scorer is the primary trait),
    `contrast` the optional trait-specific term, `backend` a generation backend (default: the HF
    backend over this model). Each measure in `config.measures` runs (see `MEASURE_REGISTRY`).
    """
    cfg = config or ScreenConfig()
    if sum(c.neutral for c in candidates) != 1:
        raise ValueError("exactly one candidate must be the neutral reference (see with_neutral)")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"candidate names must be distinct: {names}")
    scores = {
        c.name: CandidateScore(
            name=c.name,
            prompt=c.prompt,
            neutral=c.neutral,
            seen_system=seen_system_prompt(tokenizer, c.prompt),
        )
        for c in candidates
    }

    def make_backend() -> Any:
        if backend is not None:
            return backend
        name = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "model")
        return HFBackend.from_loaded(model, tokenizer, name=name, batch_size=cfg.batch_size)

    ctx = MeasureContext(
        model,
        tokenizer,
        list(candidates),
        cfg,
        train=[ex for ex in train or [] if ex.completion][: cfg.max_examples],
        questions=[list(q) for q in list(questions or [])[: cfg.n]],
        scorers=list(scorers),
        contrast=list(contrast or [])[: cfg.max_examples],
        backend_factory=make_backend,
    )
    have = {"train": bool(train), "scorers": bool(scorers), "questions": bool(questions)}
    have["contrast"] = bool(ctx.contrast)
    used = {"train": 0, "questions": 0, "contrast": 0}
    sizes = {"train": len(ctx.train), "questions": len(ctx.questions), "contrast": len(ctx.contrast)}
    totals: dict[str, Cost] = {}
    say = progress or (lambda _msg: None)
    for info in _plan(cfg.measures):
        missing = [n for n in info.needs if not have[n]]
        if missing:
            if info.part_of is not None:
                continue
            raise ValueError(f"the {info.name} measure needs {NEEDS[missing[0]]}")
        for n in info.needs:
            used[n] = sizes.get(n, 0)
        if info.selectable:
            say(
                f"{info.name}: "
                + info.progress.format(
                    prompts=len(candidates),
                    examples=sizes["train"],
                    questions=sizes["questions"],
                    samples=cfg.samples_per_question,
                    contrast=sizes["contrast"],
                )
            )
        out = Measured.of(MEASURE_REGISTRY.get(info.name)(ctx), info.name)
        for name, keyed in out.values.items():
            for key, vals in keyed.items():
                scores[name].measures[key] = summarize(vals, info.interval, cfg.confidence)
                scores[name].values[key] = list(vals)
        for name, updates in out.fields.items():
            for k, v in updates.items():
                setattr(scores[name], k, v)
        if out.cost:
            total = Cost()
            for name, cost in out.cost.items():
                scores[name].cost[info.name] = cost
                total = total.add(cost)
            totals[info.name] = total

    per_trait = any(measure_info(m).per_trait for m in cfg.measures)
    primary = scorers[0].name if scorers and per_trait else None
    neutral = next(s for s in scores.values() if s.neutral)
    _flag(scores, neutral, primary, cfg)
    ranked, best, rule = rank_candidates(list(scores.values()), cfg.pick, primary)
    warn = _warnings(ranked, neutral, primary, cfg)
    if best is None:
        warn.append(f"no candidate qualifies under the rule ({rule}): none is recommended")
    asks_questions = any("questions" in measure_info(m).needs for m in cfg.measures)
    if asks_questions and questions_source == "training data":
        warn.append("elicitation ran on training questions, not held-out ones (pass --eval)")
    return ScreenResult(
        candidates=ranked,
        neutral=neutral.name,
        primary_trait=primary,
        recommendation=best,
        rule=rule,
        warnings=warn,
        cost=totals,
        config=cfg,
        questions_source=questions_source,
        n_questions=used["questions"],
        n_examples=used["train"],
        n_contrast=used["contrast"],
    )
