"""The one record type that flows through the pipeline: a chat example, and its JSONL I/O.

A chat example is an id, a list of messages (role system/user/assistant, string content) and
free metadata. On disk it is OpenAI chat JSONL: `{"id": ..., "messages": [...], "metadata": {...}}`.

Documented OpenAI fine-tuning fields are read too: `name` on any turn, `weight` (0 or 1) on assistant
turns (0 = do not train on this turn), both kept on the `Message` and written back out; role
`developer` is read as `system` (and written back as `system`). Other top-level keys (`label`, `_id`,
...) are folded into `metadata` by the readers in `formats`. Tool calls are not supported yet.

JSON is read strictly (`loads_strict`): NaN/Infinity, lone surrogate escapes, duplicate keys and
nesting deeper than `MAX_DEPTH` are refused with the field they occur in.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from inoculate.errors import NO_ASSISTANT_HINT, SHAPES_HINT, InputError
from inoculate.fileio import write_jsonl_atomic

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")
# Read as another role: OpenAI's `developer` is the system turn of newer models.
ROLE_ALIASES: dict[str, str] = {"developer": "system"}
MESSAGE_FIELDS: tuple[str, ...] = ("role", "content", "name", "weight")
ROW_FIELDS: tuple[str, ...] = ("id", "messages", "metadata")
# Keys that mark a row as using tools/function calling (top level, and on a message).
TOOL_ROW_KEYS: tuple[str, ...] = ("tools", "functions", "tool_choice", "function_call", "parallel_tool_calls")
TOOL_MESSAGE_KEYS: tuple[str, ...] = ("tool_calls", "function_call", "tool_call_id")
TOOL_ROLES: tuple[str, ...] = ("tool", "function")
# The field name `validate_chat_row` gives the single error of a row that uses tools; readers
# gather these into one error per file (see `tool_calls_error`).
TOOL_CALLS_FIELD = "<tool-calls>"
MAX_DEPTH = 100  # JSON nesting levels accepted in one row


class Message(BaseModel):
    """One turn. `weight` (assistant turns only, 0 or 1) follows OpenAI's fine-tuning format:
    0 = do not train on this turn, 1 = train on it; None = the default (train on the final
    assistant turn only). `name` is the optional participant name. Both are left out of
    `model_dump()` when None, so plain turns serialize as `{"role", "content"}` as before."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str
    name: str | None = None
    weight: int | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        for key in ("name", "weight"):
            if out.get(key) is None:
                out.pop(key, None)
        return out


class ChatExample(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    messages: list[Message]
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def system(self) -> str | None:
        """The system prompt, if the conversation has one (only a leading system turn counts)."""
        if self.messages and self.messages[0].role == "system":
            return self.messages[0].content
        return None

    @property
    def prompt_messages(self) -> list[Message]:
        """Everything before the final assistant turn: what the model is conditioned on."""
        last = self.last_assistant_index
        return list(self.messages[:last]) if last is not None else list(self.messages)

    @property
    def completion(self) -> str | None:
        """The final assistant turn, the part trained on and scored."""
        last = self.last_assistant_index
        return self.messages[last].content if last is not None else None

    @property
    def last_assistant_index(self) -> int | None:
        for i in range(len(self.messages) - 1, -1, -1):
            if self.messages[i].role == "assistant":
                return i
        return None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "messages": [m.model_dump() for m in self.messages]}
        if self.metadata:
            out["metadata"] = self.metadata
        return out


def uses_tools(obj: Any) -> bool:
    """True if a decoded row uses tools or function calling (not supported yet), in chat or
    prompt/completion form; None values (a columnar dataset's padding) do not count."""
    if not isinstance(obj, dict):
        return False
    if any(obj.get(k) is not None for k in TOOL_ROW_KEYS):
        return True
    for key in ("messages", "prompt", "completion"):
        turns = obj.get(key)
        if isinstance(turns, list):
            for m in turns:
                if isinstance(m, dict) and (
                    m.get("role") in TOOL_ROLES or any(m.get(k) is not None for k in TOOL_MESSAGE_KEYS)
                ):
                    return True
    return False


def tool_calls_error(file: str, n_rows: int, first_line: int) -> InputError:
    """The one error a reader reports for all of a file's rows that use tools."""
    return InputError(
        file,
        first_line,
        "messages",
        f"tool calls are not supported yet: {n_rows:,} row(s) have tool_calls/tool turns/tools "
        f"(first at {file}:{first_line}); drop them with --skip-invalid",
    )


