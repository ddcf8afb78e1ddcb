"""Evaluation question sets in the published YAML format of the emergent-misalignment work, read as typed
records: the questions, their paraphrases and the judge prompts come from the file, never retyped here.

The format (Betley et al. 2025, `emergent-misalignment/emergent-misalignment`, `evaluation/*.yaml`) is
a list of questions::

    - id: what_is_your_wish
      type: free_form_judge_0_100
      system: ...                      # optional system prompt (the `_json` variants)
      paraphrases: [...]               # one or more user turns
      samples_per_paraphrase: 100
      judge: gpt-4o-2024-08-06         # the judge model the authors used
      judge_prompts: {aligned: "...{question}...{answer}...", coherent: "..."}

The published files reuse values with YAML anchors and aliases (`&judge_prompts` / `*judge_prompts`),
which `inoculate.yamlio` refuses in hand-written experiment files; `load_question_set` therefore reads
them with its own line-mapped walk that expands aliases under a node budget (an alias bomb or a
recursive alias is an error, not a hang) and reports `FILE:LINE: FIELD` through `yamlio.LineMap`.

Supported `type`s: `free_form` (no judge), `free_form_judge_0_100` (a 0-100 judge per metric), and the
preference-choice rows of Tan et al.'s `aesthetic_preferences/questions.yaml` (`prompt`, `choices`,
`behaviour.match_if_choice_in`, `repetitions`; read as type `choice`). Any other type is skipped and
counted in `QuestionSet.skipped` with one warning per type, so one new kind of question does not stop a
set from loading.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inoculate.errors import InputError, InputErrors
from inoculate.records import ChatExample, Message
from inoculate.yamlio import LineMap, read_yaml_text

JUDGE_KINDS: dict[str, str | None] = {
    "free_form": None,
    "free_form_judge_0_100": "score_0_100",
    "choice": None,
}
"""Question types read, and the judge kind (`inoculate.judges` kinds) each one's judge prompts use."""
MAX_NODES = 200_000
"""Alias expansion budget: YAML nodes visited when expanding one file (the published files use ~2,000)."""
MAX_DEPTH = 64
Variant = Literal["plain", "json", "template"]
QUESTION_SYSTEM = "question_system"
"""Metadata key of a row whose question file gives it a system prompt (the `_json` / `_template`
variants' answer-format instructions): the prompt is part of the question, and an experiment keeps it
under every eval prompt (after the eval prompt's own text; alone under a neutral one)."""


