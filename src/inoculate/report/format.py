"""Markdown primitives shared by the report's sections: numbers, intervals, tables, quoted prompts."""

from __future__ import annotations

import math

from inoculate.report.tables import SummaryRow


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}f}"


def fmt_ci(r: SummaryRow | None) -> str:
    if r is None:
        return "n/a"
    if math.isnan(r.ci_low) or math.isnan(r.ci_high):
        return fmt(r.mean)
    return f"{fmt(r.mean)} [{fmt(r.ci_low)}, {fmt(r.ci_high)}]"


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table; `|` in a cell is escaped and newlines become spaces."""

    def esc(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def quote(text: str | None) -> str:
    """A system prompt in quotes, or `(no system prompt)`."""
    if text is None:
        return "(no system prompt)"
    return f'"{text}"'
