"""Dataset formats beyond chat JSONL: TRL prompt/completion JSONL and Hugging Face `datasets`.

Everything is read into `records.ChatExample`, so later stages see one record type:

- chat JSONL: `{"id": ..., "messages": [...], "metadata": {...}}` (see `records`);
- prompt/completion JSONL in TRL's two styles, standard `{"prompt": "...", "completion": "..."}`
  (becomes one user turn and one assistant turn) and conversational
  `{"prompt": [messages], "completion": [messages]}` (the two lists concatenated), each with
  optional `id` and `metadata`;
- a Hugging Face dataset: a `save_to_disk` folder, a local data folder or file that
  `datasets.load_dataset` reads, or a hub id (`owner/name`, or `hf:name`). Rows hold either
  `messages` or `prompt`/`completion`; columns other than id/metadata fold into metadata.

`load_examples` auto-detects the format and keeps each row's line number for later error
messages; `read_examples` is its short form returning `(examples, errors)` like
`records.read_chat_jsonl`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from inoculate.errors import InputError, InputErrors
from inoculate.fileio import sha256_file, write_jsonl_atomic
from inoculate.records import ChatExample, validate_chat_row

Format = Literal["chat", "prompt-completion", "hf"]
PC_FIELDS: tuple[str, ...] = ("id", "prompt", "completion", "metadata")
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_HF_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class Loaded:
    """Examples read from one source, with where each came from.

    `lines[i]` is the 1-based line (JSONL) or row number (datasets) of `examples[i]`.
    """

    source: str
    format: Format
    examples: list[ChatExample] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)


def read_examples(
    path: str | os.PathLike[str], skip_invalid: bool = False, *, require_assistant: bool = True
) -> tuple[list[ChatExample], list[InputError]]:
    """Read chat or prompt/completion JSONL, or a Hugging Face dataset, detecting which.

    Raises `InputErrors` with every bad row unless `skip_invalid`, which drops bad rows and
    returns their errors beside the good ones.
    """
    loaded = load_examples(path, skip_invalid=skip_invalid, require_assistant=require_assistant)
    return loaded.examples, loaded.errors


def load_examples(
    path: str | os.PathLike[str],
    *,
    skip_invalid: bool = False,
    require_assistant: bool = True,
    split: str = "train",
) -> Loaded:
    """`read_examples` that also reports the detected format and each row's line."""
    p = Path(path)
    name = str(path)
    if p.is_dir():
        return load_hf_dataset(
            name, split=split, skip_invalid=skip_invalid, require_assistant=require_assistant
        )
    if p.is_file():
        if p.suffix.lower() in _HF_FILE_BUILDERS:
            return load_hf_dataset(
                name, split=split, skip_invalid=skip_invalid, require_assistant=require_assistant
            )
        return read_jsonl(p, skip_invalid=skip_invalid, require_assistant=require_assistant)
    if name.startswith("hf:") or (_HUB_ID.match(name) and not name.lower().endswith(_JSONL_SUFFIXES)):
        return load_hf_dataset(
            name, split=split, skip_invalid=skip_invalid, require_assistant=require_assistant
        )
    raise InputErrors.one(name, 0, "<file>", "no such file")


def read_jsonl(
    path: str | os.PathLike[str], *, skip_invalid: bool = False, require_assistant: bool = True
) -> Loaded:
    """Read chat or prompt/completion JSONL (or a `.json` array of rows); the first object decides which."""
    file = str(path)
    if not Path(path).is_file():
        raise InputErrors.one(file, 0, "<file>", "no such file")
    if Path(path).suffix.lower() == ".json" and _starts_with_array(path):
        return _read_json_array(path, skip_invalid=skip_invalid, require_assistant=require_assistant)
    fmt = detect_jsonl_format(path)
    out = Loaded(source=file, format=fmt)
    rows: list[tuple[int, Any]] = []
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                rows.append((lineno, json.loads(raw)))
            except json.JSONDecodeError as e:
                out.errors.append(
                    InputError(file, lineno, "<json>", f"invalid JSON: {e.msg} at column {e.colno}")
                )
    _collect(out, rows, require_assistant=require_assistant, fold_extra=False)
    out.errors.sort(key=lambda e: e.line)  # JSON errors were gathered first; report in file order
    if out.errors and not skip_invalid:
        raise InputErrors(out.errors)
    return out


