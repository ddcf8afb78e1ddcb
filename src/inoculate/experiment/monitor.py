"""The experiment YAML's `dynamics:` block: the learning-dynamics monitor inside `inoculate run`.

```yaml
dynamics:
  every: 5                    # probe every N optimizer steps (and before the first, after the last)
  conditions: all             # or a list; all = every condition with an inoculation prompt
  prompt: inoculate_spanish   # optional: the inoculation prompt to probe conditions without one
                              # (a condition's name, an @name reference, or the text itself)
  trait: spanish              # the inoculated trait (a key of `traits`); default the first trait
  other: all_caps             # the other trait; default the second trait
  probes: organism            # organism: rendered from the eval questions; or a JSONL probe file
  n_probes: 24                # probes used (the first N questions / rows)
  both: true                  # organism probes: also the response carrying both traits
  batch_size: 16              # sequences per teacher-forced forward pass
  stop_on_collapse: false     # stop training a cell when the collapse warning fires
  collapse: {delta: 5.0, level: -5.0, k: 2, min_evals: 2}   # `inoculate.dynamics.CollapseRule`
```

Each trained cell of a monitored condition gets a `LearningDynamicsCallback` scoring the probes
under two system prompts: `neutral` (the experiment's neutral eval prompt: `neutral`, else the first
fixed eval prompt) and `inoculation` (the condition's inoculation prompt, its first if it has a pool,
given as a system prompt whatever the condition's placement). Rows go to the cell's
`dynamics.jsonl`. The monitor's settings are part of a monitored cell's training key; unmonitored
cells' keys do not change when a `dynamics:` block is added.

A probe file has one JSON object per line: `{"messages": [...], "responses": {category: text}}`,
no system turn, the same categories in every row (`inoculated`, `other`, `neither`, `both` are the
ones the collapse rule reads by default).

This module stays light (no torch, no transformers at import): `inoculate.dynamics` is imported only
when a block is validated or used.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from inoculate.errors import InputError, InputErrors
from inoculate.experiment.cache import hash_obj
from inoculate.experiment.config import (
    ALL,
    ORGANISM_PROBES,
    ControlCondition,
    DynamicsBlock,
    ExperimentConfig,
    OrganismData,
    screened_conditions,
)
from inoculate.fileio import nan_to_null
from inoculate.records import ChatExample
from inoculate.rundir import neutral_eval_prompt
from inoculate.transform import InoculationSpec, resolve_prompts

if TYPE_CHECKING:
    from inoculate.dynamics import CollapseRule, LearningDynamicsCallback, Probe, ProbeSet

PROBE_LABELS = ("neutral", "inoculation")

DynamicsSpec = DynamicsBlock
"""The former name of `config.DynamicsBlock`."""


def dynamics_spec(cfg: ExperimentConfig) -> DynamicsBlock | None:
    """The experiment's `dynamics:` block (None when there is none)."""
    return cfg.dynamics


def _trait_names(spec: DynamicsBlock, traits: dict[str, str]) -> tuple[str, str | None]:
    names = list(traits)
    trait = spec.trait if spec.trait is not None else names[0]
    if spec.other is not None:
        return trait, spec.other
    return trait, next((t for t in names if t != trait), None)


def _has_prompt(cfg: ExperimentConfig, condition: str, screened: set[str]) -> bool:
    value = cfg.conditions.get(condition)
    if isinstance(value, ControlCondition):  # a control dataset, with or without a prompt of its own
        return bool(value.spec_fields())
    return condition in screened or value is not None


