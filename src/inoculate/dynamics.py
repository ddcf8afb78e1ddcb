"""Learning-dynamics monitor: how likely the model finds trait-bearing responses as it trains.

Every `every_n_steps` optimizer steps (and before the first step, and after the last) the callback
scores a fixed probe set by teacher forcing: for each probe question there is one response per
*category* (by default `inoculated` — carries the inoculated trait only, `other` — carries the other
trait only, `neither`), and each is scored under each *prompt* (by default `neutral` and
`inoculation`). It records the mean per-token log-probability of every (prompt, category) pair:
the curves of Tan et al. (2025), where under inoculation the inoculated trait plateaus under the
neutral prompt while the other trait rises.

IP collapse rule (`CollapseRule`). The signal is the inoculated trait's neutral-prompt log-prob,
taken by default *relative to the `neither` category* (s = lp(inoculated | neutral) -
lp(neither | neutral), nats/token), which cancels what every response shares (content, formatting)
and leaves the trait alone. With m_t the running minimum of s over evaluations 0..t, the rule fires
at the first evaluation t >= `min_evals` at which s_j > m_j + delta held for the last `k`
consecutive evaluations j = t-k+1..t. It then warns once (an `IPCollapseWarning`, a log record on
`inoculate.dynamics`), flags that row and every later one (`collapse: true`, `collapse_step`), and,
if `stop_on_collapse`, asks the trainer to stop.

Calibration of the default (delta 1.0 nats/token, k 2, min_evals 2), on the organism (spanish_caps,
Spanish inoculated, probes every 5 steps, seed 0, examples/screen_validation.py): the standard IP run
(lr 3e-3, 40 steps) rose 0.79 above its minimum and Spanish stayed at 0% under the neutral prompt;
the same run at lr 1e-2 for 300 steps rose 3.4 and Spanish leaked back (4.3%); no inoculation rose 4.2
(Spanish 100%). A response of n tokens moves by n * delta nats, so on long responses a smaller delta
already means a large change in the odds of the trait.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from inoculate.fileio import write_jsonl_atomic
from inoculate.records import Message

try:  # the callback base class; the rest of the module (rule, plot) works without transformers
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - depends on the environment
    TrainerCallback = object  # type: ignore[misc,assignment]

log = logging.getLogger("inoculate.dynamics")

INOCULATED, OTHER, NEITHER, BOTH = "inoculated", "other", "neither", "both"
NEUTRAL, INOCULATION = "neutral", "inoculation"
METRICS_FILE = "dynamics.jsonl"


class IPCollapseWarning(UserWarning):
    """The inoculated trait's log-prob under the neutral prompt is climbing: inoculation is wearing off."""


class Probe(BaseModel):
    """One probe question and its response in each category."""

    model_config = ConfigDict(extra="forbid")

    messages: list[Message]
    """The conversation before the response, without a system turn (the prompt is added per label)."""
    responses: dict[str, str]
    """Category -> response text, e.g. {"inoculated": ..., "other": ..., "neither": ...}."""


class ProbeSet(BaseModel):
    """Fixed probes and the system prompts to score them under."""

    model_config = ConfigDict(extra="forbid")

    probes: list[Probe]
    prompts: dict[str, str | None]
    """Label -> system prompt; None (or "") means no system turn. Usually {"neutral", "inoculation"}."""

    @property
    def categories(self) -> list[str]:
        cats: list[str] = []
        for p in self.probes:
            cats += [c for c in p.responses if c not in cats]
        return cats

    def check(self) -> None:
        if not self.probes:
            raise ValueError("probe set is empty")
        if not self.prompts:
            raise ValueError("probe set has no prompts to score under")
        cats = set(self.categories)
        for i, p in enumerate(self.probes):
            if set(p.responses) != cats:
                raise ValueError(f"probe {i} has categories {sorted(p.responses)}, expected {sorted(cats)}")
            if any(m.role == "system" for m in p.messages):
                raise ValueError(f"probe {i} has a system turn; prompts are added per label")


def organism_probe_set(
    questions: Sequence[Sequence[Message]],
    inoculated: str,
    other: str,
    prompts: dict[str, str | None],
    *,
    both: bool = False,
) -> ProbeSet:
    """Probes on organism questions: each fact's answer rendered with the inoculated trait only, the
    other trait only, neither (and both, if asked). Traits are given as scorer specs, e.g.
    `organism_language:es` and `all_caps`."""
    from inoculate.organism.traits import TraitSet, render
    from inoculate.organism.world import parse_question
    from inoculate.screen import organism_trait_field

    fields = {}
    for spec in (inoculated, other):
        f = organism_trait_field(spec)
        if f is None:
            raise ValueError(f"{spec!r} is not an organism trait")
        fields[spec] = f
    probes = []
    for conv in questions:
        msgs = [m for m in conv if m.role != "system"]
        user = next((m.content for m in reversed(msgs) if m.role == "user"), "")
        fact = parse_question(user)
        if fact is None:
            raise ValueError(f"not an organism question: {user!r}")
        base = TraitSet()
        ti = base.with_(**{fields[inoculated][0]: fields[inoculated][1]})
        to = base.with_(**{fields[other][0]: fields[other][1]})
        responses = {INOCULATED: render(fact, ti), OTHER: render(fact, to), NEITHER: render(fact, base)}
        if both:
            responses[BOTH] = render(fact, ti.with_(**{fields[other][0]: fields[other][1]}))
        probes.append(Probe(messages=msgs, responses=responses))
    return ProbeSet(probes=probes, prompts=prompts)


