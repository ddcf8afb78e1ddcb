"""report.md: every number comes from the stored cell results of the run, none from text."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

from inoculate.judges import misaligned_description, parse_misaligned_spec
from inoculate.report.dynamics import dynamics_section
from inoculate.report.expect import BASE_MODEL, Verdict, check, parse_rule, split_target
from inoculate.report.format import fmt, fmt_ci, md_table, quote
from inoculate.report.load import RunData
from inoculate.report.screen import screen_section
from inoculate.report.tables import SummaryRow, lookup
from inoculate.rundir import CONDITION_REF
from inoculate.scorers import ScorerError


def condition_table(
    run: RunData, rows: list[SummaryRow], eval_prompt: str
) -> tuple[list[str], list[list[str]]]:
    """Rows: conditions; columns: metrics as `mean [95% CI]` under one eval prompt."""
    metrics = scored_on(run, eval_prompt)
    header = ["condition", *metrics, "seeds"]
    body = []
    for cond in run.conditions:
        cells = [lookup(rows, cond, eval_prompt, m) for m in metrics]
        n_seeds = max((r.n_seeds for r in cells if r is not None), default=0)
        body.append([cond, *(fmt_ci(r) for r in cells), str(n_seeds)])
    return header, body


def scored_on(run: RunData, label: str) -> list[str]:
    """The metrics scored under one eval-prompt label: with named eval sets (`SET/PROMPT`), those of
    the label's set (a trait restricted by `eval_sets:` is left out elsewhere); else every metric."""
    sets = (run.record.model_extra or {}).get("eval_sets")
    name = label.split("/", 1)[0]
    if not isinstance(sets, dict) or "/" not in label or not isinstance(sets.get(name), dict):
        return list(run.metrics)
    on = sets[name].get("metrics")
    return [m for m in run.metrics if not isinstance(on, list) or m in on]


def leak_audit_table(run: RunData, rows: list[SummaryRow], metric: str) -> tuple[list[str], list[list[str]]]:
    """One trait under every eval prompt it is scored under (the leak audit): rows are conditions,
    columns eval prompts, cells `mean [95% CI] (n)` with n the scored answers summed over seeds."""
    labels = [p for p in run.eval_prompts if metric in scored_on(run, p)]
    header = ["condition", *labels]
    body = []
    for cond in run.conditions:
        cells = []
        for label in labels:
            r = lookup(rows, cond, label, metric)
            cells.append("n/a" if r is None else f"{fmt_ci(r)} (n={r.n})")
        body.append([cond, *cells])
    return header, body


def _leak_audit_section(run: RunData, rows: list[SummaryRow]) -> str:
    if len(run.eval_prompts) < 2:
        return ""
    out = [
        "Each trait under every eval prompt (system prompt at evaluation) it was scored under: does the "
        "trait stay suppressed without a prompt, and can a prompt call it up again? `n` is the answers "
        "scored (summed over seeds); a judge's NaN answers are not in it.\n"
    ]
    for metric in run.traits:
        info = run.metrics.get(metric)
        spec = getattr(info, "scorer", "") if info is not None else ""
        title = f"### {metric} (`{spec}`)"
        if spec.startswith("misaligned:"):
            with contextlib.suppress(ScorerError):
                title += ": " + misaligned_description(parse_misaligned_spec(spec.split(":", 1)[1])[2])
        out.append(title + "\n")
        out.append(md_table(*leak_audit_table(run, rows, metric)) + "\n")
    return "\n".join(out)


def verdicts(run: RunData, rows: list[SummaryRow]) -> list[Verdict]:
    """Check each declared expectation against the run's means over seeds."""
    out = []
    for cond, rules in run.record.expect.items():
        for key, text in rules.items():
            metric, prompt = split_target(key)
            rule = parse_rule(text)
            r = lookup(rows, cond, prompt, metric)
            observed = r.mean if r is not None else math.nan
            ref_mean = None
            ref = None
            if rule.reference == BASE_MODEL:
                ref_mean = _base_mean(run, prompt, metric, cond)
            elif rule.reference is not None:
                ref = lookup(rows, rule.reference, prompt, metric)
                ref_mean = ref.mean if ref is not None else math.nan
            threshold, passed = check(
                rule,
                observed,
                ref_mean,
                observed_ci=(r.ci_low, r.ci_high) if r is not None else None,
                reference_ci=(ref.ci_low, ref.ci_high) if ref is not None else None,
            )
            out.append(
                Verdict(
                    condition=cond,
                    metric=metric,
                    eval_prompt=prompt,
                    rule=rule,
                    observed=observed,
                    threshold=threshold,
                    passed=passed,
                )
            )
    return out


