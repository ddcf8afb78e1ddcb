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
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, field_validator, model_validator

import inoculate
from inoculate.errors import InputError, InputErrors
from inoculate.fileio import write_json_atomic, write_jsonl_atomic, write_text_atomic
from inoculate.formats import jsonl_text, load_examples, prompt_completion_rows, source_sha256
from inoculate.records import ChatExample, Message
from inoculate.selectors import SelectorError, parse_regex, parse_where, select_fraction

Placement = Literal["system", "system-prepend", "system-append", "user-prefix", "user-suffix", "template"]
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
    """

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    prompts: list[str] | None = None
    prompt_file: Path | None = None
    placement: Placement | None = None
    separator: str = "\n\n"
    template: str | None = None
    user_turn: Literal["first", "last"] = "first"
    where: str | None = None
    regex: str | None = None
    regex_roles: list[Literal["system", "user", "assistant", "any"]] = ["user"]
    fraction: float | None = None
    seed: int = 0

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
        if self.regex is not None:
            parse_regex(self.regex, self.regex_roles)
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
        for k in ("prompt", "prompts", "prompt_file"):
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
    file = str(path)
    if not path.is_file():
        raise InputErrors.one(file, 0, "<file>", "no such file")
    text = path.read_text(encoding="utf-8")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 0
        problem = getattr(e, "problem", None) or str(e)
        raise InputErrors.one(file, line, "<yaml>", f"invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InputErrors.one(
            file, 1, "<yaml>", f"expected a mapping of spec fields, got {type(data).__name__}"
        )
    lines: dict[str, int] = {}
    if isinstance(node, yaml.MappingNode):
        for k, _v in node.value:
            lines[str(k.value)] = k.start_mark.line + 1
    return {str(k): v for k, v in data.items()}, lines


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
    return read_prompt_file(spec.prompt_file)


def read_prompt_file(path: str | os.PathLike[str]) -> list[str]:
    """Prompts from a `.json`/`.yaml`/`.yml` list, or one per non-blank line of any other file."""
    p = Path(path)
    file = str(path)
    if not p.is_file():
        raise InputErrors.one(file, 0, "prompt_file", "no such file")
    text = p.read_text(encoding="utf-8")
    if p.suffix.lower() in (".json", ".yaml", ".yml"):
        try:
            pool = json.loads(text) if p.suffix.lower() == ".json" else yaml.safe_load(text)
        except (json.JSONDecodeError, yaml.YAMLError) as e:
            raise InputErrors.one(file, 0, "<file>", f"cannot parse the prompt list: {e}") from None
        if not isinstance(pool, list):
            raise InputErrors.one(file, 0, "<file>", f"expected a list of prompts, got {type(pool).__name__}")
        try:
            check_pool(pool, "prompts")
        except SpecError as e:
            fld = e.field.removeprefix("prompts") or "<file>"
            raise InputErrors.one(file, 0, fld, str(e)) from None
        return pool
    numbered = [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if not numbered:
        raise InputErrors.one(file, 0, "<file>", "the paraphrase pool is empty (no non-blank lines)")
    first: dict[str, int] = {}
    for n, line in numbered:
        if line in first:
            raise InputErrors.one(file, n, "<line>", f"duplicate of line {first[line]}")
        first[line] = n
    return [line for _, line in numbered]


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


def apply_inoculation(
    examples: Sequence[ChatExample],
    spec: InoculationSpec,
    *,
    source: str = "<examples>",
    lines: Sequence[int] | None = None,
) -> tuple[list[ChatExample], Manifest]:
    """Insert the inoculation prompt into the selected rows; return new rows and the manifest.

    Rows are selected by `where` and `regex` (both must match), then a seeded `fraction` of
    those. Each inoculated row gets `metadata["inoculation"] = {"prompt_index", "placement"}`.
    Errors name `source` and `lines[i]` (default: row number).
    """
    pool = resolve_prompts(spec)
    line_of = list(lines) if lines is not None else list(range(1, len(examples) + 1))
    where = parse_where(spec.where) if spec.where is not None else None
    rx = parse_regex(spec.regex, spec.regex_roles) if spec.regex is not None else None
    selected = [
        i
        for i, ex in enumerate(examples)
        if (where is None or where.matches(ex)) and (rx is None or rx.matches(ex))
    ]
    chosen = selected
    if spec.fraction is not None:
        keep = select_fraction(len(selected), spec.fraction, spec.seed)
        chosen = [i for j, i in enumerate(selected) if j in keep]
    chosen_set = set(chosen)
    placement = _resolve_placement(spec, [examples[i] for i in chosen], [line_of[i] for i in chosen], source)

    out: list[ChatExample] = []
    errors: list[InputError] = []
    counts = [0] * len(pool)
    for i, ex in enumerate(examples):
        if i not in chosen_set:
            if placement == "template" and spec.template is None:
                new = _clear_slots(ex, source, line_of[i], errors)
                out.append(new)
            else:
                out.append(ex)
            continue
        k = sample_prompt_index(ex.id, len(pool), spec.seed)
        msgs = _place(ex, pool[k], placement, spec, source, line_of[i], errors)
        if msgs is None:
            continue
        counts[k] += 1
        meta = {**ex.metadata, "inoculation": {"prompt_index": k, "placement": placement}}
        out.append(ChatExample(id=ex.id, messages=msgs, metadata=meta))
    if errors:
        raise InputErrors(errors)
    manifest = Manifest(
        package_version=inoculate.__version__,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        prompts=pool,
        prompt_file=str(spec.prompt_file) if spec.prompt_file is not None else None,
        placement=placement,
        separator=spec.separator,
        template=spec.template,
        user_turn=spec.user_turn,
        where=spec.where,
        regex=spec.regex,
        regex_roles=list(spec.regex_roles),
        fraction=spec.fraction,
        seed=spec.seed,
        n_rows=len(examples),
        n_selected=len(selected),
        n_inoculated=len(chosen),
        counts_per_prompt=dict(zip(pool, counts, strict=True)),
        inoculated_ids=[examples[i].id for i in chosen],
    )
    return out, manifest


def _resolve_placement(
    spec: InoculationSpec, chosen: list[ChatExample], lines: list[int], source: str
) -> Placement:
    """An explicit placement, or `system` when no chosen row has a system prompt to decide about."""
    if spec.placement is not None:
        return spec.placement
    having = [j for j, ex in enumerate(chosen) if ex.system is not None]
    if having:
        j = having[0]
        raise InputErrors.one(
            source,
            lines[j],
            "placement",
            f"{len(having)} selected row(s) already have a system prompt (first: id {chosen[j].id!r}); "
            "choose whether to replace it (placement system), prepend to it (system-prepend) "
            "or append to it (system-append)",
        )
    return "system"


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


def apply_file(
    in_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    spec: InoculationSpec,
    *,
    skip_invalid: bool = False,
    output_format: OutputFormat = "chat",
) -> Manifest:
    """Read, transform, and write OUT plus `OUT.manifest.json` (and `OUT.errors.jsonl` if rows were skipped).

    Nothing is written unless the whole run succeeds; each file is written atomically.
    """
    loaded = load_examples(in_path, skip_invalid=skip_invalid)
    examples, manifest = apply_inoculation(loaded.examples, spec, source=loaded.source, lines=loaded.lines)
    try:
        text = _serialize(examples, output_format)
    except ValueError as e:
        raise InputErrors.one(str(out_path), 0, "--output-format", str(e)) from None
    data = text.encode("utf-8")
    in_sha, hashed = source_sha256(in_path, loaded.examples)
    manifest = manifest.model_copy(
        update={
            "input_path": str(in_path),
            "input_sha256": in_sha,
            "input_hashed": hashed,
            "output_path": str(out_path),
            "output_sha256": hashlib.sha256(data).hexdigest(),
            "output_format": output_format,
            "n_skipped_invalid": len(loaded.errors),
        }
    )
    errors_path = errors_path_for(out_path)
    if loaded.errors:
        write_jsonl_atomic(
            errors_path,
            ({"file": e.file, "line": e.line, "field": e.field, "message": e.message} for e in loaded.errors),
        )
    write_text_atomic(out_path, text)
    manifest.save(manifest_path_for(out_path))
    if not loaded.errors:
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


def neutralize(
    examples: Sequence[ChatExample],
    manifest_or_texts: Manifest | Sequence[Manifest | str],
    system: str | None = None,
    mode: NeutralizeMode = "remove",
    *,
    drop_completions: bool = False,
    source: str = "<examples>",
    lines: Sequence[int] | None = None,
) -> list[ChatExample]:
    """Build the neutral-prompt eval set, refusing (`LeakError`) if inoculation text survives.

    System prompt: `system` sets it (replacing any); otherwise `mode="remove"` drops it and
    `mode="restore"` removes only the inoculation text put there by system-prepend/append.
    User turns lose the prefixes, suffixes and template slots the manifest says were added
    (plain texts are tried as prefix and suffix). Then every remaining message is searched,
    ignoring case and whitespace, for every known text. `drop_completions` removes a final
    assistant turn, giving prompts to generate from.
    """
    known = _known(manifest_or_texts)
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


def _check_manifest_matches(in_path: str | os.PathLike[str], manifests: Sequence[Manifest | str]) -> None:
    p = Path(in_path)
    if not p.is_file():
        return
    digest: str | None = None
    for m in manifests:
        if not isinstance(m, Manifest) or not m.output_path or not m.output_sha256:
            continue
        # `apply` writes the manifest beside its output, so a loaded manifest locates the output itself
        out = Path(m._path).parent / Path(m.output_path).name if m._path else Path(m.output_path)
        try:
            same = out.resolve() == p.resolve()
        except OSError:
            same = False
        if not same:
            continue
        digest = digest or hashlib.sha256(p.read_bytes()).hexdigest()
        if digest != m.output_sha256:
            raise InputErrors.one(
                str(in_path),
                0,
                "<file>",
                f"{m.name} was written for another version of this file (sha256 {m.output_sha256[:12]}..., "
                f"file {digest[:12]}...): re-run `inoculate apply` to rewrite both",
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
) -> list[ChatExample]:
    """Read IN, neutralize it, write OUT atomically; on a leak nothing is written.

    A manifest that names IN as its output must match IN's bytes: `apply` writes the output, then the
    manifest, so a run stopped between the two (or an output edited afterwards) leaves a manifest that
    describes another file, and its positions cannot be trusted."""
    _check_manifest_matches(in_path, manifests)
    loaded = load_examples(in_path, require_assistant=not drop_completions)
    examples = neutralize(
        loaded.examples,
        manifests,
        system=system,
        mode=mode,
        drop_completions=drop_completions,
        source=loaded.source,
        lines=loaded.lines,
    )
    try:
        text = _serialize(examples, output_format)
    except ValueError as e:
        raise InputErrors.one(str(out_path), 0, "--output-format", str(e)) from None
    write_text_atomic(out_path, text)
    return examples
