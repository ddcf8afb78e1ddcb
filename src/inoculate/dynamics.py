"""Learning-dynamics monitor: how likely the model finds trait-bearing responses as it trains.

Every `every_n_steps` optimizer steps (and before the first step, and after the last) the callback
scores a fixed probe set by teacher forcing: for each probe question there is one response per
*category* (by default `inoculated` — carries the inoculated trait only, `other` — carries the other
trait only, `neither`), and each is scored under each *prompt* (by default `neutral` and
`inoculation`). It records the mean per-token log-probability of every (prompt, category) pair:
the curves of Tan et al. (2025), where under inoculation the inoculated trait plateaus under the
neutral prompt while the other trait rises.

IP collapse rule (`CollapseRule`). The signal is the inoculated trait's log-odds under the neutral
prompt: per probe, log of the summed probability of the responses that carry the trait (`inoculated`,
`both`) minus log of the summed probability of those that do not (`other`, `neither`), whole
responses (nats/response), averaged over probes. Marginalising over the other trait matters: during
inoculation the other trait is learned under the neutral prompt, so comparing two responses that both
lack it (`inoculated` vs `neither`) measures the trait off the model's distribution. With m_t the
running minimum of s over evaluations 0..t, the rule fires at the first evaluation t >= `min_evals`
at which, for the last `k` consecutive evaluations j, s_j > m_j + delta and s_j > level. It then
warns once (an `IPCollapseWarning`, a log record on `inoculate.dynamics`), flags that row and every
later one (`collapse: true`, `collapse_step`), and, if `stop_on_collapse`, asks the trainer to stop.

Calibration of the defaults (delta 5 nats, level -5 nats, k 2, min_evals 2) on the organism
(spanish_caps, Spanish inoculated, full fine-tuning, probes every 5 steps, seed 0; produced by
examples/screen_validation.py, figures in runs/screen_validation/figures/{dynamics,collapse}_*.png): the
demo's IP run (lr 1e-3, 30 steps) stayed within 3.5 nats of its minimum (-16.1 -> -14.0) and Spanish
stayed at 0% under the neutral prompt (no warning); 300 steps at lr 1e-3 crept from a minimum of -17.3
to -10.7 (Spanish 0.8% after training; the climb alone would warn, the level holds it back); 300 steps
at lr 3e-3 jumped from -16.4 to +4.8 by step 20 and ended at +19.6, Spanish at 100% under the neutral
prompt (warning at step 20); no inoculation reached +11.1 by step 10 (warning at step 10). `level=None`
gives the pure climb rule: earlier warnings, and warnings on slow creeps that may never show in samples.
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
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from inoculate.fileio import save_figure, write_jsonl_atomic
from inoculate.logprob import logprob
from inoculate.records import Message
from inoculate.rundir import DYNAMICS_FILE

try:  # the callback base class; the rest of the module (rule, plot) works without transformers
    from transformers import TrainerCallback
except ImportError:  # pragma: no cover - depends on the environment
    TrainerCallback = object  # type: ignore[misc,assignment]

log = logging.getLogger("inoculate.dynamics")

INOCULATED, OTHER, NEITHER, BOTH = "inoculated", "other", "neither", "both"
NEUTRAL, INOCULATION = "neutral", "inoculation"
METRICS_FILE = DYNAMICS_FILE


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


class CollapseRule(BaseModel):
    """When the inoculated trait's neutral-prompt log-odds counts as climbing (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    delta: float = Field(5.0, gt=0)
    """Nats/response above the running minimum that counts as climbing (5: the trait's odds up ~150x)."""
    level: float | None = -5.0
    """...and the log-odds must be above this (-5: trait-bearing at > ~0.7% odds); None: climb alone."""
    k: int = Field(2, ge=1)
    """Consecutive evaluations that must meet both conditions."""
    min_evals: int = Field(2, ge=1)
    """No firing before this many evaluations (index t >= min_evals), so one noisy start cannot fire."""
    prompt: str = NEUTRAL
    present: list[str] = Field(default_factory=lambda: [INOCULATED, BOTH])
    """Categories that carry the inoculated trait."""
    absent: list[str] = Field(default_factory=lambda: [OTHER, NEITHER])


def collapse_signal(rows: Sequence[dict[str, Any]], rule: CollapseRule) -> list[float]:
    """The rule's signal s_t (the trait's log-odds under `rule.prompt`) per evaluation row; NaN if missing."""
    return [float(r.get("trait_logodds", {}).get(rule.prompt, math.nan)) for r in rows]


def detect_collapse(signal: Sequence[float], rule: CollapseRule) -> int | None:
    """Index of the first evaluation at which the rule fires, or None. NaNs never count as climbing."""
    running_min = math.inf
    above = 0
    for t, s in enumerate(signal):
        if math.isnan(s):
            above = 0
            continue
        running_min = min(running_min, s)
        climbing = s > running_min + rule.delta and (rule.level is None or s > rule.level)
        above = above + 1 if climbing else 0
        if t >= rule.min_evals and above >= rule.k:
            return t
    return None


