"""Backend on vLLM's offline engine (optional extra: `pip install 'inoculate[vllm]'`), for GPUs.

One engine (`VLLMEngine`) serves the base model and every LoRA adapter of a matrix: vLLM is started
with `enable_lora`, each adapter is a `LoRARequest` with a stable id per adapter path, and each
request carries its own. `VLLMEngine.generate_many` samples several (adapter, examples) jobs in ONE
`LLM.generate` call, so vLLM batches the adapters together (up to `max_loras` in one batch) instead
of running one engine, or one pass, per adapter; each job may carry its own sampling parameters (a
matrix's cells differ in their seed). The backend says so (`generates_many`), and the experiment
runner then trains every cell first and evaluates the whole matrix in one call.
`get_backend("vllm", model=..., adapter=...)` reuses the process's engine for the same model and
engine settings (`shared_engine`), so code that builds one backend per adapter (the runner's
cell-by-cell path, `inoculate generate`) starts vLLM once per process, not once per adapter.

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
from pathlib import Path
from typing import Any

from inoculate.generate.base import (
    AdapterJob,
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
        params: SamplingParams | Sequence[SamplingParams],
    ) -> list[Completion]:
        """One completion per tokenized prompt, prompt i sampled with `seeds[i]` through `loras[i]`
        (None: the base model), all in one `LLM.generate` call. `params`: one for every prompt, or
        one per prompt."""
        vllm = _vllm()
        each = [params] * len(prompt_ids) if isinstance(params, SamplingParams) else list(params)
        if not (len(prompt_ids) == len(seeds) == len(loras) == len(each)):
            raise ValueError("prompts, seeds, loras and params differ in length")
        if not prompt_ids:
            return []
        requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        sampling = [
            vllm.SamplingParams(
                n=1,
                temperature=p.temperature,
                top_p=p.top_p,
                top_k=-1,
                repetition_penalty=1.0,
                max_tokens=p.max_new_tokens,
                seed=int(s),
                stop=list(p.stop) or None,
            )
            for s, p in zip(seeds, each, strict=True)
        ]
        lora: Any = list(loras) if any(r is not None for r in loras) else None
        outputs = list(
            self.llm.generate(requests, sampling_params=sampling, lora_request=lora, use_tqdm=False)
        )
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
        completions = []
        for out, p in zip(outputs, each, strict=True):
            o = out.outputs[0]
            text, _ = truncate_at_stop(o.text, p.stop)
            finish = "length" if o.finish_reason == "length" else "stop"
            completions.append(Completion(text=text, finish_reason=finish, n_tokens=len(o.token_ids)))
        return completions

    def generate_many(
        self, jobs: Sequence[AdapterJob], params: SamplingParams | None = None
    ) -> list[list[ChatExample]]:
        """Each job's generation records (as `Backend.generate` gives them), all jobs sampled in one
        engine call: vLLM batches requests of different adapters together. A job samples with its
        own `params` when it has them, else with `params`."""
        backends = [self.backend(job.adapter) for job in jobs]
        plans = [plan_samples(job.examples, _params_of(job, params), system=job.system) for job in jobs]
        prompts, seeds, loras, each = [], [], [], []
        for be, plan in zip(backends, plans, strict=True):
            prompts += be.encode(plan.sample_prompts)
            seeds += plan.seeds
            loras += [be._lora] * len(plan.rows)
            each += [plan.params] * len(plan.rows)
        completions = self.complete(prompts, seeds, loras, each)
        out, start = [], 0
        for be, plan in zip(backends, plans, strict=True):
            end = start + len(plan.rows)
            out.append(be.records(plan, completions[start:end]))
            start = end
        return out


def _params_of(job: AdapterJob, params: SamplingParams | None) -> SamplingParams:
    if job.params is not None:
        return job.params
    if params is None:
        raise ValueError(f"a job of adapter {job.adapter!r} has no sampling parameters, nor has the call")
    return params


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
    generates_many = True

    @classmethod
    def shared_engine(
        cls,
        model: str,
        *,
        chat_template: str | None = None,
        max_lora_rank: int = 64,
        max_loras: int = 8,
        seed: int = 0,
        **llm_kwargs: Any,
    ) -> VLLMEngine:
        """The process's engine for `model` and these options (the backend's own), built on first use:
        the one every `VLLMBackend` with the same options samples through."""
        return shared_engine(
            model,
            chat_template=chat_template,
            max_lora_rank=max_lora_rank,
            max_loras=max_loras,
            seed=seed,
            **llm_kwargs,
        )

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
            engine = self.shared_engine(
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
