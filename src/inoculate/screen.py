"""Screen candidate inoculation prompts before training, by two measures reported side by side.

**Elicitation** (Wichers et al. 2025): sample from the base model with the candidate as system prompt
on held-out questions, score the trait, and report the rate with its Wilson interval. A prompt that
elicits the trait more strongly before training tends to inoculate better.

**Surprise reduction** (Tan et al. 2025): IP works by making the training data less surprising, so
measure that directly. For each training example i, with p_i its prompt (system turn replaced) and
r_i its response of n_i tokens,

    d_i(c) = [log p(r_i | c, p_i) - log p(r_i | neutral, p_i)] / n_i          (nats/token)

and the candidate's surprise reduction is the mean of d_i(c) over the examples, with a Student-t
interval over examples (paired: the same responses under both prompts). No sampling, no judge: one
batched teacher-forced pass per candidate over the distinct (prompt, response) pairs.

**Trait-specific term** (when the setting can render each response with and without the trait):

    t_i(c) = log p(r_i^trait | c, p_i) - log p(r_i^plain | c, p_i)               (nats/response)

is the log-odds the prompt puts on the trait-bearing rendering; the trait reduction is the mean of
t_i(c) - t_i(neutral). Unlike the total surprise reduction it ignores whatever else the prompt makes
likely or unlikely, so it separates "names the trait" from "shifts the response distribution".

**Placebo-like** (a warning per measure; excluded from the recommendation when it holds on the pick
measure): on elicitation, the candidate's interval for the primary trait reaches down to the neutral
rate (ci_low <= neutral rate); on surprise, the interval of the trait reduction (if computed, else of
the surprise reduction) reaches down to its floor: max(trait_floor or surprise_floor, relative_floor x
the best candidate's value), so "about zero" is judged on the scale of the effects this model shows.

**Also elicits**: a candidate whose elicitation interval for another scored trait lies above the
neutral prompt's would inoculate that trait too; it is warned about and not recommended.

**Recommendation rule**: among non-neutral candidates not placebo-like on the pick measure and
eliciting no other scored trait, the one with the highest pick measure (surprise: the trait
reduction if computed, else the surprise reduction; elicitation: the primary trait's rate), ties
broken by the other measure. None if no candidate qualifies.
"""

from __future__ import annotations

import csv
import io
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from inoculate.errors import InputError, InputErrors
from inoculate.fileio import atomic_open, write_json_atomic
from inoculate.formats import load_examples
from inoculate.generate import SamplingParams
from inoculate.generate.hf import HFBackend
from inoculate.logprob import logprob
from inoculate.models import encode_prompts, load_model, seen_system_prompt
from inoculate.prompt_files import read_prompt_entries
from inoculate.records import ChatExample, Message
from inoculate.rundir import SCREEN_DIR  # noqa: F401  (the run folder's screen/ folder; re-exported)
from inoculate.scorers import get_scorers, render_prompt

if TYPE_CHECKING:
    from rich.table import Table

Measure = Literal["elicitation", "surprise"]
MEASURES: tuple[Measure, ...] = ("elicitation", "surprise")
NEUTRAL_NAME = "neutral"


class TraitScorer(Protocol):
    """What screening needs of a scorer (`inoculate.scorers.Scorer` is one)."""

    name: str

    def batch(self, prompts: Sequence[str], completions: Sequence[str]) -> list[float]: ...


class Candidate(BaseModel):
    """A prompt to screen. `prompt=None` means no system turn at all."""

    model_config = ConfigDict(extra="forbid")

    name: str
    prompt: str | None
    neutral: bool = False


