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
`read_chat_jsonl` (chat JSONL only).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from inoculate.errors import NO_ASSISTANT_HINT, SHAPES_HINT, InputError, InputErrors, not_utf8
from inoculate.fileio import dumps_strict, sha256_file, write_jsonl_atomic
from inoculate.records import (
    MAX_DEPTH,
    ROW_FIELDS,
    STRICT_DECODER,
    TOOL_ROW_KEYS,
    ChatExample,
    StrictJSONError,
    check_strict,
    fold_unknown_keys,
    loads_strict,
    tool_calls_error,
    uses_tools,
    validate_chat_row,
)

Format = Literal["chat", "prompt-completion", "hf"]
PC_FIELDS: tuple[str, ...] = ("id", "prompt", "completion", "metadata")
_JSONL_SUFFIXES = (".jsonl", ".json", ".ndjson")
_HF_FILE_BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv"}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass
class Loaded:
    """Examples read from one source, with where each came from.

    `lines[i]` is the 1-based line (JSONL) or row number (datasets) of `examples[i]`. `warnings`
    are lines for the user that do not stop the run (unknown keys folded into metadata); a CLI
    prints each once.
    """

    source: str
    format: Format
    examples: list[ChatExample] = field(default_factory=list)
    errors: list[InputError] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def read_examples(
    path: str | os.PathLike[str],
    skip_invalid: bool = False,
    *,
    require_assistant: bool = True,
    split: str | None = None,
) -> tuple[list[ChatExample], list[InputError]]:
    """Read chat or prompt/completion JSONL, or a Hugging Face dataset, detecting which.

    Raises `InputErrors` with every bad row unless `skip_invalid`, which drops bad rows and
    returns their errors beside the good ones.
    """
    loaded = load_examples(path, skip_invalid=skip_invalid, require_assistant=require_assistant, split=split)
    return loaded.examples, loaded.errors


def load_examples(
    path: str | os.PathLike[str],
    *,
    skip_invalid: bool = False,
    require_assistant: bool = True,
    split: str | None = None,
) -> Loaded:
    """`read_examples` that also reports the detected format, each row's line and the warnings.

    `split` picks a split of a `datasets` source (default `train`); one that does not exist is
    refused with the list of those that do. A JSONL file has no splits (only `train` is accepted).
    An input with no rows at all is an error even with `skip_invalid`.
    """
    stream = iter_examples(path, require_assistant=require_assistant, split=split)
    return _gather(stream, skip_invalid=skip_invalid)


def _gather(stream: ExampleStream, *, skip_invalid: bool) -> Loaded:
    out = Loaded(source=stream.source, format=stream.format)
    for line, item in stream:
        if isinstance(item, ChatExample):
            out.examples.append(item)
            out.lines.append(line)
        else:
            out.errors.extend(item)
    out.errors.sort(key=lambda e: e.line)  # a file-wide error (tool calls) comes last; report in order
    out.warnings = list(stream.warnings)
    if out.errors and (not skip_invalid or stream.empty):
        raise InputErrors(out.errors)
    return out


def iter_examples(
    path: str | os.PathLike[str],
    *,
    require_assistant: bool = True,
    split: str | None = None,
    format: Literal["chat", "prompt-completion"] | None = None,
) -> ExampleStream:
    """Stream a source row by row: iterate the result for `(line, ChatExample | list[InputError])`.

    Memory is bounded by one row (plus the ids seen, to refuse duplicates), not by the file; a
    `.json` array file is the exception (it is one JSON value, parsed whole). Problems with the
    source as a whole (missing file, unknown split) raise `InputErrors` here; problems with rows
    are yielded in file order, then one error for all rows that use tools, then `no rows` if the
    source had none. `warnings` on the stream is complete once iteration ends.
    """
    return ExampleStream(path, require_assistant=require_assistant, split=split, format=format)