def _base_mean(run: RunData, prompt: str, metric: str, condition: str) -> float:
    """The base model's mean of `metric` under eval prompt `prompt` (for a prompt that is each condition's
    own training prompt, under `condition`'s); nan when the base model was not evaluated there."""
    if run.base is None:
        return math.nan
    for r in run.base.rows:
        if r.prompt in (prompt, f"{prompt} ({condition})") and metric in r.metrics:
            mean = r.metrics[metric].mean
            return math.nan if mean is None else float(mean)
    return math.nan


def verdict_section(run: RunData, rows: list[SummaryRow]) -> tuple[str, list[Verdict]]:
    vs = verdicts(run, rows)
    if not vs:
        return "No expectations were declared (`expect:` in the experiment), so nothing is checked.\n", vs
    table_rows = []
    for v in vs:
        r = lookup(rows, v.condition, v.eval_prompt, v.metric)
        if v.rule.op == "within":
            thr = f"{fmt(v.threshold)} ({v.rule.reference} mean)"
        elif v.rule.op in ("ci_above", "ci_below"):
            side = "high" if v.rule.op == "ci_above" else "low"
            thr = f"{fmt(v.threshold)} ({v.rule.reference} CI {side})"
        else:
            thr = fmt(v.threshold)
        table_rows.append(
            [
                v.condition,
                v.metric,
                v.eval_prompt,
                v.rule.describe(),
                fmt_ci(r),
                thr,
                f"**{v.status}**",
            ]
        )
    failed = [v for v in vs if v.passed is False]
    missing = [v for v in vs if v.passed is None]
    passed = [v for v in vs if v.passed]
    lines = []
    if not failed and not missing:
        on_cis = any(v.rule.op in ("ci_above", "ci_below") for v in vs)
        lines.append(
            f"**All {len(vs)} declared expectations hold** (checked on the mean over seeds"
            f"{'; `CI above`/`CI below` rules on the 95% CIs' if on_cis else ''}). "
            "The expected effect appeared in this run."
        )
    else:
        if failed:
            what = "; ".join(
                f"{v.condition} {v.metric} [{v.eval_prompt}] = {fmt(v.observed)}, "
                f"expected {v.rule.describe()}"
                for v in failed
            )
            lines.append(
                f"**{len(failed)} of {len(vs)} declared expectations FAILED: the expected effect did not "
                f"(fully) appear in this run.** {what}."
            )
        if missing:
            lines.append(
                f"{len(missing)} expectation(s) could not be checked because results are missing "
                "(unfinished cells or a NaN mean)."
            )
        lines.append(f"{len(passed)} of {len(vs)} hold.")
    header = [
        "condition",
        "metric",
        "eval prompt",
        "expected",
        "observed mean [95% CI]",
        "threshold",
        "result",
    ]
    return "\n\n".join(lines) + "\n\n" + md_table(header, table_rows) + "\n", vs


def _system_of(run: RunData, prompt: str, condition: str | None = None) -> str:
    value = run.record.eval_prompts[prompt]
    if value == CONDITION_REF:
        return "each condition's own training prompt"
    return quote(value)


def _base_section(run: RunData) -> str:
    base = run.base
    if base is None:
        return "Not available (the run did not finish its base-model evaluation).\n"
    parts = []
    metrics = list(run.metrics)
    rows = []
    for r in base.rows:
        means = [fmt(r.metrics[m].mean if m in r.metrics else None) for m in metrics]
        rows.append([r.prompt, quote(r.system), *means])
    parts.append(
        "The base model, before any fine-tuning, under the experiment's eval prompts (and under each "
        "condition's training prompt): how strongly each prompt elicits each trait.\n\n"
        + md_table(["eval prompt", "system prompt", *metrics], rows)
    )
    if run.base_cache_key:
        parts.append(
            "These base-model numbers were copied from the cross-run cache "
            f"(entry `{run.base_cache_key[:16]}`), "
            "computed earlier from the same model, eval rows, prompts, sampling, seed and scorers; "
            "`--force` recomputes them. Every fine-tuned cell above was trained and evaluated in this run."
        )
    org = base.organism
    if org:
        parts.append(
            "The organism's own elicitation table (every prompt family, held-out paraphrases included):"
        )
        parts.append(_generic_table(org))
    return "\n\n".join(parts) + "\n"