class ContrastPair(BaseModel):
    """One response rendered with and without the trait, after the same conversation (no system turn)."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message]
    with_trait: str
    without_trait: str


class ScreenConfig(BaseModel):
    """Screening settings; sampling is explicit (no library defaults)."""

    model_config = ConfigDict(extra="forbid")

    measures: list[Measure] = Field(default_factory=lambda: list(MEASURES), min_length=1)
    n: int = Field(64, ge=1)
    """Held-out questions for elicitation."""
    samples_per_question: int = Field(1, ge=1)
    max_examples: int = Field(256, ge=1)
    """Training responses (and contrast pairs) for the surprise measure."""
    batch_size: int = Field(64, ge=1)
    """Sequences per teacher-forced forward pass (surprise) and per generate call (elicitation, default HF
    backend)."""
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int = 0
    pick: Measure = "surprise"
    surprise_floor: float = 0.02
    """Nats/token: a surprise reduction whose interval reaches this low counts as placebo-like."""
    trait_floor: float = 0.5
    """Nats/response: the same for the trait-specific term."""
    relative_floor: float = Field(0.1, ge=0, lt=1)
    """...or this fraction of the best candidate's value, whichever is higher (effects are model-scaled)."""
    confidence: float = 0.95


class Cost(BaseModel):
    tokens: int = 0
    """Tokens through the model: prompt + completion per forward sequence (generation: + new tokens)."""
    seconds: float = 0.0

    def add(self, other: Cost) -> Cost:
        return Cost(tokens=self.tokens + other.tokens, seconds=self.seconds + other.seconds)


class Interval(BaseModel):
    mean: float
    ci_low: float
    ci_high: float
    n: int


class CandidateScore(BaseModel):
    name: str
    prompt: str | None
    neutral: bool
    seen_system: str | None = None
    """The system prompt the model actually saw (the chat template may insert a default)."""
    elicitation: dict[str, Interval] = Field(default_factory=dict)
    """Scorer name -> trait rate with Wilson interval (bootstrap for non-binary scores)."""
    logprob_mean: float | None = None
    """Mean per-token log-prob of the training responses under this prompt."""
    surprise: Interval | None = None
    """Surprise reduction vs neutral, nats/token (0 for the neutral prompt itself)."""
    trait: Interval | None = None
    """Trait-specific reduction vs neutral, nats/response."""
    placebo_elicitation: bool = False
    placebo_surprise: bool = False
    also_elicits: list[str] = Field(default_factory=list)
    """Other scored traits this prompt elicits above the neutral prompt (it would inoculate them too)."""
    cost: dict[str, Cost] = Field(default_factory=dict)
    rank: int = 0
    values: dict[str, list[float]] = Field(default_factory=dict)
    """Per-example values behind each measure (`surprise`, `trait`, `elicitation[<scorer>]`, in example
    and sample order), for resampling analyses (`inoculate.report.screen_validation`)."""

    @property
    def placebo_like(self) -> bool:
        return self.placebo_elicitation or self.placebo_surprise

    def flags(self, recommendation: str | None) -> list[str]:
        """Table flags: reference, recommended, placebo-like (on which measures), also elicits ..."""
        out = []
        if self.neutral:
            out.append("reference")
        if self.name == recommendation:
            out.append("recommended")
        if self.placebo_like and not self.neutral:
            on = [m for m in MEASURES if getattr(self, f"placebo_{m}")]
            out.append(f"placebo-like ({', '.join(on)})")
        if self.also_elicits:
            out.append("also elicits " + ", ".join(self.also_elicits))
        return out


