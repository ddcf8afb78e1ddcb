"""The screen's types: candidates, settings, the measure registry, per-candidate scores and the result
(with its column list, CSV and JSON). Nothing here runs a model.

A measure is registered with `@measure(name, unit=..., needs=...)` (see `inoculate.screen.measures`
for the built-ins and `MeasureInfo` for every option). A candidate's numbers live in
`CandidateScore.measures`, keyed by the measure's name, or `name[trait]` for a measure scored per
trait (`elicitation[<scorer>]`); `values` holds the per-example values behind each key.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from inoculate.fileio import atomic_open, nan_to_null, write_json_atomic
from inoculate.records import Message
from inoculate.registry import Registry
from inoculate.stats import Summary, t_interval

Measure = Literal["elicitation", "surprise"]
"""The built-in measures a screen can be asked for (plugins add names to `MEASURE_REGISTRY`)."""
MEASURES: tuple[Measure, ...] = ("elicitation", "surprise")
NEUTRAL_NAME = "neutral"

# --- the measure registry -----------------------------------------------------------------------------

MeasureFn = Callable[..., Any]
"""`fn(ctx: MeasureContext) -> Measured | {candidate: values}` (see `inoculate.screen.measures`)."""

MEASURE_REGISTRY: Registry[MeasureFn] = Registry(
    "screen measure",
    "inoculate.measures",
    lazy={m: "inoculate.screen.measures" for m in ("elicitation", "surprise", "trait")},
)

NEEDS = {
    "train": "training examples",
    "scorers": "at least one scorer",
    "questions": "questions",
    "contrast": "contrast pairs",
}
"""What a measure can need of the screen's inputs (`needs=`), and how an error names it."""


@dataclass(frozen=True)
class MeasureInfo:
    """A registered measure's metadata (the keyword arguments of `@measure`), with defaults."""

    name: str
    unit: str
    needs: tuple[str, ...] = ()
    part_of: str | None = None
    """Runs whenever this (selectable) measure runs and its own needs are met; not selectable itself."""
    per_trait: bool = False
    """Values per scorer: keys `name[<scorer>]`; the pick uses the primary trait's key."""
    baseline: Literal["floor", "neutral"] = "floor"
    """Placebo-like when the interval reaches down to the floor (values are already differences vs the
    neutral prompt), or (`neutral`) when it is not above the neutral prompt's mean."""
    interval: Literal["t", "rate"] = "t"
    """Student-t over examples, or `stats.summarize_values` (Wilson for 0/1 values, else bootstrap)."""
    prefer: tuple[str, ...] = ()
    """Keys the pick reads, first present wins (default: the measure's own key)."""
    noun: str = ""
    """`surprise reduction`: names the value in warnings (default: the name)."""
    title: str = ""
    """Short column title, e.g. `surprise red.` (default: the name)."""
    unit_short: str = ""
    label: str = ""
    """The validation's axis label (default: `noun (unit)`)."""
    spec: str = "+.3f"
    """Format spec of a value in tables and warnings."""
    csv: str = ""
    """CSV column (default: the key); `{trait}` is the scorer of a per-trait measure."""
    header: str = ""
    """Table header for both renderers; `{trait}` as above (default: title and unit)."""
    rule: str = ""
    """What the recommendation ranks by when this is the pick measure; `{primary}` is the primary trait."""
    placebo: str = "{noun} {value} {unit} is about zero"
    """The warning's reason; `{trait}`, `{value}` (mean [CI]), `{reference}` (the neutral mean)."""
    progress: str = "{prompts} prompts"
    """Progress line; `{prompts}`, `{examples}`, `{questions}`, `{samples}`, `{contrast}`."""
    order: int = 100
    """Column and flag order (elicitation 10, surprise 20, trait 30)."""
    run_order: int = 100
    """Order of running (the cheap teacher-forced pass first)."""
    description: str = ""

    @property
    def selectable(self) -> bool:
        return self.part_of is None

    def key(self, trait: str | None = None) -> str:
        return f"{self.name}[{trait}]" if self.per_trait else self.name

    def column(self, trait: str | None = None) -> str:
        return self.csv.format(trait=trait) if self.csv else self.key(trait)

    def heading(self, trait: str | None = None, *, short: bool = False) -> str:
        if self.header:
            return self.header.format(trait=trait)
        title = self.title or self.name
        return f"{title} {self.unit_short or self.unit} [CI]" if short else f"{title} ({self.unit})"

    def axis_label(self) -> str:
        return self.label or f"{self.noun or self.name} ({self.unit})"


