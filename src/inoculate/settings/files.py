"""Where a setting's published file comes from, and reading its rows with FILE:LINE: FIELD errors.

A published file is read from the user's `path:` (a local copy), or fetched from where it is published
at the commit the user pins (`revision:`, a full 40-hex commit) and checked against its sha256 (the
shipped hash of the published bytes, or the user's `sha256:`) by `inoculate.datasource`: a download that
fails the check is deleted, never cached.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from inoculate.datasource import KNOWN, DataSourceError, fetch_url, known_source
from inoculate.errors import InputError, InputErrors
from inoculate.settings.base import BuildContext, Options, SettingError

M = TypeVar("M", bound=BaseModel)


class PublishedFile(Options):
    """`path:` a local copy, or `revision:` (+ optional `sha256:`) to fetch the published file."""

    path: str | None = None
    revision: str | None = None
    sha256: str | None = None


def published_file(known: str, opts: PublishedFile, ctx: BuildContext, *, option: str = "path") -> Path:
    """The local file of the published dataset `known` (a `datasource.KNOWN` name)."""
    if opts.path is not None:
        p = ctx.path(opts.path)
        if not p.is_file():
            raise SettingError(f"{option}: {p}: no such file")
        return p
    if opts.revision is None:
        d = KNOWN[known]
        raise SettingError(
            f"give {option}: a local copy of {d.where.format(revision='<commit>')}, or revision: the full "
            f"40-hex commit of the repository to fetch it from ({d.note})"
        )
    try:
        src = known_source(known, revision=opts.revision, sha256=opts.sha256)
        return fetch_url(src, root=ctx.cache)  # type: ignore[arg-type]
    except DataSourceError as e:
        raise SettingError(str(e)) from None


def json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, value) of every non-blank line of a JSONL file; bad JSON is an error at its line."""
    with open(path, encoding="utf-8") as fh:
        for line, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            try:
                yield line, json.loads(text)
            except json.JSONDecodeError as e:
                raise InputErrors.one(
                    str(path), line, "<json>", f"invalid JSON: {e.msg} at column {e.colno}"
                ) from None


def validated_rows(
    path: Path, model: type[M], rows: Callable[[Path], Iterator[tuple[int, Any]]] = json_rows
) -> list[tuple[int, M]]:
    """Every row validated as `model`; every bad row is reported (FILE:LINE: FIELD), and then none is
    returned."""
    out: list[tuple[int, M]] = []
    errors: list[InputError] = []
    for line, value in rows(path):
        if not isinstance(value, dict):
            errors.append(
                InputError(str(path), line, "<row>", f"expected an object, got {type(value).__name__}")
            )
            continue
        try:
            out.append((line, model.model_validate(value)))
        except ValidationError as e:
            for err in e.errors(include_url=False):
                field = ".".join(str(p) for p in err.get("loc", ())) or "<row>"
                errors.append(InputError(str(path), line, field, str(err.get("msg", "invalid"))))
    if errors:
        raise InputErrors(errors)
    if not out:
        raise InputErrors.one(str(path), 0, "<file>", "no rows")
    return out
