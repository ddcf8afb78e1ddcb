"""The report's prompt-screen section: the ranked screen of `screen:` and, when every candidate was
trained (`pick: all`) beside an uninoculated baseline, whether the screen predicted the result."""

from __future__ import annotations

from collections.abc import Callable

from inoculate.report.load import RunData
from inoculate.report.screen_validation import validate_screen, validation_markdown
from inoculate.report.tables import SummaryRow
from inoculate.rundir import SCREEN_DIR
from inoculate.screen import CandidateScore, ScreenResult


def load_screen(run: RunData) -> ScreenResult | None:
    path = run.root / SCREEN_DIR / "screen.json"
    if not path.is_file():
        return None
    return ScreenResult.model_validate_json(path.read_text(encoding="utf-8"))


def baseline_condition(run: RunData) -> str | None:
    """The uninoculated condition to measure suppression against: `baseline` if it has no prompt,
    else the first condition without one."""
    prompts = run.record.condition_prompts
    plain = [c for c in run.conditions if prompts.get(c) is None]
    return "baseline" if "baseline" in plain else (plain[0] if plain else None)


def _flags(c: CandidateScore, result: ScreenResult) -> str:
    return ", ".join(f"**{f}**" if f == "recommended" else f for f in c.flags(result.recommendation))


def screen_table(result: ScreenResult) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one column per measure key, the same list the terminal table reads."""
    cols = result.columns()
    head = ["#", "candidate", "prompt", *[col.heading() for col in cols], "flags"]
    rows = []
    for c in result.candidates:
        row = [str(c.rank), c.name, c.prompt or "(no system prompt)", *(col.cell(c) for col in cols)]
        rows.append([*row, _flags(c, result)])
    return head, rows


def cost_lines(result: ScreenResult) -> list[str]:
    lines = []
    per = max(1, len(result.candidates))
    for m, c in result.cost.items():
        lines.append(
            f"- {m}: {c.tokens:,} tokens through the model, {c.seconds:.2f} s ({c.seconds / per:.3f} s per "
            "candidate)"
        )
    ratio = result.cost_ratio()
    if ratio is not None:
        e, s = result.cost["elicitation"], result.cost["surprise"]
        tokens = f", {e.tokens / s.tokens:.1f}x in tokens" if s.tokens else ""
        lines.append(
            f"- the likelihood screen took **{ratio:.1f}x** less time than the generation screen{tokens} "
            f"({result.n_questions} questions x {result.config.samples_per_question} samples against "
            f"{result.n_examples} training responses"
            + (f" and {result.n_contrast} contrast pairs" if result.n_contrast else "")
            + ")"
        )
    return lines


def screen_section(
    run: RunData, rows: list[SummaryRow], table: Callable[[list[str], list[list[str]]], str]
) -> str:
    """Markdown for the screen (empty when the run did not screen); the validation writes its figure.

    `table` renders (header, rows) as markdown (the report's own table function)."""
    result = load_screen(run)
    if result is None:
        return ""
    out = [
        "Candidates were screened on the base model before training (`screen:`; cached in "
        f"`{SCREEN_DIR}/screen.csv`). Elicitation: {result.n_questions} held-out questions x "
        f"{result.config.samples_per_question} samples, scored by the trait scorers. Surprise: "
        f"{result.n_examples} training responses"
        + (f", trait term on {result.n_contrast} contrast pairs" if result.n_contrast else "")
        + ".\n",
        table(*screen_table(result)) + "\n",
        f"Recommendation: **{result.recommendation or 'none'}** (rule: {result.rule}).\n",
    ]
    if result.warnings:
        out.append("Warnings:\n\n" + "\n".join(f"- {w}" for w in result.warnings) + "\n")
    out.append("Cost of each measure:\n\n" + "\n".join(cost_lines(result)) + "\n")
    base = baseline_condition(run)
    trained = [c for c in result.candidates if not c.neutral and c.name in run.conditions]
    if base is not None and len(trained) >= 3 and run.neutral_prompt is not None:
        try:
            v = validate_screen(run.root, baseline=base, eval_prompt=run.neutral_prompt, rows=rows)
        except ValueError as e:
            out.append(f"Screen validation skipped: {e}\n")
        else:
            out.append("### Did the screen predict inoculation?\n")
            out.append(
                f"Suppression = the {v.trait} rate of `{base}` minus the condition's, under the "
                f"`{v.eval_prompt}` prompt after training (mean over seeds).\n"
            )
            out.append(validation_markdown(v))
            if (run.root / "figures" / "screen_validation.png").is_file():
                out.append("![screen validation](figures/screen_validation.png)\n")
    return "\n".join(out)