class ScreenResult(BaseModel):
    """Ranked candidates, the recommendation and the rule that chose it, warnings and costs."""

    candidates: list[CandidateScore]
    neutral: str
    primary_trait: str | None
    recommendation: str | None
    rule: str
    warnings: list[str] = Field(default_factory=list)
    cost: dict[str, Cost] = Field(default_factory=dict)
    config: ScreenConfig
    questions_source: str = ""
    n_questions: int = 0
    n_examples: int = 0
    n_contrast: int = 0

    def get(self, name: str) -> CandidateScore:
        for c in self.candidates:
            if c.name == name:
                return c
        raise KeyError(name)

    @property
    def recommended(self) -> CandidateScore | None:
        return self.get(self.recommendation) if self.recommendation else None

    def cost_ratio(self) -> float | None:
        """Elicitation seconds / surprise seconds (both measures' totals), if both ran."""
        e, s = self.cost.get("elicitation"), self.cost.get("surprise")
        if e is None or s is None or s.seconds <= 0:
            return None
        return e.seconds / s.seconds

    def csv_rows(self) -> list[dict[str, Any]]:
        traits = list(self.candidates[0].elicitation) if self.candidates else []
        rows = []
        for c in self.candidates:
            row: dict[str, Any] = {
                "rank": c.rank,
                "name": c.name,
                "prompt": c.prompt or "",
                "neutral": c.neutral,
                "recommended": c.name == self.recommendation,
            }
            for t in traits:
                iv = c.elicitation.get(t)
                row[f"elicit[{t}]"] = _num(iv.mean if iv else None)
                row[f"elicit[{t}]_ci_low"] = _num(iv.ci_low if iv else None)
                row[f"elicit[{t}]_ci_high"] = _num(iv.ci_high if iv else None)
            row["logprob_mean"] = _num(c.logprob_mean)
            for key, iv in (("surprise_reduction", c.surprise), ("trait_reduction", c.trait)):
                row[key] = _num(iv.mean if iv else None)
                row[f"{key}_ci_low"] = _num(iv.ci_low if iv else None)
                row[f"{key}_ci_high"] = _num(iv.ci_high if iv else None)
            row["placebo_like"] = c.placebo_like
            for m in MEASURES:
                cost = c.cost.get(m)
                row[f"{m}_tokens"] = cost.tokens if cost else ""
                row[f"{m}_seconds"] = round(cost.seconds, 4) if cost else ""
            rows.append(row)
        return rows

    def write_csv(self, path: str | os.PathLike[str]) -> Path:
        rows = self.csv_rows()
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["name"], lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        with atomic_open(path) as fh:
            fh.write(buf.getvalue())
        return Path(path)

    def write_json(self, path: str | os.PathLike[str]) -> Path:
        write_json_atomic(path, self.model_dump(mode="json"))
        return Path(path)

    def table(self) -> Table:
        from rich.table import Table

        traits = list(self.candidates[0].elicitation) if self.candidates else []
        has_trait = any(c.trait is not None for c in self.candidates)
        has_surprise = any(c.surprise is not None for c in self.candidates)
        t = Table(title="inoculation prompt screen", show_lines=False)
        t.add_column("#", justify="right")
        t.add_column("candidate")
        t.add_column("prompt", max_width=40, overflow="ellipsis")
        for tr in traits:
            t.add_column(f"elicits {tr} [95% CI]", justify="right")
        if has_surprise:
            t.add_column("surprise red. nats/tok [CI]", justify="right")
        if has_trait:
            t.add_column("trait red. nats/resp [CI]", justify="right")
        t.add_column("flags")
        for c in self.candidates:
            cells = [str(c.rank), c.name, c.prompt or "(no system prompt)"]
            for tr in traits:
                iv = c.elicitation.get(tr)
                cells.append(f"{iv.mean:.0%} [{iv.ci_low:.0%}, {iv.ci_high:.0%}]" if iv else "")
            if has_surprise:
                cells.append(_fmt_iv(c.surprise, "+.3f"))
            if has_trait:
                cells.append(_fmt_iv(c.trait, "+.2f"))
            cells.append(", ".join(_rich_flag(f) for f in c.flags(self.recommendation)))
            t.add_row(*cells)
        costs = [f"{m}: {c.tokens:,} tokens, {c.seconds:.2f} s" for m, c in self.cost.items()]
        ratio = self.cost_ratio()
        if ratio is not None:
            costs.append(f"likelihood screen {ratio:.1f}x cheaper (seconds)")
        t.caption = "; ".join(costs)
        return t


def _rich_flag(flag: str) -> str:
    if flag == "reference":
        return flag
    return f"[bold green]{flag}[/]" if flag == "recommended" else f"[yellow]{flag}[/]"


def _num(x: float | None) -> float | str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _fmt_iv(iv: Interval | None, spec: str) -> str:
    if iv is None:
        return ""
    return f"{iv.mean:{spec}} [{iv.ci_low:{spec}}, {iv.ci_high:{spec}}]"


