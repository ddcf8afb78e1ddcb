"""The one record type that flows through the pipeline: a chat example, and its JSONL I/O.

A chat example is an id, a list of messages (role system/user/assistant, string content) and
free metadata. On disk it is OpenAI chat JSONL: `{"id": ..., "messages": [...], "metadata": {...}}`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from inoculate.errors import NO_ASSISTANT_HINT, SHAPES_HINT, InputError, InputErrors
from inoculate.fileio import write_jsonl_atomic

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str


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


def validate_chat_row(
    obj: Any, file: str, line: int, *, require_assistant: bool = True
) -> tuple[list[InputError], ChatExample | None]:
    """Check one decoded JSONL row; return every problem found in it, or the example."""
    errs: list[InputError] = []

    def err(field: str, msg: str) -> None:
        errs.append(InputError(file, line, field, msg))

    if not isinstance(obj, dict):
        err("<row>", f"expected a JSON object, got {type(obj).__name__}", SHAPES_HINT)
        return errs, None
    unknown = sorted(set(obj) - {"id", "messages", "metadata"})
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
    # A sampled completion may legitimately be empty or whitespace (the model stopped at once).
    generated = isinstance(meta, dict) and "generation" in meta
    for i, m in enumerate(msgs):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            err(where, f"expected an object with role and content, got {type(m).__name__}")
            continue
        extra = sorted(set(m) - {"role", "content"})
        if extra:
            err(f"{where}.{extra[0]}", "unknown field (allowed: role, content)")
        role = m.get("role")
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
        if role in ROLES and isinstance(content, str) and not extra and (content.strip() or generated):
            parsed.append(Message(role=role, content=content))
    for i, m in enumerate(msgs):
        if isinstance(m, dict) and m.get("role") == "system" and i != 0:
            err(f"messages[{i}].role", "a system message must be the first message")
    if require_assistant and "assistant" not in roles:
        err("messages", "no assistant turn", NO_ASSISTANT_HINT)
    if errs:
        return errs, None
    return [], ChatExample(id=str(rid), messages=parsed, metadata=dict(meta))


def read_chat_jsonl(
    path: str | os.PathLike[str],
    *,
    skip_invalid: bool = False,
    require_assistant: bool = True,
) -> tuple[list[ChatExample], list[InputError]]:
    """Read OpenAI chat JSONL.

    Raises `InputErrors` listing every bad line unless `skip_invalid`, in which case the bad
    rows are dropped and their errors returned beside the good rows.
    """
    file = str(path)
    if not Path(path).is_file():
        raise InputErrors.one(file, 0, "<file>", "no such file")
    examples: list[ChatExample] = []
    errors: list[InputError] = []
    seen: dict[str, int] = {}
    with open(path, encoding="utf-8") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError as e:
                msg = f"invalid JSON: {e.msg} at column {e.colno}"
                errors.append(InputError(file, lineno, "<json>", msg))
                continue
            errs, ex = validate_chat_row(obj, file, lineno, require_assistant=require_assistant)
            if errs:
                errors.extend(errs)
                continue
            assert ex is not None
            if ex.id in seen:
                msg = f"duplicate id {ex.id!r} (first on line {seen[ex.id]})"
                errors.append(InputError(file, lineno, "id", msg))
                continue
            seen[ex.id] = lineno
            examples.append(ex)
    if errors and not skip_invalid:
        raise InputErrors(errors)
    return examples, errors


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