def measure(
    name: str, *, unit: str, needs: str | Sequence[str] = (), description: str = "", **options: Any
) -> Callable[[MeasureFn], MeasureFn]:
    """Register a screen measure: `@measure("surprise", unit="nats/token", needs="train")`.

    The function takes a `MeasureContext` and returns per-candidate, per-example values (candidate
    name -> list of floats), or a `Measured` for several keys, a cost or extra fields. `options` are
    `MeasureInfo`'s fields."""
    bad = set(options) - set(MeasureInfo.__dataclass_fields__)
    if bad:
        raise TypeError(f"measure {name!r}: unknown option(s) {sorted(bad)}")
    wanted = (needs,) if isinstance(needs, str) else tuple(needs)
    unknown = [n for n in wanted if n not in NEEDS]
    if unknown:
        raise TypeError(f"measure {name!r}: unknown needs {unknown} (known: {', '.join(NEEDS)})")
    return MEASURE_REGISTRY.register(name, description=description, unit=unit, needs=wanted, **options)


def measure_info(name: str) -> MeasureInfo:
    entry = MEASURE_REGISTRY.entry(name)
    return MeasureInfo(name=name, description=entry.description, **entry.meta)


def all_measures() -> list[MeasureInfo]:
    """Every registered measure, in column order."""
    return sorted((measure_info(e.name) for e in MEASURE_REGISTRY.list()), key=lambda i: (i.order, i.name))


def selectable_measures() -> list[MeasureInfo]:
    """The measures a screen can be asked for (those not `part_of` another), in column order."""
    return [i for i in all_measures() if i.selectable]


def measure_of(key: str) -> str:
    """`elicitation[caps]` -> `elicitation`; `surprise` -> `surprise`."""
    return key.split("[", 1)[0]


def check_measure(name: str) -> str:
    if name not in MEASURE_REGISTRY and name not in MEASURE_REGISTRY.names():
        raise ValueError(f"unknown measure {name!r} (choose from {', '.join(selectable_names())})")
    if not measure_info(name).selectable:
        raise ValueError(f"{name!r} runs as part of {measure_info(name).part_of!r}; choose that")
    return name


def selectable_names() -> list[str]:
    return [i.name for i in selectable_measures()]


# --- summaries ----------------------------------------------------------------------------------------


def interval(*, mean: float, ci_low: float, ci_high: float, n: int, confidence: float = 0.95) -> Summary:
    """A row-level Student-t summary from its numbers (what the screen's difference measures report)."""
    method = "none" if math.isnan(ci_low) else "t"
    return Summary(
        mean=mean,
        ci_low=ci_low,
        ci_high=ci_high,
        n=n,
        n_seeds=0,
        method=method,
        unit="rows",
        confidence=confidence,
        ci_method=method,
    )


def t_summary(values: Sequence[float], confidence: float = 0.95) -> Summary:
    """Mean of the non-NaN values with a Student-t interval over them (NaN bounds below two)."""
    vals = [v for v in values if not math.isnan(v)]
    if not vals:
        return Summary.empty("rows", "no values", confidence=confidence)
    lo, hi = t_interval(vals, confidence) if len(vals) >= 2 else (math.nan, math.nan)
    return interval(mean=sum(vals) / len(vals), ci_low=lo, ci_high=hi, n=len(vals), confidence=confidence)


def fmt_summary(s: Summary | None, spec: str) -> str:
    """`mean [ci_low, ci_high]` in `spec` (empty for None): the one format of screen values."""
    if s is None:
        return ""
    return f"{s.mean:{spec}} [{s.ci_low:{spec}}, {s.ci_high:{spec}}]"