# --- candidates ---------------------------------------------------------------------------------------


def load_candidates(path: str | os.PathLike[str], field: str | None = None) -> list[Candidate]:
    """Candidates from a prompt file (`inoculate.prompt_files`): `.txt` one per line (`#` comments
    and blank lines skipped), or `.json`/`.jsonl`/`.yaml` strings or objects; an object's `name`
    names its candidate, `field` (default: its only other string field, e.g. `prompt`) is the prompt.
    Unnamed candidates are c1, c2, ... by position."""
    entries = read_prompt_entries(path, field, name_field="name")
    out = [Candidate(name=e.name or f"c{i + 1}", prompt=e.text) for i, e in enumerate(entries)]
    _check_names(out, str(path))
    return out


def candidates_from_list(items: Sequence[Any], *, file: str = "<candidates>") -> list[Candidate]:
    """`["text", {"name": ..., "prompt": ...}, ...]` -> candidates (unnamed ones become c1, c2, ...)."""
    out: list[Candidate] = []
    errors = []
    for i, item in enumerate(items):
        if isinstance(item, str) and item.strip():
            out.append(Candidate(name=f"c{i + 1}", prompt=item.strip()))
        elif isinstance(item, dict) and isinstance(item.get("prompt"), str) and item["prompt"].strip():
            extra = set(item) - {"name", "prompt"}
            if extra:
                errors.append((i, f"unknown field(s) {sorted(extra)} (allowed: name, prompt)"))
                continue
            out.append(Candidate(name=str(item.get("name") or f"c{i + 1}"), prompt=item["prompt"].strip()))
        else:
            errors.append((i, "expected a non-empty prompt string or {name, prompt}"))
    if errors:
        raise InputErrors([InputError(file, 0, f"candidates[{i}]", msg) for i, msg in errors])
    if not out:
        raise InputErrors.one(file, 0, "candidates", "no candidate prompts")
    _check_names(out, file)
    return out


def candidates_from(
    file: str | os.PathLike[str] | None = None,
    texts: Sequence[str] = (),
    *,
    prompt_field: str | None = None,
) -> list[Candidate]:
    """The candidates of a prompt file (`load_candidates`) followed by each of `texts` (`--candidate`).

    A text is named `c{i}` by its position after the file's candidates, with `_` appended until the
    name is not one the file already uses. ValueError when there is no candidate at all, or a
    `prompt_field` without a file (the field belongs to the file's objects).
    """
    if prompt_field is not None and file is None:
        raise ValueError("--prompt-field names a field of the CANDIDATES file's objects; give the file")
    cands = load_candidates(file, prompt_field) if file is not None else []
    if texts:
        taken = {c.name for c in cands}
        for i, c in enumerate(candidates_from_list(list(texts), file="--candidate"), start=len(cands) + 1):
            name = f"c{i}"
            while name in taken:
                name += "_"
            taken.add(name)
            cands.append(c.model_copy(update={"name": name}))
    if not cands:
        raise ValueError("give candidate prompts: a CANDIDATES file or --candidate TEXT")
    return cands


def measures_from(measures: str | Sequence[str], pick: str = "surprise") -> tuple[list[Measure], Measure]:
    """`"elicitation,surprise"` (or a list) and the `pick` measure -> (measures, pick), checked.

    ValueError for an unknown or empty measure list or an unknown `pick`; a known `pick` that is not
    among the measures falls back to the first measure.
    """
    items = measures.split(",") if isinstance(measures, str) else list(measures)
    wanted = [m.strip() for m in items if m.strip()]
    bad = [m for m in wanted if m not in MEASURES]
    if bad or not wanted:
        raise ValueError(f"--measures: unknown {bad or wanted} (choose from {', '.join(MEASURES)})")
    if pick not in MEASURES:
        raise ValueError(f"--pick: {pick!r} is not one of {', '.join(MEASURES)}")
    if pick not in wanted:
        pick = wanted[0]
    return wanted, pick  # type: ignore[return-value]