class ExampleStream:
    """The rows of one source, read lazily; see `iter_examples`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        require_assistant: bool = True,
        split: str | None = None,
        format: Literal["chat", "prompt-completion"] | None = None,
        revision: str | None = None,
    ):
        p = Path(path)
        name = str(path)
        self.source = name
        self.require_assistant = require_assistant
        self.warnings: list[str] = []
        self.n_rows = 0  # non-blank rows seen so far
        self.empty = False  # True once iteration found no rows at all
        self._path = p
        self._array: list[tuple[int, Any, list[InputError] | None]] | None = None
        self._ds: Any = None
        self.format: Format
        hub = name.startswith("hf:") or (_HUB_ID.match(name) and not name.lower().endswith(_JSONL_SUFFIXES))
        if p.is_dir() or (p.is_file() and p.suffix.lower() in _HF_FILE_BUILDERS) or (not p.exists() and hub):
            self._ds = open_hf_dataset(name, split=split, revision=revision)
            self.format = "hf"
            return
        if not p.is_file():
            raise InputErrors.one(name, 0, "<file>", "no such file")
        if split not in (None, "train"):
            raise InputErrors.one(
                name,
                0,
                "<split>",
                f"no split {split!r}: a JSONL file has one (train); splits are for datasets",
            )
        if p.suffix.lower() == ".json" and _starts_with_array(p):
            self._array = _read_json_array(p)
            first = next(
                (obj for _, obj, errs in self._array if errs is None and isinstance(obj, dict)), None
            )
            self.format = format or (_row_format(first) if first is not None else "chat")
        else:
            self.format = format or detect_jsonl_format(p)

    def _raw(self) -> Iterator[tuple[int, Any, list[InputError] | None]]:
        if self._ds is not None:
            for i, row in enumerate(self._ds):
                obj = _normalize_hf_row(row)
                try:
                    check_strict(obj)
                except StrictJSONError as e:
                    yield i + 1, None, [InputError(self.source, i + 1, e.field, e.msg)]
                    continue
                yield i + 1, obj, None
        elif self._array is not None:
            yield from self._array
        else:
            yield from iter_jsonl_rows(self._path)

    def __iter__(self) -> Iterator[tuple[int, ChatExample | list[InputError]]]:
        """One pass over the rows; each call starts a new pass (re-reading the source) and
        resets `n_rows`, `empty` and `warnings`."""
        file = self.source
        self.n_rows = 0
        self.empty = False
        self.warnings = []
        seen: dict[str, int] = {}
        tool_rows, tool_first = 0, 0
        folded: dict[str, None] = {}  # keys folded into metadata, in first-seen order
        folded_rows = 0
        for line, obj, bad in self._raw():
            self.n_rows += 1
            if bad is not None:
                yield line, bad
                continue
            if uses_tools(obj):
                tool_rows += 1
                tool_first = tool_first or line
                continue
            fmt = self.format
            if fmt == "hf":
                fmt = _row_format(obj) if isinstance(obj, dict) else "chat"
            errs: list[InputError] = []
            if isinstance(obj, dict):
                known = PC_FIELDS if fmt == "prompt-completion" else ROW_FIELDS
                obj, keys, errs = fold_unknown_keys(obj, known, file, line)
                if keys:
                    folded_rows += 1
                    folded.update(dict.fromkeys(keys))
            if not errs:
                check = validate_prompt_completion_row if fmt == "prompt-completion" else validate_chat_row
                errs, ex = check(obj, file, line, require_assistant=self.require_assistant)
            if errs:
                yield line, errs
                continue
            assert ex is not None
            if ex.id in seen:
                yield (
                    line,
                    [InputError(file, line, "id", f"duplicate id {ex.id!r} (first on line {seen[ex.id]})")],
                )
                continue
            seen[ex.id] = line
            yield line, ex
        if tool_rows:
            yield tool_first, [tool_calls_error(file, tool_rows, tool_first)]
        if folded:
            self.warnings.append(
                f"folded {len(folded)} unknown top-level key(s) into metadata in {folded_rows:,} row(s): "
                + ", ".join(folded)
            )
        if self.n_rows == 0:
            self.empty = True
            what = "the dataset split is empty" if self._ds is not None else "the file is empty or blank"
            yield 0, [InputError(file, 0, "<file>", f"no rows ({what})")]


def iter_jsonl_rows(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any, list[InputError] | None]]:
    """Decode a JSONL file one line at a time: `(line, value, None)` or `(line, None, errors)`.

    Blank lines are skipped; bytes that are not UTF-8, invalid JSON and what strict JSON refuses
    (see `records.loads_strict`) are errors naming the line.
    """
    file = str(path)
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                col = len(raw[: e.start].decode("utf-8", errors="replace")) + 1
                byte = raw[e.start : e.start + 1].hex()
                msg = f"not UTF-8 text: byte 0x{byte} at column {col} ({e.reason})"
                yield lineno, None, [InputError(file, lineno, "<file>", msg)]
                continue
            try:
                obj = loads_strict(text)
            except json.JSONDecodeError as e:
                msg = f"invalid JSON: {e.msg} at column {e.colno}"
                yield lineno, None, [InputError(file, lineno, "<json>", msg)]
            except StrictJSONError as e:
                yield lineno, None, [InputError(file, lineno, e.field, e.msg)]
            else:
                yield lineno, obj, None


def read_jsonl(
    path: str | os.PathLike[str], *, skip_invalid: bool = False, require_assistant: bool = True
) -> Loaded:
    """Read chat or prompt/completion JSONL (or a `.json` array of rows); the first object decides which."""
    if not Path(path).is_file():
        raise InputErrors.one(str(path), 0, "<file>", "no such file")
    return load_examples(path, skip_invalid=skip_invalid, require_assistant=require_assistant)


def _starts_with_array(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4096).decode("utf-8", errors="replace").lstrip("\ufeff \t\r\n")
    return head.startswith("[")


def _read_json_array(path: str | os.PathLike[str]) -> list[tuple[int, Any, list[InputError] | None]]:
    """A `.json` file holding one array of rows (as `datasets`' to_json(lines=False) writes); each row's
    errors name the line its object starts on. Syntax errors stop the whole file."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8").lstrip("\ufeff")
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    rows: list[tuple[int, Any, list[InputError] | None]] = []
    i = text.index("[") + 1
    line = 1
    try:
        while True:
            while i < len(text) and text[i] in " \t\r\n,":
                i += 1
            if i >= len(text) or text[i] == "]":
                break
            line = text.count("\n", 0, i) + 1
            obj, end = STRICT_DECODER.raw_decode(text, i)
            try:
                check_strict(obj)
            except StrictJSONError as e:
                rows.append((line, None, [InputError(file, line, e.field, e.msg)]))
            else:
                rows.append((line, obj, None))
            i = end
    except json.JSONDecodeError as e:
        msg = f"invalid JSON: {e.msg} at column {e.colno}"
        raise InputErrors.one(file, e.lineno, "<json>", msg) from None
    except RecursionError:
        raise InputErrors.one(
            file, line, "<row>", f"nested too deeply (more than {MAX_DEPTH} levels)"
        ) from None
    if i >= len(text) or text[i + 1 :].strip():
        line = text.count("\n", 0, min(i, len(text))) + 1
        raise InputErrors.one(file, line, "<json>", "invalid JSON: the array is not closed by a final ']'")
    return rows


