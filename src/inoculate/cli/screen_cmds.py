"""`inoculate screen`: rank candidate inoculation prompts before training."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from inoculate.cli._app import app, console, err_console, handle_errors, plugin_option
from inoculate.registry import load_plugins

if TYPE_CHECKING:
    from rich.table import Table

    from inoculate.screen import ScreenResult


def _rich_flag(flag: str) -> str:
    if flag == "reference":
        return flag
    return f"[bold green]{flag}[/]" if flag == "recommended" else f"[yellow]{flag}[/]"


def screen_table(result: ScreenResult) -> Table:
    """The ranked screen as a rich table: one column per measure key (`ScreenResult.columns`), flags,
    and the costs as its caption."""
    from rich.table import Table

    cols = result.columns()
    t = Table(title="inoculation prompt screen", show_lines=False)
    t.add_column("#", justify="right")
    t.add_column("candidate")
    t.add_column("prompt", max_width=40, overflow="ellipsis")
    for col in cols:
        t.add_column(col.heading(short=True), justify="right")
    t.add_column("flags")
    for c in result.candidates:
        cells = [str(c.rank), c.name, c.prompt or "(no system prompt)", *(col.cell(c) for col in cols)]
        cells.append(", ".join(_rich_flag(f) for f in c.flags(result.recommendation)))
        t.add_row(*cells)
    costs = [f"{m}: {c.tokens:,} tokens, {c.seconds:.2f} s" for m, c in result.cost.items()]
    ratio = result.cost_ratio()
    if ratio is not None:
        costs.append(f"likelihood screen {ratio:.1f}x cheaper (seconds)")
    t.caption = "; ".join(costs)
    return t


@app.command("screen")
@handle_errors
def screen_cmd(
    candidates_file: Path | None = typer.Argument(
        None,
        help="Candidate prompts: .txt (one per line, # comments), or .json/.jsonl/.yaml strings or "
        "{name, prompt} objects.",
    ),
    prompt_field: str | None = typer.Option(
        None,
        "--prompt-field",
        help="The field holding the prompt in CANDIDATES objects (default: their only string field "
        "besides name).",
    ),
    candidate: list[str] = typer.Option([], "--candidate", "-c", help="A candidate prompt; repeatable."),
    model: str = typer.Option(..., "--model", "-m", help="Base model: hub id or local path."),
    data: Path = typer.Option(
        ..., "--data", "-d", help="Training data (its responses drive the surprise measure)."
    ),
    eval_data: Path | None = typer.Option(
        None, "--eval", help="Held-out questions for elicitation (default: the training questions)."
    ),
    scorer: list[str] = typer.Option(
        [], "--scorer", "-s", help="Trait scorer NAME[:ARG]; repeatable; the first is the primary trait."
    ),
    n: int = typer.Option(64, "--n", help="Questions sampled per candidate for elicitation."),
    measures: str = typer.Option(
        "elicitation,surprise", "--measures", help="Comma list: elicitation, surprise (and plugin measures)."
    ),
    output: Path | None = typer.Option(None, "-o", "--output", help="Write the ranked table as CSV."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the full ScreenResult as JSON."),
    neutral: str | None = typer.Option(
        None, "--neutral", help="The neutral reference prompt (default: no system prompt)."
    ),
    contrast: Path | None = typer.Option(
        None,
        "--contrast",
        help="Chat JSONL of trait-bearing responses with metadata.without_trait (the trait-specific term).",
    ),
    pick: str = typer.Option("surprise", "--pick", help="Measure the recommendation ranks by."),
    max_examples: int = typer.Option(
        256, "--max-examples", help="Training responses used by the surprise measure."
    ),
    samples: int = typer.Option(1, "--samples", help="Samples per question."),
    temperature: float = typer.Option(1.0, "--temperature"),
    top_p: float = typer.Option(1.0, "--top-p"),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
    seed: int = typer.Option(0, "--seed"),
    batch_size: int = typer.Option(16, "--batch-size"),
    adapter: str | None = typer.Option(None, "--adapter", help="A PEFT adapter on top of the model."),
    chat_template: str | None = typer.Option(None, "--chat-template", help="Jinja template text or file."),
    plugin: list[str] = plugin_option(),
) -> None:
    """Rank candidate inoculation prompts by elicitation and surprise reduction (see `inoculate.screen`).

    The neutral prompt is always screened as the reference. Candidates that elicit nothing are
    flagged placebo-like; the recommendation follows the stated rule.
    """
    from inoculate.screen import ScreenConfig, candidates_from, measures_from, screen_files

    load_plugins(plugin)
    cands = candidates_from(candidates_file, candidate, prompt_field=prompt_field)
    wanted, pick = measures_from(measures, pick)
    cfg = ScreenConfig(
        measures=wanted,
        n=n,
        samples_per_question=samples,
        max_examples=max_examples,
        batch_size=batch_size,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=max_new_tokens,
        seed=seed,
        pick=pick,
    )
    result = screen_files(
        model,
        cands,
        data,
        eval_data=eval_data,
        scorers=scorer,
        contrast=contrast,
        neutral=neutral,
        adapter=adapter,
        chat_template=chat_template,
        config=cfg,
        progress=lambda msg: err_console.print(f"[dim]{msg}[/]"),
    )
    console.print(screen_table(result))
    for w in result.warnings:
        err_console.print(f"[yellow]WARNING:[/] {w}")
    if result.recommended is not None:
        console.print(f"Recommended: [bold]{result.recommended.name}[/] — {result.recommended.prompt!r}")
    else:
        console.print("Recommended: none")
    console.print(f"[dim]rule: {result.rule}[/]")
    if output is not None:
        result.write_csv(output)
        console.print(f"wrote {output}")
    if json_out is not None:
        result.write_json(json_out)
        console.print(f"wrote {json_out}")
