"""The learning-dynamics part of a report: per monitored condition, the probe curves averaged over
seeds (figures/dynamics_<condition>.png) and a table of the inoculated trait's log-odds under the
neutral prompt with each seed's collapse warning. Read from the cells' dynamics.jsonl files."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from inoculate.report.format import md_table
from inoculate.report.load import CellResult, RunData
from inoculate.rundir import DYNAMICS_FILE, MonitorRecord

SIGNAL_PROMPT = "neutral"


def monitored(run: RunData) -> dict[str, MonitorRecord]:
    """condition -> the monitor's settings, for every monitored condition of the run."""
    return dict(run.record.dynamics or {})


def figure_path(root: Path, condition: str) -> Path:
    return root / "figures" / f"dynamics_{condition}.png"


def seed_rows(run: RunData, condition: str) -> dict[int, list[dict[str, Any]]]:
    """seed -> its dynamics rows, for every finished cell of `condition` that has them."""
    from inoculate.dynamics import read_dynamics  # lazy: dynamics imports transformers

    out: dict[int, list[dict[str, Any]]] = {}
    for cell in run.cells_of(condition):
        rows = _read(cell, read_dynamics)
        if rows:
            out[cell.seed] = rows
    return out


def _read(cell: CellResult, read: Any) -> list[dict[str, Any]]:
    path = cell.dir / DYNAMICS_FILE
    if not path.is_file():
        return []
    try:
        return list(read(path))
    except (OSError, ValueError):
        return []


def _mean(values: list[float]) -> float:
    ok = [v for v in values if v is not None and not math.isnan(v)]
    return sum(ok) / len(ok) if ok else math.nan


