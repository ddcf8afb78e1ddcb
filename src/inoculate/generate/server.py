"""A small OpenAI chat-completions server backed by the hf backend (`inoculate serve`).

Serves `POST /v1/chat/completions` and `GET /v1/models` with the standard library's HTTP server, one
generation at a time. It is for local use and tests of the openai_http backend, not production
serving (use `vllm serve` for that). `max_tokens` is required: no server-side length default.
A request's sample i uses seed `seed` for i = 0 and a seed derived from it otherwise, so an n=1
request with seed s reproduces the hf backend's sample whose seed is s.

Several PEFT adapters can be served over one base model by name (`--lora-module NAME=PATH`, as vLLM's
`--lora-modules`): the request's `model` picks one. Requests are bounded (`Limits`: body size, `n`,
`max_tokens`, socket timeout), and every malformed request gets a 4xx JSON error, never a dropped
connection or a 200.

`logprobs: true` (with `top_logprobs`, 0 to 20) adds OpenAI's `choices[i].logprobs.content`: per
generated token its text, bytes, log-probability and the most likely tokens at that position, all
under the model's own distribution (log-softmax of the raw logits, before temperature and top-p, as
OpenAI reports), so the served model can be a logprob-reading judge. Without it `logprobs` is null.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from inoculate.generate.base import SamplingParams, TokenLogprob, sample_seed
from inoculate.generate.hf import HFBackend
from inoculate.models import is_adapter_dir
from inoculate.records import Message


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Limits:
    """What one request may ask for. A request over a limit is refused (413 for the body, 400 for the
    rest), so no request holds the model for long and none reads an unbounded body."""

    max_body_bytes: int = 1_000_000
    max_n: int = 16
    max_tokens: int = 4096
    timeout_s: float = 30.0
    """Socket timeout: a client that stops sending (a short body, no body) is dropped after this."""

    def __post_init__(self) -> None:
        if self.max_body_bytes < 1 or self.max_n < 1 or self.max_tokens < 1 or not self.timeout_s > 0:
            raise ValueError("server limits must be positive")


_ROLES = ("system", "user", "assistant")
_MAX_SEED = 1 << 64
MAX_TOP_LOGPROBS = 20
"""OpenAI's cap on `top_logprobs`."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _decode_body(raw: bytes) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _BadRequest(400, f"the request body is not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        body = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise _BadRequest(400, "the request body is nested too deeply") from None
    except ValueError as e:  # JSONDecodeError is a ValueError, as is NaN/Infinity
        raise _BadRequest(400, f"invalid JSON: {e}") from None
    if not isinstance(body, dict):
        raise _BadRequest(400, "the request body must be a JSON object")
    return body


def _number(body: dict[str, Any], key: str, default: float) -> float:
    v = body.get(key, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise _BadRequest(400, f"{key}: expected a number, got {json.dumps(v)[:40]}")
    return float(v)


def _integer(body: dict[str, Any], key: str) -> int | None:
    v = body.get(key)
    if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
        raise _BadRequest(400, f"{key}: expected an integer, got {json.dumps(v)[:40]}")
    return v


def _messages(raw: Any) -> list[Message]:
    if not isinstance(raw, list) or not raw:
        raise _BadRequest(400, "messages: expected a non-empty list of {role, content} objects")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict):
            raise _BadRequest(400, f"messages[{i}]: expected an object with role and content")
        role, content = m.get("role"), m.get("content")
        if role not in _ROLES:
            raise _BadRequest(400, f"messages[{i}].role: expected one of {', '.join(_ROLES)}")
        if not isinstance(content, str):
            raise _BadRequest(400, f"messages[{i}].content: expected a string")
        out.append(Message(role=role, content=content))
    return out


def _top_logprobs(body: dict[str, Any]) -> int | None:
    """None when no logprobs are asked for, else how many alternatives each token gets (0 to 20)."""
    want = body.get("logprobs")
    if want is not None and not isinstance(want, bool):
        raise _BadRequest(400, f"logprobs: expected a boolean, got {json.dumps(want)[:40]}")
    top = _integer(body, "top_logprobs")
    if top is not None and not want:
        raise _BadRequest(400, "top_logprobs: only allowed when logprobs is true")
    if top is not None and not 0 <= top <= MAX_TOP_LOGPROBS:
        raise _BadRequest(400, f"top_logprobs: must be between 0 and {MAX_TOP_LOGPROBS}")
    return (top or 0) if want else None


def _logprob(x: float) -> float:
    return x if math.isfinite(x) else -9999.0  # OpenAI's floor; JSON has no -Infinity