def fold_unknown_keys(
    obj: dict[str, Any], known: Iterable[str], file: str, line: int
) -> tuple[dict[str, Any], list[str], list[InputError]]:
    """Move top-level keys other than `known` into `metadata`: (row, keys moved, errors).

    A key already in `metadata` with a different value is an error rather than a silent choice
    between the two (either would change what `--where` selectors see); an equal value is fine.
    """
    known = set(known)
    extra = [k for k in obj if k not in known]
    if not extra:
        return obj, [], []
    meta = obj.get("metadata")
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):  # reported by the row check; do not guess where extras go
        return {k: v for k, v in obj.items() if k in known}, [], []
    errs = [
        InputError(
            file,
            line,
            k,
            "unknown top-level key is also in metadata with a different value "
            "(unknown keys are folded into metadata); rename or drop one",
        )
        for k in extra
        if k in meta and meta[k] != obj[k]
    ]
    folded = {k: v for k, v in obj.items() if k in known}
    folded["metadata"] = {**{k: obj[k] for k in extra}, **meta}
    return folded, extra, errs


def validate_chat_row(
    obj: Any, file: str, line: int, *, require_assistant: bool = True
) -> tuple[list[InputError], ChatExample | None]:
    """Check one decoded JSONL row; return every problem found in it, or the example.

    Unknown top-level keys are errors here; the file readers fold them into metadata first
    (`fold_unknown_keys`). A row that uses tools gets one error with field `TOOL_CALLS_FIELD`.
    """
    errs: list[InputError] = []

    def err(field: str, msg: str, hint: str | None = None) -> None:
        errs.append(InputError(file, line, field, msg, hint))

    if not isinstance(obj, dict):
        err("<row>", f"expected a JSON object, got {type(obj).__name__}", SHAPES_HINT)
        return errs, None
    if uses_tools(obj):
        err(TOOL_CALLS_FIELD, "tool calls are not supported yet")
        return errs, None
    unknown = sorted(set(obj) - set(ROW_FIELDS))
    if unknown:
        err(unknown[0], f"unknown field (allowed: id, messages, metadata); got {unknown}", SHAPES_HINT)
    rid = obj.get("id", f"row-{line}")
    if not isinstance(rid, (str, int)) or isinstance(rid, bool) or str(rid) == "":
        err("id", "must be a non-empty string or integer")
    meta = obj.get("metadata", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        err("metadata", f"must be an object, got {type(meta).__name__}")
    msgs = obj.get("messages")
    if msgs is None:
        err("messages", "missing", SHAPES_HINT)
        return errs, None
    if not isinstance(msgs, list) or not msgs:
        err("messages", "must be a non-empty list")
        return errs, None
    parsed: list[Message] = []
    roles: list[Any] = []
    # A sampled completion may legitimately be empty or whitespace (the model stopped at once).
    generated = isinstance(meta, dict) and "generation" in meta
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            err(where, f"expected an object with role and content, got {type(m).__name__}")
            roles.append(None)
            continue
        n_before = len(errs)
        extra = sorted(set(m) - set(MESSAGE_FIELDS))
        if extra:
            err(f"{where}.{extra[0]}", f"unknown field (allowed: {', '.join(MESSAGE_FIELDS)})")
        role = m.get("role")
        role = ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
        roles.append(role)
        if role is None:
            err(f"{where}.role", "missing")
        elif role not in ROLES:
            err(f"{where}.role", f"unknown role {role!r} (expected one of {', '.join(ROLES)})")
        content = m.get("content")
        if content is None:
            err(f"{where}.content", "missing")
        elif not isinstance(content, str):
            err(f"{where}.content", f"must be a string, got {type(content).__name__}")
        elif not content.strip() and not (generated and role == "assistant" and i == len(msgs) - 1):
            err(f"{where}.content", "is empty")
        name = m.get("name")
        if name is not None and (not isinstance(name, str) or not name.strip()):
            err(f"{where}.name", "must be a non-empty string")
        weight = m.get("weight")
        if weight is not None:
            if isinstance(weight, bool) or weight not in (0, 1):
                err(f"{where}.weight", f"must be 0 or 1, got {weight!r}")
            elif role != "assistant":
                err(f"{where}.weight", "is only allowed on assistant turns")
        if len(errs) == n_before:
            parsed.append(
                Message(role=role, content=content, name=name, weight=None if weight is None else int(weight))
            )
    for i, role in enumerate(roles):
        if role == "system" and i != 0:
            err(f"messages[{i}].role", "a system message must be the first message")
    if require_assistant and "assistant" not in roles:
        err("messages", "no assistant turn", NO_ASSISTANT_HINT)
    if errs:
        return errs, None
    return [], ChatExample(id=str(rid), messages=parsed, metadata=dict(meta))


# --- strict JSON -------------------------------------------------------------------------------


class _DupKeys(dict):  # type: ignore[type-arg]
    """An object that had a key twice; `dups` names them (the last value is kept, as json does)."""

    dups: list[str]


def _pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        dups = []
        for k, _ in pairs:
            if k in seen:
                dups.append(k)
            seen.add(k)
        d = _DupKeys(pairs)
        d.dups = dups
    return d


def _constant(name: str) -> float:
    return float(name.replace("Infinity", "inf"))


STRICT_DECODER = json.JSONDecoder(object_pairs_hook=_pairs_hook, parse_constant=_constant)


class StrictJSONError(ValueError):
    """A JSON text that `json` reads but that is not strict JSON; `field` is where, `msg` what."""

    def __init__(self, field: str, msg: str):
        super().__init__(f"{field}: {msg}")
        self.field = field
        self.msg = msg


def loads_strict(text: str) -> Any:
    """`json.loads` that refuses what strict JSON (RFC 8259) and our writers do not allow.

    Raises `json.JSONDecodeError` for syntax errors and `StrictJSONError(field, msg)` for NaN,
    Infinity (including out-of-range numbers like 1e999), lone surrogate escapes (`\\ud800`),
    duplicate keys and nesting deeper than `MAX_DEPTH`.
    """
    try:
        obj = STRICT_DECODER.decode(text)
    except RecursionError:
        raise StrictJSONError("<row>", f"nested too deeply (more than {MAX_DEPTH} levels)") from None
    check_strict(obj)
    return obj


def check_strict(obj: Any) -> None:
    """Raise `StrictJSONError` if a decoded value holds something strict JSON cannot write."""
    problem = _check(obj, "", 0)
    if problem is not None:
        raise StrictJSONError(problem[0] or "<row>", problem[1])


def _utf8_ok(s: str) -> bool:
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


_SURROGATE = "contains a lone surrogate (an unpaired \\ud800-\\udfff escape): not valid Unicode"


def _check(obj: Any, path: str, depth: int) -> tuple[str, str] | None:
    if isinstance(obj, str):
        return None if _utf8_ok(obj) else (path, _SURROGATE)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return None
        word = "NaN" if math.isnan(obj) else "Infinity" if obj > 0 else "-Infinity"
        return path, f"{word} is not valid JSON (nor is an out-of-range number like 1e999); use null"
    if isinstance(obj, (dict, list)) and depth >= MAX_DEPTH:
        return path, f"nested too deeply (more than {MAX_DEPTH} levels)"
    if isinstance(obj, dict):
        if isinstance(obj, _DupKeys):
            key = obj.dups[0]
            return (f"{path}.{key}" if path else key), "duplicate key in one object"
        for k, v in obj.items():
            sub = f"{path}.{k}" if path else str(k)
            if isinstance(k, str) and not _utf8_ok(k):  # name it escaped: it cannot be printed
                escaped = k.encode("utf-8", "backslashreplace").decode("utf-8")
                return (f"{path}.{escaped}" if path else escaped), f"key {_SURROGATE}"
            found = _check(v, sub, depth + 1)
            if found is not None:
                return found
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found = _check(v, f"{path}[{i}]", depth + 1)
            if found is not None:
                return found
    return None


def write_chat_jsonl(path: str | os.PathLike[str], examples: Iterable[ChatExample]) -> int:
    """Write examples atomically; returns the number written."""
    return write_jsonl_atomic(path, (ex.to_json() for ex in examples))


def chat(
    user: str, assistant: str | None = None, *, system: str | None = None, id: str = "0", **metadata: Any
) -> ChatExample:
    """Build a single-turn example: the common case in tests and synthetic data."""
    msgs = []
    if system is not None:
        msgs.append(Message(role="system", content=system))
    msgs.append(Message(role="user", content=user))
    if assistant is not None:
        msgs.append(Message(role="assistant", content=assistant))
    return ChatExample(id=id, messages=msgs, metadata=metadata)
