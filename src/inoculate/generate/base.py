"""Sampling parameters, the backend interface and registry, and the generation record format."""

from __future__ import annotations

import hashlib
import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict, Field

from inoculate.records import ChatExample, Message
from inoculate.registry import Registry


class SamplingParams(BaseModel):
    """Every sampling setting, explicit and recorded with each generation: no library default
    (such as transformers' 20 tokens or a model's generation_config) decides any of them.

    `temperature=0` is greedy decoding. Each sample has its own seed, derived from `seed`, the
    example id and the sample index, so a sample does not depend on batching or on the other rows.
    `stop` strings end a completion (the stop string is not included).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    temperature: float = Field(ge=0)
    top_p: float = Field(gt=0, le=1)
    max_new_tokens: int = Field(ge=1)
    n: int = Field(ge=1)
    seed: int
    stop: list[str] = Field(default_factory=list)


@dataclass(frozen=True)
class TokenLogprob:
    """One token with its log-probability under the model's own next-token distribution (the
    log-softmax of the raw logits, before temperature or top-p), as OpenAI's `logprobs` reports.

    `token` is the token's text alone; `raw` its bytes (a byte-level token that is only part of a
    UTF-8 character shows those bytes as `\\xNN` escapes in `token`). `top` holds the most likely
    tokens at that position, most likely first (empty unless asked for)."""

    token: str
    raw: bytes
    logprob: float
    top: tuple[TokenLogprob, ...] = ()


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str  # "stop" (end of turn or a stop string) or "length"
    n_tokens: int | None = None
    logprobs: tuple[TokenLogprob, ...] | None = None
    """One entry per token of `text` when the backend was asked for logprobs, else None."""


class _Keep:
    def __repr__(self) -> str:
        return "KEEP_SYSTEM"


KEEP_SYSTEM: Any = _Keep()
"""Pass as `system` to leave each example's own system turn (or its absence) as it is."""


