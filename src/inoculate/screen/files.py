"""The screen from files: candidate prompt files, `--candidate` texts and `--measures`, contrast pairs
from chat JSONL, and `screen_files` (what `inoculate screen` calls)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from inoculate.errors import InputError, InputErrors
from inoculate.formats import load_examples
from inoculate.models import load_model
from inoculate.prompt_files import read_prompt_entries
from inoculate.records import ChatExample, Message
from inoculate.scorers import get_scorers
from inoculate.screen.measures import strip_system
from inoculate.screen.rank import screen, with_neutral
from inoculate.screen.result import Candidate, ContrastPair, ScreenConfig, ScreenResult, selectable_names

# --- candidates ---------------------------------------------------------------------------------------


def load_candidates(path: str | os.PathLike[str], field: str | None = None) -> list[Candidate]:
    """Candidates from a prompt file (`inoculate.prompt_files`): `.txt` one per line (`#` comments
    and blank lines skipped), or `.json`/`.jsonl`/`.yaml` strings or objects; an object's `name`
    names its candidate, `field` (default: its only other string field, e.g. `prompt`) is the prompt.
    Unnamed candidates are c1, c2, ... by position."""
    entries = read_prompt_entries(path, field, name_field="name")
    out = [Candidate(name=e.name or f"c{i + 1}", prompt=e.text) for i, e in enumerate(entries)]
    _check_names(out, str(path))
    return out


def candidates_from_list(items: Sequence[Any], *, file: str = "<candidates>") -> list[Candidate]:
    """`["text", {"name": ..., "prompt": ...}, ...]` -> candidates (unnamed ones become c1, c2, ...)."""
    out: list[Candidate] = []
    errors = []
    for i, item in enumerate(items):
        if isinstance(item, str) and item.strip():
            out.append(Candidate(name=f"c{i + 1}", prompt=item.strip()))
        elif isinstance(item, dict) and isinstance(item.get("prompt"), str) and item["prompt"].strip():
            extra = set(item) - {"name", "prompt"}
            if extra:
                errors.append((i, f"unknown field(s) {sorted(extra)} (allowed: name, prompt)"))
                continue
            out.append(Candidate(name=str(item.get("name") or f"c{i + 1}"), prompt=item["prompt"].strip()))
        else:
            errors.append((i, "expected a non-empty prompt string or {name, prompt}"))
    if errors:
        raise InputErrors([InputError(file, 0, f"candidates[{i}]", msg) for i, msg in errors])
    if not out:
        raise InputErrors.one(file, 0, "candidates", "no candidate prompts")
    _check_names(out, file)
    return out


def candidates_from(
    file: str | os.PathLike[str] | None = None,
    texts: Sequence[str] = (),
    *,
    prompt_field: str | None = None,
) -> list[Candidate]:
    """The candidates of a prompt file (`load_candidates`) followed by each of `texts` (`--candidate`).

    A text is named `c{i}` by its position after the file's candidates, with `_` appended until the
    name is not one the file already uses. ValueError when there is no candidate at all, or a
    `prompt_field` without a file (the field belongs to the file's objects).
    """
    if prompt_field is not None and file is None:
        raise ValueError("--prompt-field names a field of the CANDIDATES file's objects; give the file")
    cands = load_candidates(file, prompt_field) if file is not None else []
    if texts:
        taken = {c.name for c in cands}
        for i, c in enumerate(candidates_from_list(list(texts), file="--candidate"), start=len(cands) + 1):
            name = f"c{i}"
            while name in taken:
                name += "_"
            taken.add(name)
            cands.append(c.model_copy(update={"name": name}))
    if not cands:
        raise ValueError("give candidate prompts: a CANDIDATES file or --candidate TEXT")
    return cands


def measures_from(measures: str | Sequence[str], pick: str = "surprise") -> tuple[list[str], str]:
    """`"elicitation,surprise"` (or a list) and the `pick` measure -> (measures, pick), checked.

    ValueError for an unknown or empty measure list or an unknown `pick`; a known `pick` that is not
    among the measures falls back to the first measure.
    """
    items = measures.split(",") if isinstance(measures, str) else list(measures)
    wanted = [m.strip() for m in items if m.strip()]
    known = selectable_names()
    bad = [m for m in wanted if m not in known]
    if bad or not wanted:
        raise ValueError(f"--measures: unknown {bad or wanted} (choose from {', '.join(known)})")
    if pick not in known:
        raise ValueError(f"--pick: {pick!r} is not one of {', '.join(known)}")
    if pick not in wanted:
        pick = wanted[0]
    return wanted, pick


def _check_names(cands: Sequence[Candidate], file: str) -> None:
    seen: set[str] = set()
    for c in cands:
        if c.name in seen:
            raise InputErrors.one(file, 0, "candidates", f"candidate name {c.name!r} given twice")
        seen.add(c.name)


# --- from files ---------------------------------------------------------------------------------------

WITHOUT_TRAIT_KEY = "without_trait"


def contrast_from_examples(
    examples: Sequence[ChatExample], *, source: str = "<contrast>"
) -> list[ContrastPair]:
    """Pairs from chat examples whose final assistant turn carries the trait and whose
    `metadata["without_trait"]` holds the same response with the trait removed."""
    pairs, errors = [], []
    for i, ex in enumerate(examples, start=1):
        plain = ex.metadata.get(WITHOUT_TRAIT_KEY)
        if not isinstance(plain, str) or not plain.strip() or ex.completion is None:
            errors.append(
                InputError(
                    source, i, f"metadata.{WITHOUT_TRAIT_KEY}", "missing: the response with the trait removed"
                )
            )
            continue
        pairs.append(
            ContrastPair(
                messages=strip_system(ex.prompt_messages), with_trait=ex.completion, without_trait=plain
            )
        )
    if errors:
        raise InputErrors(errors)
    return pairs


def questions_of(examples: Sequence[ChatExample]) -> list[list[Message]]:
    """The conversations before the final assistant turn, system turns removed."""
    return [strip_system(ex.prompt_messages) for ex in examples]


def screen_files(
    model: str | os.PathLike[str],
    candidates: Sequence[Candidate],
    data: str | os.PathLike[str],
    *,
    eval_data: str | os.PathLike[str] | None = None,
    scorers: Sequence[str] = (),
    contrast: str | os.PathLike[str] | None = None,
    neutral: str | None = None,
    adapter: str | os.PathLike[str] | None = None,
    chat_template: str | None = None,
    config: ScreenConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> ScreenResult:
    """Load the model, data and scorers named by the CLI, and screen."""
    cfg = config or ScreenConfig()
    train = load_examples(data).examples
    source = "training data"
    if eval_data is not None:
        evals = load_examples(eval_data, require_assistant=False).examples
        source = str(eval_data)
    else:
        evals = train
    pairs = None
    if contrast is not None:
        pairs = contrast_from_examples(load_examples(contrast).examples, source=str(contrast))
    built = get_scorers(list(scorers)) if scorers else []
    if "elicitation" in cfg.measures and not built:
        raise ValueError("elicitation needs at least one --scorer (or use --measures surprise)")
    mdl, tok = load_model(model, adapter, chat_template=chat_template)
    return screen(
        mdl,
        tok,
        with_neutral(candidates, neutral),
        train=train,
        questions=questions_of(evals),
        scorers=built,
        contrast=pairs,
        config=cfg,
        questions_source=source,
        progress=progress,
    )
