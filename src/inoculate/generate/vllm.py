"""Backend on vLLM's offline engine (optional extra: `pip install 'inoculate[vllm]'`), for GPUs.

One engine (`VLLMEngine`) serves the base model and every LoRA adapter of a matrix: vLLM is started
with `enable_lora`, each adapter is a `LoRARequest` with a stable id per adapter path, and each
request carries its own. `VLLMEngine.generate_many` samples several (adapter, examples) jobs in ONE
`LLM.generate` call, so vLLM batches the adapters together (up to `max_loras` in one batch) instead
of running one engine, or one pass, per adapter. `get_backend("vllm", model=..., adapter=...)` reuses
the process's engine for the same model and engine settings (`shared_engine`), so the experiment
runner, which builds one backend per cell, starts vLLM once per run, not once per cell.

Prompts are tokenized here with the same chat-template tokenization as training and passed to
vLLM as token ids, so what vLLM conditions on is what the adapter was trained on. Each sample is
its own request with its own seed (`generate.sample_seed`), so a completion does not depend on
what else is in the batch. vLLM returns outputs in the order of its inputs; they are mapped back
to the jobs by position.

This module imports vLLM only when an engine is built. The test suite runs it against a stub
engine (tests/test_generate_vllm.py: the requests, adapters, seeds and order); vLLM itself needs a
GPU (benchmarks/gpu.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inoculate.generate.base import (
    KEEP_SYSTEM,
    Backend,
    Completion,
    SamplingParams,
    backend,
    plan_samples,
    truncate_at_stop,
)
from inoculate.models import encode_prompts, load_tokenizer, render
from inoculate.models import seen_system_prompt as _seen_system_prompt
from inoculate.records import ChatExample, Message


def _vllm() -> Any:
    try:
        import vllm
    except ImportError as e:
        raise ImportError("the vllm backend needs vLLM: pip install 'inoculate[vllm]'") from e
    return vllm


@dataclass(frozen=True)
class AdapterJob:
    """Examples to sample through one adapter (None: the base model), with their system turn rule
    (`generate.with_system`)."""

    adapter: str | None
    examples: Sequence[ChatExample]
    system: Any = KEEP_SYSTEM


class VLLMEngine:
    """One vLLM engine for a base model, sampling through any number of LoRA adapters.

    `llm` is an already built engine (anything with vLLM's `LLM.generate`); otherwise one is built
    with `enable_lora`, `max_lora_rank`, `max_loras` and the other `llm_kwargs` (vLLM's engine
    arguments, e.g. `gpu_memory_utilization`)."""

    def __init__(
        self,
        model: str,
        *,
        tokenizer: str | None = None,
        chat_template: str | None = None,
        max_lora_rank: int = 64,
        max_loras: int = 8,
        seed: int = 0,
        llm: Any = None,
        **llm_kwargs: Any,
    ):
        vllm = _vllm() if llm is None else None  # before any loading: a missing vLLM is said first
        self.model_name = str(model)
        self.chat_template = chat_template
        self.tokenizer = load_tokenizer(tokenizer or model, chat_template=chat_template)
        self._tokenizers: dict[str, Any] = {}
        if vllm is not None:
            llm = vllm.LLM(
                model=self.model_name,
                enable_lora=True,
                max_lora_rank=max_lora_rank,
                max_loras=max_loras,
                seed=seed,
                **llm_kwargs,
            )
        self.llm = llm
        self._loras: dict[str, Any] = {}

    def lora_request(self, adapter: str | os.PathLike[str] | None) -> Any:
        """The adapter's `LoRARequest` (None for the base model): one id per adapter path, so vLLM
        loads each adapter once and keeps it in its adapter cache."""
        if adapter is None:
            return None
        path = str(Path(adapter).resolve())
        if path not in self._loras:
            from vllm.lora.request import LoRARequest

            self._loras[path] = LoRARequest(str(adapter), len(self._loras) + 1, path)
        return self._loras[path]

    def tokenizer_for(self, adapter: str | os.PathLike[str] | None) -> Any:
        """The tokenizer saved with the adapter when it holds one (as the hf backend reads it), else
        the engine's."""
        if adapter is None or not (Path(adapter) / "tokenizer_config.json").is_file():
            return self.tokenizer
        path = str(Path(adapter).resolve())
        if path not in self._tokenizers:
            self._tokenizers[path] = load_tokenizer(path, chat_template=self.chat_template)
        return self._tokenizers[path]

    def backend(self, adapter: str | os.PathLike[str] | None = None) -> VLLMBackend:
        """A backend sampling through `adapter` (None: the base model) on this engine."""
        return VLLMBackend(self.model_name, None if adapter is None else str(adapter), engine=self)

    def complete(
        self,
        prompt_ids: Sequence[list[int]],
        seeds: Sequence[int],
        loras: Sequence[Any],
        params: SamplingParams,
    ) -> list[Completion]:
        """One completion per tokenized prompt, prompt i sampled with `seeds[i]` through `loras[i]`
        (None: the base model), all in one `LLM.generate` call."""
        vllm = _vllm()
        if not (len(prompt_ids) == len(seeds) == len(loras)):
            raise ValueError("prompts, seeds and loras differ in length")
        if not prompt_ids:
            return []
        requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        sampling = [
            vllm.SamplingParams(
                n=1,
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=-1,
                repetition_penalty=1.0,
                max_tokens=params.max_new_tokens,
                seed=int(s),
                stop=list(params.stop) or None,
            )
            for s in seeds
        ]
        lora: Any = list(loras) if any(r is not None for r in loras) else None
        outputs = list(
            self.llm.generate(requests, sampling_params=sampling, lora_request=lora, use_tqdm=False)
        )
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
        completions = []
        for out in outputs:
            o = out.outputs[0]
            text, _ = truncate_at_stop(o.text, params.stop)
            finish = "length" if o.finish_reason == "length" else "stop"
            completions.append(Completion(text=text, finish_reason=finish, n_tokens=len(o.token_ids)))
        return completions

    def generate_many(self, jobs: Sequence[AdapterJob], params: SamplingParams) -> list[list[ChatExample]]:
        """Each job's generation records (as `Backend.generate` gives them), all jobs sampled in one
        engine call: vLLM batches requests of different adapters together."""
        backends = [self.backend(job.adapter) for job in jobs]
        plans = [plan_samples(job.examples, params, system=job.system) for job in jobs]
        prompts, seeds, loras = [], [], []
        for be, plan in zip(backends, plans, strict=True):
            prompts += be.encode(plan.sample_prompts)
            seeds += plan.seeds
            loras += [be._lora] * len(plan.rows)
        completions = self.complete(prompts, seeds, loras, params)
        out, start = [], 0
        for be, plan in zip(backends, plans, strict=True):
            end = start + len(plan.rows)
            out.append(be.records(plan, completions[start:end]))
            start = end
        return out


_ENGINES: dict[str, VLLMEngine] = {}


def shared_engine(model: str, **settings: Any) -> VLLMEngine:
    """The process's engine for `model` with these settings, built on first use. vLLM holds most of
    the GPU's memory for its cache (`gpu_memory_utilization`), so one engine per process is the rule."""
    key = json.dumps([str(model), settings], sort_keys=True, default=str)
    if key not in _ENGINES:
        _ENGINES[key] = VLLMEngine(model, **settings)
    return _ENGINES[key]


@backend("vllm")
class VLLMBackend(Backend):
    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        *,
        chat_template: str | None = None,
        max_lora_rank: int = 64,
        max_loras: int = 8,
        seed: int = 0,
        engine: VLLMEngine | None = None,
        **llm_kwargs: Any,
    ):
        super().__init__(model, adapter)
        if engine is None:
            engine = shared_engine(
                model,
                chat_template=chat_template,
                max_lora_rank=max_lora_rank,
                max_loras=max_loras,
                seed=seed,
                **llm_kwargs,
            )
        self.engine = engine
        self.tokenizer = engine.tokenizer_for(adapter)
        self._lora = engine.lora_request(adapter)

    def encode(self, prompts: Sequence[list[Message]]) -> list[list[int]]:
        """Prompts as token ids, with the training tokenization (chat template, generation header)."""
        return encode_prompts(self.tokenizer, prompts)

    def for_adapter(self, adapter: str | None) -> VLLMBackend:
        """The same engine, sampling through another adapter (or the base model for None)."""
        return self.engine.backend(adapter)

    def rendered_prompt(self, messages: Sequence[Message]) -> str:
        return render(self.tokenizer, messages, add_generation_prompt=True)

    def seen_system_prompt(self, system: str | None) -> str | None:
        return _seen_system_prompt(self.tokenizer, system)

    def sample(
        self, prompts: Sequence[list[Message]], seeds: Sequence[int], params: SamplingParams
    ) -> list[Completion]:
        return self.engine.complete(self.encode(prompts), seeds, [self._lora] * len(prompts), params)
