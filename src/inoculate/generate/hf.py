"""The default backend: batched sampling with transformers `generate`, base model or base + adapter.

Sampling is done by our own logits processor with one torch.Generator per row, inside a greedy
`generate` call: so each sample depends only on its own seed (not on batch size or neighbours), and
none of the model's generation_config defaults (top_k, repetition_penalty, ...) applies.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inoculate.generate.base import Backend, Completion, SamplingParams, backend, truncate_at_stop
from inoculate.models import encode_prompts, load_model, render
from inoculate.models import seen_system_prompt as _seen_system_prompt
from inoculate.records import Message

if TYPE_CHECKING:
    import torch


def _eos_ids(model: Any, tokenizer: Any) -> list[int]:
    ids: set[int] = set()
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gen_eos, int):
        ids.add(gen_eos)
    elif gen_eos:
        ids.update(int(i) for i in gen_eos)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("neither the tokenizer nor the model's generation config names an EOS token")
    return sorted(ids)


class SeededSampler:
    """Logits processor that samples each row with its own generator (temperature, then top-p) and
    returns scores where only the drawn token is finite, so the greedy step selects it."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device):
        import torch

        self.temperature, self.top_p = temperature, top_p
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        logits = scores.float() / self.temperature
        probs = torch.softmax(logits, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = torch.sort(probs, dim=-1, descending=True)
            drop = torch.cumsum(sorted_p, dim=-1) - sorted_p >= self.top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        chosen = torch.stack(
            [torch.multinomial(probs[i], 1, generator=g)[0] for i, g in enumerate(self.generators)]
        )
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, chosen[:, None], 0.0)
        return out


@backend("hf")
class HFBackend(Backend):
    """transformers generation on a local or hub model, optionally with a PEFT adapter.

    `batch_size` counts sequences (prompt x sample) per `generate` call; prompts are sorted by length
    so batches pad little.
    """

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        *,
        chat_template: str | None = None,
        dtype: str | None = None,
        device: str | None = None,
        batch_size: int = 32,
        loaded: tuple[Any, Any] | None = None,
    ):
        super().__init__(model, adapter)
        from transformers import GenerationConfig

        self.model, self.tokenizer = loaded or load_model(
            model, adapter, chat_template=chat_template, dtype=dtype, device=device
        )
        self.tokenizer.padding_side = "left"
        self.batch_size = batch_size
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        # A clean generation config: the model's own (top_k, repetition_penalty, ...) must not leak in.
        base.generation_config = GenerationConfig(
            eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
            bos_token_id=self.tokenizer.bos_token_id,
        )

    @classmethod
    def from_loaded(
        cls, model: Any, tokenizer: Any, *, name: str, adapter: str | None = None, batch_size: int = 32
    ):
        """Wrap an already loaded model and tokenizer (e.g. to share them with `logprob`)."""
        return cls(name, adapter, loaded=(model, tokenizer), batch_size=batch_size)

    def rendered_prompt(self, messages: Sequence[Message]) -> str:
        return render(self.tokenizer, messages, add_generation_prompt=True)

    def seen_system_prompt(self, system: str | None) -> str | None:
        return _seen_system_prompt(self.tokenizer, system)

    def info(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "eos_token_ids": self.eos_ids}

    def sample(
        self, prompts: Sequence[list[Message]], seeds: Sequence[int], params: SamplingParams
    ) -> list[Completion]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        encoded = encode_prompts(self.tokenizer, prompts)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        results: list[Completion | None] = [None] * len(encoded)
        device = next(self.model.parameters()).device
        config = GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.eos_ids,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            batch = self.tokenizer.pad(
                {"input_ids": [encoded[i] for i in idx]}, padding_side="left", return_tensors="pt"
            ).to(device)
            processors = LogitsProcessorList()
            if params.temperature > 0:
                processors.append(
                    SeededSampler([seeds[i] for i in idx], params.temperature, params.top_p, device)
                )
            with torch.inference_mode():
                out = self.model.generate(
                    input_ids=batch["input_ids"],
                    attention_mask=batch["attention_mask"],
                    generation_config=config,
                    logits_processor=processors,
                )
            new = out[:, batch["input_ids"].shape[1] :].tolist()
            for row, i in enumerate(idx):
                results[i] = self._completion(new[row], params)
        return [r for r in results if r is not None]

    def _completion(self, tokens: list[int], params: SamplingParams) -> Completion:
        eos = set(self.eos_ids)
        end = next((j for j, t in enumerate(tokens) if t in eos), None)
        kept = tokens if end is None else tokens[:end]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        text, stopped = truncate_at_stop(text, params.stop)
        finish = "stop" if end is not None or stopped else "length"
        return Completion(text=text, finish_reason=finish, n_tokens=len(kept))