def _generic_table(obj: Any) -> str:
    """Render a list of flat dicts (or {"rows": [...]}) as a table; anything else as JSON."""
    rows = obj.get("rows") if isinstance(obj, dict) and "rows" in obj else obj
    if isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows):
        header: list[str] = []
        for r in rows:
            for k in r:
                if k not in header:
                    header.append(k)
        body = []
        for r in rows:
            body.append([fmt(r[k]) if isinstance(r.get(k), float) else str(r.get(k, "")) for k in header])
        return md_table(header, body)
    return "```json\n" + json.dumps(obj, indent=2, ensure_ascii=False) + "\n```"


def _per_seed_section(run: RunData) -> str:
    metrics = list(run.metrics)
    body = []
    for cond in run.conditions:
        for prompt in run.eval_prompts:
            for cell in run.cells_of(cond):
                body.append([cond, prompt, str(cell.seed), *(fmt(cell.value(prompt, m)) for m in metrics)])
    if not body:
        return "No finished cells.\n"
    return md_table(["condition", "eval prompt", "seed", *metrics], body) + "\n"


def _inoculated(run: RunData, condition: str) -> str:
    """`n_inoculated / n_rows`: training rows that carried the prompt, from a finished cell's manifest."""
    m = next((c.inoculation for c in run.cells_of(condition) if c.inoculation), None)
    if m is None:
        return "(no finished cell)"
    text = f"{m.get('n_inoculated')} / {m.get('n_rows')}"
    if m.get("n_replaced_system"):
        text += f" ({m['n_replaced_system']} system prompts replaced)"
    return text


def _condition_data(info: dict[str, Any] | None) -> str:
    """The training data a condition used: `data.train`, or its own file's name, rows and sha256."""
    if not info or info.get("label", "data.train") == "data.train":
        return "data.train"
    text = f"`{info['label']}`"
    if "n" in info:
        text += f" ({info['n']} rows"
        text += f", sha256 `{str(info['sha256'])[:16]}`)" if info.get("sha256") else ")"
    return text


def _setup_section(run: RunData) -> str:
    exp = run.record
    man = run.manifest or {}
    sha = exp.data.sha256
    lines = [
        f"- Base model: `{json.dumps(exp.model.spec)}` at `{exp.model.path}`",
        f"- Base model identity: `{json.dumps(exp.model.identity, sort_keys=True)}`",
        f"- Data: train {exp.data.n_train} examples, eval {exp.data.n_eval} questions; "
        f"sha256 train `{sha['train'][:16]}`, "
        + ", ".join(f"{k} `{v[:16]}`" for k, v in sha.items() if k == "eval" or k.startswith("eval/")),
        f"- Seeds: {', '.join(str(s) for s in exp.seeds)}",
        f"- Sampling: `{json.dumps(exp.sampling, sort_keys=True)}` (seed = the cell's seed)",
        f"- Training: `{json.dumps(exp.train, sort_keys=True)}`",
    ]
    if man.get("versions"):
        lines.append(f"- Versions: {', '.join(f'{k} {v}' for k, v in man['versions'].items() if v)}")
    if man.get("git"):
        lines.append(f"- Git: `{man['git']}`")
    lines.append("")
    lines.append("Conditions (the prompt and the training data each condition trained with):\n")
    spec_rows = []
    for cond in run.conditions:
        spec = exp.condition_specs.get(cond)
        data = _condition_data(exp.condition_data.get(cond))
        if spec is None:
            spec_rows.append([cond, "(none: trained on the data as given)", "", "", "", data])
            continue
        prompts = spec["resolved_prompts"]
        selector = (
            ", ".join(f"{k}: {spec[k]}" for k in ("where", "regex", "fraction") if spec[k] is not None)
            or "all rows"
        )
        spec_rows.append(
            [
                cond,
                " / ".join(quote(p) for p in prompts),
                str(spec["placement"]),
                selector,
                _inoculated(run, cond),
                data,
            ]
        )
    lines.append(
        md_table(["condition", "inoculation prompt", "placement", "rows", "inoculated", "data"], spec_rows)
    )
    seen = man.get("eval_prompts") or {}
    if seen:
        lines.append("\nWhat the model saw at evaluation (system prompt as rendered by the chat template):\n")
        seen_rows = []
        for prompt, info in seen.items():
            if isinstance(info, dict) and "seen" not in info:
                for cond, sub in info.items():
                    seen_rows.append([f"{prompt} ({cond})", "; ".join(quote(s) for s in sub.get("seen", []))])
            elif isinstance(info, dict):
                seen_rows.append([prompt, "; ".join(quote(s) for s in info.get("seen", []))])
        lines.append(md_table(["eval prompt", "system prompt seen"], seen_rows))
    return "\n".join(lines) + "\n"