def dynamics_errors(cfg: ExperimentConfig) -> list[InputError]:
    """Problems in an experiment's `dynamics:` block, located (for `semantic_errors`)."""
    lm = cfg.lines
    spec = cfg.dynamics
    assert spec is not None
    errors: list[InputError] = []
    # fields whose errors `parse_experiment` reported: they took their defaults and are not checked
    bad = {path[1] for path in cfg._invalid if path[0] == "dynamics"}
    screened = screened_conditions(cfg)  # the screen block's own errors are reported by screen_errors
    known = [*cfg.conditions, *sorted(screened)]

    prompt_ok = spec.prompt is not None
    if spec.prompt is not None and "prompt" not in bad:
        if spec.prompt in known:
            if not _has_prompt(cfg, spec.prompt, screened):
                errors.append(
                    lm.error(("dynamics", "prompt"), f"condition {spec.prompt!r} has no inoculation prompt")
                )
                prompt_ok = False
        else:
            try:
                if cfg.resolve_text(spec.prompt) is None:
                    errors.append(lm.error(("dynamics", "prompt"), "resolves to an empty prompt"))
                    prompt_ok = False
            except KeyError as e:
                errors.append(lm.error(("dynamics", "prompt"), e.args[0]))
                prompt_ok = False

    if "conditions" in bad:
        pass
    elif spec.conditions == ALL:
        if not any(prompt_ok or _has_prompt(cfg, c, screened) for c in known):
            errors.append(
                lm.error(
                    ("dynamics", "conditions"),
                    "no condition has an inoculation prompt to probe with; set dynamics.prompt",
                )
            )
    else:
        for i, name in enumerate(spec.conditions):
            where = ("dynamics", "conditions", i)
            if name not in known:
                errors.append(
                    lm.error(where, f"unknown condition {name!r} (known: {', '.join(known) or 'none'})")
                )
            elif not _has_prompt(cfg, name, screened) and spec.prompt is None:
                errors.append(
                    lm.error(
                        where,
                        f"condition {name!r} has no inoculation prompt to probe with; set dynamics.prompt "
                        "(a condition's name, an @name reference or the prompt text)",
                    )
                )

    for field in ("trait", "other"):
        value = getattr(spec, field)
        if value is not None and field not in bad and value not in cfg.traits:
            errors.append(
                lm.error(("dynamics", field), f"unknown trait {value!r} (known: {', '.join(cfg.traits)})")
            )
    trait, other = _trait_names(spec, cfg.traits)
    if other is not None and other == trait:
        errors.append(lm.error(("dynamics", "other"), f"the other trait must differ from {trait!r}"))

    if neutral_eval_prompt(cfg.eval_prompts) is None:
        errors.append(
            lm.error(("dynamics",), "needs a fixed eval prompt (the neutral prompt), not only '@condition'")
        )

    rule = None if "collapse" in bad else spec.collapse
    if rule is not None and rule.prompt not in PROBE_LABELS:
        errors.append(
            lm.error(
                ("dynamics", "collapse", "prompt"),
                f"the probes are scored under {' and '.join(map(repr, PROBE_LABELS))}, not {rule.prompt!r}",
            )
        )

    if "probes" in bad:
        pass
    elif spec.probes == ORGANISM_PROBES:
        errors.extend(_organism_probe_errors(cfg, trait, other))
    else:
        path = cfg.data_path(spec.probes)
        if not path.is_file():
            errors.append(
                lm.error(
                    ("dynamics", "probes"),
                    f"no such file: {path} (give a JSONL probe file, or {ORGANISM_PROBES!r})",
                )
            )
        else:
            try:
                probes = load_probe_file(path)
            except InputErrors as e:
                errors.extend(e.errors)
            else:
                if rule is not None:
                    errors.extend(_category_errors(cfg, probes, rule))
    return errors


def _organism_probe_errors(cfg: ExperimentConfig, trait: str, other: str | None) -> list[InputError]:
    # lazy: importing inoculate.organism registers its scorers
    from inoculate.organism.contrast import organism_trait_field

    lm = cfg.lines
    where = ("dynamics", "probes")
    hint = "; give a JSONL probe file (rows: messages, responses) instead"
    if not isinstance(cfg.data.eval, OrganismData) and cfg.setting is None:
        return [lm.error(where, f"{ORGANISM_PROBES!r} probes are rendered from organism eval data{hint}")]
    if other is None:
        return [lm.error(("dynamics", "other"), f"{ORGANISM_PROBES!r} probes need a second trait{hint}")]
    errors = []
    for field, name in (("trait", trait), ("other", other)):
        spec = cfg.traits.get(name)
        if spec is not None and organism_trait_field(spec) is None:
            errors.append(
                lm.error(("dynamics", field), f"trait {name!r} ({spec}) is not an organism trait{hint}")
            )
    return errors


def _category_errors(cfg: ExperimentConfig, probes: list[Probe], rule: CollapseRule) -> list[InputError]:
    cats = {c for p in probes for c in p.responses}
    missing = []
    if not cats & set(rule.present):
        missing.append(f"one carrying the trait ({', '.join(rule.present)})")
    if not cats & set(rule.absent):
        missing.append(f"one without it ({', '.join(rule.absent)})")
    if not missing:
        return []
    return [
        cfg.lines.error(
            ("dynamics", "probes"),
            f"the probe file's categories {sorted(cats)} lack {' and '.join(missing)} "
            "(see dynamics.collapse.present / absent)",
        )
    ]