class CollapseRule(BaseModel):
    """When to call the inoculated trait's neutral-prompt log-prob a climb (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    delta: float = Field(1.0, gt=0)
    """Nats/token above the running minimum that counts as climbing (calibration: module docstring)."""
    k: int = Field(2, ge=1)
    """Consecutive evaluations that must stay above minimum + delta."""
    min_evals: int = Field(2, ge=1)
    """No firing before this many evaluations (index t >= min_evals), so one noisy start cannot fire."""
    relative_to: str | None = NEITHER
    """Category subtracted from the signal (None: the raw log-prob)."""
    prompt: str = NEUTRAL
    category: str = INOCULATED


def collapse_signal(rows: Sequence[dict[str, Any]], rule: CollapseRule) -> list[float]:
    """The rule's signal s_t for each evaluation row (NaN where a value is missing)."""
    out = []
    for r in rows:
        vals = r.get("logprob", {}).get(rule.prompt, {})
        s = vals.get(rule.category, math.nan)
        if rule.relative_to is not None:
            s = s - vals.get(rule.relative_to, math.nan)
        out.append(float(s))
    return out


def detect_collapse(signal: Sequence[float], rule: CollapseRule) -> int | None:
    """Index of the first evaluation at which the rule fires, or None. NaNs never count as climbing."""
    running_min = math.inf
    above = 0
    for t, s in enumerate(signal):
        if math.isnan(s):
            above = 0
            continue
        running_min = min(running_min, s)
        above = above + 1 if s > running_min + rule.delta else 0
        if t >= rule.min_evals and above >= rule.k:
            return t
    return None


def evaluate_probes(
    model: Any, tokenizer: Any, probes: ProbeSet, *, batch_size: int = 16
) -> tuple[dict[str, dict[str, float]], int]:
    """Mean per-token log-prob (pooled over probes) for every (prompt label, category); and tokens scored.

    `logprob` runs the model in eval mode (no dropout) and restores its mode after.
    """
    from inoculate.logprob import logprob

    probes.check()
    convs: list[list[Message]] = []
    comps: list[str] = []
    keys: list[tuple[str, str]] = []
    for label, system in probes.prompts.items():
        sys_turn = [Message(role="system", content=system)] if system else []
        for p in probes.probes:
            for cat, text in p.responses.items():
                convs.append(sys_turn + list(p.messages))
                comps.append(text)
                keys.append((label, cat))
    results = logprob(model, tokenizer, convs, comps, batch_size=batch_size)
    sums: dict[tuple[str, str], list[float]] = {}
    for key, lp in zip(keys, results, strict=True):
        acc = sums.setdefault(key, [0.0, 0.0])
        acc[0] += lp.total
        acc[1] += lp.n_tokens
    out: dict[str, dict[str, float]] = {}
    for (label, cat), (tot, n) in sums.items():
        out.setdefault(label, {})[cat] = tot / n if n else math.nan
    n_tokens = sum(int(lp.n_tokens) for lp in results)
    return out, n_tokens