def _token_json(t: TokenLogprob) -> dict[str, Any]:
    return {"token": t.token, "logprob": _logprob(t.logprob), "bytes": list(t.raw)}


def _logprobs_json(entries: tuple[TokenLogprob, ...] | None) -> dict[str, Any] | None:
    if entries is None:
        return None
    return {
        "content": [{**_token_json(t), "top_logprobs": [_token_json(a) for a in t.top]} for t in entries],
        "refusal": None,
    }


def _parse(body: dict[str, Any], limits: Limits) -> tuple[list[Message], SamplingParams]:
    if body.get("stream"):
        raise _BadRequest(400, "stream: streaming is not supported by this server")
    messages = _messages(body.get("messages"))
    max_tokens = _integer(body, "max_completion_tokens")
    if max_tokens is None:
        max_tokens = _integer(body, "max_tokens")
    if max_tokens is None:
        raise _BadRequest(400, "max_tokens is required (this server has no default length)")
    if not 1 <= max_tokens <= limits.max_tokens:
        raise _BadRequest(400, f"max_tokens: must be between 1 and {limits.max_tokens} (the server's cap)")
    n = _integer(body, "n")
    n = 1 if n is None else n
    if not 1 <= n <= limits.max_n:
        raise _BadRequest(400, f"n: must be between 1 and {limits.max_n} (the server's cap)")
    seed = _integer(body, "seed")
    if seed is not None and not -(1 << 63) <= seed < _MAX_SEED:
        raise _BadRequest(400, "seed: out of range (a 64-bit integer)")
    stop = body.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or len(stop) > 16 or not all(isinstance(s, str) for s in stop):
        raise _BadRequest(400, "stop: expected a string or a list of at most 16 strings")
    try:
        params = SamplingParams(
            temperature=_number(body, "temperature", 1.0),
            top_p=_number(body, "top_p", 1.0),
            max_new_tokens=max_tokens,
            n=n,
            seed=seed if seed is not None else int.from_bytes(uuid.uuid4().bytes[:7], "big"),
            stop=stop,
        )
    except ValidationError as e:
        msg = "; ".join(f"{'.'.join(map(str, x['loc']))}: {x['msg']}" for x in e.errors())
        raise _BadRequest(400, msg) from None
    return messages, params


def _file_stamp(path: Path) -> tuple[int, ...]:
    return tuple(f.stat().st_mtime_ns for f in sorted(path.glob("adapter_*")) if f.is_file())


class AdapterSet:
    """Named PEFT adapters over the backend's base model, loaded when first requested (and again
    when the adapter's files change, as when a run retrains a cell), switched per request.

    Call `activate` with the model lock held."""

    def __init__(self, backend: HFBackend, adapters: dict[str, str]):
        self.backend = backend
        self.paths = {name: Path(p) for name, p in adapters.items()}
        self._loaded: dict[str, tuple[int, ...]] = {}
        for name, path in self.paths.items():
            if path.exists() and not is_adapter_dir(path):
                raise FileNotFoundError(f"--lora-module {name}={path}: not a PEFT adapter directory")

    def load_existing(self) -> None:
        for name, path in self.paths.items():
            if is_adapter_dir(path):
                self._ensure(name)

    def _ensure(self, name: str) -> None:
        from peft import PeftModel

        path = self.paths[name]
        if not is_adapter_dir(path):
            raise _BadRequest(404, f"model {name!r}: its adapter {path} does not exist (yet)")
        stamp = _file_stamp(path)
        if self._loaded.get(name) == stamp:
            return
        model = self.backend.model
        if isinstance(model, PeftModel):
            if name in self._loaded:
                model.delete_adapter(name)
            model.load_adapter(str(path), adapter_name=name)
        else:
            model = PeftModel.from_pretrained(model, str(path), adapter_name=name)
        model.eval()
        self.backend.model = model
        self._loaded[name] = stamp

    @contextlib.contextmanager
    def activate(self, name: str | None) -> Iterator[None]:
        """Generate with adapter `name`, or with the base model for None."""
        if name is not None:
            self._ensure(name)
            self.backend.model.set_adapter(name)
            yield
        elif self._loaded:
            with self.backend.model.disable_adapter():
                yield
        else:
            yield