def _starts_with_array(path: str | os.PathLike[str]) -> bool:
    with open(path, encoding="utf-8") as fh:
        head = fh.read(4096).lstrip("\ufeff \t\r\n")
    return head.startswith("[")


def _read_json_array(path: str | os.PathLike[str], *, skip_invalid: bool, require_assistant: bool) -> Loaded:
    """A `.json` file holding one array of rows (as `datasets`' to_json(lines=False) writes); each row's
    errors name the line its object starts on."""
    file = str(path)
    text = Path(path).read_text(encoding="utf-8").lstrip("\ufeff")
    decoder = json.JSONDecoder()
    rows: list[tuple[int, Any]] = []
    i = text.index("[") + 1
    try:
        while True:
            while i < len(text) and text[i] in " \t\r\n,":
                i += 1
            if i >= len(text) or text[i] == "]":
                break
            obj, end = decoder.raw_decode(text, i)
            rows.append((text.count("\n", 0, i) + 1, obj))
            i = end
    except json.JSONDecodeError as e:
        msg = f"invalid JSON: {e.msg} at column {e.colno}"
        raise InputErrors.one(file, e.lineno, "<json>", msg) from None
    if i >= len(text) or text[i + 1 :].strip():
        line = text.count("\n", 0, min(i, len(text))) + 1
        raise InputErrors.one(file, line, "<json>", "invalid JSON: the array is not closed by a final ']'")
    first = next((obj for _, obj in rows if isinstance(obj, dict)), None)
    out = Loaded(source=file, format=_row_format(first) if first is not None else "chat")
    _collect(out, rows, require_assistant=require_assistant, fold_extra=False)
    if out.errors and not skip_invalid:
        raise InputErrors(out.errors)
    return out


def detect_jsonl_format(path: str | os.PathLike[str]) -> Literal["chat", "prompt-completion"]:
    """`prompt-completion` if the first JSON object has `prompt` or `completion` and no `messages`."""
    with open(path, encoding="utf-8") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                return _row_format(obj)
    return "chat"


def _row_format(obj: dict[str, Any]) -> Literal["chat", "prompt-completion"]:
    if "messages" not in obj and ("prompt" in obj or "completion" in obj):
        return "prompt-completion"
    return "chat"


def _collect(
    out: Loaded, rows: Iterable[tuple[int, Any]], *, require_assistant: bool, fold_extra: bool
) -> None:
    """Validate decoded rows into `out`, flagging duplicate ids; errors are appended, not raised."""
    seen: dict[str, int] = {}
    file = out.source
    for lineno, obj in rows:
        if fold_extra and isinstance(obj, dict):
            obj = _fold_columns(obj)
        fmt = out.format if out.format != "hf" else (_row_format(obj) if isinstance(obj, dict) else "chat")
        if fmt == "prompt-completion":
            errs, ex = validate_prompt_completion_row(obj, file, lineno, require_assistant=require_assistant)
        else:
            errs, ex = validate_chat_row(obj, file, lineno, require_assistant=require_assistant)
        if errs:
            out.errors.extend(errs)
            continue
        assert ex is not None
        if ex.id in seen:
            out.errors.append(
                InputError(file, lineno, "id", f"duplicate id {ex.id!r} (first on line {seen[ex.id]})")
            )
            continue
        seen[ex.id] = lineno
        out.examples.append(ex)
        out.lines.append(lineno)


