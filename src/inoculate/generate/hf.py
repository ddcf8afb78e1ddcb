"""The default backend: batched sampling with transformers `generate`, base model or base + adapter.

Sampling is done by our own logits processor with one torch.Generator per row, inside a greedy
`generate` call: so each sample depends only on its own seed (not on batch size or neighbours), and
none of the model's generation_config defaults (top_k, repetition_penalty, ...) applies.

Asked for logprobs (`sample(..., top_logprobs=k)`), a recording processor placed before the sampler
reads each step's raw logits inside the same `generate` call: each generated token's log-probability
and the k most likely tokens, under the model's own distribution (log-softmax of the raw logits, not
the temperature-scaled or top-p-cut one), as OpenAI reports them. Nothing is recorded otherwise.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from inoculate.generate.base import (
    Backend,
    Completion,
    SamplingParams,
    TokenLogprob,
    backend,
    truncate_at_stop,
)
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
    returns scores where only the drawn token is finite, so the greedy step selects it.

    A row's token is `argmax(p / q)` with `q` ~ Exp(1) drawn from the row's generator: the exponential
    race, which is exactly what `torch.multinomial(p, 1, generator=g)` computes (same draws, same
    token), without its per-row checks and allocations."""

    def __init__(self, seeds: Sequence[int], temperature: float, top_p: float, device: torch.device):
        import torch

        self.temperature, self.top_p = temperature, top_p
        self.generators = [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self._race: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        logits = scores.float() / self.temperature
        probs = torch.softmax(logits, dim=-1)
        if self.top_p < 1.0:
            sorted_p, order = torch.sort(probs, dim=-1, descending=True)
            drop = torch.cumsum(sorted_p, dim=-1) - sorted_p >= self.top_p
            sorted_p = sorted_p.masked_fill(drop, 0.0)
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p)
        if self._race is None or self._race.shape != probs.shape:
            self._race = torch.empty_like(probs)
        for row, g in zip(self._race, self.generators, strict=True):
            row.exponential_(1, generator=g)
        chosen = (probs / self._race).argmax(dim=-1)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(-1, chosen[:, None], 0.0)
        return out