def make_server(
    backend: HFBackend,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_name: str | None = None,
    *,
    adapters: dict[str, str] | None = None,
    limits: Limits | None = None,
) -> ThreadingHTTPServer:
    """A ThreadingHTTPServer bound to (host, port); port 0 picks a free one (see `server_address`).

    `adapters` ({served name: adapter dir}, like vLLM's `--lora-modules`) serves PEFT adapters over
    the backend's base model: a request's `model` picks one; the base model's own name (or no
    `model`) picks none. An adapter that does not exist yet is loaded when first requested."""
    limits = limits or Limits()
    served = served_name or backend.adapter or backend.model_name
    adapter_set = AdapterSet(backend, dict(adapters or {})) if adapters else None
    if adapters:
        if backend.adapter is not None:
            raise ValueError("serve either one adapter (--adapter) or named ones (--lora-module), not both")
        if served in adapters:
            raise ValueError(f"adapter name {served!r} is the base model's served name; pick another")
        assert adapter_set is not None
        adapter_set.load_existing()
    names = [served, *(adapters or {})]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = limits.timeout_s  # socket timeout for every read and write of this connection

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, obj: dict[str, Any], close: bool = False) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if close:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, message: str, close: bool = False) -> None:
            kind = "invalid_request_error" if status < 500 else "server_error"
            self._send(status, {"error": {"message": message, "type": kind, "code": status}}, close)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                data = [{"id": served, "object": "model", "owned_by": "inoculate", "root": served}]
                data += [
                    {"id": n, "object": "model", "owned_by": "inoculate", "root": str(p), "parent": served}
                    for n, p in (adapters or {}).items()
                ]
                self._send(200, {"object": "list", "data": data})
            else:
                self._error(404, f"no route {self.path}")

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding"):
                raise _BadRequest(411, "send the body with a Content-Length (no Transfer-Encoding)")
            raw = self.headers.get("Content-Length")
            if raw is None:
                raise _BadRequest(411, "Content-Length is required")
            digits = raw.strip()
            if not (digits.isascii() and digits.isdigit()):
                raise _BadRequest(400, f"Content-Length: not a non-negative integer: {raw[:40]!r}")
            length = int(digits) if len(digits) <= 20 else limits.max_body_bytes + 1
            if length > limits.max_body_bytes:
                cap = limits.max_body_bytes
                raise _BadRequest(413, f"request body of {digits[:20]} bytes is over the {cap}-byte limit")
            data = self.rfile.read(length)
            if len(data) < length:
                raise _BadRequest(400, f"the body ended after {len(data)} of {length} bytes")
            return data

        def do_POST(self) -> None:
            try:
                if self.path.rstrip("/") != "/v1/chat/completions":
                    # the body is left unread: close the connection rather than parse it as a request
                    raise _BadRequest(404, f"no route {self.path}")
                try:
                    raw = self._read_body()
                except TimeoutError:
                    raise _BadRequest(408, "timed out reading the request body") from None
                body = _decode_body(raw)
            except _BadRequest as e:
                self._error(e.status, str(e), close=True)
                return
            try:
                model = body.get("model", served)
                if model is None:
                    model = served
                if not isinstance(model, str):
                    raise _BadRequest(400, "model: expected a string")
                if model not in names:
                    raise _BadRequest(404, f"model {model!r} is not served here; known: {', '.join(names)}")
                messages, params = _parse(body, limits)
                top = _top_logprobs(body)
                seeds = [params.seed if i == 0 else sample_seed(params.seed, "", i) for i in range(params.n)]
                adapter = None if model == served else model
                prompts = [messages] * params.n
                with lock:
                    if adapter_set is not None:
                        with adapter_set.activate(adapter):
                            completions = backend.sample(prompts, seeds, params, top_logprobs=top)
                    else:
                        completions = backend.sample(prompts, seeds, params, top_logprobs=top)
            except _BadRequest as e:
                self._error(e.status, str(e))
                return
            except Exception as e:  # never a dead handler: the client gets an answer
                self._error(500, f"{type(e).__name__}: {e}"[:500], close=True)
                return
            n_tokens = sum(c.n_tokens or 0 for c in completions)
            self._send(
                200,
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": i,
                            "message": {"role": "assistant", "content": c.text},
                            "finish_reason": c.finish_reason,
                            "logprobs": _logprobs_json(c.logprobs),
                        }
                        for i, c in enumerate(completions)
                    ],
                    "usage": {"completion_tokens": n_tokens},
                },
            )

    return ThreadingHTTPServer((host, port), Handler)


def serve(
    model: str,
    adapter: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    served_name: str | None = None,
    adapters: dict[str, str] | None = None,
    limits: Limits | None = None,
    **backend_kwargs: Any,
) -> None:
    """Load the model and serve until interrupted."""
    be = HFBackend(model, adapter, **backend_kwargs)
    server = make_server(be, host, port, served_name, adapters=adapters, limits=limits)
    try:
        server.serve_forever()
    finally:
        server.server_close()
