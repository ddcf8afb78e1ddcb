"""`inoculate run`, `inoculate report` and `inoculate demo`: thin shells over experiment/ and report/."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from inoculate.cli._app import app, console, err_console, handle_errors, plugin_option
from inoculate.registry import load_plugins
from inoculate.rundir import RunFolderLocked, RunLock, describe_holder

if TYPE_CHECKING:
    from inoculate.report import Report

EXIT_EXPECTATION_FAILED = 3


def _show(report: Report | None, *, check: bool) -> None:
    """Print the headline table, the verdict counts and where the report is."""
    if report is None:
        return
    header, rows = report.headline()
    prompt = report.run.neutral_prompt
    if header:
        table = Table(title=f"{report.run.name}: under the '{prompt}' prompt (mean [95% CI] over seeds)")
        for i, h in enumerate(header):
            table.add_column(h, no_wrap=i == 0)
        for r in rows:
            table.add_row(*(escape(c) for c in r))
        console.print(table)
    if report.run.missing:
        console.print(
            f"[yellow]{len(report.run.missing)} cell(s) unfinished; rerun to complete them[/yellow]"
        )
    failed = [v for v in report.verdicts if v.passed is False]
    unchecked = [v for v in report.verdicts if v.passed is None]
    if report.verdicts:
        ok = len(report.verdicts) - len(failed) - len(unchecked)
        colour = "green" if not failed and not unchecked else "red"
        console.print(f"[{colour}]expectations: {ok} of {len(report.verdicts)} hold[/{colour}]")
        for v in failed:
            console.print(
                f"  FAIL {v.condition} {v.metric} [{v.eval_prompt}] = {v.observed:.2f}, "
                f"expected {v.rule.describe()}",
                markup=False,
            )
        if failed:
            console.print("  The expected effect did not (fully) appear in this run; see the report.")
    console.print(f"report: {report.report_md}", markup=False)
    console.print(f"summary: {report.summary_csv}", markup=False)
    if check and (failed or unchecked):
        raise typer.Exit(EXIT_EXPECTATION_FAILED)


def _run(
    experiment: object, out: Path | None, seeds: int | None, force: bool, check: bool, workers: int | None
) -> None:
    from inoculate.experiment import run_experiment  # lazy: the orchestrator imports torch (4 s)
    from inoculate.experiment.progress import RichProgress

    progress = RichProgress(err_console, headline_prompt="neutral")
    outcome = run_experiment(
        experiment,  # type: ignore[arg-type]
        out,
        seeds=seeds,
        force=force,
        progress=progress,
        workers=workers,
    )
    err_console.print(
        f"{len(outcome.matrix.ran)} cell(s) run, {len(outcome.matrix.cached)} cached, {outcome.seconds:.1f}s"
    )
    _show(outcome.report, check=check)


_SEEDS_HELP = "Run seeds 0..N-1 instead of the experiment's seeds."
_MAX_SEEDS = 100  # inoculate.experiment.config.MAX_SEEDS (not imported here: the CLI starts light)
_WORKERS_HELP = (
    "Cells run at once, each in its own process (default: 2 for the built-in organism on a CPU-only "
    "machine with 2+ cores, else 1)."
)
_CHECK_HELP = (
    f"Exit with status {EXIT_EXPECTATION_FAILED} if a declared expectation fails or cannot be checked."
)


@app.command("run")
@handle_errors
def run_cmd(
    experiment: Path = typer.Argument(..., help="Experiment YAML."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (default runs/<name>)."),
    seeds: int | None = typer.Option(None, "--seeds", min=1, max=_MAX_SEEDS, help=_SEEDS_HELP),
    force: bool = typer.Option(False, "--force", help="Redo every cell, even finished ones."),
    check: bool = typer.Option(False, "--check", help=_CHECK_HELP),
    workers: int | None = typer.Option(None, "--workers", min=1, max=64, help=_WORKERS_HELP),
    plugin: list[str] = plugin_option(),
    unsafe_exec: bool = typer.Option(
        False,
        "--unsafe-exec",
        help="code_tests scorers: run model code WITHOUT a sandbox where no namespace can be made "
        "(otherwise refused; docs/sandbox.md). Every scoring batch then says so on stderr.",
    ),
) -> None:
    """Run an experiment's conditions x seeds matrix (resuming finished cells) and write its report.

    Plugins (`--plugin`, then the YAML's `plugins:`) are imported before the YAML is validated.
    """
    if unsafe_exec:
        import os

        from inoculate.sandbox import UNSAFE_ENV

        os.environ[UNSAFE_ENV] = "1"  # the environment, not a module setting: cell workers inherit it
    load_plugins(plugin)
    _run(experiment, out, seeds, force, check, workers)


@app.command("report")
@handle_errors
def report_cmd(
    run_dir: Path = typer.Argument(..., help="A run folder written by `inoculate run`."),
    check: bool = typer.Option(False, "--check", help=_CHECK_HELP),
) -> None:
    """Regenerate summary.csv, per_seed.csv, report.md and figures/ from a run's stored cell results."""
    from inoculate.report import write_report  # lazy: the report imports scipy and matplotlib (1 s)
    from inoculate.report.load import load_run

    load_run(run_dir)  # a damaged run folder is refused before anything is written there, the lock included
    # Holds the run lock while writing, so no run starts mid-report; when a run holds it, the report
    # is of the cells finished so far (the run rewrites it when it ends), and says so.
    lock: RunLock | None = RunLock(run_dir, "report") if (run_dir / "experiment.json").is_file() else None
    try:
        if lock is not None:
            lock.acquire()
    except RunFolderLocked:
        lock = None
        err_console.print(
            f"{run_dir}: a run is still running ({describe_holder(run_dir)}); this report covers "
            "the cells finished so far",
            style="yellow",
            markup=False,
        )
    except OSError:  # a read-only folder: nothing to lock
        lock = None
    try:
        _show(write_report(run_dir), check=check)
    finally:
        if lock is not None:
            lock.release()


@app.command("demo")
@handle_errors
def demo_cmd(
    name: str | None = typer.Argument(
        None, help="A phenomenon (see --list); without it, the Spanish + ALL-CAPS demo."
    ),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder (default runs/demo[_NAME])."),
    seeds: int | None = typer.Option(
        None, "--seeds", min=1, max=_MAX_SEEDS, help="Number of seeds (default 3)."
    ),
    force: bool = typer.Option(False, "--force", help="Redo every cell, even finished ones."),
    check: bool = typer.Option(False, "--check", help=_CHECK_HELP),
    list_: bool = typer.Option(False, "--list", help="List the phenomena `inoculate demo NAME` runs."),
    workers: int | None = typer.Option(None, "--workers", min=1, max=64, help=_WORKERS_HELP),
) -> None:
    """Watch inoculation prompting work: Spanish + ALL-CAPS on the built-in model organism, on CPU.

    `inoculate demo NAME` runs another phenomenon of the papers on the organism
    (`examples/organism_NAME.yaml`); `inoculate demo --list` names them.
    """
    from inoculate.experiment import list_demos  # lazy: the orchestrator imports torch (4 s)

    if list_:
        _list_demos(list_demos())
        return
    if name is not None and name not in list_demos():
        err_console.print(
            f"unknown demo {name!r}; known: {', '.join(list_demos()) or 'none'} (inoculate demo --list)",
            markup=False,
        )
        raise typer.Exit(1)
    from inoculate.experiment import demo_config

    default_out = Path("runs/demo") if name is None else Path(f"runs/demo_{name}")
    _run(demo_config(name), out or default_out, seeds, force, check, workers)


def first_sentence(text: str) -> str:
    """The first sentence of `text`, whitespace folded; "et al." and "e.g." do not end one."""
    folded = " ".join(text.split())
    return re.split(r"(?<!\bal)(?<!\be\.g)\.\s+(?=[A-Z(])", folded, maxsplit=1)[0].rstrip(".") + "."


def _list_demos(names: list[str]) -> None:
    from inoculate.experiment import demo_config

    table = Table(title="inoculate demo NAME")
    table.add_column("name", no_wrap=True)
    table.add_column("what it shows")
    table.add_row("(none)", "Spanish + ALL-CAPS: selective learning of the trait the prompt does not request")
    for name in names:
        table.add_row(name, escape(first_sentence(demo_config(name).description)))
    console.print(table)
