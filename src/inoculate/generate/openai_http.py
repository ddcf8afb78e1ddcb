"""Backend for any OpenAI-compatible chat-completions server (`vllm serve`, `inoculate serve`, ...).

One request per sample (n=1) carrying that sample's own seed, sent `concurrency` at a time so the
server can batch them. Standard library HTTP only.

The server applies the chat template, so the rendered prompt is unknown here unless `tokenizer`
(a local model or tokenizer path with the same template) is given. Note that `vllm serve` fills
unset sampling fields (top_k, repetition_penalty, ...) from the model's generation_config: start it
with `--generation-config vllm`, or pin them with `extra_body={"top_k": -1, "repetition_penalty": 1.0}`.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from inoculate.generate.base import Backend, Completion, SamplingParams, backend, truncate_at_stop
from inoculate.models import is_adapter_dir, load_tokenizer, render
from inoculate.models import seen_system_prompt as _seen_system_prompt
from inoculate.records import Message


class ServerError(RuntimeError):
    pass


@backend("openai_http")
class OpenAIHTTPBackend(Backend):
    """`model` is the served model name; with `adapter` (a served adapter name: vLLM serves LoRA
    adapters under the names given to `--lora-modules NAME=PATH`, `inoculate serve` under
    `--lora-module NAME=PATH`), requests name the adapter.

    `adapter` may instead be a local adapter directory (as `inoculate run` passes a trained cell's) when
    `adapter_name` gives the name it is served under; the directory is then recorded as the adapter
    and the name is what requests ask for. `inoculate run` names a cell's adapter
    `<condition>-seed<k>` (`experiment.cell.served_adapter_name`)."""

    def __init__(
        self,
        model: str,
        adapter: str | None = None,
        *,
        base_url: str = "http://127.0.0.1:8000/v1",
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        tokenizer: str | None = None,
        chat_template: str | None = None,
        concurrency: int = 8,
        timeout: float = 600.0,
        extra_body: dict[str, Any] | None = None,
        adapter_name: str | None = None,
    ):
        super().__init__(model, adapter)
        if adapter_name is not None and adapter is None:
            raise ValueError("adapter_name names a served adapter: give the adapter too")
        if adapter_name is None and adapter is not None and is_adapter_dir(adapter):
            raise ValueError(
                f"adapter {adapter} is a local adapter directory, but an HTTP server is asked for models by "
                "name: serve it under a name (inoculate serve --lora-module NAME=PATH, or vllm serve "
                "--lora-modules NAME=PATH) and pass that name as the adapter (or as adapter_name)"
            )
        self.served_model = adapter_name or self.adapter or self.model_name
        self.base_url = base_url.rstrip("/")
        # The key is read from `api_key_env` when each request is sent, so it is never stored here
        # (nor recorded in info()); an explicit `api_key` (Python use only) wins over the variable.
        self._api_key = api_key
        self.api_key_env = api_key_env
        self.concurrency = max(1, concurrency)
        self.timeout = timeout
        self.extra_body = dict(extra_body or {})
        self.tokenizer = load_tokenizer(tokenizer, chat_template=chat_template) if tokenizer else None

    def info(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "extra_body": self.extra_body, "served_model": self.served_model}

    def rendered_prompt(self, messages: Sequence[Message]) -> str | None:
        return render(self.tokenizer, messages, add_generation_prompt=True) if self.tokenizer else None

    def seen_system_prompt(self, system: str | None) -> str | None:
        return _seen_system_prompt(self.tokenizer, system) if self.tokenizer else None

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        key = self._api_key if self._api_key is not None else os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        req = urllib.request.Request(
            self.base_url + path, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return json.loads(resp.read().decode())
        except urllib.error.HTTPError as e:
            detail = e.read().decode(errors="replace")[:500]
            raise ServerError(f"{self.base_url}{path}: HTTP {e.code}: {detail}") from None
        except urllib.error.URLError as e:
            raise ServerError(f"{self.base_url}{path}: cannot connect ({e.reason})") from None

    def _one(self, messages: list[Message], seed: int, params: SamplingParams) -> Completion:
        body: dict[str, Any] = {
            "model": self.served_model,
            "messages": [m.model_dump() for m in messages],
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
            "n": 1,
            "seed": seed,
            **self.extra_body,
        }
        if params.stop:
            body["stop"] = list(params.stop)
        data = self._post("/chat/completions", body)
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise ServerError(f"unexpected response from {self.base_url}: {str(data)[:300]}") from None
        text, _ = truncate_at_stop(text, params.stop)
        finish = "length" if choice.get("finish_reason") == "length" else "stop"
        return Completion(
            text=text, finish_reason=finish, n_tokens=(data.get("usage") or {}).get("completion_tokens")
        )

    def sample(
        self, prompts: Sequence[list[Message]], seeds: Sequence[int], params: SamplingParams
    ) -> list[Completion]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(
                pool.map(lambda ps: self._one(ps[0], ps[1], params), zip(prompts, seeds, strict=True))
            )
