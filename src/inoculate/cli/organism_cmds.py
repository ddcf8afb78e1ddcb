"""`inoculate organism list|build`: the organism presets' base models (stage 1), shipped and rebuilt."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import typer
from rich.table import Table

from inoculate.cli._app import UserError, app, console, handle_errors

organism_app = typer.Typer(
    name="organism",
    help="The built-in model organism's base models: list the presets, rebuild them from scratch.",
    no_args_is_help=True,
)
app.add_typer(organism_app)


@organism_app.command("list")
@handle_errors
def list_cmd(json_out: bool = typer.Option(False, "--json", help="Print the list as JSON.")) -> None:
    """List the presets: their key, stage-1 extensions, whether the package ships their base model and
    where the cache holds it."""
    from inoculate.organism import PRESETS, cache_root, is_built, packaged

    rows = []
    for name, config in PRESETS.items():
        key = config.key()
        cached = cache_root() / key
        rows.append(
            {
                "preset": name,
                "key": key,
                "extensions": list(config.extensions),
                "shipped": packaged.shipped(key) is not None,
                "cached": str(cached) if is_built(cached) else None,
            }
        )
    if json_out:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table(title="organism presets (model: {organism: {preset: NAME}})")
    table.add_column("preset", no_wrap=True)
    table.add_column("key", no_wrap=True)
    table.add_column("stage-1 extensions")
    table.add_column("shipped", no_wrap=True)
    table.add_column("cached", overflow="fold")
    for r in rows:
        table.add_row(
            r["preset"],
            r["key"],
            ", ".join(r["extensions"]) or "-",
            "yes" if r["shipped"] else "no",
            r["cached"] or "-",
        )
    console.print(table)


@organism_app.command("build")
@handle_errors
def build_cmd(
    presets: list[str] = typer.Argument(None, help="Presets to build (default: demo)."),
    all_: bool = typer.Option(False, "--all", help="Build every preset the package ships a base model for."),
    out: Path | None = typer.Option(
        None, "--out", "-o", help="Build into OUT/<key> instead of the cache (which it otherwise replaces)."
    ),
    jobs: int = typer.Option(
        1, "--jobs", "-j", min=1, max=64, help="Builds at once, one process (core) each."
    ),
    check: bool = typer.Option(
        False,
        "--check",
        help="Compare each build with the base model the package ships: identical, equivalent (other float "
        "rounding, same behaviour within tolerance) or different (exit 1).",
    ),
    write_package: Path | None = typer.Option(
        None, "--write-package", help="Maintainers: write each build as a shipped model into this folder."
    ),
) -> None:
    """Run stage 1 from scratch for each preset: the shipped base models are never used here."""
    from inoculate.organism import PRESETS, packaged, read_meta
    from inoculate.organism.rebuild import build_presets, compare_builds

    if all_ and presets:
        raise UserError("give preset names or --all, not both")
    if all_:
        keys = set(packaged.shipped_keys())
        names = [n for n, c in PRESETS.items() if c.key() in keys]
        if not names:
            raise UserError("the package ships no base model for any preset")
    else:
        names = list(presets or ["demo"])
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise UserError(f"unknown preset(s) {', '.join(unknown)} (known: {', '.join(PRESETS)})")
    console.print(f"stage 1: building {', '.join(names)} from scratch, {min(jobs, len(names))} at a time")
    t0 = time.perf_counter()
    paths = build_presets(names, out, jobs=jobs)
    failed = []
    for name, path in zip(names, paths, strict=True):
        meta = read_meta(path)
        console.print(
            f"{name}: {path} (key {meta['key']}, {meta['steps']} steps in {meta['build_seconds']:.0f} s, "
            f"final loss {meta['final_loss']:.4f})",
            highlight=False,
            soft_wrap=True,
        )
        if check:
            shipped = packaged.shipped(meta["key"])
            if shipped is None:
                console.print(
                    f"  check: the package ships no base model for key {meta['key']}", highlight=False
                )
                failed.append(name)
            else:
                result = compare_builds(path, shipped)
                console.print(f"  check: {result.verdict}: {result.reason}", highlight=False, soft_wrap=True)
                if result.verdict == "different":
                    failed.append(name)
        if write_package is not None:
            dest = packaged.write_shipped(path, write_package, name)
            console.print(f"  shipped copy: {dest}", highlight=False, soft_wrap=True)
    console.print(f"built {len(paths)} in {time.perf_counter() - t0:.0f} s", highlight=False)
    if failed:
        raise UserError(f"{', '.join(failed)}: not the shipped base model (see above)")