def _as_summary(x: Any) -> Any:
    """An old screen.json's `Interval` ({mean, ci_low, ci_high, n}) as a Summary."""
    if isinstance(x, dict) and "method" not in x:
        return interval(**{k: x[k] for k in ("mean", "ci_low", "ci_high", "n")})
    return x


# --- inputs and settings ------------------------------------------------------------------------------


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

    measures: list[str] = Field(default_factory=lambda: list(MEASURES), min_length=1)
    """Registered measure names (built in: elicitation, surprise)."""
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
    pick: str = "surprise"
    surprise_floor: float = 0.02
    """Nats/token: a surprise reduction whose interval reaches this low counts as placebo-like."""
    trait_floor: float = 0.5
    """Nats/response: the same for the trait-specific term."""
    relative_floor: float = Field(0.1, ge=0, lt=1)
    """...or this fraction of the best candidate's value, whichever is higher (effects are model-scaled)."""
    confidence: float = 0.95

    @field_validator("measures")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        return [check_measure(m) for m in v]

    @field_validator("pick")
    @classmethod
    def _known_pick(cls, v: str) -> str:
        return check_measure(v)

    def floor(self, key: str) -> float:
        """The absolute placebo floor of a measure key: `<key>_floor` if set here, else 0."""
        return float(getattr(self, f"{measure_of(key)}_floor", 0.0))


class Cost(BaseModel):
    tokens: int = 0
    """Tokens through the model: prompt + completion per forward sequence (generation: + new tokens)."""
    seconds: float = 0.0

    def add(self, other: Cost) -> Cost:
        return Cost(tokens=self.tokens + other.tokens, seconds=self.seconds + other.seconds)


# --- scores and the result ----------------------------------------------------------------------------

_LEGACY = ("elicitation", "surprise", "trait", "placebo_elicitation", "placebo_surprise")


class CandidateScore(BaseModel):
    name: str
    prompt: str | None
    neutral: bool
    seen_system: str | None = None
    """The system prompt the model actually saw (the chat template may insert a default)."""
    measures: dict[str, Summary] = Field(default_factory=dict)
    """Measure key -> mean with interval: `surprise` (nats/token vs neutral), `trait` (nats/response vs
    neutral), `elicitation[<scorer>]` (trait rate, Wilson or bootstrap), and any plugin measure."""
    logprob_mean: float | None = None
    """Mean per-token log-prob of the training responses under this prompt."""
    placebo: list[str] = Field(default_factory=list)
    """The measures on which this prompt is placebo-like."""
    also_elicits: list[str] = Field(default_factory=list)
    """Other scored traits this prompt elicits above the neutral prompt (it would inoculate them too)."""
    cost: dict[str, Cost] = Field(default_factory=dict)
    rank: int = 0
    values: dict[str, list[float]] = Field(default_factory=dict)
    """Per-example values behind each measure key (in example and sample order), for resampling
    analyses (`inoculate.report.screen_validation`)."""

    @model_validator(mode="before")
    @classmethod
    def _legacy_fields(cls, data: Any) -> Any:
        """Accept the old fixed fields (`elicitation`, `surprise`, `trait`, `placebo_<m>`): an older
        screen.json, or a caller building a score by hand. Written JSON carries both shapes."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        old = {k: data.pop(k) for k in _LEGACY if k in data}
        if "measures" in data or not old:
            return data
        measures = {f"elicitation[{t}]": _as_summary(s) for t, s in (old.get("elicitation") or {}).items()}
        measures.update({k: _as_summary(old[k]) for k in ("surprise", "trait") if old.get(k) is not None})
        data["measures"] = measures
        data.setdefault("placebo", [m for m in MEASURES if old.get(f"placebo_{m}")])
        return data

    def get(self, key: str) -> Summary | None:
        return self.measures.get(key)

    def per_trait(self, measure: str) -> dict[str, Summary]:
        """A per-trait measure's summaries by trait: `per_trait("elicitation")` -> {scorer: Summary}."""
        pre = f"{measure}["
        return {k[len(pre) : -1]: s for k, s in self.measures.items() if k.startswith(pre)}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def elicitation(self) -> dict[str, Summary]:
        """Scorer name -> trait rate with Wilson interval (bootstrap for non-binary scores)."""
        return self.per_trait("elicitation")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def surprise(self) -> Summary | None:
        """Surprise reduction vs neutral, nats/token (0 for the neutral prompt itself)."""
        return self.measures.get("surprise")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def trait(self) -> Summary | None:
        """Trait-specific reduction vs neutral, nats/response."""
        return self.measures.get("trait")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def placebo_elicitation(self) -> bool:
        return "elicitation" in self.placebo

    @computed_field  # type: ignore[prop-decorator]
    @property
    def placebo_surprise(self) -> bool:
        return "surprise" in self.placebo

    @property
    def placebo_like(self) -> bool:
        return bool(self.placebo)

    def flags(self, recommendation: str | None) -> list[str]:
        """Table flags: reference, recommended, placebo-like (on which measures), also elicits ..."""
        out = []
        if self.neutral:
            out.append("reference")
        if self.name == recommendation:
            out.append("recommended")
        if self.placebo_like and not self.neutral:
            on = [i.name for i in selectable_measures() if i.name in self.placebo]
            out.append(f"placebo-like ({', '.join(on)})")
        if self.also_elicits:
            out.append("also elicits " + ", ".join(self.also_elicits))
        return out