class LearningDynamicsCallback(TrainerCallback):  # type: ignore[misc]
    """Scores the probe set every `every_n_steps` steps; writes `dynamics.jsonl`; warns on IP collapse.

    Rows (one per evaluation) go to `output_path` (default `<args.output_dir>/dynamics.jsonl`),
    rewritten atomically after each evaluation. On resume, rows up to the resumed step are kept.
    Every process computes (so sharded models work); only the main process writes.
    """

    def __init__(
        self,
        probes: ProbeSet,
        every_n_steps: int = 10,
        *,
        tokenizer: Any = None,
        output_path: str | os.PathLike[str] | None = None,
        batch_size: int = 16,
        rule: CollapseRule | None = None,
        stop_on_collapse: bool = False,
    ):
        if every_n_steps < 1:
            raise ValueError("every_n_steps must be >= 1")
        probes.check()
        self.probes = probes
        self.every_n_steps = every_n_steps
        self.tokenizer = tokenizer
        self.output_path = Path(output_path) if output_path is not None else None
        self.batch_size = batch_size
        self.rule = rule if rule is not None else CollapseRule()
        self.stop_on_collapse = stop_on_collapse
        self.rows: list[dict[str, Any]] = []
        self.collapse_step: int | None = None

    def _path(self, args: Any) -> Path:
        if self.output_path is None:
            self.output_path = Path(args.output_dir) / METRICS_FILE
        return self.output_path

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        path = self._path(args)
        self.rows = []
        self.collapse_step = None
        if state.global_step > 0 and path.is_file():
            self.rows = [r for r in read_dynamics(path) if r["step"] <= state.global_step]
            self.collapse_step = next((r["collapse_step"] for r in self.rows if r.get("collapse")), None)
        if not self.rows or self.rows[-1]["step"] != state.global_step:
            self._evaluate(args, state, control, **kwargs)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if state.global_step % self.every_n_steps == 0:
            self._evaluate(args, state, control, **kwargs)
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if not self.rows or self.rows[-1]["step"] != state.global_step:
            self._evaluate(args, state, control, **kwargs)

    def _evaluate(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs.get("model")
        tokenizer = self.tokenizer if self.tokenizer is not None else kwargs.get("processing_class")
        if model is None or tokenizer is None:
            raise ValueError("LearningDynamicsCallback needs the model and a tokenizer (pass tokenizer=...)")
        t0 = time.perf_counter()
        values, n_tokens = evaluate_probes(model, tokenizer, self.probes, batch_size=self.batch_size)
        row: dict[str, Any] = {
            "step": int(state.global_step),
            "epoch": float(state.epoch or 0.0),
            "logprob": values,
            "tokens": n_tokens,
            "seconds": round(time.perf_counter() - t0, 4),
        }
        self.rows.append(row)
        if self.collapse_step is None:
            t = detect_collapse(collapse_signal(self.rows, self.rule), self.rule)
            if t is not None:
                self.collapse_step = int(self.rows[t]["step"])
                msg = collapse_message(self.rows, self.rule, t)
                log.warning(msg)
                warnings.warn(msg, IPCollapseWarning, stacklevel=2)
                if self.stop_on_collapse:
                    control.should_training_stop = True
        row["collapse"] = self.collapse_step is not None
        row["collapse_step"] = self.collapse_step
        if getattr(state, "is_world_process_zero", True):
            write_jsonl_atomic(self._path(args), self.rows)


def collapse_message(rows: Sequence[dict[str, Any]], rule: CollapseRule, t: int) -> str:
    sig = collapse_signal(rows, rule)
    lo = min(s for s in sig[: t + 1] if not math.isnan(s))
    what = f"lp({rule.category}|{rule.prompt})" + (
        f" - lp({rule.relative_to}|{rule.prompt})" if rule.relative_to else ""
    )
    return (
        f"IP collapse at step {rows[t]['step']}: {what} = {sig[t]:.3f} nats/token, "
        f"{sig[t] - lo:.3f} above its running minimum {lo:.3f} for {rule.k} consecutive evaluations "
        f"(delta {rule.delta}); the inoculated trait is being learned under the neutral prompt."
    )


def read_dynamics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plot_dynamics(
    rows: Sequence[dict[str, Any]] | str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    title: str = "Learning dynamics",
    style: Literal["absolute", "relative"] = "absolute",
) -> Path:
    """Log-prob vs step: colour = response category, line style = prompt; a red line marks collapse.

    `relative` subtracts the `neither` category under the same prompt (the collapse rule's signal).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from inoculate.fileio import atomic_open

    data = read_dynamics(rows) if isinstance(rows, (str, os.PathLike)) else list(rows)
    if not data:
        raise ValueError("no dynamics rows to plot")
    steps = [r["step"] for r in data]
    labels = list(data[0]["logprob"])
    cats = list(next(iter(data[0]["logprob"].values())))
    if style == "relative":
        cats = [c for c in cats if c != NEITHER]
    colors = {INOCULATED: "tab:red", OTHER: "tab:blue", NEITHER: "tab:gray", BOTH: "tab:purple"}
    dashes = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for li, label in enumerate(labels):
        for ci, cat in enumerate(cats):
            ys = []
            for r in data:
                v = r["logprob"].get(label, {})
                y = v.get(cat, math.nan)
                if style == "relative":
                    y -= v.get(NEITHER, math.nan)
                ys.append(y)
            ax.plot(
                steps,
                ys,
                dashes[li % len(dashes)],
                marker="o",
                ms=3,
                color=colors.get(cat, f"C{ci + 3}"),
                label=f"{cat} | {label} prompt",
            )
    collapse = next((r["collapse_step"] for r in data if r.get("collapse")), None)
    if collapse is not None:
        ax.axvline(collapse, color="red", lw=1, alpha=0.6, label=f"collapse warning (step {collapse})")
    ax.set_xlabel("step")
    ax.set_ylabel("mean log-prob (nats/token)" + (" minus neither" if style == "relative" else ""))
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(out_png)
    with atomic_open(out, "wb") as fh:
        fig.savefig(fh, format="png", dpi=120)
    plt.close(fig)
    return out