def mean_rows(per_seed: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows averaged over seeds at each step (a seed stopped early counts only up to its last step)."""
    by_step: dict[int, list[dict[str, Any]]] = {}
    for rows in per_seed.values():
        for r in rows:
            by_step.setdefault(int(r["step"]), []).append(r)
    out = []
    for step in sorted(by_step):
        rows = by_step[step]
        logprob: dict[str, dict[str, float]] = {}
        for r in rows:
            for label, cats in r.get("logprob", {}).items():
                for cat in cats:
                    logprob.setdefault(label, {}).setdefault(cat, math.nan)
        for label, cats in logprob.items():
            for cat in cats:
                cats[cat] = _mean([r.get("logprob", {}).get(label, {}).get(cat, math.nan) for r in rows])
        labels = {label for r in rows for label in r.get("trait_logodds", {})}
        odds = {
            label: _mean([r.get("trait_logodds", {}).get(label, math.nan) for r in rows]) for label in labels
        }
        out.append({"step": step, "logprob": logprob, "trait_logodds": odds, "n_seeds": len(rows)})
    return out


def collapse_step(rows: list[dict[str, Any]]) -> int | None:
    return next((int(r["collapse_step"]) for r in rows if r.get("collapse")), None)


def write_dynamics_figures(run: RunData, root: str | Path | None = None) -> list[Path]:
    """figures/dynamics_<condition>.png for every monitored condition with dynamics rows."""
    from inoculate.dynamics import CollapseRule, plot_dynamics  # lazy: dynamics imports transformers

    out_root = Path(root) if root is not None else run.root
    written = []
    for cond, info in monitored(run).items():
        per_seed = seed_rows(run, cond)
        if not per_seed:
            continue
        rule = CollapseRule.model_validate(info.rule) if info.rule else None
        seeds = sorted(per_seed)
        prompt = info.prompts.get("inoculation")
        title = (
            f"{run.name}: {cond}, mean over {len(seeds)} seed(s); inoculation prompt {prompt!r}; "
            f"trait {info.trait!r}, other {info.other!r}"
        )
        written.append(
            plot_dynamics(
                mean_rows(per_seed),
                figure_path(out_root, cond),
                title=title,
                rule=rule,
                collapse_steps={f"seed {s}": collapse_step(per_seed[s]) for s in seeds},
            )
        )
    return written


def _fmt(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:+.2f}"


def dynamics_table(run: RunData) -> tuple[list[str], list[list[str]]]:
    """Per monitored condition: the trait's neutral-prompt log-odds at the first and last evaluation
    (means over seeds) and each seed's collapse warning step."""
    header = [
        "condition",
        "inoculation prompt (probed)",
        "seeds",
        "trait log-odds, first evaluation",
        "trait log-odds, last evaluation",
        "collapse warning (step, per seed)",
    ]
    body = []
    for cond, info in monitored(run).items():
        per_seed = seed_rows(run, cond)
        seeds = sorted(per_seed)

        def signal(row: dict[str, Any]) -> float:
            return float(row.get("trait_logodds", {}).get(SIGNAL_PROMPT, math.nan))

        first = _mean([signal(per_seed[s][0]) for s in seeds])
        last = _mean([signal(per_seed[s][-1]) for s in seeds])
        steps = [(s, per_seed[s][0]["step"], per_seed[s][-1]["step"]) for s in seeds]
        span = sorted({(a, b) for _, a, b in steps})
        first_label = f"{_fmt(first)} (step {span[0][0]})" if len(span) == 1 else _fmt(first)
        last_label = f"{_fmt(last)} (step {span[0][1]})" if len(span) == 1 else _fmt(last)
        if len(span) > 1:
            last_label += " (steps " + ", ".join(f"seed {s}: {b}" for s, _, b in steps) + ")"
        warned = []
        for s in seeds:
            step = collapse_step(per_seed[s])
            warned.append(f"seed {s}: {step if step is not None else 'none'}")
        missing = [c.seed for c in run.cells_of(cond) if c.seed not in per_seed]
        if missing:
            warned.append("no rows: seed " + ", ".join(map(str, missing)))
        prompt = info.prompts.get("inoculation")
        shown = f'"{prompt}"' if prompt else "(none)"
        if prompt and info.own_prompt is False:
            shown += " (probed only: trained without an inoculation prompt)"
        body.append(
            [
                cond,
                shown,
                str(len(seeds)),
                first_label if seeds else "n/a",
                last_label if seeds else "n/a",
                "; ".join(warned) or "n/a",
            ]
        )
    return header, body


def dynamics_section(run: RunData) -> str:
    """The report.md section (empty when the run monitored nothing)."""

    mon = monitored(run)
    if not mon:
        return ""
    info = next(iter(mon.values()))
    trait, other = info.trait, info.other
    neutral = info.prompts.get(SIGNAL_PROMPT)
    rule = info.rule  # a CollapseRule as written: every field present
    level = rule["level"]
    first_eval = _ordinal(rule["min_evals"])
    parts = [
        "## Learning dynamics\n",
        f"During training, every {info.every} step(s), {info.n_probes} fixed probe questions "
        f"({info.probes} probes) were scored by teacher forcing with one response per category "
        f"({', '.join(info.categories)}: `inoculated` carries only the inoculated trait, "
        "`other` only the other trait), under the neutral prompt "
        f"({_quote(neutral)}, solid lines) and under the condition's inoculation prompt (dashed). "
        f"Left: mean per-token log-prob of each category, mean over seeds. Under inoculation, the "
        f"inoculated trait (`{trait}`) should plateau under the neutral prompt while the other trait "
        f"(`{other}`) rises (Tan et al.). Right: the inoculated trait's log-odds, log p(responses with "
        "it) - log p(responses without it) in nats/response, averaged over probes.\n",
        f"IP collapse warning: it fires at the first evaluation, from the {first_eval} on, at which the "
        f"`{rule['prompt']}`-prompt log-odds has been more than "
        f"{rule['delta']} nats above its running minimum"
        + (f" and above {level}" if level is not None else "")
        + f" for {rule['k']} consecutive evaluations; red lines mark each seed's warning."
        + (
            " A condition trained without an inoculation prompt is expected to warn."
            if any(i.own_prompt is False for i in mon.values())
            else ""
        )
        + (
            " With `stop_on_collapse`, training stopped at the warning."
            if any(i.stop_on_collapse for i in mon.values())
            else ""
        )
        + "\n",
        md_table(*dynamics_table(run)) + "\n",
    ]
    for cond in mon:
        fig = figure_path(run.root, cond)
        if fig.is_file():
            rel = fig.relative_to(run.root).as_posix()
            parts.append(f"![{rel}]({rel})\n")
    return "\n".join(parts)


def _quote(text: str | None) -> str:
    return "no system prompt" if text is None else f'"{text}"'


def _ordinal(n: int) -> str:
    # min_evals is the first evaluation index that may fire (0-based): index 2 is the third evaluation
    k = int(n) + 1
    suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"