@dataclass(frozen=True)
class Column:
    """One measure column of the screen table: which key, its CSV name, headers and format."""

    key: str
    info: MeasureInfo
    trait: str | None = None

    @property
    def csv(self) -> str:
        return self.info.column(self.trait)

    def heading(self, *, short: bool = False) -> str:
        return self.info.heading(self.trait, short=short)

    def cell(self, c: CandidateScore) -> str:
        return fmt_summary(c.measures.get(self.key), self.info.spec)


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

    def columns(self, *, every: bool = False) -> list[Column]:
        """The measure columns, in order: a per-trait measure once per trait of the first candidate; a
        single-key measure when some candidate has it (`every`: always, as the CSV lists them)."""
        out = []
        first = self.candidates[0] if self.candidates else None
        for info in all_measures():
            if info.per_trait:
                out += [Column(info.key(t), info, t) for t in (first.per_trait(info.name) if first else {})]
            elif every or any(info.name in c.measures for c in self.candidates):
                out.append(Column(info.name, info))
        return out

    def csv_rows(self) -> list[dict[str, Any]]:
        cols = self.columns(every=True)
        rows = []
        for c in self.candidates:
            row: dict[str, Any] = {
                "rank": c.rank,
                "name": c.name,
                "prompt": c.prompt or "",
                "neutral": c.neutral,
                "recommended": c.name == self.recommendation,
            }
            for col in cols:
                if col.key == "surprise":
                    row["logprob_mean"] = _cell(c.logprob_mean)
                s = c.measures.get(col.key)
                row[col.csv] = _cell(s.mean if s else None)
                row[f"{col.csv}_ci_low"] = _cell(s.ci_low if s else None)
                row[f"{col.csv}_ci_high"] = _cell(s.ci_high if s else None)
            row["placebo_like"] = c.placebo_like
            for info in selectable_measures():
                cost = c.cost.get(info.name)
                row[f"{info.name}_tokens"] = cost.tokens if cost else ""
                row[f"{info.name}_seconds"] = round(cost.seconds, 4) if cost else ""
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


def _cell(x: float | None) -> float | str:
    """A CSV cell: blank for a missing or NaN number."""
    v = nan_to_null(x)
    return "" if v is None else v


class MeasureLabels(Mapping[str, str]):
    """Measure name -> axis label, read from the registry on each use (plugins included)."""

    def _labels(self) -> dict[str, str]:
        return {i.name: i.axis_label() for i in all_measures()}

    def __getitem__(self, key: str) -> str:
        return self._labels()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._labels())

    def __len__(self) -> int:
        return len(self._labels())