def _check_names(cands: Sequence[Candidate], file: str) -> None:
    seen: set[str] = set()
    for c in cands:
        if c.name in seen:
            raise InputErrors.one(file, 0, "candidates", f"candidate name {c.name!r} given twice")
        seen.add(c.name)


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


# --- the measures -------------------------------------------------------------------------------------


def _system(prompt: str | None) -> list[Message]:
    return [Message(role="system", content=prompt)] if prompt else []


def _strip_system(messages: Sequence[Message]) -> list[Message]:
    return [m for m in messages if m.role != "system"]


def _t_interval(values: Sequence[float], confidence: float) -> Interval:
    from inoculate.stats import t_interval  # lazy: stats imports numpy and scipy

    vals = [v for v in values if not math.isnan(v)]
    mean = sum(vals) / len(vals) if vals else math.nan
    lo, hi = t_interval(vals, confidence) if len(vals) >= 2 else (math.nan, math.nan)
    return Interval(mean=mean, ci_low=lo, ci_high=hi, n=len(vals))


def response_logprobs(
    model: Any,
    tokenizer: Any,
    prompt: str | None,
    conversations: Sequence[Sequence[Message]],
    completions: Sequence[str],
    *,
    batch_size: int,
) -> tuple[list[float], list[int], Cost]:
    """Total log-prob and token count of each completion after `prompt` + conversation; and the cost.

    Identical (conversation, completion) pairs are scored once: training sets repeat questions, and a
    contrast pair's trait-bearing side is often a training response itself. The cost counts what ran.
    """
    convs = [_system(prompt) + _strip_system(c) for c in conversations]
    keys = [(tuple((m.role, m.content) for m in c), r) for c, r in zip(convs, completions, strict=True)]
    first: dict[tuple[Any, str], int] = {}
    for i, k in enumerate(keys):
        first.setdefault(k, i)
    uniq = list(first.values())
    t0 = time.perf_counter()
    res = logprob(
        model, tokenizer, [convs[i] for i in uniq], [completions[i] for i in uniq], batch_size=batch_size
    )
    seconds = time.perf_counter() - t0
    by_key = {keys[i]: r for i, r in zip(uniq, res, strict=True)}
    cost = Cost(tokens=round(sum(r.n_forward for r in res)), seconds=seconds)
    return [float(by_key[k].total) for k in keys], [int(by_key[k].n_tokens) for k in keys], cost


def surprise_scores(
    model: Any,
    tokenizer: Any,
    candidates: Sequence[Candidate],
    examples: Sequence[ChatExample],
    *,
    contrast: Sequence[ContrastPair] | None = None,
    batch_size: int = 64,
    confidence: float = 0.95,
) -> dict[str, dict[str, Any]]:
    """Per candidate: `logprob_mean`, `surprise` (Interval), `trait` (Interval or None), `cost`."""
    neutral = next(c for c in candidates if c.neutral)
    pairs = list(contrast or [])
    k, n = len(pairs), len(examples)
    convs = [ex.prompt_messages for ex in examples] + [p.messages for p in pairs] * 2
    comps = [ex.completion or "" for ex in examples]
    comps += [p.with_trait for p in pairs] + [p.without_trait for p in pairs]
    per: dict[str, dict[str, Any]] = {}
    for c in candidates:
        totals, ns, cost = response_logprobs(model, tokenizer, c.prompt, convs, comps, batch_size=batch_size)
        odds = [totals[n + i] - totals[n + k + i] for i in range(k)] if pairs else None
        per[c.name] = {"totals": totals[:n], "ns": ns[:n], "cost": cost, "odds": odds}
    ref = per[neutral.name]
    out: dict[str, dict[str, Any]] = {}
    for c in candidates:
        e = per[c.name]
        d = [(a - b) / n for a, b, n in zip(e["totals"], ref["totals"], e["ns"], strict=True) if n > 0]
        lp = [a / n for a, n in zip(e["totals"], e["ns"], strict=True) if n > 0]
        trait = None
        values = {"surprise": d}
        if e["odds"] is not None:
            values["trait"] = [a - b for a, b in zip(e["odds"], ref["odds"], strict=True)]
            trait = _t_interval(values["trait"], confidence)
        out[c.name] = {
            "logprob_mean": sum(lp) / len(lp) if lp else math.nan,
            "surprise": _t_interval(d, confidence),
            "trait": trait,
            "cost": e["cost"],
            "values": values,
        }
    return out