def validate_prompt_completion_row(
    obj: Any, file: str, line: int, *, require_assistant: bool = True
) -> tuple[list[InputError], ChatExample | None]:
    """Check one TRL prompt/completion row; return every problem in it, or the chat example.

    Field names in errors are the row's own (`prompt`, `completion[0].content`), not the
    chat form it converts to.
    """
    if not isinstance(obj, dict):
        return [InputError(file, line, "<row>", f"expected a JSON object, got {type(obj).__name__}")], None
    errs: list[InputError] = []
    unknown = sorted(set(obj) - set(PC_FIELDS))
    if unknown:
        errs.append(
            InputError(
                file, line, unknown[0], f"unknown field (allowed: {', '.join(PC_FIELDS)}); got {unknown}"
            )
        )
    parts: list[tuple[str, Any]] = []  # (field name, message dict or list of message dicts)
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        value = obj.get(key)
        if value is None:
            if key == "prompt" or require_assistant:
                errs.append(InputError(file, line, key, "missing"))
            continue
        if isinstance(value, str):
            if not value.strip():
                errs.append(InputError(file, line, key, "is empty"))
            else:
                parts.append((key, {"role": role, "content": value}))
        elif isinstance(value, list):
            if not value:
                errs.append(InputError(file, line, key, "must be a non-empty string or list of messages"))
            parts.extend((f"{key}[{i}]", m) for i, m in enumerate(value))
        else:
            errs.append(
                InputError(
                    file, line, key, f"must be a string or a list of messages, got {type(value).__name__}"
                )
            )
    if isinstance(obj.get("completion"), list):
        for i, m in enumerate(obj["completion"]):
            if isinstance(m, dict) and m.get("role") not in (None, "assistant"):
                errs.append(
                    InputError(
                        file, line, f"completion[{i}].role", "completion messages must be assistant turns"
                    )
                )
    names = [name for name, _ in parts]
    chat_row = {k: obj[k] for k in ("id", "metadata") if k in obj}
    chat_row["messages"] = [m for _, m in parts]
    if not chat_row["messages"]:
        return errs, None
    # An absent or empty completion was reported above, so the chat check need not repeat it.
    chat_errs, ex = validate_chat_row(chat_row, file, line, require_assistant=False)
    errs.extend(InputError(e.file, e.line, _rename_field(e.field, names), e.message) for e in chat_errs)
    if errs:
        return errs, None
    return [], ex


def _rename_field(fld: str, names: list[str]) -> str:
    """Map `messages[i]...` from the chat check back to `prompt`/`completion[j]...`."""
    m = re.match(r"^messages\[(\d+)\](.*)$", fld)
    if not m:
        return fld
    name = names[int(m.group(1))]
    rest = m.group(2)
    if "[" not in name:  # a plain string prompt/completion: `.content` is the field itself
        return name if rest in ("", ".content") else f"{name}{rest}"
    return f"{name}{rest}"


# --- Hugging Face datasets -------------------------------------------------------------------


def load_hf_dataset(
    name_or_path: str,
    *,
    split: str = "train",
    skip_invalid: bool = False,
    require_assistant: bool = True,
    revision: str | None = None,
) -> Loaded:
    """Load a dataset saved with `save_to_disk`, a local folder or file `load_dataset` reads, or a hub id.

    Error lines are 1-based row numbers within the split.
    """
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the install
        raise InputErrors.one(
            name_or_path, 0, "<file>", "reading Hugging Face datasets needs `pip install 'inoculate[train]'`"
        ) from e
    source = name_or_path
    try:
        ds = _open_hf(datasets, name_or_path, split=split, revision=revision)
    except InputErrors:
        raise
    except Exception as e:  # datasets raises many types: missing, offline, bad format
        raise InputErrors.one(source, 0, "<dataset>", f"could not load: {type(e).__name__}: {e}") from e
    out = Loaded(source=source, format="hf")
    _collect(
        out, ((i + 1, row) for i, row in enumerate(ds)), require_assistant=require_assistant, fold_extra=True
    )
    if out.errors and not skip_invalid:
        raise InputErrors(out.errors)
    return out