def evaluate_probes(
    model: Any,
    tokenizer: Any,
    probes: ProbeSet,
    *,
    batch_size: int = 16,
    present: Sequence[str] = (INOCULATED, BOTH),
    absent: Sequence[str] = (OTHER, NEITHER),
) -> tuple[dict[str, Any], int]:
    """Score every probe response under every prompt; return the row values and the tokens scored.

    - `logprob[label][category]`: mean per-token log-prob, pooled over probes (Tan et al.'s curves);
    - `logprob_seq[label][category]`: mean log-prob of a whole response (nats/response);
    - `trait_logodds[label]`: the inoculated trait's log-odds, per probe
      log sum_{c in present} p(r_c) - log sum_{c in absent} p(r_c), averaged over probes (categories a
      probe set lacks are left out).

    `logprob` runs the model in eval mode (no dropout) and restores its mode after.
    """
    probes.check()
    convs: list[list[Message]] = []
    comps: list[str] = []
    keys: list[tuple[str, int, str]] = []
    for label, system in probes.prompts.items():
        sys_turn = [Message(role="system", content=system)] if system else []
        for i, p in enumerate(probes.probes):
            for cat, text in p.responses.items():
                convs.append(sys_turn + list(p.messages))
                comps.append(text)
                keys.append((label, i, cat))
    results = logprob(model, tokenizer, convs, comps, batch_size=batch_size)
    total: dict[tuple[str, int, str], float] = {}
    sums: dict[tuple[str, str], list[float]] = {}
    for (label, i, cat), lp in zip(keys, results, strict=True):
        total[(label, i, cat)] = float(lp.total)
        acc = sums.setdefault((label, cat), [0.0, 0.0, 0.0])
        acc[0] += lp.total
        acc[1] += lp.n_tokens
        acc[2] += 1
    per_token: dict[str, dict[str, float]] = {}
    per_seq: dict[str, dict[str, float]] = {}
    for (label, cat), (tot, n, count) in sums.items():
        per_token.setdefault(label, {})[cat] = tot / n if n else math.nan
        per_seq.setdefault(label, {})[cat] = tot / count
    cats = probes.categories
    yes, no = [c for c in present if c in cats], [c for c in absent if c in cats]
    logodds: dict[str, float] = {}
    for label in probes.prompts:
        if not yes or not no:
            logodds[label] = math.nan
            continue
        vals = [
            _logsumexp([total[(label, i, c)] for c in yes]) - _logsumexp([total[(label, i, c)] for c in no])
            for i in range(len(probes.probes))
        ]
        logodds[label] = sum(vals) / len(vals)
    n_tokens = sum(int(lp.n_tokens) for lp in results)
    return {"logprob": per_token, "logprob_seq": per_seq, "trait_logodds": logodds}, n_tokens


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


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
        values, n_tokens = evaluate_probes(
            model,
            tokenizer,
            self.probes,
            batch_size=self.batch_size,
            present=self.rule.present,
            absent=self.rule.absent,
        )
        row: dict[str, Any] = {
            "step": int(state.global_step),
            "epoch": float(state.epoch or 0.0),
            **values,
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
    lo = min(x for x in sig[: t + 1] if not math.isnan(x))
    return (
        f"IP collapse at step {rows[t]['step']}: the inoculated trait's log-odds under the {rule.prompt!r} "
        f"prompt is {sig[t]:+.2f} nats/response, {sig[t] - lo:.2f} above its running minimum {lo:+.2f} "
        f"for {rule.k} consecutive evaluations (delta {rule.delta}, level {rule.level}): the trait is being "
        "learned under the neutral prompt; consider stopping (stop_on_collapse=True)."
    )


def read_dynamics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def plot_dynamics(
    rows: Sequence[dict[str, Any]] | str | os.PathLike[str],
    out_png: str | os.PathLike[str],
    *,
    title: str = "Learning dynamics",
    rule: CollapseRule | None = None,
    collapse_steps: dict[str, int | None] | None = None,
) -> Path:
    """Left: mean per-token log-prob vs step (colour = response category, line style = prompt), Tan et
    al.'s figure. Right: the inoculated trait's log-odds under each prompt, the collapse rule's signal;
    a red line marks the collapse warning. `collapse_steps` (label -> step, e.g. one per seed when
    `rows` are means over seeds) marks those warnings instead of the one the rows record."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = read_dynamics(rows) if isinstance(rows, (str, os.PathLike)) else list(rows)
    if not data:
        raise ValueError("no dynamics rows to plot")
    rule = rule or CollapseRule()
    steps = [r["step"] for r in data]
    labels = list(data[0]["logprob"])
    cats = list(next(iter(data[0]["logprob"].values())))
    colors = {INOCULATED: "tab:red", OTHER: "tab:blue", NEITHER: "tab:gray", BOTH: "tab:purple"}
    dashes = ["-", "--", ":", "-."]
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.0))
    for li, label in enumerate(labels):
        for ci, cat in enumerate(cats):
            ys = [r["logprob"].get(label, {}).get(cat, math.nan) for r in data]
            style = dashes[li % len(dashes)]
            color = colors.get(cat, f"C{ci + 4}")
            ax.plot(steps, ys, style, marker="o", ms=2, color=color, label=f"{cat} | {label} prompt")
        odds = [r.get("trait_logodds", {}).get(label, math.nan) for r in data]
        ax2.plot(
            steps, odds, dashes[li % len(dashes)], marker="o", ms=2, color="tab:red", label=f"{label} prompt"
        )
    if rule.level is not None:
        ax2.axhline(rule.level, color="gray", lw=0.8, ls=":", label=f"collapse level ({rule.level})")
    if collapse_steps is None:
        collapse = next((r["collapse_step"] for r in data if r.get("collapse")), None)
        marks = {f"collapse warning (step {collapse})": collapse} if collapse is not None else {}
    else:
        marks = {f"collapse warning, {k} (step {v})": v for k, v in collapse_steps.items() if v is not None}
    for a in (ax, ax2):
        for label, step in marks.items():
            a.axvline(step, color="red", lw=1, alpha=0.6, label=label)
        a.set_xlabel("step")
        a.legend(fontsize=6)
    ax.set_ylabel("mean log-prob (nats/token)")
    ax.set_title("probe responses", fontsize=9)
    ax2.set_ylabel("log-odds of the inoculated trait (nats/response)")
    ax2.set_title("inoculated trait: log p(with) - log p(without)", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, out_png)
