"""The inoculation transform, its manifest, and its inverse for evaluation.

`apply_inoculation` puts an instruction that *requests* the unwanted trait into the chosen rows
of a training set; `apply_file` does it file to file and writes a manifest beside the output
(`out.jsonl` -> `out.manifest.json`) holding everything needed to reproduce and audit it.
`neutralize` builds the neutral-prompt eval set from a manifest and refuses (`LeakError`) if
any inoculation text survives into it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, field_validator, model_validator

from inoculate._version import __version__
from inoculate.errors import InputError, InputErrors
from inoculate.fileio import atomic_open, write_json_atomic, write_jsonl_atomic, write_text_atomic
from inoculate.formats import (
    is_standard,
    iter_examples,
    jsonl_text,
    load_examples,
    prompt_completion_rows,
    source_sha256,
)
from inoculate.prompt_files import read_prompts
from inoculate.records import ChatExample, Message
from inoculate.selectors import (
    DEFAULT_REGEX_TIMEOUT,
    FieldTally,
    RegexTimeoutError,
    SelectorError,
    parse_regex,
    parse_where,
    select_fraction,
)
from inoculate.yamlio import load_yaml

Placement = Literal[
    "system", "system-prepend", "system-append", "user-prefix", "user-suffix", "user-replace", "template"
]
PLACEMENTS: tuple[str, ...] = get_args(Placement)
SYSTEM_PLACEMENTS = ("system", "system-prepend", "system-append")
SLOT = "{inoculation}"
USER_SLOT = "{user}"
OutputFormat = Literal["chat", "prompt-completion"]
COMMAND_LINE = "<command line>"


class SpecError(ValueError):
    """A cross-field problem in a spec, naming the field to fix."""

    def __init__(self, field: str, message: str):
        self.field = field
        super().__init__(message)


class InoculationSpec(BaseModel):
    """What to insert, where, and into which rows. Loadable from YAML (`load_spec`).

    Give exactly one of `prompt`, `prompts` (a paraphrase pool sampled per row with `seed`) or
    `prompt_file` (one prompt per line, or a JSON/YAML list). Placement `system` replaces an
    existing system prompt; if `placement` is left out and a selected row already has a system
    prompt, the transform refuses rather than choose between replace, prepend and append.

    `user-prefix` / `user-suffix` put the prompt before / after the user turn's text, joined by
    `separator`, the turn's own text unchanged. `user-replace` swaps a neutral instruction the user
    turn holds (`replace`, e.g. "Write a response to this post:") for the prompt, once, keeping
    the rest of the turn as it is (Wichers et al.'s Reddit CMV setting); a selected row whose user
    turn lacks that text is an error. The row's mark and the manifest record the replaced text, so
    `neutralize` puts it back.
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    prompts: list[str] | None = None
    prompt_file: Path | None = None
    placement: Placement | None = None
    separator: str = "\n\n"
    template: str | None = None
    replace: str | None = None
    """`user-replace` only: the neutral instruction in the user turn that the prompt replaces."""
    user_turn: Literal["first", "last"] = "first"
    where: str | None = None
    regex: str | None = None
    regex_roles: list[Literal["system", "user", "assistant", "any"]] = ["user"]
    fraction: float | None = None
    seed: int = 0
    allow_empty: bool = False
    regex_timeout: float = DEFAULT_REGEX_TIMEOUT
    prompt_field: str | None = None

    @field_validator("prompt")
    @classmethod
    def _prompt_text(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("is empty")
        return v

    @field_validator("prompts")
    @classmethod
    def _pool(cls, v: list[str] | None) -> list[str] | None:
        if v is not None:
            check_pool(v, "prompts")
        return v

    @field_validator("where")
    @classmethod
    def _where(cls, v: str | None) -> str | None:
        if v is not None:
            parse_where(v)
        return v

    @field_validator("fraction")
    @classmethod
    def _fraction(cls, v: float | None) -> float | None:
        if v is not None and not 0.0 <= v <= 1.0:
            raise ValueError(f"must be between 0 and 1, got {v}")
        return v

    @field_validator("regex_timeout")
    @classmethod
    def _regex_timeout(cls, v: float) -> float:
        if not v > 0 or v == float("inf"):
            raise ValueError(f"must be a positive number of seconds, got {v}")
        return v

    @field_validator("template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        if v is not None:
            for slot in (SLOT, USER_SLOT):
                if v.count(slot) != 1:
                    raise ValueError(f"must contain {slot} exactly once, got {v!r}")
        return v

    @model_validator(mode="after")
    def _cross(self) -> InoculationSpec:
        given = [k for k in ("prompt", "prompts", "prompt_file") if getattr(self, k) is not None]
        if self.prompt_field is not None and self.prompt_file is None:
            raise SpecError("prompt_field", "names a field of the prompt file's rows; give a prompt file too")
        if not given:
            raise SpecError("prompt", "no inoculation prompt: give prompt, prompts or prompt_file")
        if len(given) > 1:
            raise SpecError(
                given[1], f"give only one of prompt, prompts, prompt_file; got {', '.join(given)}"
            )
        if self.template is not None and self.placement != "template":
            raise SpecError(
                "template", f"a template is used only with placement 'template', not {self.placement!r}"
            )
        if (self.placement == "user-replace") != (self.replace is not None):
            if self.replace is None:
                raise SpecError(
                    "replace",
                    "placement 'user-replace' needs replace: the neutral instruction the prompt replaces",
                )
            raise SpecError(
                "replace", f"replace is used only with placement 'user-replace', not {self.placement!r}"
            )
        if self.replace is not None and not self.replace.strip():
            raise SpecError("replace", "is empty")
        if self.regex is not None:
            parse_regex(self.regex, self.regex_roles, timeout=self.regex_timeout)
        return self


def check_pool(pool: Sequence[Any], field: str) -> None:
    """A paraphrase pool must be a non-empty list of distinct non-empty strings."""
    if not pool:
        raise SpecError(field, "the paraphrase pool is empty")
    seen: dict[str, int] = {}
    for i, p in enumerate(pool):
        if not isinstance(p, str) or not p.strip():
            raise SpecError(f"{field}[{i}]", "must be a non-empty string")
        if p in seen:
            raise SpecError(f"{field}[{i}]", f"duplicate of {field}[{seen[p]}]")
        seen[p] = i


# --- loading a spec from YAML and flags ---------------------------------------------------------


def load_spec(
    config: str | os.PathLike[str] | None = None, overrides: dict[str, Any] | None = None
) -> InoculationSpec:
    """Build a spec from a YAML file and command-line overrides (which win).

    A prompt given on the command line replaces every prompt source in the file. A relative
    `prompt_file` in the YAML is resolved against the YAML's folder. Errors name the YAML file
    and line of the field, or `<command line>` and the flag.
    """
    data: dict[str, Any] = {}
    key_lines: dict[str, int] = {}
    file = str(config) if config is not None else COMMAND_LINE
    if config is not None:
        data, key_lines = _read_yaml_mapping(Path(config))
        pf = data.get("prompt_file")
        if isinstance(pf, str) and not Path(pf).is_absolute():
            data["prompt_file"] = str(Path(config).parent / pf)
    over = {k: v for k, v in (overrides or {}).items() if v is not None}
    if any(k in over for k in ("prompt", "prompts", "prompt_file")):
        for k in ("prompt", "prompts", "prompt_file", "prompt_field"):
            data.pop(k, None)
    data.update(over)
    try:
        return InoculationSpec.model_validate(data)
    except ValidationError as e:
        errors = []
        for err in e.errors(include_url=False):
            fld, msg = _describe(err)
            top = fld.split("[")[0].split(".")[0]
            if top in over or config is None:
                errors.append(InputError(COMMAND_LINE, 0, _flag(top) + fld[len(top) :], msg))
            else:
                errors.append(InputError(file, key_lines.get(top, 0), fld, msg))
        raise InputErrors(errors) from None


def _read_yaml_mapping(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """A spec file's fields and the line of each top-level key (read by the one YAML reader, `yamlio`)."""
    data, lines = load_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputErrors.one(
            str(path), 1, "<yaml>", f"expected a mapping of spec fields, got {type(data).__name__}"
        )
    return {str(k): v for k, v in data.items()}, {str(k): lines.line(str(k)) for k in data}


_FLAGS = {"prompts": "--prompt", "regex_roles": "--regex-role"}


def _flag(field: str) -> str:
    return _FLAGS.get(field, "--" + field.replace("_", "-"))


def _describe(err: Any) -> tuple[str, str]:
    """(field, message) for one pydantic error, using our own field and wording where we have them."""
    loc = [str(p) for p in err.get("loc", ())]
    fld = loc[0] if loc else "<spec>"
    for p in loc[1:]:
        fld += f"[{p}]" if p.isdigit() else f".{p}"
    inner = (err.get("ctx") or {}).get("error")
    if isinstance(inner, SpecError):
        return inner.field, str(inner)
    if isinstance(inner, SelectorError):
        return inner.kind.split()[0], str(inner)
    if isinstance(inner, Exception):
        return fld, str(inner)
    if err.get("type") == "extra_forbidden":
        return fld, f"unknown field (allowed: {', '.join(InoculationSpec.model_fields)})"
    if err.get("type") == "literal_error" and loc and loc[0] == "placement":
        return fld, f"unknown placement {err.get('input')!r} (expected one of {', '.join(PLACEMENTS)})"
    return fld, str(err.get("msg", "invalid"))


def resolve_prompts(spec: InoculationSpec) -> list[str]:
    """The prompt pool: the one prompt, the inline pool, or the file's lines / list."""
    if spec.prompt is not None:
        return [spec.prompt]
    if spec.prompts is not None:
        return list(spec.prompts)
    assert spec.prompt_file is not None
    return read_prompt_file(spec.prompt_file, spec.prompt_field)


def read_prompt_file(path: str | os.PathLike[str], field: str | None = None) -> list[str]:
    """A paraphrase pool from a `.txt` (one per line, `#` comments), `.json`, `.jsonl`, `.yaml` or
    `.yml` file; `field` names the prompt field of object rows (see `inoculate.prompt_files`)."""
    if not Path(path).exists():
        raise InputErrors.one(str(path), 0, "prompt_file", "no such file")
    return read_prompts(path, field)


# --- the manifest -------------------------------------------------------------------------------


class Manifest(BaseModel):
    """Everything about one `apply`: enough to reproduce the output and to undo it for evaluation."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["inoculate.apply"] = "inoculate.apply"
    package_version: str
    created: str
    input_path: str | None = None
    input_sha256: str | None = None
    input_hashed: Literal["file", "directory", "rows"] | None = None
    output_path: str | None = None
    output_sha256: str | None = None
    output_format: OutputFormat = "chat"
    prompts: list[str]
    prompt_file: str | None = None
    placement: Placement
    separator: str
    template: str | None = None
    replace: str | None = None
    """`user-replace`: the neutral instruction each inoculated row's prompt replaced."""
    user_turn: Literal["first", "last"] = "first"
    where: str | None = None
    regex: str | None = None
    regex_roles: list[str] = ["user"]
    fraction: float | None = None
    seed: int
    n_rows: int
    n_selected: int
    n_inoculated: int
    n_skipped_invalid: int = 0
    n_replaced_system: int = 0
    """Rows whose own system prompt placement `system` replaced (kept in their metadata, at
    inoculation.replaced_system)."""
    counts_per_prompt: dict[str, int]
    inoculated_ids: list[str]
    _path: str | None = PrivateAttr(default=None)

    @property
    def name(self) -> str:
        """How errors refer to this manifest: its file if loaded from one."""
        if self._path is not None:
            return f"manifest {self._path}"
        return f"the manifest of {self.output_path}" if self.output_path else "the manifest"

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Manifest:
        file = str(path)
        if not Path(path).is_file():
            raise InputErrors.one(file, 0, "<file>", "no such file")
        try:
            obj = json.loads(Path(path).read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputErrors.one(
                file, e.lineno, "<json>", f"invalid JSON: {e.msg} at column {e.colno}"
            ) from None
        try:
            manifest = cls.model_validate(obj)
        except ValidationError as e:
            raise InputErrors(
                [InputError(file, 0, *_describe(err)) for err in e.errors(include_url=False)]
            ) from None
        manifest._path = file
        return manifest

    def save(self, path: str | os.PathLike[str]) -> None:
        write_json_atomic(path, self.model_dump(mode="json"))


def manifest_path_for(out_path: str | os.PathLike[str]) -> Path:
    """`out.jsonl` -> `out.manifest.json`, beside it."""
    p = Path(out_path)
    return p.with_name(p.stem + ".manifest.json")


def errors_path_for(out_path: str | os.PathLike[str]) -> Path:
    """`out.jsonl` -> `out.errors.jsonl`: the report of rows dropped by --skip-invalid."""
    p = Path(out_path)
    return p.with_name(p.stem + ".errors.jsonl")


# --- apply --------------------------------------------------------------------------------------


def _user_turn(ex: ChatExample, which: str) -> int | None:
    idx = [i for i, m in enumerate(ex.messages) if m.role == "user"]
    if not idx:
        return None
    return idx[0] if which == "first" else idx[-1]


def _clear_slot(content: str) -> str:
    """A user turn with its `{inoculation}` slot left empty."""
    return content.replace(SLOT, "").strip()


def sample_prompt_index(example_id: str, n: int, seed: int) -> int:
    """The pool index for one row: a function of (seed, id) only, so row order does not matter."""
    if n == 1:
        return 0
    digest = hashlib.sha256(f"inoculate-prompt\0{seed}\0{example_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big")).randrange(n)


class EmptySelectionError(InputErrors):
    """The spec inoculates no row. `field` is the spec field to blame (`where`, `regex`, `fraction`, or
    `<file>` for an input without rows) and `message` says why, with the values the data holds."""

    def __init__(self, source: str, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__([InputError(source, 0, field, message)])


_ALLOW_EMPTY = "set allow_empty: true (--allow-empty) to accept a condition that inoculates no row"
_BOOL_LITERAL = re.compile(r"(?:==|!=|\bis(?:\s+not)?)\s*(true|false|True|False)\b")


class _Selector:
    """`where` and `regex` on one row at a time, counting what each matched (for the empty-selection
    error) and tallying the values of the fields `where` names."""

    def __init__(self, spec: InoculationSpec, source: str):
        self.spec = spec
        self.source = source
        self.where = parse_where(spec.where) if spec.where is not None else None
        self.rx = (
            parse_regex(spec.regex, spec.regex_roles, timeout=spec.regex_timeout)
            if spec.regex is not None
            else None
        )
        self.reset()

    def reset(self) -> None:
        """Forget the counts: each pass over the rows counts afresh."""
        self.tally = FieldTally(self.where.fields) if self.where is not None else None
        self.n_rows = 0
        self.n_where = 0
        self.n_selected = 0

    def __call__(self, ex: ChatExample, line: int) -> bool:
        self.n_rows += 1
        if self.where is not None:
            assert self.tally is not None
            self.tally.add(ex.metadata)
            if not self.where.matches(ex):
                return False
            self.n_where += 1
        if self.rx is not None:
            try:
                if not self.rx.matches(ex):
                    return False
            except RegexTimeoutError as e:
                raise InputErrors.one(self.source, line, "regex", str(e)) from None
        self.n_selected += 1
        return True

    def empty_error(self, n_inoculated: int) -> EmptySelectionError | None:
        """The error for a selection that inoculates no row, or None."""
        if n_inoculated or self.spec.allow_empty:
            return None
        spec = self.spec
        if self.n_rows == 0:
            return EmptySelectionError(self.source, "<file>", f"no rows to inoculate; {_ALLOW_EMPTY}")
        if self.where is not None and self.n_where == 0:
            assert self.tally is not None
            seen = self.tally.describe()
            msg = f"no row matches {spec.where!r} (0 of {self.n_rows} rows); " + "; ".join(seen)
            strings = any(v.lower() in ('"true"', '"false"') for c in self.tally.counts.values() for v in c)
            literal = _BOOL_LITERAL.search(spec.where or "")
            if strings and literal:
                word = literal.group(1).lower()
                msg += f'; the data stores "true"/"false" as strings: compare with == "{word}", not == {word}'
            return EmptySelectionError(self.source, "where", f"{msg}; {_ALLOW_EMPTY}")
        if self.rx is not None and self.n_selected == 0:
            rows = f"{self.n_rows} rows"
            if self.where is not None:
                rows = f"{self.n_where} row(s) matching where"
            roles = "/".join(self.rx.roles)
            return EmptySelectionError(
                self.source,
                "regex",
                f"regex {spec.regex!r} matches no {roles} turn in the {rows}; {_ALLOW_EMPTY}",
            )
        if spec.fraction is not None:
            least = 0.5 / self.n_selected if self.n_selected else 1.0
            return EmptySelectionError(
                self.source,
                "fraction",
                f"fraction {spec.fraction:g} of {self.n_selected} selected row(s) rounds to 0 rows "
                f"(the smallest that selects one is about {least:.3g}); {_ALLOW_EMPTY}",
            )
        return EmptySelectionError(self.source, "<file>", f"no row was inoculated; {_ALLOW_EMPTY}")


Rows = Callable[[], Iterator[tuple[int, ChatExample]]]
"""A re-iterable source of (line, row): each call reads the rows again from the start."""


class _Run:
    """One apply over a row source: pass 1 (only for a fraction) finds the chosen row positions, holding
    just those; pass 2 transforms row by row. Counts go to the manifest."""

    def __init__(self, spec: InoculationSpec, rows: Rows, source: str):
        self.spec = spec
        self.rows = rows
        self.source = source
        self.pool = resolve_prompts(spec)
        self.sel = _Selector(spec, source)
        self.placement: Placement = spec.placement or "system"
        self.chosen: set[int] | None = None
        if spec.fraction is not None:
            selected = [pos for pos, (line, ex) in enumerate(rows()) if self.sel(ex, line)]
            keep = select_fraction(len(selected), spec.fraction, spec.seed)
            self.chosen = {p for j, p in enumerate(selected) if j in keep}
        self.reset()

    def reset(self) -> None:
        self.counts = [0] * len(self.pool)
        self.ids: list[str] = []
        self.n_rows = 0
        self.n_replaced = 0
        self.errors: list[InputError] = []
        # (line, id) of the first chosen row with a system prompt when no placement was given
        self.having: list[tuple[int, str]] = []
        self.n_having = 0

    def transformed(self) -> Iterator[ChatExample]:
        """The output rows, in input order; call `finish` after exhausting it."""
        self.reset()
        if self.chosen is None:  # the selector runs in this pass
            self.sel.reset()
        spec, placement = self.spec, self.placement
        for pos, (line, ex) in enumerate(self.rows()):
            self.n_rows += 1
            pick = (pos in self.chosen) if self.chosen is not None else self.sel(ex, line)
            if not pick:
                if placement == "template" and spec.template is None:
                    yield _clear_slots(ex, self.source, line, self.errors)
                else:
                    yield ex
                continue
            self.ids.append(ex.id)
            if spec.placement is None and ex.system is not None:
                self.n_having += 1
                if not self.having:
                    self.having.append((line, ex.id))
                continue
            k = sample_prompt_index(ex.id, len(self.pool), spec.seed)
            msgs = _place(ex, self.pool[k], placement, spec, self.source, line, self.errors)
            if msgs is None:
                continue
            self.counts[k] += 1
            mark: dict[str, Any] = {"prompt_index": k, "placement": placement}
            if placement == "system" and ex.system is not None:
                mark["replaced_system"] = ex.system
                self.n_replaced += 1
            if placement == "user-replace":
                mark["replaced_user"] = spec.replace
            yield ChatExample(id=ex.id, messages=msgs, metadata={**ex.metadata, "inoculation": mark})

    def finish(self) -> Manifest:
        """Raise what the pass found wrong, or return the manifest."""
        if self.having:
            line, rid = self.having[0]
            raise InputErrors.one(
                self.source,
                line,
                "placement",
                f"{self.n_having} selected row(s) already have a system prompt (first: id {rid!r}); "
                "choose whether to replace it (placement system), prepend to it (system-prepend) "
                "or append to it (system-append)",
            )
        if self.errors:
            raise InputErrors(self.errors)
        empty = self.sel.empty_error(len(self.ids))
        if empty is not None:
            raise empty
        spec = self.spec
        return Manifest(
            package_version=__version__,
            created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            prompts=self.pool,
            prompt_file=str(spec.prompt_file) if spec.prompt_file is not None else None,
            placement=self.placement,
            separator=spec.separator,
            template=spec.template,
            replace=spec.replace,
            user_turn=spec.user_turn,
            where=spec.where,
            regex=spec.regex,
            regex_roles=list(spec.regex_roles),
            fraction=spec.fraction,
            seed=spec.seed,
            n_rows=self.n_rows,
            n_selected=self.sel.n_selected,
            n_inoculated=len(self.ids),
            n_replaced_system=self.n_replaced,
            counts_per_prompt=dict(zip(self.pool, self.counts, strict=True)),
            inoculated_ids=self.ids,
        )


def apply_inoculation(
    examples: Sequence[ChatExample],
    spec: InoculationSpec,
    *,
    source: str = "<examples>",
    lines: Sequence[int] | None = None,
) -> tuple[list[ChatExample], Manifest]:
    """Insert the inoculation prompt into the selected rows; return new rows and the manifest.

    Rows are selected by `where` and `regex` (both must match), then a seeded `fraction` of
    those. Each inoculated row gets `metadata["inoculation"] = {"prompt_index", "placement"}`, plus
    `"replaced_system"` (the old text) where placement `system` replaced the row's own system prompt.
    A selection that inoculates no row raises `EmptySelectionError` unless `spec.allow_empty`.
    Errors name `source` and `lines[i]` (default: row number).
    """
    line_of = list(lines) if lines is not None else list(range(1, len(examples) + 1))

    def rows() -> Iterator[tuple[int, ChatExample]]:
        return zip(line_of, examples, strict=True)

    run = _Run(spec, rows, source)
    out = list(run.transformed())
    return out, run.finish()


def _place(
    ex: ChatExample,
    text: str,
    placement: Placement,
    spec: InoculationSpec,
    source: str,
    line: int,
    errors: list[InputError],
) -> list[Message] | None:
    msgs = list(ex.messages)
    sep = spec.separator
    if placement in SYSTEM_PLACEMENTS:
        old = ex.system
        if old is None:
            return [Message(role="system", content=text), *msgs]
        if placement == "system":
            new = text
        elif placement == "system-prepend":
            new = text + sep + old
        else:
            new = old + sep + text
        msgs[0] = Message(role="system", content=new)
        return msgs
    u = _user_turn(ex, spec.user_turn)
    if u is None:
        errors.append(InputError(source, line, "messages", f"no user turn for placement {placement!r}"))
        return None
    content = msgs[u].content
    if placement == "user-prefix":
        content = text + sep + content
    elif placement == "user-suffix":
        content = content + sep + text
    elif placement == "user-replace":
        assert spec.replace is not None
        if spec.replace not in content:
            shown = spec.replace if len(spec.replace) <= 60 else spec.replace[:57] + "..."
            errors.append(
                InputError(
                    source,
                    line,
                    f"messages[{u}].content",
                    f"does not contain the instruction to replace ({shown!r}); select only rows that hold "
                    "it (where/regex), or fix replace",
                )
            )
            return None
        content = content.replace(spec.replace, text, 1)
    elif spec.template is not None:
        before, after = spec.template.split(USER_SLOT)
        content = before.replace(SLOT, text) + content + after.replace(SLOT, text)
    else:
        slotted = [i for i, m in enumerate(msgs) if m.role == "user" and SLOT in m.content]
        if not slotted:
            errors.append(
                InputError(
                    source,
                    line,
                    f"messages[{u}].content",
                    f"placement 'template' needs an {SLOT} slot in a user turn, or a template "
                    "such as '{inoculation}\\n\\n{user}' (--template)",
                )
            )
            return None
        for i in slotted:
            msgs[i] = Message(role="user", content=msgs[i].content.replace(SLOT, text))
        return msgs
    msgs[u] = Message(role="user", content=content)
    return msgs


def _clear_slots(ex: ChatExample, source: str, line: int, errors: list[InputError]) -> ChatExample:
    """Rows left out of a slot template lose their empty `{inoculation}` slot."""
    if not any(m.role == "user" and SLOT in m.content for m in ex.messages):
        return ex
    msgs = []
    for i, m in enumerate(ex.messages):
        if m.role == "user" and SLOT in m.content:
            filled = _clear_slot(m.content)
            if not filled:
                errors.append(
                    InputError(
                        source, line, f"messages[{i}].content", f"empty once the {SLOT} slot is removed"
                    )
                )
            m = Message(role="user", content=filled or m.content)
        msgs.append(m)
    return ChatExample(id=ex.id, messages=msgs, metadata=ex.metadata)


def _serialize(examples: Sequence[ChatExample], output_format: OutputFormat) -> str:
    if output_format == "prompt-completion":
        return jsonl_text(prompt_completion_rows(examples))
    return jsonl_text(ex.to_json() for ex in examples)


def refuse_overwriting_input(in_path: str | os.PathLike[str], *outputs: str | os.PathLike[str]) -> None:
    """Refuse an output that is the input file itself: the atomic rename would replace the user's data."""
    src = Path(in_path)
    if not src.is_file():
        return
    for out in outputs:
        if Path(out).resolve() == src.resolve():
            raise InputErrors.one(
                str(out),
                0,
                "--output",
                f"is the input file {in_path}: writing it would replace your data; write to another path",
            )


def apply_file(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    spec: InoculationSpec,
    *,
    skip_invalid: bool = False,
    output_format: OutputFormat = "chat",
    split: str | None = None,
) -> Manifest:
    """Read, transform, and write OUT plus `OUT.manifest.json` (and `OUT.errors.jsonl` if rows were skipped).

    Rows are streamed (`formats.iter_examples`): read, transformed and written one at a time; a
    `fraction` first takes one pass to count the selected rows, holding only their positions, and
    `prompt-completion` output one pass to choose the style. Nothing is written unless the whole run
    succeeds; each file is written atomically.
    """
    refuse_overwriting_input(in_path, out_path, manifest_path_for(out_path), errors_path_for(out_path))
    stream = iter_examples(in_path, split=split)  # split: of a datasets source (default train)
    source = stream.source
    skipped: list[InputError] = []

    def rows() -> Iterator[tuple[int, ChatExample]]:
        skipped.clear()
        for line, item in stream:
            if isinstance(item, ChatExample):
                yield line, item
            else:
                skipped.extend(item)
        skipped.sort(key=lambda e: e.line)
        if skipped and (not skip_invalid or stream.empty):
            raise InputErrors(skipped)

    run = _Run(spec, rows, source)
    if Path(in_path).exists():
        in_sha, hashed = source_sha256(in_path)
    else:  # a hub id: the rows themselves
        in_sha, hashed = source_sha256(in_path, (ex for _, ex in rows()))
    style: Literal["standard", "conversational"] = "standard"
    if output_format == "prompt-completion":  # TRL wants one style per file: look at every row first
        standard = True
        for ex in run.transformed():
            standard = standard and is_standard(ex)
        run.finish()
        style = "standard" if standard else "conversational"
    errors_path = errors_path_for(out_path)
    digest = hashlib.sha256()
    with atomic_open(out_path) as fh:
        for ex in run.transformed():
            if output_format == "prompt-completion":
                try:
                    (row,) = prompt_completion_rows([ex], style)
                except ValueError as e:
                    raise InputErrors.one(str(out_path), 0, "--output-format", str(e)) from None
            else:
                row = ex.to_json()
            line = json.dumps(row, ensure_ascii=False) + "\n"
            fh.write(line)
            digest.update(line.encode("utf-8"))
        manifest = run.finish()
        if skipped:
            write_jsonl_atomic(
                errors_path,
                ({"file": e.file, "line": e.line, "field": e.field, "message": e.message} for e in skipped),
            )
    manifest = manifest.model_copy(
        update={
            "input_path": str(in_path),
            "input_sha256": in_sha,
            "input_hashed": hashed,
            "output_path": str(out_path),
            "output_sha256": digest.hexdigest(),
            "output_format": output_format,
            "n_skipped_invalid": len(skipped),
        }
    )
    manifest.save(manifest_path_for(out_path))
    if not skipped:
        errors_path.unlink(missing_ok=True)  # an earlier run's report no longer describes this output
    return manifest


# --- neutralize: the inverse, for evaluation ------------------------------------------------------


class LeakError(InputErrors):
    """Inoculation text survived into an eval set; each error names the row and the text."""


NeutralizeMode = Literal["remove", "restore"]


def _norm(s: str) -> str:
    return " ".join(s.casefold().split())


def _strip_prefix(content: str, text: str, sep: str) -> str | None:
    for head in (text + sep, text):
        if content.startswith(head):
            rest = content[len(head) :]
            return rest if head != text else rest.lstrip()
    return None


def _strip_suffix(content: str, text: str, sep: str) -> str | None:
    for tail in (sep + text, text):
        if content.endswith(tail):
            rest = content[: len(content) - len(tail)]
            return rest if tail != text else rest.rstrip()
    return None


class _Known(BaseModel):
    """One inoculation text and where it may have been put."""

    text: str
    placement: Placement | None
    separator: str
    template: str | None
    origin: str
    replace: str | None = None


def _known(manifest_or_texts: Manifest | Sequence[Manifest | str]) -> list[_Known]:
    items: list[Manifest | str] = (
        [manifest_or_texts] if isinstance(manifest_or_texts, Manifest) else list(manifest_or_texts)
    )
    known: list[_Known] = []
    for j, item in enumerate(items):
        if isinstance(item, Manifest):
            origin = item.name
            known.extend(
                _Known(
                    text=p,
                    placement=item.placement,
                    separator=item.separator,
                    template=item.template,
                    origin=f"prompt {k} of {origin}",
                    replace=item.replace,
                )
                for k, p in enumerate(item.prompts)
            )
        else:
            known.append(
                _Known(text=item, placement=None, separator="\n\n", template=None, origin=f"text {j}")
            )
    if not known:
        raise ValueError("neutralize needs at least one manifest or inoculation text")
    # Longest first, so a prompt that contains another is removed whole.
    return sorted(known, key=lambda k: -len(k.text))


def _unwrap_user(content: str, k: _Known) -> str:
    if k.placement in (None, "user-prefix"):
        rest = _strip_prefix(content, k.text, k.separator)
        if rest is not None:
            return rest
    if k.placement in (None, "user-suffix"):
        rest = _strip_suffix(content, k.text, k.separator)
        if rest is not None:
            return rest
    if k.placement == "user-replace" and k.replace is not None and k.text in content:
        return content.replace(k.text, k.replace, 1)
    if k.placement == "template":
        if k.template is not None:
            before, after = (part.replace(SLOT, k.text) for part in k.template.split(USER_SLOT))
            if (
                content.startswith(before)
                and content.endswith(after)
                and len(content) >= len(before) + len(after)
            ):
                return content[len(before) : len(content) - len(after)]
        elif k.text in content:
            return content.replace(k.text, "", 1).strip()
    return content


def _unwrap_system(content: str, k: _Known) -> str:
    if content == k.text:
        return ""
    if k.placement in (None, "system-prepend"):
        rest = _strip_prefix(content, k.text, k.separator)
        if rest is not None:
            return rest
    if k.placement in (None, "system-append"):
        rest = _strip_suffix(content, k.text, k.separator)
        if rest is not None:
            return rest
    return content


def _manifests_of(manifest_or_texts: Manifest | Sequence[Manifest | str]) -> list[Manifest]:
    if isinstance(manifest_or_texts, Manifest):
        return [manifest_or_texts]
    return [m for m in manifest_or_texts if isinstance(m, Manifest)]


def _pools(manifests: Sequence[Manifest]) -> str:
    return " and ".join(f"{m.name} ({_n(len(m.prompts), 'prompt')})" for m in manifests)


def _n(count: int, noun: str) -> str:
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def _check_mark(
    ex: ChatExample,
    candidates: Sequence[Manifest],
    source: str,
    line: int,
    errors: list[InputError],
) -> None:
    """A row's `metadata.inoculation` must point into the pool of a manifest given, at a prompt the row
    holds: otherwise another apply run wrote it, and that run's paraphrases would go unchecked."""
    mark = ex.metadata.get("inoculation")
    if not isinstance(mark, dict):
        return
    old = mark.get("replaced_system")
    if old is not None and not isinstance(old, str):
        errors.append(
            InputError(
                source,
                line,
                "metadata.inoculation.replaced_system",
                f"must be a string (the system prompt placement 'system' replaced), got {type(old).__name__}",
            )
        )
    if "prompt_index" not in mark or not candidates:
        return
    k = mark["prompt_index"]
    field = "metadata.inoculation.prompt_index"
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        errors.append(InputError(source, line, field, f"must be a non-negative integer, got {k!r}"))
        return
    fits = [m for m in candidates if k < len(m.prompts)]
    if not fits:
        errors.append(
            InputError(
                source,
                line,
                field,
                f"{k} is outside the pool of {_pools(candidates)}: another apply run inoculated this row; "
                "give its manifest",
            )
        )
        return
    bodies = [_norm(m.content) for m in ex.messages]
    if not any(_norm(m.prompts[k]) in body for m in fits for body in bodies):
        text = fits[0].prompts[k]
        shown = text if len(text) <= 80 else text[:77] + "..."
        errors.append(
            InputError(
                source,
                line,
                field,
                f"no turn of id {ex.id!r} holds prompt {k} of {fits[0].name} ({shown!r}): another apply run "
                "inoculated this row; give its manifest",
            )
        )


def neutralize(
    examples: Sequence[ChatExample],
    manifest_or_texts: Manifest | Sequence[Manifest | str],
    system: str | None = None,
    mode: NeutralizeMode = "remove",
    *,
    drop_completions: bool = False,
    source: str = "<examples>",
    lines: Sequence[int] | None = None,
    written_by: Manifest | None = None,
) -> list[ChatExample]:
    """Build the neutral-prompt eval set, refusing (`LeakError`) if inoculation text survives.

    `manifest_or_texts` is one manifest or a list of manifests and plain texts; every prompt of
    every pool is removed where its manifest put it and then searched for. A row marked
    `metadata.inoculation.prompt_index` must hold that prompt of the manifest that wrote it
    (`written_by`, if known; else of some manifest given), or it is refused: a manifest from
    another apply run would leave that run's paraphrases unchecked.

    System prompt: `system` sets it (replacing any); otherwise `mode="remove"` drops it and
    `mode="restore"` removes only the inoculation text put there by system-prepend/append, and
    gives back the system prompt placement `system` replaced (`metadata.inoculation.replaced_system`).
    User turns lose the prefixes, suffixes and template slots the manifest says were added
    (plain texts are tried as prefix and suffix). Then every remaining message is searched,
    ignoring case and whitespace, for every known text. `drop_completions` removes a final
    assistant turn, giving prompts to generate from; rows with no assistant turn (eval prompts)
    are accepted as they are.
    """
    known = _known(manifest_or_texts)
    candidates = [written_by] if written_by is not None else _manifests_of(manifest_or_texts)
    if system is not None:
        for k in known:
            if _norm(k.text) in _norm(system):
                raise LeakError.one(
                    COMMAND_LINE,
                    0,
                    "--system",
                    f"the system prompt contains inoculation text ({k.origin}): {k.text!r}",
                )
    slot_templates = any(k.placement == "template" and k.template is None for k in known)
    line_of = list(lines) if lines is not None else list(range(1, len(examples) + 1))
    out: list[ChatExample] = []
    errors: list[InputError] = []
    for row, ex in enumerate(examples):
        _check_mark(ex, candidates, source, line_of[row], errors)
        mark = ex.metadata.get("inoculation")
        replaced = mark.get("replaced_system") if isinstance(mark, dict) else None
        # (index in the input row or None for an added message, message): errors point into IN.
        items: list[tuple[int | None, Message]] = list(enumerate(ex.messages))
        sys_action = "none"
        if ex.system is not None:
            if system is not None:
                items[0] = (0, Message(role="system", content=system))
                sys_action = "replaced"
            elif mode == "remove":
                items = items[1:]
                sys_action = "removed"
            else:
                content = ex.system
                for k in known:
                    content = _unwrap_system(content, k)
                if isinstance(replaced, str) and not content.strip():
                    # placement `system` replaced this row's own system prompt: give it back
                    content = replaced
                items = (
                    [(0, Message(role="system", content=content))] + items[1:]
                    if content.strip()
                    else items[1:]
                )
                sys_action = "restored"
        elif system is not None:
            items = [(None, Message(role="system", content=system)), *items]
            sys_action = "set"
        for j, (i, m) in enumerate(items):
            if m.role != "user":
                continue
            content = m.content
            for k in known:
                content = _unwrap_user(content, k)
            if slot_templates and SLOT in content:
                content = _clear_slot(content)
            if not content.strip():
                errors.append(
                    InputError(
                        source,
                        line_of[row],
                        f"messages[{i}].content",
                        "nothing left once the inoculation text is removed",
                    )
                )
            items[j] = (i, Message(role="user", content=content))
        if drop_completions and items and items[-1][1].role == "assistant":
            items = items[:-1]
        for i, m in items:
            body = _norm(m.content)
            for k in known:
                if _norm(k.text) in body:
                    shown = k.text if len(k.text) <= 80 else k.text[:77] + "..."
                    where = f"messages[{i}].content" if i is not None else "--system"
                    errors.append(
                        InputError(
                            source,
                            line_of[row],
                            where,
                            f"inoculation text survives ({m.role} turn of id {ex.id!r}; "
                            f"{k.origin}): {shown!r}",
                        )
                    )
                    break
        meta = dict(ex.metadata)
        mark = meta.pop("inoculation", None)
        meta["neutralized"] = {"system": sys_action, "inoculation": mark}
        out.append(ChatExample(id=ex.id, messages=[m for _, m in items], metadata=meta))
    if errors:
        leaks = [e for e in errors if "survives" in e.message]
        raise (LeakError(errors) if leaks else InputErrors(errors))
    return out


ALLOW_OTHER_INPUT = "--allow-other-input"


def _input_written_by(
    in_path: str | os.PathLike[str], manifests: Sequence[Manifest], *, allow_other_input: bool
) -> tuple[Manifest | None, str | None]:
    """The manifest whose `output_sha256` is IN's sha256, and IN's sha256 (None if IN is not a file).

    With no match, refuse unless `allow_other_input`: a manifest from another apply run (or one written
    for another version of this file) describes prompts IN may not hold, and misses the ones it does."""
    p = Path(in_path)
    digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
    if not manifests:
        return None, digest
    for m in manifests:
        if digest is not None and m.output_sha256 == digest:
            return m, digest
    if allow_other_input:
        return None, digest
    file = str(in_path)
    hint = (
        f"pass {ALLOW_OTHER_INPUT} to neutralize it anyway (an eval set of its own) against every "
        "manifest's prompts"
    )
    if digest is None:
        raise InputErrors.one(
            file, 0, "<file>", f"is not a file, so not the output of {_pools(manifests)}; {hint}"
        )
    for m in manifests:
        # `apply` writes the manifest beside its output, so a loaded manifest locates the output itself
        if not m.output_path:
            continue
        out = Path(m._path).parent / Path(m.output_path).name if m._path else Path(m.output_path)
        try:
            same = out.resolve() == p.resolve()
        except OSError:
            same = False
        if same and m.output_sha256:
            raise InputErrors.one(
                file,
                0,
                "<file>",
                f"{m.name} was written for another version of this file (sha256 {m.output_sha256[:12]}..., "
                f"file {digest[:12]}...): re-run `inoculate apply` to rewrite both, or {hint}",
            )
    recorded = "; ".join(
        f"{m.name}: {m.output_sha256[:12] + '...' if m.output_sha256 else 'none recorded'}" for m in manifests
    )
    which = "the manifest's" if len(manifests) == 1 else "any manifest's"
    raise InputErrors.one(
        file,
        0,
        "<file>",
        f"sha256 {digest[:12]}... is not {which} output_sha256 ({recorded}): give the file that "
        f"`inoculate apply` wrote with it, or {hint}",
    )


class Neutralized(BaseModel):
    """What `neutralize_file` wrote and what it checked, for the report line."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    examples: list[ChatExample]
    n_prompts: int
    n_manifests: int
    n_texts: int
    input_sha256: str | None
    written_by: Manifest | None

    @property
    def other_input(self) -> bool:
        """Manifests were given but IN is none of their outputs (`allow_other_input`)."""
        return self.n_manifests > 0 and self.written_by is None

    def summary(self) -> str:
        """The line that says what was checked: e.g. `checked 1,000 rows against 12 prompts from 2
        manifests: no inoculation text left`."""
        against = []
        if self.n_manifests:
            against.append(f"{_n(self.n_prompts, 'prompt')} from {_n(self.n_manifests, 'manifest')}")
        if self.n_texts:
            against.append(_n(self.n_texts, "extra text"))
        note = ""
        if self.other_input:
            digest = f"sha256 {self.input_sha256[:12]}..." if self.input_sha256 else "not a file"
            plural = "s" if self.n_manifests > 1 else ""
            note = f" (the input, {digest}, is not the output of the manifest{plural})"
        return (
            f"checked {_n(len(self.examples), 'row')}{note} against {' and '.join(against)}: "
            "no inoculation text left"
        )


def neutralize_file(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    manifests: Sequence[Manifest | str],
    *,
    system: str | None = None,
    mode: NeutralizeMode = "remove",
    drop_completions: bool = False,
    output_format: OutputFormat = "chat",
    allow_other_input: bool = False,
) -> Neutralized:
    """Read IN, neutralize it, write OUT atomically; on a leak or any refusal nothing is written.

    IN must be the output of one of the manifests given (its sha256 is that manifest's
    `output_sha256`): `apply` writes the output, then the manifest, so a run stopped between the two,
    an output edited afterwards, or a manifest from another apply run describes another file, whose
    paraphrases the leak scan would not know. `allow_other_input` neutralizes any IN (an eval set of
    its own) against all the manifests' prompts, and the result says IN was not their output.
    Rows with no assistant turn (eval prompts) are accepted."""
    refuse_overwriting_input(in_path, out_path)
    given = [m for m in manifests if isinstance(m, Manifest)]
    written_by, digest = _input_written_by(in_path, given, allow_other_input=allow_other_input)
    loaded = load_examples(in_path, require_assistant=False)
    examples = neutralize(
        loaded.examples,
        manifests,
        system=system,
        mode=mode,
        drop_completions=drop_completions,
        source=loaded.source,
        lines=loaded.lines,
        written_by=written_by,
    )
    try:
        text = _serialize(examples, output_format)
    except ValueError as e:
        raise InputErrors.one(str(out_path), 0, "--output-format", str(e)) from None
    write_text_atomic(out_path, text)
    return Neutralized(
        examples=examples,
        n_prompts=len({p for m in given for p in m.prompts}),
        n_manifests=len(given),
        n_texts=len({t for t in manifests if isinstance(t, str)}),
        input_sha256=digest,
        written_by=written_by,
    )