def _new_tokens(gen: ChatExample, tokenizer: Any) -> int:
    n = (gen.metadata.get("generation") or {}).get("completion_tokens")
    if n is None:
        n = len(tokenizer(gen.completion or "", add_special_tokens=False)["input_ids"])
    return int(n)


def _rate(values: Sequence[float], confidence: float) -> Interval:
    from inoculate.stats import summarize_values  # lazy: stats imports numpy and scipy

    s = summarize_values(values, confidence=confidence)
    return Interval(mean=s.mean, ci_low=s.ci_low, ci_high=s.ci_high, n=s.n)


def elicitation_scores(
    backend: Any,
    tokenizer: Any,
    candidates: Sequence[Candidate],
    questions: Sequence[Sequence[Message]],
    scorers: Sequence[TraitScorer],
    config: ScreenConfig,
) -> dict[str, dict[str, Any]]:
    """Per candidate: `elicitation` (scorer -> Interval), `cost` (generation + scoring), `generations`."""
    params = SamplingParams(
        temperature=config.temperature,
        top_p=config.top_p,
        max_new_tokens=config.max_new_tokens,
        n=config.samples_per_question,
        seed=config.seed,
        stop=config.stop,
    )
    out: dict[str, dict[str, Any]] = {}
    for c in candidates:
        prompts = [
            ChatExample(id=f"q{i}", messages=_system(c.prompt) + _strip_system(q))
            for i, q in enumerate(questions)
        ]
        t0 = time.perf_counter()
        gens = backend.generate(prompts, params)
        texts = [render_prompt(g.prompt_messages) for g in gens]
        comps = [g.completion or "" for g in gens]
        scores = {s.name: s.batch(texts, comps) for s in scorers}
        seconds = time.perf_counter() - t0
        prompt_tokens = (
            sum(len(ids) for ids in encode_prompts(tokenizer, [p.messages for p in prompts]))
            * config.samples_per_question
        )
        new_tokens = sum(_new_tokens(g, tokenizer) for g in gens)
        out[c.name] = {
            "elicitation": {name: _rate(v, config.confidence) for name, v in scores.items()},
            "cost": Cost(tokens=prompt_tokens + new_tokens, seconds=seconds),
            "generations": gens,
            "values": {f"elicitation[{name}]": list(v) for name, v in scores.items()},
        }
    return out


# --- the screen ---------------------------------------------------------------------------------------


def _flag(
    result: dict[str, CandidateScore], neutral: CandidateScore, primary: str | None, cfg: ScreenConfig
) -> None:
    others = [c for c in result.values() if not c.neutral]
    best_trait = max((c.trait.mean for c in others if c.trait is not None), default=0.0)
    best_surprise = max((c.surprise.mean for c in others if c.surprise is not None), default=0.0)
    for c in others:
        if primary is not None and primary in c.elicitation:
            base = neutral.elicitation[primary].mean
            iv = c.elicitation[primary]
            c.placebo_elicitation = bool(not math.isnan(iv.ci_low) and iv.ci_low <= base) or iv.mean <= base
        if c.trait is not None:
            c.placebo_surprise = _reaches(c.trait, max(cfg.trait_floor, cfg.relative_floor * best_trait))
        elif c.surprise is not None:
            c.placebo_surprise = _reaches(
                c.surprise, max(cfg.surprise_floor, cfg.relative_floor * best_surprise)
            )
        c.also_elicits = [
            name
            for name, iv in c.elicitation.items()
            if name != primary
            and name in neutral.elicitation
            and iv.ci_low > neutral.elicitation[name].ci_high
        ]


def _reaches(iv: Interval, floor: float) -> bool:
    low = iv.mean if math.isnan(iv.ci_low) else iv.ci_low
    return low <= floor