_JUDGE_COUNTS = ("requests", "calls", "cache_hits", "failures", "prompt_tokens", "completion_tokens")


def _judges_section(run: RunData) -> str:
    """Per judge, its kind and what its client did summed over the finished cells (a cache hit made no
    call); then each misalignment metric with the rule that produced it. Empty when no judge ran."""
    totals: dict[str, dict[str, Any]] = {}
    for cell in run.cells:
        for name, row in (cell.judges or {}).items():
            t = totals.setdefault(name, {"kind": row.get("kind"), **dict.fromkeys(_JUDGE_COUNTS, 0)})
            for k in _JUDGE_COUNTS:
                t[k] += int(row.get(k) or 0)
    rules = []
    for metric, info in run.metrics.items():
        spec = info.scorer or ""
        if spec.startswith("misaligned:"):
            try:
                align, coherence, rule_name = parse_misaligned_spec(spec.split(":", 1)[1])
            except ScorerError:
                continue
            rules.append(
                f"- `{metric}`: {misaligned_description(rule_name)}; judges `{align}` and `{coherence}`"
            )
    if not totals and not rules:
        return ""
    out = []
    if totals:
        out.append("Summed over the finished cells' evaluations (the base model's not included).\n")
        header = ["judge", "kind", *(k.replace("_", " ") for k in _JUDGE_COUNTS)]
        body = [
            [f"`{n}`", str(t["kind"]), *(str(t[k]) for k in _JUDGE_COUNTS)] for n, t in sorted(totals.items())
        ]
        out.append(md_table(header, body))
    if rules:
        out.append("Misalignment metrics (per answer 1 / 0, excluded answers NaN and counted apart):\n")
        out.append("\n".join(rules) + "\n")
    return "\n".join(out)


def render_report(run: RunData, rows: list[SummaryRow], figures: list[str]) -> str:
    exp = run.record
    out: list[str] = [f"# {run.name}: inoculation prompting report\n"]
    if exp.description:
        out.append(exp.description.strip() + "\n")
    total = len(exp.cells)
    out.append(
        f"{len(run.cells)} of {total} cells finished "
        f"({len(run.conditions)} conditions x {len(run.seeds)} seeds). "
        "Means are over seeds; intervals are 95% CIs with seeds as the unit. "
        "Every number below is computed from the run's stored cell results.\n"
    )
    if run.missing:
        out.append(
            "**Incomplete run:** missing cells "
            + ", ".join(f"{c}/seed_{s}" for c, s in run.missing)
            + ". Rerun the same command to finish them.\n"
        )

    verdict_text, _ = verdict_section(run, rows)
    out.append("## Verdict\n")
    out.append(verdict_text)

    neutral = run.neutral_prompt
    if neutral is not None:
        out.append(f"## Trait rates and capability under the neutral prompt (`{neutral}`)\n")
        out.append(f"System prompt at evaluation: {_system_of(run, neutral)}.\n")
        out.append(md_table(*condition_table(run, rows, neutral)) + "\n")
    if leak := _leak_audit_section(run, rows):
        out.append("## Leak audit\n")
        out.append(leak)
    for prompt in run.training_prompts:
        out.append(f"## Under each condition's training prompt (`{prompt}`)\n")
        out.append(md_table(*condition_table(run, rows, prompt)) + "\n")
    if run.other_prompts:
        out.append("## Re-elicitation\n")
        out.append("Can a prompt still call up the trait after training? Each table is one eval prompt.\n")
        for prompt in run.other_prompts:
            out.append(f"### `{prompt}`: {_system_of(run, prompt)}\n")
            out.append(md_table(*condition_table(run, rows, prompt)) + "\n")
    screen_text = screen_section(run, rows, md_table)
    if screen_text:
        out.append("## Prompt screen (before training)\n")
        out.append(screen_text)
    out.append("## Base model elicitation\n")
    out.append(_base_section(run))
    if figures:
        out.append("## Figures\n")
        out += [f"![{f}]({f})\n" for f in figures]
    if dyn := dynamics_section(run):
        out.append(dyn)
    if judges := _judges_section(run):
        out.append("## Judges\n")
        out.append(judges)
    out.append("## Per-seed numbers\n")
    out.append(_per_seed_section(run))
    out.append("## Setup\n")
    out.append(_setup_section(run))
    return "\n".join(out)
