"""Backend on vLLM's offline engine (optional extra: `pip install 'inoculate[vllm]'`), for GPUs.

Prompts are tokenized here with the same chat-template tokenization as training and passed to
vLLM as token ids, so what vLLM conditions on is what the adapter was trained on. Each sample is
its own request with its own seed. An adapter is a `LoRARequest`; `for_adapter` gives a backend for
another adapter that shares the loaded engine (vLLM swaps adapters per request).

This module imports vLLM only when the backend is constructed. It is not exercised by the test
suite (vLLM needs a GPU); the hf and openai_http backends are.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inoculate.generate.base import Backend, Completion, SamplingParams, backend, truncate_at_stop
from inoculate.models import encode_prompts, load_tokenizer, render
from inoculate.models import seen_system_prompt as _seen_system_prompt
from inoculate.records import Message

_lora_ids = itertools.count(1)


@backend("vllm")
class VLLMBackend(Backend):
    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        *,
        chat_template: str | None = None,
        max_lora_rank: int = 64,
        seed: int = 0,
        **llm_kwargs: Any,
    ):
        super().__init__(model, adapter)
        try:
            from vllm import LLM
        except ImportError as e:
            raise ImportError("the vllm backend needs vLLM: pip install 'inoculate[vllm]'") from e
        has_tok = adapter is not None and (Path(adapter) / "tokenizer_config.json").is_file()
        self.tokenizer = load_tokenizer(adapter if has_tok else model, chat_template=chat_template)
        self.llm = LLM(
            model=model,
            enable_lora=True,
            max_lora_rank=max_lora_rank,
            seed=seed,
            **llm_kwargs,
        )
        self._lora = self._lora_request(adapter)

    @staticmethod
    def _lora_request(adapter: str | None) -> Any:
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(str(adapter), next(_lora_ids), str(adapter))

    def for_adapter(self, adapter: str | None) -> VLLMBackend:
        """The same engine, sampling through another adapter (or the base model for None)."""
        other = copy.copy(self)
        other.adapter = None if adapter is None else str(adapter)
        other._lora = self._lora_request(adapter)
        return other

    def rendered_prompt(self, messages: Sequence[Message]) -> str:
        return render(self.tokenizer, messages, add_generation_prompt=True)

    def seen_system_prompt(self, system: str | None) -> str | None:
        return _seen_system_prompt(self.tokenizer, system)

    def sample(
        self, prompts: Sequence[list[Message]], seeds: Sequence[int], params: SamplingParams
    ) -> list[Completion]:
        from vllm import SamplingParams as VLLMSamplingParams

        requests = [{"prompt_token_ids": ids} for ids in encode_prompts(self.tokenizer, prompts)]
        sampling = [
            VLLMSamplingParams(
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
        outputs = self.llm.generate(
            requests, sampling_params=sampling, lora_request=self._lora, use_tqdm=False
        )
        completions = []
        for out in outputs:
            o = out.outputs[0]
            text, _ = truncate_at_stop(o.text, params.stop)
            finish = "length" if o.finish_reason == "length" else "stop"
            completions.append(Completion(text=text, finish_reason=finish, n_tokens=len(o.token_ids)))
        return completions
