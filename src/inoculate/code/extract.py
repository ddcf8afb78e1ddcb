"""The program in a model's completion: the first fenced python block, else the raw text."""

from __future__ import annotations

import re

# An opening fence (``` or ~~~, three or more) with an optional info string, the body, and the same
# fence closing it. The closing fence may be missing at the very end (a completion cut by max tokens).
_FENCE = re.compile(
    r"^[ \t]*(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n(?P<body>.*?)(?:^[ \t]*(?P=fence)[ \t]*$|\Z)",
    re.MULTILINE | re.DOTALL,
)
_PYTHON_TAGS = {"python", "py", "python3", "py3"}


def extract_program(completion: str) -> str:
    """The program a completion holds.

    Rule: the body of the first fenced block tagged python (```python, ```py, ```python3; the tag is
    the info string's first word, any case); else the first untagged fenced block; else the whole
    completion, stripped. Blocks tagged another language (```text, ```bash) are never taken. An
    unclosed fence runs to the end of the text (a completion cut at max tokens).
    """
    untagged: str | None = None
    for m in _FENCE.finditer(completion):
        info = m.group("info").strip().split()
        tag = info[0].lower() if info else ""
        if tag in _PYTHON_TAGS:
            return m.group("body").rstrip() + "\n"
        if not tag and untagged is None:
            untagged = m.group("body").rstrip() + "\n"
    if untagged is not None:
        return untagged
    return completion.strip() + "\n"