def _open_hf(datasets: Any, name_or_path: str, *, split: str, revision: str | None) -> Any:
    p = Path(name_or_path)
    if p.is_dir() and ((p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file()):
        ds = datasets.load_from_disk(str(p))
    elif p.is_file():
        builder = _HF_FILE_BUILDERS.get(p.suffix.lower(), "json")
        ds = datasets.load_dataset(builder, data_files=str(p), split=split)
    elif p.is_dir():
        ds = datasets.load_dataset(str(p), split=split)
    else:
        hub_id = name_or_path.removeprefix("hf:")
        ds = datasets.load_dataset(hub_id, split=split, revision=revision)
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise InputErrors.one(name_or_path, 0, "<split>", f"no split {split!r} (has: {', '.join(ds)})")
        ds = ds[split]
    return ds


def _fold_columns(row: dict[str, Any]) -> dict[str, Any]:
    """Columnar datasets pad structs with None; drop those and move extra columns into metadata."""
    known = {"id", "metadata", "messages", "prompt", "completion"}
    out: dict[str, Any] = {}
    meta = row.get("metadata")
    if isinstance(meta, dict) or meta is None:
        meta = {k: v for k, v in (meta or {}).items() if v is not None}
        meta = {**{k: v for k, v in row.items() if k not in known}, **meta}
    for key in ("id", "messages", "prompt", "completion"):
        if row.get(key) is not None:
            out[key] = _drop_none_keys(row[key])
    if meta:
        out["metadata"] = meta
    return out


def _drop_none_keys(value: Any) -> Any:
    if isinstance(value, list):
        return [{k: v for k, v in m.items() if v is not None} if isinstance(m, dict) else m for m in value]
    return value


# --- writing and hashing -----------------------------------------------------------------------


def to_prompt_completion(example: ChatExample, *, conversational: bool) -> dict[str, Any]:
    """One TRL prompt/completion row: the prompt is everything before the final assistant turn."""
    last = example.last_assistant_index
    prompt_msgs = example.messages[:last] if last is not None else example.messages
    out: dict[str, Any] = {"id": example.id}
    if conversational:
        out["prompt"] = [m.model_dump() for m in prompt_msgs]
        if last is not None:
            out["completion"] = [example.messages[last].model_dump()]
    else:
        if len(prompt_msgs) != 1 or prompt_msgs[0].role != "user":
            raise ValueError(
                f"example {example.id!r}: the standard prompt/completion form needs exactly one user turn "
                "before the completion; use the conversational form"
            )
        out["prompt"] = prompt_msgs[0].content
        if last is not None:
            out["completion"] = example.messages[last].content
    if example.metadata:
        out["metadata"] = example.metadata
    return out


def is_standard(example: ChatExample) -> bool:
    """True if the example fits TRL's standard (string) prompt/completion form."""
    last = example.last_assistant_index
    prompt_msgs = example.messages[:last] if last is not None else example.messages
    trailing = example.messages[last + 1 :] if last is not None else []
    return len(prompt_msgs) == 1 and prompt_msgs[0].role == "user" and not trailing


def prompt_completion_rows(
    examples: Iterable[ChatExample], style: Literal["auto", "standard", "conversational"] = "auto"
) -> list[dict[str, Any]]:
    """Rows in one style for the whole file (TRL expects one); `auto` picks standard when all fit."""
    exs = list(examples)
    for ex in exs:
        last = ex.last_assistant_index
        if last is not None and last != len(ex.messages) - 1:
            raise ValueError(
                f"example {ex.id!r}: turns after the final assistant turn do not fit prompt/completion"
            )
    conversational = style == "conversational" or (style == "auto" and not all(is_standard(ex) for ex in exs))
    return [to_prompt_completion(ex, conversational=conversational) for ex in exs]


def write_prompt_completion_jsonl(
    path: str | os.PathLike[str],
    examples: Iterable[ChatExample],
    style: Literal["auto", "standard", "conversational"] = "auto",
) -> int:
    """Write TRL prompt/completion JSONL atomically; returns the number of rows."""
    return write_jsonl_atomic(path, prompt_completion_rows(examples, style))


def jsonl_text(rows: Iterable[dict[str, Any]]) -> str:
    """The exact text the JSONL writers produce, for hashing before writing."""
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def source_sha256(
    path: str | os.PathLike[str], examples: Iterable[ChatExample] | None = None
) -> tuple[str, str]:
    """(sha256, what was hashed): the file's bytes, a folder's files, or the loaded rows (hub id)."""
    p = Path(path)
    if p.is_file():
        return sha256_file(p), "file"
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f.relative_to(p).as_posix().encode() + b"\0" + sha256_file(f).encode() + b"\n")
        return h.hexdigest(), "directory"
    text = jsonl_text(ex.to_json() for ex in (examples or []))
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), "rows"