class LogprobRecorder:
    """Logits processor that records, per step, the log-softmax of the scores it is given (the raw
    logits when it comes first) at the token chosen at that step and its top `k`; it changes nothing.

    The token chosen at a step is only known at the next call (the last column of `input_ids`) or,
    for the last step, from the finished sequences: call `finish` with them."""

    def __init__(self, k: int):
        self.k = k
        self.chosen: list[torch.Tensor] = []  # per step: (batch,)
        self.top_values: list[torch.Tensor] = []  # per step: (batch, k)
        self.top_ids: list[torch.Tensor] = []
        self._last: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        if self._last is not None:
            self.chosen.append(self._last.gather(-1, input_ids[:, -1:]).squeeze(-1))
        logprobs = torch.log_softmax(scores.float(), dim=-1)
        if self.k:
            values, ids = logprobs.topk(min(self.k, logprobs.shape[-1]), dim=-1)
            self.top_values.append(values)
            self.top_ids.append(ids)
        self._last = logprobs
        return scores

    def finish(
        self, new_tokens: torch.Tensor
    ) -> tuple[list[list[float]], list[list[list[tuple[int, float]]]]]:
        """Per row: the chosen tokens' logprobs and, per step, the top (id, logprob) pairs."""
        import torch

        if self._last is not None:
            self.chosen.append(self._last.gather(-1, new_tokens[:, -1:]).squeeze(-1))
            self._last = None
        steps = new_tokens.shape[1]
        if len(self.chosen) != steps:
            raise RuntimeError(f"recorded {len(self.chosen)} steps of logprobs for {steps} generated tokens")
        rows = new_tokens.shape[0]
        chosen = torch.stack(self.chosen, dim=1).tolist() if steps else [[] for _ in range(rows)]
        if self.k and steps:
            values = torch.stack(self.top_values, dim=1).tolist()  # (batch, steps, k)
            ids = torch.stack(self.top_ids, dim=1).tolist()
            top = [
                [list(zip(i, v, strict=True)) for i, v in zip(ri, rv, strict=True)]
                for ri, rv in zip(ids, values, strict=True)
            ]
        else:
            top = [[[] for _ in range(steps)] for _ in range(rows)]
        return chosen, top


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte-level alphabet: each byte as a printable character."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class TokenText:
    """Each token id's own bytes: byte-level BPE pieces mapped back through GPT-2's byte alphabet,
    sentencepiece pieces with `▁` as a space and `<0xNN>` as that byte, added and special tokens as
    their text, anything else as `tokenizer.decode([id])`. Cached per id."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.byte_level = _is_byte_level(tokenizer)
        self.byte_decoder = {c: b for b, c in _bytes_to_unicode().items()}
        self.added = {int(i): str(t) for i, t in getattr(tokenizer, "added_tokens_decoder", {}).items()}
        self._cache: dict[int, tuple[str, bytes]] = {}

    def __call__(self, token_id: int) -> tuple[str, bytes]:
        hit = self._cache.get(token_id)
        if hit is None:
            raw = self._raw(token_id)
            hit = self._cache[token_id] = (raw.decode("utf-8", errors="backslashreplace"), raw)
        return hit

    def _raw(self, token_id: int) -> bytes:
        if token_id in self.added:
            return self.added[token_id].encode()
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        if isinstance(piece, str):
            if self.byte_level and all(c in self.byte_decoder for c in piece):
                return bytes(self.byte_decoder[c] for c in piece)
            if not self.byte_level:
                m = _BYTE_FALLBACK.fullmatch(piece)
                if m:
                    return bytes([int(m.group(1), 16)])
                if "\u2581" in piece:
                    return piece.replace("\u2581", " ").encode()
        return self.tokenizer.decode([token_id], skip_special_tokens=False).encode()


def _message_key(m: Any) -> tuple[Any, ...]:
    if isinstance(m, Message):
        return (m.role, m.content, m.name, m.weight)
    return tuple(sorted(dict(m).items()))


def _is_byte_level(tokenizer: Any) -> bool:
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if decoder is None:
        return False
    try:
        state = json.loads(decoder.__getstate__())
    except Exception:
        return False
    parts = state.get("decoders") or [state]
    return any(isinstance(d, dict) and d.get("type") == "ByteLevel" for d in parts)


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
        self._token_text = TokenText(self.tokenizer)
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
        self,
        prompts: Sequence[list[Message]],
        seeds: Sequence[int],
        params: SamplingParams,
        *,
        top_logprobs: int | None = None,
    ) -> list[Completion]:
        """One completion per prompt (see `Backend.sample`). With `top_logprobs` (0 or more), each
        completion also carries its tokens' logprobs and the `top_logprobs` most likely tokens at each
        position (the model's raw distribution; see `TokenLogprob`)."""
        import torch
        from transformers import GenerationConfig, LogitsProcessorList

        encoded = self._encode(prompts)
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
            recorder = None if top_logprobs is None else LogprobRecorder(top_logprobs)
            if recorder is not None:
                processors.append(recorder)  # first: it must see the raw logits
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
            new_t = out[:, batch["input_ids"].shape[1] :]
            recorded = None if recorder is None else recorder.finish(new_t)
            new = new_t.tolist()
            for row, i in enumerate(idx):
                lp = None if recorded is None else (recorded[0][row], recorded[1][row])
                results[i] = self._completion(new[row], params, lp)
        return [r for r in results if r is not None]

    def _encode(self, prompts: Sequence[list[Message]]) -> list[list[int]]:
        """Token ids of each prompt; a prompt repeated (n samples of one question) is encoded once."""
        keys = [tuple(_message_key(m) for m in p) for p in prompts]
        first: dict[tuple[Any, ...], int] = {}
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        unique = list(first.values())
        ids = dict(zip(unique, encode_prompts(self.tokenizer, [prompts[i] for i in unique]), strict=True))
        return [ids[first[k]] for k in keys]

    def _completion(
        self,
        tokens: list[int],
        params: SamplingParams,
        logprobs: tuple[list[float], list[list[tuple[int, float]]]] | None = None,
    ) -> Completion:
        eos = set(self.eos_ids)
        end = next((j for j, t in enumerate(tokens) if t in eos), None)
        kept = tokens if end is None else tokens[:end]
        full = self.tokenizer.decode(kept, skip_special_tokens=True)
        text, stopped = truncate_at_stop(full, params.stop)
        finish = "stop" if end is not None or stopped else "length"
        entries = None
        if logprobs is not None:
            # the tokens of `text`: all kept ones, or those up to the one that completes a stop-cut text
            n = len(kept) if not stopped else self._tokens_covering(kept, len(text))
            entries = tuple(self._entry(t, logprobs[0][j], logprobs[1][j]) for j, t in enumerate(kept[:n]))
        return Completion(text=text, finish_reason=finish, n_tokens=len(kept), logprobs=entries)

    def _tokens_covering(self, tokens: list[int], n_chars: int) -> int:
        """The fewest leading tokens whose decoded text is at least `n_chars` long (binary search)."""
        lo, hi = 0, len(tokens)
        while lo < hi:
            mid = (lo + hi) // 2
            if len(self.tokenizer.decode(tokens[:mid], skip_special_tokens=True)) >= n_chars:
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _entry(self, token_id: int, logprob: float, top: list[tuple[int, float]]) -> TokenLogprob:
        text, raw = self._token_text(token_id)
        alts = tuple(TokenLogprob(*self._token_text(i), logprob=v) for i, v in top)
        return TokenLogprob(token=text, raw=raw, logprob=logprob, top=alts)