def load_probe_file(path: str | Path) -> list[Probe]:
    """Probes from JSONL rows `{"messages": [...], "responses": {category: text}}`; errors name the line."""
    from inoculate.dynamics import Probe, ProbeSet  # lazy: dynamics imports transformers

    file = str(path)
    errors: list[InputError] = []
    probes: list[Probe] = []
    lines: list[int] = []
    for n, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw)
        except ValueError as e:
            errors.append(InputError(file, n, "<json>", f"invalid JSON: {e}"))
            continue
        try:
            probes.append(Probe.model_validate(row))
            lines.append(n)
        except ValidationError as e:
            for err in e.errors(include_url=False):
                field = ".".join(str(p) for p in err["loc"]) or "<row>"
                msg = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
                errors.append(InputError(file, n, field, msg))
    if not errors and not probes:
        errors.append(InputError(file, 0, "<file>", "no probes"))
    if not errors:
        try:
            ProbeSet(probes=probes, prompts={"neutral": None}).check()
        except ValueError as e:
            i = int(m.group(1)) if (m := re.match(r"probe (\d+)", str(e))) else None
            errors.append(InputError(file, lines[i] if i is not None else 0, "<row>", str(e)))
    if errors:
        raise InputErrors(errors)
    return probes


# --- resolving the block for a run ---------------------------------------------------------------------


@dataclass
class MonitorPlan:
    """One monitored condition: its probes (under the neutral and inoculation prompts) and the rule."""

    condition: str
    probes: ProbeSet
    rule: CollapseRule
    every: int
    batch_size: int
    stop_on_collapse: bool
    trait: str
    other: str | None
    source: str
    """`organism` or the probe file's name."""
    own_prompt: bool = True
    """False: the condition trains without an inoculation prompt (probed with `dynamics.prompt`)."""

    def key(self) -> dict[str, Any]:
        """What goes into the cell's training key (everything that changes `dynamics.jsonl` or training)."""
        return {
            "every": self.every,
            "batch_size": self.batch_size,
            "stop_on_collapse": self.stop_on_collapse,
            "rule": self.rule.model_dump(mode="json"),
            "prompts": dict(self.probes.prompts),
            "probes_sha256": hash_obj([p.model_dump(mode="json") for p in self.probes.probes]),
            "n_probes": len(self.probes.probes),
        }

    def record(self) -> dict[str, Any]:
        """What the report needs to know (written to experiment.json)."""
        return {
            **self.key(),
            "trait": self.trait,
            "other": self.other,
            "probes": self.source,
            "categories": self.probes.categories,
            "own_prompt": self.own_prompt,
        }

    def callback(self) -> LearningDynamicsCallback:
        from inoculate.dynamics import LearningDynamicsCallback  # lazy: dynamics imports transformers

        return LearningDynamicsCallback(
            self.probes,
            every_n_steps=self.every,
            batch_size=self.batch_size,
            rule=self.rule,
            stop_on_collapse=self.stop_on_collapse,
        )


def monitored_conditions(cfg: ExperimentConfig, inoculated: dict[str, bool]) -> list[str]:
    """The conditions the block monitors; names not (yet) in `inoculated` are left out (a screened
    condition before `apply_screen`). `inoculated`: condition -> has an inoculation prompt."""
    spec = dynamics_spec(cfg)
    if spec is None:
        return []
    if spec.conditions == ALL:
        return [c for c, has in inoculated.items() if has or spec.prompt is not None]
    return [c for c in spec.conditions if c in inoculated]


def plan_dynamics(
    cfg: ExperimentConfig,
    specs: dict[str, InoculationSpec | None],
    eval_prompts: dict[str, str | None],
    eval_examples: list[ChatExample],
) -> dict[str, MonitorPlan]:
    """condition -> its monitor, for every monitored condition: `specs` are the conditions' resolved
    inoculation specs, `eval_prompts` the resolved eval prompts (`@condition` kept as is)."""
    from inoculate.dynamics import ProbeSet  # lazy: dynamics imports transformers

    spec = dynamics_spec(cfg)
    if spec is None:
        return {}
    lm = cfg.lines
    prompts = {c: (resolve_prompts(s)[0] if s is not None else None) for c, s in specs.items()}
    conditions = monitored_conditions(cfg, {c: p is not None for c, p in prompts.items()})
    if not conditions:
        return {}
    neutral_name = neutral_eval_prompt(eval_prompts)
    if neutral_name is None:
        raise InputErrors([lm.error(("dynamics",), "needs a fixed eval prompt (the neutral prompt)")])
    neutral = eval_prompts[neutral_name]
    fallback: str | None = None
    if spec.prompt is not None:
        fallback = prompts.get(spec.prompt) or cfg.resolve_text(spec.prompt)
    trait, other = _trait_names(spec, cfg.traits)
    rule = spec.collapse

    if spec.probes == ORGANISM_PROBES:
        if other is None:
            raise InputErrors([lm.error(("dynamics", "other"), "organism probes need a second trait")])
        # lazy: importing inoculate.organism registers its scorers
        from inoculate.organism.contrast import organism_probe_set

        questions = [ex.prompt_messages for ex in eval_examples[: spec.n_probes]]
        try:
            base = organism_probe_set(
                questions, cfg.traits[trait], cfg.traits[other], {}, both=spec.both
            ).probes
        except ValueError as e:
            raise InputErrors(
                [lm.error(("dynamics", "probes"), f"cannot render organism probes from the eval set: {e}")]
            ) from None
        source = ORGANISM_PROBES
    else:
        path = cfg.data_path(spec.probes)
        base = load_probe_file(path)[: spec.n_probes]
        source = path.name

    plans = {}
    for cond in conditions:
        own = prompts[cond] is not None
        inoculation = prompts[cond] if own else fallback
        probe_set = ProbeSet(probes=base, prompts={"neutral": neutral, "inoculation": inoculation})
        plans[cond] = MonitorPlan(
            condition=cond,
            probes=probe_set,
            rule=rule,
            every=spec.every,
            batch_size=spec.batch_size,
            # a condition trained without inoculation is expected to learn the trait: never stopped
            stop_on_collapse=spec.stop_on_collapse and own,
            trait=trait,
            other=other,
            source=source,
            own_prompt=own,
        )
    return plans


