"""`inoculate apply`, `neutralize` and `validate`: a thin shell over `transform` and `formats`."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.table import Table

from inoculate.cli._app import ERRORS_PER_KIND, app, console, handle_errors
from inoculate.errors import InputError
from inoculate.formats import iter_examples
from inoculate.records import ChatExample
from inoculate.transform import (
    Manifest,
    OutputFormat,
    apply_file,
    errors_path_for,
    load_spec,
    manifest_path_for,
    neutralize_file,
)


def _unescape(text: str | None) -> str | None:
    """Let shell users write `\\n` and `\\t` in --separator and --template."""
    if text is None:
        return None
    return text.replace("\\n", "\n").replace("\\t", "\t")


def _check_format(value: str) -> OutputFormat:
    if value not in ("chat", "prompt-completion"):
        raise typer.BadParameter("expected chat or prompt-completion")
    return value  # type: ignore[return-value]


@app.command("apply")
@handle_errors
def apply_cmd(
    input: str = typer.Argument(
        ..., metavar="IN", help="Chat or prompt/completion JSONL, or a datasets path / hub id."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Output JSONL; the manifest goes beside it."),
    prompt: list[str] | None = typer.Option(
        None, "--prompt", help="Inoculation prompt text; repeat for a paraphrase pool."
    ),
    prompt_file: Path | None = typer.Option(
        None,
        "--prompt-file",
        help="A paraphrase pool: .txt (one per line, # comments), .json/.yaml list, or .jsonl "
        "(strings or objects; see --prompt-field).",
    ),
    prompt_field: str | None = typer.Option(
        None,
        "--prompt-field",
        help="The field holding the prompt in --prompt-file objects (default: their only string field).",
    ),
    placement: str | None = typer.Option(
        None,
        "--placement",
        help="system (replace) | system-prepend | system-append | user-prefix | user-suffix | "
        "user-replace (with --replace) | template. "
        "Required when a selected row already has a system prompt; otherwise defaults to system.",
    ),
    where: str | None = typer.Option(None, "--where", help="Metadata selector, e.g. 'lang == \"es\"'."),
    regex: str | None = typer.Option(None, "--regex", help="Select rows whose content matches this regex."),
    regex_role: list[str] | None = typer.Option(
        None, "--regex-role", help="Role(s) --regex looks at: user (default), assistant, system, any."
    ),
    fraction: float | None = typer.Option(
        None, "--fraction", help="Inoculate this seeded fraction of selected rows."
    ),
    seed: int | None = typer.Option(
        None, "--seed", help="Seed for the prompt pool and --fraction (default 0)."
    ),
    template: str | None = typer.Option(
        None,
        "--template",
        help="User-turn template for placement template, e.g. '{inoculation}\\n\\n{user}'.",
    ),
    separator: str | None = typer.Option(
        None, "--separator", help="Joins prompt and text (default '\\n\\n')."
    ),
    replace: str | None = typer.Option(
        None,
        "--replace",
        help="Placement user-replace: the neutral instruction in the user turn that the prompt replaces.",
    ),
    user_turn: str | None = typer.Option(None, "--user-turn", help="first (default) or last user turn."),
    config: Path | None = typer.Option(
        None, "--config", help="YAML with the same fields; flags override it."
    ),
    skip_invalid: bool = typer.Option(
        False,
        "--skip-invalid",
        help="Drop bad rows, reporting them in OUT.errors.jsonl, instead of aborting.",
    ),
    output_format: str = typer.Option("chat", "--output-format", help="chat or prompt-completion (TRL)."),
    allow_empty: bool = typer.Option(
        False,
        "--allow-empty",
        help="Accept a selection that inoculates no row (by default it is an error, with the values seen).",
    ),
    regex_timeout: float | None = typer.Option(
        None, "--regex-timeout", help="Seconds one --regex search may take on one message (default 1)."
    ),
    split: str | None = typer.Option(
        None, "--split", help="Split of a datasets folder or hub id (default train)."
    ),
) -> None:
    """Insert an inoculation prompt into the selected rows; write OUT and OUT.manifest.json."""
    fmt = _check_format(output_format)
    overrides = {
        "prompt": prompt[0] if prompt and len(prompt) == 1 else None,
        "prompts": list(prompt) if prompt and len(prompt) > 1 else None,
        "prompt_file": prompt_file,
        "prompt_field": prompt_field,
        "placement": placement,
        "where": where,
        "regex": regex,
        "regex_roles": list(regex_role) if regex_role else None,
        "fraction": fraction,
        "seed": seed,
        "template": _unescape(template),
        "separator": _unescape(separator),
        "replace": _unescape(replace),
        "user_turn": user_turn,
        "allow_empty": True if allow_empty else None,
        "regex_timeout": regex_timeout,
    }
    spec = load_spec(config, overrides)
    m = apply_file(input, output, spec, skip_invalid=skip_invalid, output_format=fmt, split=split)

    table = Table(title=f"inoculated {m.n_inoculated} of {m.n_rows} rows ({m.placement})")
    table.add_column("#", justify="right")
    table.add_column("prompt")
    table.add_column("rows", justify="right")
    for i, (text, n) in enumerate(m.counts_per_prompt.items()):
        table.add_row(str(i), text, str(n))
    console.print(table)
    if m.n_replaced_system:
        console.print(
            f"replaced the system prompt of {m.n_replaced_system} row(s); the old text is kept in "
            "metadata.inoculation.replaced_system (neutralize --keep-system gives it back)",
            highlight=False,
            soft_wrap=True,
        )
    if m.n_skipped_invalid:
        print(
            f"skipped {m.n_skipped_invalid} invalid row(s); see {errors_path_for(output)}",
            file=sys.stderr,
        )
    console.print(f"wrote {output} and {manifest_path_for(output)}", highlight=False, soft_wrap=True)


@app.command("neutralize")
@handle_errors
def neutralize_cmd(
    input: str = typer.Argument(
        ..., metavar="IN", help="Examples (or prompt-only eval rows) to make the neutral-prompt eval set of."
    ),
    output: Path = typer.Option(..., "-o", "--output", help="Output JSONL."),
    manifest: list[Path] | None = typer.Option(
        None,
        "--manifest",
        help="Manifest written by `inoculate apply`; repeat to check against every run's prompts.",
    ),
    text: list[str] | None = typer.Option(
        None, "--text", help="Extra inoculation text to remove and refuse."
    ),
    system: str | None = typer.Option(None, "--system", help="Set this system prompt (default: remove it)."),
    keep_system: bool = typer.Option(
        False,
        "--keep-system",
        help="Keep system prompts, removing only the inoculation text from them (and giving back one "
        "that placement system replaced).",
    ),
    drop_completions: bool = typer.Option(
        False, "--drop-completions", help="Drop the final assistant turn, leaving eval prompts."
    ),
    allow_other_input: bool = typer.Option(
        False,
        "--allow-other-input",
        help="Accept an IN that is not the output of the manifest(s) (an eval set of its own); "
        "it is still checked against all their prompts.",
    ),
    output_format: str = typer.Option("chat", "--output-format", help="chat or prompt-completion (TRL)."),
) -> None:
    """Strip inoculation prompts for evaluation; refuse if any inoculation text survives.

    IN must be the file `apply` wrote with the manifest (its sha256 is the manifest's output_sha256)
    unless --allow-other-input is given."""
    fmt = _check_format(output_format)
    known: list[Manifest | str] = [Manifest.load(p) for p in manifest or []]
    known.extend(text or [])
    if not known:
        raise typer.BadParameter("give --manifest (or --text) so neutralize knows what to remove")
    result = neutralize_file(
        input,
        output,
        known,
        system=system,
        mode="restore" if keep_system else "remove",
        drop_completions=drop_completions,
        output_format=fmt,
        allow_other_input=allow_other_input,
    )
    if result.other_input:
        print(
            f"WARNING: {input} is not the output of the manifest(s) given (--allow-other-input); "
            "its rows were checked against their prompts all the same",
            file=sys.stderr,
        )
    had = sum(1 for ex in result.examples if ex.metadata["neutralized"]["inoculation"] is not None)
    console.print(
        f"wrote {len(result.examples)} neutral rows ({had} were inoculated) to {output}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(result.summary(), highlight=False, soft_wrap=True)


@app.command("validate")
@handle_errors
def validate_cmd(
    input: str = typer.Argument(..., metavar="IN", help="Chat or prompt/completion JSONL, or a dataset."),
    allow_no_assistant: bool = typer.Option(
        False, "--allow-no-assistant", help="Accept rows without an assistant turn (eval prompts)."
    ),
    split: str | None = typer.Option(
        None, "--split", help="Split of a datasets folder or hub id (default train)."
    ),
) -> None:
    """Check a dataset; print every problem as FILE:LINE: FIELD: message, or an OK count.

    Reads one row at a time (memory does not grow with the file); at most 20 lines are printed
    per kind of problem, the rest counted."""
    stream = iter_examples(input, require_assistant=not allow_no_assistant, split=split)
    n_valid = n_errors = 0
    # The first ERRORS_PER_KIND errors of each kind, in file order, and how many there were: what
    # `render_errors` prints, without holding every error (or row) of a large file.
    kept: list[InputError] = []
    counts: dict[tuple[str, str, str], int] = {}
    hints: list[str] = []
    for _, item in stream:
        if isinstance(item, ChatExample):
            n_valid += 1
            continue
        for e in item:
            n_errors += 1
            counts[e.kind] = counts.get(e.kind, 0) + 1
            if counts[e.kind] <= ERRORS_PER_KIND:
                kept.append(e)
            if e.hint and e.hint not in hints:
                hints.append(e.hint)
    if all(n <= ERRORS_PER_KIND for n in counts.values()):
        lines = [f"ERROR: {e}" for e in kept]
    else:
        lines = []
        for kind, n in counts.items():
            lines.extend(f"ERROR: {e}" for e in kept if e.kind == kind)
            if n > ERRORS_PER_KIND:
                lines.append(f"  … and {n - ERRORS_PER_KIND} more like this")
    lines.extend(f"hint: {h}" for h in hints)
    for line in lines:
        print(line, file=sys.stderr)
    for w in stream.warnings:
        print(f"WARNING: {stream.source}: {w}", file=sys.stderr)
    if n_errors:
        print(f"{n_errors} problem(s); {n_valid} valid row(s)", file=sys.stderr)
        raise typer.Exit(1)
    console.print(f"OK: {n_valid} rows ({stream.format})", highlight=False, soft_wrap=True)


@app.command("settings")
@handle_errors
def settings_cmd(
    json_out: bool = typer.Option(False, "--json", help="Print the list as JSON."),
) -> None:
    """List the task settings a YAML can name as `{setting: {name: NAME, split: SPLIT, ...options}}`:
    their splits, options, prompt library (with where each text comes from), scorers and source."""
    import json

    from inoculate.settings import get_task_setting, list_task_settings

    rows = []
    for name in list_task_settings():
        s = get_task_setting(name)
        rows.append(
            {
                "name": s.name,
                "description": s.description,
                "cite": s.cite,
                "splits": list(s.splits),
                "train_split": s.train_split,
                "eval_split": s.eval_split,
                "options": {
                    k: None if f.is_required() else repr(f.get_default(call_default_factory=True))
                    for k, f in s.options.model_fields.items()
                },
                "prompts": {k: s.prompt_cites.get(k, "") for k in s.prompts},
                "traits": dict(s.traits),
                "capability": dict(s.capability),
            }
        )
    if json_out:
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    table = Table(title="task settings (data: {setting: {name: NAME, split: SPLIT, ...options}})")
    for col in ("name", "splits (train/eval)", "options", "prompts", "scorers"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            r["name"],
            f"{', '.join(r['splits'])} ({r['train_split']}/{r['eval_split']})",
            ", ".join(k if v is None else f"{k}={v}" for k, v in r["options"].items()),
            ", ".join(f"@{k}" for k in r["prompts"]),
            ", ".join(f"{k}: {v}" for k, v in {**r["traits"], **r["capability"]}.items()),
        )
    console.print(table)