def sample_seed(seed: int, key: str, index: int) -> int:
    """A 63-bit seed for one sample, a pure function of the run seed, the example id and the index."""
    digest = hashlib.sha256(f"{seed}\x00{key}\x00{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def with_system(messages: Sequence[Message], system: str | None | _Keep) -> list[Message]:
    """Replace the leading system turn by `system` (None removes it; KEEP_SYSTEM leaves it)."""
    msgs = list(messages)
    if isinstance(system, _Keep):
        return msgs
    rest = msgs[1:] if msgs and msgs[0].role == "system" else msgs
    return rest if system is None else [Message(role="system", content=system), *rest]


def truncate_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


@dataclass(frozen=True)
class SamplePlan:
    """What `Backend.generate` samples: each example's prompt (system turn replaced), and one
    (example index, sample index) row per sample with its seed, in the order completions come back."""

    examples: Sequence[ChatExample]
    prompts: list[list[Message]]
    rows: list[tuple[int, int]]
    seeds: list[int]
    params: SamplingParams

    @property
    def sample_prompts(self) -> list[list[Message]]:
        return [self.prompts[i] for i, _ in self.rows]


def plan_samples(
    examples: Sequence[ChatExample], params: SamplingParams, *, system: str | None | _Keep = KEEP_SYSTEM
) -> SamplePlan:
    """The samples of `examples` under `params` (see `Backend.generate`)."""
    prompts = [with_system(ex.prompt_messages, system) for ex in examples]
    rows = [(i, k) for i in range(len(examples)) for k in range(params.n)]
    seeds = [sample_seed(params.seed, examples[i].id, k) for i, k in rows]
    return SamplePlan(examples=examples, prompts=prompts, rows=rows, seeds=seeds, params=params)


@dataclass(frozen=True)
class AdapterJob:
    """Examples to sample through one adapter (None: the base model), with their system turn rule
    (`with_system`) and their own sampling parameters (None: those of the call; jobs of one call may
    differ in their seed, e.g. one job per cell of a matrix)."""

    adapter: str | None
    examples: Sequence[ChatExample]
    system: Any = KEEP_SYSTEM
    params: SamplingParams | None = None


class AdapterEngine(Protocol):
    """What a backend with `generates_many` gives: one engine over a base model that samples the jobs
    of many adapters in one call."""

    def generate_many(
        self, jobs: Sequence[AdapterJob], params: SamplingParams | None = None
    ) -> list[list[ChatExample]]:
        """Each job's generation records, as `Backend.generate` gives them, in the jobs' order."""
        ...


class Backend(ABC):
    """A way to sample completions of chat prompts. Subclasses implement `sample` (one completion per
    prompt, each with its own seed) and, when they hold the tokenizer, `rendered_prompt` and
    `seen_system_prompt`; `generate` builds the records.

    A backend that samples many LoRA adapters of one base model in one call (vllm) sets
    `generates_many` and implements `shared_engine`; the experiment runner then trains every cell
    first and evaluates them all in one call."""

    name: ClassVar[str] = ""
    generates_many: ClassVar[bool] = False

    @classmethod
    def shared_engine(cls, model: str, **options: Any) -> AdapterEngine:
        """The process's engine over `model` with these options (the backend's own), built on first
        use; only for a backend with `generates_many`."""
        raise NotImplementedError(f"backend {cls.name!r} samples one adapter at a time")

    def __init__(self, model: str, adapter: str | None = None):
        self.model_name = str(model)
        self.adapter = None if adapter is None else str(adapter)

    @abstractmethod
    def sample(
        self, prompts: Sequence[list[Message]], seeds: Sequence[int], params: SamplingParams
    ) -> list[Completion]:
        """One completion per prompt; prompt i is sampled with `seeds[i]`."""

    def rendered_prompt(self, messages: Sequence[Message]) -> str | None:
        return None

    def seen_system_prompt(self, system: str | None) -> str | None:
        return None

    def info(self) -> dict[str, Any]:
        """Backend settings recorded with each generation (beyond model and adapter)."""
        return {}

    def generate(
        self,
        examples: Sequence[ChatExample],
        params: SamplingParams,
        *,
        system: str | None | _Keep = KEEP_SYSTEM,
    ) -> list[ChatExample]:
        """`params.n` completions of each example's prompt (its messages before the final assistant
        turn, system turn replaced per `system`). Output ids are the input ids when n == 1, else
        `ID#k`; the input metadata is kept and `metadata["generation"]` records how each was made."""
        plan = plan_samples(examples, params, system=system)
        return self.records(plan, self.sample(plan.sample_prompts, plan.seeds, params))

    def records(self, plan: SamplePlan, completions: Sequence[Completion]) -> list[ChatExample]:
        """The generation records of `plan`'s samples, given one completion per sample in its order."""
        examples, prompts, rows, seeds, params = (
            plan.examples,
            plan.prompts,
            plan.rows,
            plan.seeds,
            plan.params,
        )
        if len(completions) != len(rows):
            raise RuntimeError(
                f"backend {self.name} returned {len(completions)} completions for {len(rows)} prompts"
            )
        seen_cache: dict[str | None, str | None] = {}
        rendered: dict[int, str | None] = {}  # per example: its n samples share one prompt
        out: list[ChatExample] = []
        for (i, k), comp in zip(rows, completions, strict=True):
            ex, prompt = examples[i], prompts[i]
            sys_text = prompt[0].content if prompt and prompt[0].role == "system" else None
            if sys_text not in seen_cache:
                seen_cache[sys_text] = self.seen_system_prompt(sys_text)
            if i not in rendered:
                rendered[i] = self.rendered_prompt(prompt)
            gen = {
                "backend": self.name,
                "model": self.model_name,
                "adapter": self.adapter,
                "params": params.model_dump(mode="json"),
                "sample_index": k,
                "seed": seeds[i * params.n + k],
                "source_id": ex.id,
                "rendered_prompt": rendered[i],
                "seen_system_prompt": seen_cache[sys_text],
                "finish_reason": comp.finish_reason,
                "completion_tokens": comp.n_tokens,
                **self.info(),
            }
            out.append(
                ChatExample(
                    id=ex.id if params.n == 1 else f"{ex.id}#{k}",
                    messages=[*prompt, Message(role="assistant", content=comp.text)],
                    metadata={**ex.metadata, "generation": gen},
                )
            )
        return out


ENTRY_POINT_GROUP = "inoculate.backends"
_BACKENDS: Registry[Callable[..., Backend]] = Registry(
    "generation backend",
    ENTRY_POINT_GROUP,
    lazy={
        "hf": "inoculate.generate.hf",
        "openai_http": "inoculate.generate.openai_http",
        "vllm": "inoculate.generate.vllm",
    },
    unknown="unknown {kind} {name!r} (available: {known})",
)


def backend(name: str) -> Callable[[type[Backend]], type[Backend]]:
    """Register a Backend subclass under `name` (usable from the CLI and experiment YAML)."""

    def deco(cls: type[Backend]) -> type[Backend]:
        cls.name = name
        _BACKENDS.add(name, cls)
        return cls

    return deco


def available_backends() -> list[str]:
    """Built-in, `@backend` and entry-point (`inoculate.backends`) backend names, sorted."""
    return _BACKENDS.names()


def backend_class(name: str) -> Callable[..., Backend]:
    """The class (or factory) registered as `name`, without constructing it; ValueError if unknown."""
    return _BACKENDS.get(name)


INTERNAL_OPTIONS = frozenset({"self", "model", "adapter", "loaded", "engine"})
"""Constructor arguments a caller sets (the model, the adapter, an already loaded model or engine), not
options."""


def backend_options(name: str) -> tuple[dict[str, inspect.Parameter], bool]:
    """The options backend `name` accepts (its constructor's keyword arguments, less the model and
    adapter) and whether it also takes arbitrary ones (`**kwargs`, as vllm's engine arguments)."""
    target = backend_class(name)
    params = inspect.signature(target.__init__ if isinstance(target, type) else target).parameters
    named = {
        k: p
        for k, p in params.items()
        if k not in INTERNAL_OPTIONS and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
    }
    return named, any(p.kind is p.VAR_KEYWORD for p in params.values())


def generates_many(name: str) -> bool:
    """Whether backend `name` samples many adapters' jobs in one call (`Backend.generates_many`)."""
    return bool(getattr(backend_class(name), "generates_many", False))


def adapter_engine(name: str, model: str, **options: Any) -> AdapterEngine:
    """Backend `name`'s shared engine over `model` (`Backend.shared_engine`); ValueError for a backend
    without `generates_many`."""
    target = backend_class(name)
    if not generates_many(name) or not isinstance(target, type) or not issubclass(target, Backend):
        raise ValueError(f"backend {name!r} does not sample many adapters in one call")
    return target.shared_engine(model, **options)


def get_backend(name: str, **kwargs: Any) -> Backend:
    """Construct the backend registered as `name` (built-in, `@backend`, or an entry point)."""
    return backend_class(name)(**kwargs)


def generate_examples(
    backend: Backend,
    examples: Sequence[ChatExample],
    params: SamplingParams,
    *,
    system: str | None | _Keep = KEEP_SYSTEM,
) -> list[ChatExample]:
    """Sample completions for `examples` (any final assistant turn is dropped to form the prompt)."""
    return backend.generate(examples, params, system=system)