def pick_value(c: CandidateScore, measure: Measure, primary: str | None) -> float:
    """The number the recommendation ranks by (NaN when the measure was not run)."""
    if measure == "elicitation":
        iv = c.elicitation.get(primary) if primary else None
        return iv.mean if iv else math.nan
    iv = c.trait if c.trait is not None else c.surprise
    return iv.mean if iv else math.nan


def rank_candidates(
    cands: Sequence[CandidateScore], pick: Measure, primary: str | None
) -> tuple[list[CandidateScore], str | None, str]:
    """Order by the pick measure (ties by the other), assign ranks, apply the recommendation rule."""
    other: Measure = "elicitation" if pick == "surprise" else "surprise"

    def key(c: CandidateScore) -> tuple[float, float]:
        a, b = pick_value(c, pick, primary), pick_value(c, other, primary)
        return (-a if not math.isnan(a) else math.inf, -b if not math.isnan(b) else math.inf)

    ranked = sorted(cands, key=key)
    for i, c in enumerate(ranked, start=1):
        c.rank = i
    what = (
        f"the primary trait's elicitation rate ({primary})"
        if pick == "elicitation"
        else "the trait-specific surprise reduction (else the total surprise reduction)"
    )
    rule = (
        f"highest {what} among non-neutral candidates not placebo-like on {pick} that elicit no other "
        f"scored trait; ties broken by {other}"
    )
    placebo = (lambda c: c.placebo_elicitation) if pick == "elicitation" else (lambda c: c.placebo_surprise)
    best = next(
        (
            c
            for c in ranked
            if not c.neutral
            and not placebo(c)
            and not c.also_elicits
            and not math.isnan(pick_value(c, pick, primary))
        ),
        None,
    )
    return ranked, (best.name if best else None), rule


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
    backend over this model).
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
    totals: dict[str, Cost] = {}
    warn: list[str] = []
    n_examples = n_contrast = n_questions = 0
    say = progress or (lambda _msg: None)

    if "surprise" in cfg.measures:
        if not train:
            raise ValueError("the surprise measure needs training examples")
        exs = [ex for ex in train if ex.completion][: cfg.max_examples]
        pairs = list(contrast or [])[: cfg.max_examples]
        n_examples, n_contrast = len(exs), len(pairs)
        say(f"surprise: {len(candidates)} prompts x {n_examples} responses")
        sur = surprise_scores(
            model,
            tokenizer,
            candidates,
            exs,
            contrast=pairs or None,
            batch_size=cfg.batch_size,
            confidence=cfg.confidence,
        )
        total = Cost()
        for name, s in sur.items():
            sc = scores[name]
            sc.logprob_mean, sc.surprise, sc.trait = s["logprob_mean"], s["surprise"], s["trait"]
            sc.cost["surprise"] = s["cost"]
            sc.values.update(s["values"])
            total = total.add(s["cost"])
        totals["surprise"] = total

    if "elicitation" in cfg.measures:
        if not scorers:
            raise ValueError("the elicitation measure needs at least one scorer")
        if not questions:
            raise ValueError("the elicitation measure needs questions")
        qs = list(questions)[: cfg.n]
        n_questions = len(qs)
        if backend is None:
            name = str(getattr(getattr(model, "config", None), "_name_or_path", "") or "model")
            backend = HFBackend.from_loaded(model, tokenizer, name=name, batch_size=cfg.batch_size)
        say(f"elicitation: {len(candidates)} prompts x {n_questions} questions x {cfg.samples_per_question}")
        eli = elicitation_scores(backend, tokenizer, candidates, qs, scorers, cfg)
        total = Cost()
        for name, e in eli.items():
            scores[name].elicitation = e["elicitation"]
            scores[name].values.update(e["values"])
            scores[name].cost["elicitation"] = e["cost"]
            total = total.add(e["cost"])
        totals["elicitation"] = total

    primary = scorers[0].name if scorers and "elicitation" in cfg.measures else None
    neutral = next(s for s in scores.values() if s.neutral)
    _flag(scores, neutral, primary, cfg)
    ranked, best, rule = rank_candidates(list(scores.values()), cfg.pick, primary)
    for c in ranked:
        if c.neutral:
            continue
        reasons = []
        if c.placebo_elicitation and primary:
            iv = c.elicitation[primary]
            reasons.append(
                f"elicits {primary} at {iv.mean:.0%} [{iv.ci_low:.0%}, {iv.ci_high:.0%}], "
                f"not above the neutral rate {neutral.elicitation[primary].mean:.0%}"
            )
        if c.placebo_surprise:
            if c.trait is not None:
                reasons.append(f"trait reduction {_fmt_iv(c.trait, '+.2f')} nats/response is about zero")
            elif c.surprise is not None:
                iv_text = _fmt_iv(c.surprise, "+.3f")
                reasons.append(f"surprise reduction {iv_text} nats/token is about zero")
        if reasons:
            ran = [m for m in ("elicitation", "surprise") if m in cfg.measures]
            on = [
                m for m, f in (("elicitation", c.placebo_elicitation), ("surprise", c.placebo_surprise)) if f
            ]
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
    if best is None:
        warn.append(f"no candidate qualifies under the rule ({rule}): none is recommended")
    if "elicitation" in cfg.measures and questions_source == "training data":
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
        n_questions=n_questions,
        n_examples=n_examples,
        n_contrast=n_contrast,
    )