# --- during a cell's training ----------------------------------------------------------------------------


class _Forward(logging.Handler):
    def __init__(self, emit: Callable[[], None]):
        super().__init__(logging.WARNING)
        self._emit = emit

    def emit(self, record: logging.LogRecord) -> None:
        self._emit()


def collapse_line(plan: MonitorPlan, rows: list[dict[str, Any]], step: int, label: str) -> str:
    """The run's one-line collapse warning for a cell."""
    from inoculate.dynamics import collapse_signal  # lazy: dynamics imports transformers

    sig = collapse_signal(rows, plan.rule)
    t = next(i for i, r in enumerate(rows) if r["step"] == step)
    lo = min(x for x in sig[: t + 1] if x == x)
    line = (
        f"WARNING {label}: IP collapse at step {step}: the {plan.trait!r} log-odds under the "
        f"{plan.rule.prompt!r} prompt is {sig[t]:+.2f} nats/response, {sig[t] - lo:.2f} above its running "
        f"minimum {lo:+.2f} (delta {plan.rule.delta}, level {plan.rule.level}, k {plan.rule.k})."
    )
    if not plan.own_prompt:
        return line + " Expected: this condition trains without an inoculation prompt."
    if plan.stop_on_collapse:
        return line + " Training stops here (dynamics.stop_on_collapse)."
    return (
        line + " The trait is being learned under the neutral prompt; `stop_on_collapse: true` stops early."
    )


@contextlib.contextmanager
def surface_warnings(
    plan: MonitorPlan, callback: LearningDynamicsCallback, label: str, message: Callable[[str], None] | None
) -> Iterator[list[str]]:
    """While a monitored cell trains: send the collapse warning to `message` (the run's progress output)
    instead of the `IPCollapseWarning` and the bare log record; yields the lines sent. Without
    `message`, the library's own warning and log record stand."""
    sent: list[str] = []
    if message is None:
        yield sent
        return
    from inoculate.dynamics import IPCollapseWarning  # lazy: dynamics imports transformers

    def emit() -> None:
        if callback.collapse_step is None:
            return
        line = collapse_line(plan, callback.rows, callback.collapse_step, label)
        sent.append(line)
        message(line)

    logger = logging.getLogger("inoculate.dynamics")
    handler = _Forward(emit)
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", IPCollapseWarning)
            yield sent
    finally:
        logger.removeHandler(handler)


def cell_summary(plan: MonitorPlan, path: Path, *, max_steps: int | None, global_step: int) -> dict[str, Any]:
    """The `dynamics` entry of a cell's metrics.json, from its dynamics.jsonl."""
    from inoculate.dynamics import collapse_signal, read_dynamics  # lazy: dynamics imports transformers

    rows = read_dynamics(path) if path.is_file() else []
    signal = collapse_signal(rows, plan.rule)
    collapse = next((r.get("collapse_step") for r in rows if r.get("collapse")), None)
    stopped = False
    if plan.stop_on_collapse and collapse is not None:  # it stops right after the warning's evaluation
        stopped = global_step < max_steps if max_steps is not None and max_steps > 0 else True
    return {
        "file": path.name,
        "every": plan.every,
        "evaluations": len(rows),
        "steps": [rows[0]["step"], rows[-1]["step"]] if rows else None,
        "signal_prompt": plan.rule.prompt,
        "trait_logodds_first": nan_to_null(round(float(signal[0]), 4)) if signal else None,
        "trait_logodds_last": nan_to_null(round(float(signal[-1]), 4)) if signal else None,
        "collapse_step": collapse,
        "stopped_early": bool(stopped),
    }
