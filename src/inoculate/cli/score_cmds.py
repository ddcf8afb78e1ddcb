"""`inoculate score` (per-row trait scores and a summary) and `inoculate scorers` (the registry)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.table import Table
from rich.text import Text

from inoculate.cli._app import app, console, handle_errors, plugin_option
from inoculate.errors import InputErrors
from inoculate.fileio import nan_to_null, write_jsonl_atomic
from inoculate.formats import load_examples
from inoculate.registry import load_plugins
from inoculate.sandbox import SandboxPolicy, set_default_policy
from inoculate.scorers import get_scorers, list_scorers, plugin_failures, score_generations
from inoculate.scorers.scoring import row_clusters, row_seeds, scores_of

if TYPE_CHECKING:
    from inoculate.stats import Summary


def _summary_json(sm: Summary) -> dict[str, Any]:
    return {
        "mean": nan_to_null(sm.mean),
        "ci_low": nan_to_null(sm.ci_low),
        "ci_high": nan_to_null(sm.ci_high),
        "n": sm.n,
        "ci_method": sm.ci_method,
        "unit": sm.unit,
        "n_prompts": sm.n_clusters or None,
        "n_seeds": sm.n_seeds or None,
        "interval": sm.describe(),
    }


def _fmt(x: float, bounded: bool) -> str:
    if math.isnan(x):
        return "–"
    return f"{x:.3f}" if bounded else f"{x:.1f}"


@app.command("score")
@handle_errors
def score(
    path: Path = typer.Argument(..., help="Chat or prompt/completion JSONL, or a datasets folder."),
    scorer: list[str] = typer.Option(
        ..., "--scorer", "-s", help="Scorer spec NAME[:ARG], e.g. language:es, all_caps; repeatable."
    ),
    json_out: bool = typer.Option(
        False,
        "--json",
        help="Print one JSON object {scorer: {mean, ci_low, ci_high, n, ci_method, unit, n_prompts, "
        "n_seeds, interval}} and nothing else.",
    ),
    output: Path | None = typer.Option(
        None, "-o", "--output", help='Write per-row scores as JSONL: {"id", "scores": {spec: value}}.'
    ),
    skip_invalid: bool = typer.Option(False, "--skip-invalid", help="Skip bad rows (listed on stderr)."),
    split: str | None = typer.Option(
        None, "--split", help="Split of a datasets folder or hub id (default train)."
    ),
    plugin: list[str] = plugin_option(),
    bootstrap_seed: int = typer.Option(0, "--bootstrap-seed", help="Seed for bootstrap intervals."),
    unsafe_exec: bool = typer.Option(
        False,
        "--unsafe-exec",
        help="code_tests scorers: run model code WITHOUT a sandbox where no namespace can be made "
        "(otherwise refused). Every output then says so.",
    ),
) -> None:
    """Score the final assistant turn of every row; summarize with 95% intervals.

    Rows whose score is NaN (not scorable, e.g. no letters) are left out of the mean and of n.
    If rows carry metadata.seed, each seed is averaged first and the interval is across seeds.
    Generations with several samples per prompt (metadata.generation.source_id) are clustered by
    prompt: the interval is a t-interval across per-prompt means (ci_method cluster-t).
    """
    from inoculate.stats import summarize_rows  # scipy is slow to import; keep `inoculate --help` fast

    load_plugins(plugin)
    if unsafe_exec:
        set_default_policy(SandboxPolicy(unsafe_exec=True))
    scorers = get_scorers(scorer)
    loaded = load_examples(path, skip_invalid=skip_invalid, split=split)
    for err in loaded.errors:
        print(f"SKIPPED: {err}", file=sys.stderr)
    for w in loaded.warnings:
        print(f"WARNING: {loaded.source}: {w}", file=sys.stderr)
    if not loaded.examples:
        raise InputErrors.one(str(path), 0, "<file>", "no examples to score")
    seeds = row_seeds(loaded.examples, loaded.lines, loaded.source)
    clusters = row_clusters(loaded.examples)
    rows, _means = score_generations(loaded.examples, scorers)
    if output is not None:
        scored = ({"id": r["id"], "scores": {s.name: nan_to_null(r[s.name]) for s in scorers}} for r in rows)
        n = write_jsonl_atomic(output, scored)
        print(f"wrote {n} rows to {output}", file=sys.stderr)
    summaries = {
        s.name: summarize_rows(
            scores_of(rows, s.name), seeds, clusters=clusters, bounded=s.bounded, seed=bootstrap_seed
        )
        for s in scorers
    }
    if json_out:
        obj = {name: _summary_json(sm) for name, sm in summaries.items()}
        sys.stdout.write(json.dumps(obj) + "\n")
        return
    console.print(_summary_table(summaries, {s.name: s.bounded for s in scorers}, str(path)))


def _summary_table(summaries: dict[str, Summary], bounded: dict[str, bool], title: str) -> Table:
    table = Table(title=Text(title))
    for col, justify in (("scorer", "left"), ("mean", "right"), ("95% CI", "right"), ("n", "right")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    table.add_column("seeds", justify="right")
    table.add_column("interval")
    for name, sm in summaries.items():
        b = bounded[name]
        cells = (
            name,
            _fmt(sm.mean, b),
            f"[{_fmt(sm.ci_low, b)}, {_fmt(sm.ci_high, b)}]",
            str(sm.n),
            str(sm.n_seeds) if sm.n_seeds else "–",
            f"{sm.ci_method}: {sm.describe()}",
        )
        table.add_row(*(Text(c) for c in cells))
    return table


@app.command("scorers")
@handle_errors
def scorers_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print the list as JSON."),
    plugin: list[str] = plugin_option(),
) -> None:
    """List the registered trait scorers (built-ins and plugins)."""
    load_plugins(plugin)
    infos = list_scorers()
    for name, err in plugin_failures().items():
        print(f"WARNING: scorer plugin {name!r} failed to load: {err}", file=sys.stderr)
    if json_out:
        rows = [
            {
                "name": i.name,
                "takes_arg": i.takes_arg,
                "range": "[0, 1]" if i.bounded else "raw",
                "description": i.description,
                "source": i.source,
            }
            for i in infos
        ]
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table(title="trait scorers")
    for col in ("name", "range", "description", "source"):
        table.add_column(col)
    for i in infos:
        cells = (
            i.name + ("[:ARG]" if i.takes_arg else ""),
            "[0, 1]" if i.bounded else "raw",
            i.description,
            i.source,
        )
        table.add_row(*(Text(c) for c in cells))
    console.print(table)


@app.command("judges")
@handle_errors
def judges_cmd(
    file: Path | None = typer.Argument(None, help="A judges YAML (endpoints:, judges:) to list as well."),
    json_out: bool = typer.Option(False, "--json", help="Print the list as JSON."),
    plugin: list[str] = plugin_option(),
) -> None:
    """List the known LLM judges: registered ones (plugins included) and those of FILE."""
    from inoculate.judges import get_judge, list_judges, load_judges_file

    load_plugins(plugin)
    judges = {name: get_judge(name) for name in list_judges()}
    sources = dict.fromkeys(judges, "registry")
    if file is not None:
        for name, judge in load_judges_file(file).items():
            judges[name], sources[name] = judge, str(file)
    rows = [
        {
            "name": name,
            "kind": j.kind,
            "endpoint": j.endpoint.base_url,
            "model": j.endpoint.model,
            "api_key_env": j.endpoint.api_key_env,
            "description": j.description,
            "source": sources[name],
        }
        for name, j in sorted(judges.items())
    ]
    if json_out:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table(title="judges (use as judge:NAME, or misaligned:ALIGN,COHERENCE[,RULE])")
    for col in ("name", "kind", "endpoint", "model", "api_key_env", "source"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            *(Text(str(r[c])) for c in ("name", "kind", "endpoint", "model", "api_key_env", "source"))
        )
    console.print(table)