def detect_jsonl_format(path: str | os.PathLike[str]) -> Literal["chat", "prompt-completion"]:
    """`prompt-completion` if the first JSON object has `prompt` or `completion` and no `messages`."""
    with open(path, "rb") as fh:
        for raw in fh:
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw.decode("utf-8", errors="replace").lstrip("\ufeff"))
            except (ValueError, RecursionError):
                continue
            if isinstance(obj, dict):
                return _row_format(obj)
    return "chat"


def _row_format(obj: dict[str, Any]) -> Literal["chat", "prompt-completion"]:
    if "messages" not in obj and ("prompt" in obj or "completion" in obj):
        return "prompt-completion"
    return "chat"


def validate_prompt_completion_row(
    obj: Any, file: str, line: int, *, require_assistant: bool = True
) -> tuple[list[InputError], ChatExample | None]:
    """Check one TRL prompt/completion row; return every problem in it, or the chat example.

    Field names in errors are the row's own (`prompt`, `completion[0].content`), not the
    chat form it converts to.
    """
    if not isinstance(obj, dict):
        msg = f"expected a JSON object, got {type(obj).__name__}"
        return [InputError(file, line, "<row>", msg, SHAPES_HINT)], None
    errs: list[InputError] = []
    unknown = sorted(set(obj) - set(PC_FIELDS))
    if unknown:
        errs.append(
            InputError(
                file,
                line,
                unknown[0],
                f"unknown field (allowed: {', '.join(PC_FIELDS)}); got {unknown}",
                SHAPES_HINT,
            )
        )
    parts: list[tuple[str, Any]] = []  # (field name, message dict or list of message dicts)
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        value = obj.get(key)
        if value is None:
            if key == "prompt" or require_assistant:
                hint = SHAPES_HINT if key == "prompt" else NO_ASSISTANT_HINT
                errs.append(InputError(file, line, key, "missing", hint))
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
    errs.extend(
        InputError(e.file, e.line, _rename_field(e.field, names), e.message, e.hint) for e in chat_errs
    )
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
    split: str | None = None,
    skip_invalid: bool = False,
    require_assistant: bool = True,
    revision: str | None = None,
) -> Loaded:
    """Load a dataset saved with `save_to_disk`, a local folder or file `load_dataset` reads, or a hub id.

    Error lines are 1-based row numbers within the split.
    """
    stream = ExampleStream(name_or_path, require_assistant=require_assistant, split=split, revision=revision)
    return _gather(stream, skip_invalid=skip_invalid)