# --- from files ---------------------------------------------------------------------------------------

WITHOUT_TRAIT_KEY = "without_trait"


def contrast_from_examples(
    examples: Sequence[ChatExample], *, source: str = "<contrast>"
) -> list[ContrastPair]:
    """Pairs from chat examples whose final assistant turn carries the trait and whose
    `metadata["without_trait"]` holds the same response with the trait removed."""
    pairs, errors = [], []
    for i, ex in enumerate(examples, start=1):
        plain = ex.metadata.get(WITHOUT_TRAIT_KEY)
        if not isinstance(plain, str) or not plain.strip() or ex.completion is None:
            errors.append(
                InputError(
                    source, i, f"metadata.{WITHOUT_TRAIT_KEY}", "missing: the response with the trait removed"
                )
            )
            continue
        pairs.append(
            ContrastPair(
                messages=_strip_system(ex.prompt_messages), with_trait=ex.completion, without_trait=plain
            )
        )
    if errors:
        raise InputErrors(errors)
    return pairs


def questions_of(examples: Sequence[ChatExample]) -> list[list[Message]]:
    """The conversations before the final assistant turn, system turns removed."""
    return [_strip_system(ex.prompt_messages) for ex in examples]


def screen_files(
    model: str | os.PathLike[str],
    candidates: Sequence[Candidate],
    data: str | os.PathLike[str],
    *,
    eval_data: str | os.PathLike[str] | None = None,
    scorers: Sequence[str] = (),
    contrast: str | os.PathLike[str] | None = None,
    neutral: str | None = None,
    adapter: str | os.PathLike[str] | None = None,
    chat_template: str | None = None,
    config: ScreenConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> ScreenResult:
    """Load the model, data and scorers named by the CLI, and screen."""
    cfg = config or ScreenConfig()
    train = load_examples(data).examples
    source = "training data"
    if eval_data is not None:
        evals = load_examples(eval_data, require_assistant=False).examples
        source = str(eval_data)
    else:
        evals = train
    pairs = None
    if contrast is not None:
        pairs = contrast_from_examples(load_examples(contrast).examples, source=str(contrast))
    built = get_scorers(list(scorers)) if scorers else []
    if "elicitation" in cfg.measures and not built:
        raise ValueError("elicitation needs at least one --scorer (or use --measures surprise)")
    mdl, tok = load_model(model, adapter, chat_template=chat_template)
    return screen(
        mdl,
        tok,
        with_neutral(candidates, neutral),
        train=train,
        questions=questions_of(evals),
        scorers=built,
        contrast=pairs,
        config=cfg,
        questions_source=source,
        progress=progress,
    )