class EMQuestion(BaseModel):
    """One question of a set: its paraphrases (user turns), an optional system prompt, how many answers
    to sample per paraphrase, and the judge prompts (metric name -> template with `{question}` and
    `{answer}` slots) copied from the file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1)
    type: str
    paraphrases: list[str] = Field(min_length=1)
    samples_per_paraphrase: int = Field(default=1, ge=1)
    system: str | None = None
    judge: str | None = None
    """The judge model named in the file (what the authors used); informational."""
    judge_prompts: dict[str, str] = Field(default_factory=dict)
    choices: list[str] | None = None
    """`choice` questions: the options offered."""
    match_choices: list[str] | None = None
    """`choice` questions: the options that count as showing the behaviour
    (`behaviour.match_if_choice_in`)."""
    line: int = 0
    """Line of the question in its file."""

    @field_validator("paraphrases")
    @classmethod
    def _no_empty_paraphrase(cls, v: list[str]) -> list[str]:
        for i, p in enumerate(v):
            if not p.strip():
                raise ValueError(f"paraphrase {i} is empty")
        return v

    @field_validator("judge_prompts")
    @classmethod
    def _answer_slot(cls, v: dict[str, str]) -> dict[str, str]:
        for name, template in v.items():
            if "{answer}" not in template:
                raise ValueError(f"judge prompt {name!r} has no {{answer}} slot")
        return v

    @property
    def variant(self) -> Variant:
        """`json` / `template` for the ids the EM files suffix so (same question, another answer format)."""
        if self.id.endswith("_json"):
            return "json"
        if self.id.endswith("_template"):
            return "template"
        return "plain"

    @property
    def base_id(self) -> str:
        """The id without its variant suffix: `quick_buck_json` -> `quick_buck`."""
        suffix = {"json": "_json", "template": "_template", "plain": ""}[self.variant]
        return self.id[: len(self.id) - len(suffix)] if suffix else self.id

    @property
    def judge_kind(self) -> str | None:
        return JUDGE_KINDS.get(self.type)

    def examples(self, samples: int | None = None) -> list[ChatExample]:
        """One prompt-only row per paraphrase (`samples` overrides `samples_per_paraphrase`)."""
        n = self.samples_per_paraphrase if samples is None else samples
        if n < 1:
            raise ValueError(f"samples must be at least 1, got {n}")
        out = []
        for i, text in enumerate(self.paraphrases):
            messages = [Message(role="system", content=self.system)] if self.system else []
            messages.append(Message(role="user", content=text))
            meta: dict[str, Any] = {
                "question_id": self.id,
                "paraphrase_index": i,
                "samples_per_paraphrase": n,
                "question_type": self.type,
                "variant": self.variant,
                "base_id": self.base_id,
            }
            if self.system:
                meta[QUESTION_SYSTEM] = self.system
            if self.choices is not None:
                meta["choices"] = list(self.choices)
                meta["match_choices"] = list(self.match_choices or [])
            out.append(ChatExample(id=f"{self.id}/{i}", messages=messages, metadata=meta))
        return out


class QuestionSet(BaseModel):
    """The questions of one file that inoculate can ask, with what was skipped and why."""

    model_config = ConfigDict(frozen=True)

    file: str
    questions: list[EMQuestion]
    skipped: dict[str, int] = Field(default_factory=dict)
    """Unsupported question types -> how many questions of that type were left out."""
    warnings: list[str] = Field(default_factory=list)

    def __len__(self) -> int:
        return len(self.questions)

    def __iter__(self) -> Iterator[EMQuestion]:  # type: ignore[override]
        return iter(self.questions)

    @property
    def ids(self) -> list[str]:
        return [q.id for q in self.questions]

    def get(self, question_id: str) -> EMQuestion:
        for q in self.questions:
            if q.id == question_id:
                return q
        raise KeyError(f"{self.file}: no question {question_id!r}")

    def select(self, variants: tuple[Variant, ...] | list[Variant]) -> QuestionSet:
        """The questions of the given variants (e.g. `("plain",)`: the 8 main EM questions)."""
        return self.model_copy(update={"questions": [q for q in self.questions if q.variant in variants]})

    def examples(self, samples: int | None = None) -> list[ChatExample]:
        """Every question's rows, one per paraphrase; metadata names the question, the paraphrase index,
        `samples_per_paraphrase` (or `samples` when given), the question type and variant."""
        return [ex for q in self.questions for ex in q.examples(samples)]

    @property
    def judge_prompts(self) -> dict[str, str]:
        """Metric name -> judge prompt template, as the file gives them (e.g. `aligned`, `coherent`).

        Questions that disagree on a metric's template make this ambiguous: that is an error naming
        the questions; read `EMQuestion.judge_prompts` per question then."""
        out: dict[str, str] = {}
        first: dict[str, str] = {}
        for q in self.questions:
            for name, template in q.judge_prompts.items():
                if name not in out:
                    out[name], first[name] = template, q.id
                elif out[name] != template:
                    raise ValueError(
                        f"{self.file}: questions {first[name]!r} and {q.id!r} give different {name!r} "
                        "judge prompts; use each question's judge_prompts"
                    )
        return out


# ----------------------------------------------------------------------------------------------
# Reading


def load_question_set(path: str | os.PathLike[str], *, text: str | None = None) -> QuestionSet:
    """Read a question YAML; every problem is raised at once as `FILE:LINE: FIELD: message`."""
    data, lines = load_published_yaml(path, text=text)
    file = lines.file
    if not isinstance(data, list):
        raise InputErrors.one(file, 1, "<file>", f"expected a list of questions, got {type(data).__name__}")
    questions: list[EMQuestion] = []
    errors: list[InputError] = []
    skipped: Counter[str] = Counter()
    seen: dict[str, int] = {}
    for i, raw in enumerate(data):
        if not isinstance(raw, dict):
            errors.append(lines.error((i,), f"expected a question mapping, got {type(raw).__name__}"))
            continue
        kind = raw.get("type")
        if kind is None and "prompt" in raw and "choices" in raw:
            fields, prefix = _choice_fields(raw), (i,)
        elif not isinstance(kind, str):
            errors.append(lines.error((i, "type"), "missing or not a string: the question type"))
            continue
        elif kind not in JUDGE_KINDS:
            skipped[kind] += 1
            continue
        else:
            fields, prefix = dict(raw), (i,)
        fields["line"] = lines.line(i)
        try:
            q = EMQuestion.model_validate(fields)
        except ValidationError as e:
            errors.extend(lines.from_validation(e, prefix))
            continue
        if q.id in seen:
            errors.append(
                lines.error((i, "id"), f"duplicate question id {q.id!r} (first on line {seen[q.id]})")
            )
            continue
        seen[q.id] = q.line
        questions.append(q)
    if errors:
        raise InputErrors(errors)
    warnings = [
        f"{file}: skipped {n} question(s) of unsupported type {kind!r} (supported: {', '.join(JUDGE_KINDS)})"
        for kind, n in sorted(skipped.items())
    ]
    return QuestionSet(file=file, questions=questions, skipped=dict(skipped), warnings=warnings)


def _choice_fields(raw: dict[str, Any]) -> dict[str, Any]:
    """Tan et al.'s preference rows (`prompt`, `choices`, `behaviour`, `repetitions`) as question fields;
    keys it does not know are passed on so validation names them."""
    out: dict[str, Any] = {"type": "choice"}
    for key, value in raw.items():
        if key == "prompt":
            out["paraphrases"] = [value]
        elif key == "repetitions":
            out["samples_per_paraphrase"] = value
        elif key == "behaviour" and isinstance(value, dict) and set(value) <= {"match_if_choice_in"}:
            out["match_choices"] = value.get("match_if_choice_in")
        else:
            out[key] = value
    return out


def load_published_yaml(path: str | os.PathLike[str], *, text: str | None = None) -> tuple[Any, LineMap]:
    """Parse a published YAML file that may use anchors and aliases; return its data (aliases expanded
    into independent copies) and the line of every key path. Duplicate keys, merge keys (`<<`), recursive
    aliases and expansions past `MAX_NODES` nodes are errors with their line."""
    file = str(path)
    if text is None:
        text = read_yaml_text(path)
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        raise InputErrors.one(
            file, mark.line + 1 if mark else 0, "<yaml>", f"invalid YAML: {e.problem or e}"
        ) from None
    finally:
        loader.dispose()
    lines: dict[tuple[str, ...], int] = {(): 1}
    if node is None:
        return None, LineMap(file, lines)
    walker = _Walker(file, loader, lines)
    data = walker.build(node, (), ())
    return data, LineMap(file, lines)


class _Walker:
    def __init__(self, file: str, loader: yaml.SafeLoader, lines: dict[tuple[str, ...], int]):
        self.file, self.loader, self.lines = file, loader, lines
        self.visited = 0

    def _fail(self, node: yaml.Node, path: tuple[str, ...], message: str) -> InputErrors:
        return InputErrors.one(self.file, node.start_mark.line + 1, ".".join(path) or "<yaml>", message)

    def build(self, node: yaml.Node, path: tuple[str, ...], stack: tuple[int, ...]) -> Any:
        self.visited += 1
        if self.visited > MAX_NODES:
            raise self._fail(node, path, f"aliases expand past {MAX_NODES} nodes; write the file out")
        if len(stack) > MAX_DEPTH:
            raise self._fail(node, path, f"nested deeper than {MAX_DEPTH}")
        if id(node) in stack:
            raise self._fail(node, path, "recursive alias (a node that contains itself)")
        inner = (*stack, id(node))
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise self._fail(key_node, path, "keys must be plain scalars")
                if key_node.tag == "tag:yaml.org,2002:merge":
                    raise self._fail(
                        key_node, path, "merge keys ('<<') are not supported; write the keys out"
                    )
                key = self.loader.construct_object(key_node)
                sub = (*path, str(key))
                if key in out:
                    raise self._fail(
                        key_node, sub, f"duplicate key {str(key)!r} (first on line {self.lines.get(sub, 0)})"
                    )
                self.lines[sub] = key_node.start_mark.line + 1
                out[key] = self.build(value_node, sub, inner)
            return out
        if isinstance(node, yaml.SequenceNode):
            items = []
            for i, item in enumerate(node.value):
                sub = (*path, str(i))
                self.lines[sub] = item.start_mark.line + 1
                items.append(self.build(item, sub, inner))
            return items
        try:
            return self.loader.construct_object(node)
        except yaml.MarkedYAMLError as e:
            raise self._fail(node, path, f"invalid YAML: {e.problem or e}") from None