def open_hf_dataset(name_or_path: str, *, split: str | None = None, revision: str | None = None) -> Any:
    """The `datasets.Dataset` of one split (default `train`); a missing split is refused with the
    list of those there are."""
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the install
        raise InputErrors.one(
            name_or_path, 0, "<file>", "reading Hugging Face datasets needs `pip install 'inoculate[train]'`"
        ) from e
    try:
        return _open_hf(datasets, name_or_path, split=split, revision=revision)
    except InputErrors:
        raise
    except Exception as e:  # datasets raises many types: missing, offline, bad format
        raise InputErrors.one(name_or_path, 0, "<dataset>", f"could not load: {type(e).__name__}: {e}") from e


def _no_split(name: str, split: str, names: Iterable[str]) -> InputErrors:
    return InputErrors.one(name, 0, "<split>", f"no split {split!r} (has: {', '.join(names)})")


def _open_hf(datasets: Any, name_or_path: str, *, split: str | None, revision: str | None) -> Any:
    want = split or "train"
    p = Path(name_or_path)
    if p.is_dir() and ((p / "dataset_info.json").is_file() or (p / "dataset_dict.json").is_file()):
        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if want not in ds:
                raise _no_split(name_or_path, want, ds)
            return ds[want]
        has = str(ds.split) if ds.split else "train"
        if split is not None and split != has:
            raise _no_split(name_or_path, split, [has])
        return ds
    if p.is_file():
        builder = _HF_FILE_BUILDERS.get(p.suffix.lower(), "json")
        args: tuple[Any, ...] = (builder,)
        kwargs: dict[str, Any] = {"data_files": str(p)}
    elif p.is_dir():
        args, kwargs = (str(p),), {}
    else:
        args, kwargs = (name_or_path.removeprefix("hf:"),), {"revision": revision}
    try:
        ds = datasets.load_dataset(*args, split=want, **kwargs)
    except ValueError as e:
        if "split" not in str(e).lower():
            raise
        if p.exists():
            names = list(datasets.load_dataset(*args, **kwargs))
        else:
            names = datasets.get_dataset_split_names(*args, **kwargs)
        if want in names:
            raise
        raise _no_split(name_or_path, want, names) from None
    return ds


def _normalize_hf_row(row: dict[str, Any]) -> dict[str, Any]:
    """Columnar datasets pad structs and missing columns with None: drop that padding (in metadata,
    in message dicts, and of the known columns) so a row reads as the JSONL row it came from."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key in ("id", "messages", "prompt", "completion"):
            if value is not None:
                out[key] = _drop_none_keys(value)
        elif key == "metadata":
            if isinstance(value, dict):
                out[key] = {k: v for k, v in value.items() if v is not None}
            elif value is not None:
                out[key] = value
        elif key in TOOL_ROW_KEYS:
            if value is not None:
                out[key] = value
        else:
            out[key] = value
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
    return "".join(dumps_strict(r, ensure_ascii=False) + "\n" for r in rows)


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


def read_chat_jsonl(
    path: str | os.PathLike[str],
    *,
    skip_invalid: bool = False,
    require_assistant: bool = True,
) -> tuple[list[ChatExample], list[InputError]]:
    """Read OpenAI chat JSONL.

    Raises `InputErrors` listing every bad line unless `skip_invalid`, in which case the bad
    rows are dropped and their errors returned beside the good rows. Unknown top-level keys are
    folded into metadata; an empty file is always an error.
    """
    stream = ExampleStream(path, require_assistant=require_assistant, format="chat")
    examples: list[ChatExample] = []
    errors: list[InputError] = []
    for _, item in stream:
        if isinstance(item, ChatExample):
            examples.append(item)
        else:
            errors.extend(item)
    errors.sort(key=lambda e: e.line)
    if errors and (not skip_invalid or stream.empty):
        raise InputErrors(errors)
    return examples, errors
