"""A small OpenAI chat-completions server backed by the hf backend (`inoculate serve`).

Serves `POST /v1/chat/completions` and `GET /v1/models` with the standard library's HTTP server, one
generation at a time. It is for local use and tests of the openai_http backend, not production
serving (use `vllm serve` for that). `max_tokens` is required: no server-side length default.
A request's sample i uses seed `seed` for i = 0 and a seed derived from it otherwise, so an n=1
request with seed s reproduces the hf backend's sample whose seed is s.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from pydantic import ValidationError

from inoculate.generate.base import SamplingParams, sample_seed
from inoculate.generate.hf import HFBackend
from inoculate.records import Message


class _BadRequest(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _parse(body: dict[str, Any], served: str) -> tuple[list[Message], SamplingParams]:
    if body.get("model") not in (None, served):
        raise _BadRequest(404, f"model {body.get('model')!r} is not served here (serving {served!r})")
    try:
        messages = [Message(role=m["role"], content=m["content"]) for m in body["messages"]]
    except (KeyError, TypeError, ValidationError) as e:
        raise _BadRequest(400, f"messages: expected a list of {{role, content}} objects ({e})") from None
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        raise _BadRequest(400, "max_tokens is required (this server has no default length)")
    stop = body.get("stop") or []
    seed = body.get("seed")
    try:
        params = SamplingParams(
            temperature=body.get("temperature", 1.0),
            top_p=body.get("top_p", 1.0),
            max_new_tokens=max_tokens,
            n=body.get("n", 1),
            seed=seed if seed is not None else int.from_bytes(uuid.uuid4().bytes[:7], "big"),
            stop=[stop] if isinstance(stop, str) else list(stop),
        )
    except ValidationError as e:
        raise _BadRequest(400, str(e)) from None
    return messages, params


def make_server(
    backend: HFBackend, host: str = "127.0.0.1", port: int = 8000, served_name: str | None = None
):
    """A ThreadingHTTPServer bound to (host, port); port 0 picks a free one (see `server_address`)."""
    served = served_name or backend.adapter or backend.model_name
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, obj: dict[str, Any]) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                self._send(
                    200,
                    {"object": "list", "data": [{"id": served, "object": "model", "owned_by": "inoculate"}]},
                )
            else:
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(body, dict):
                    raise _BadRequest(400, "the request body must be a JSON object")
                messages, params = _parse(body, served)
                seeds = [params.seed if i == 0 else sample_seed(params.seed, "", i) for i in range(params.n)]
                with lock:
                    completions = backend.sample([messages] * params.n, seeds, params)
            except _BadRequest as e:
                self._send(e.status, {"error": {"message": str(e), "type": "invalid_request_error"}})
                return
            except json.JSONDecodeError as e:
                self._send(400, {"error": {"message": f"invalid JSON: {e}", "type": "invalid_request_error"}})
                return
            n_tokens = sum(c.n_tokens or 0 for c in completions)
            self._send(
                200,
                {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": served,
                    "choices": [
                        {
                            "index": i,
                            "message": {"role": "assistant", "content": c.text},
                            "finish_reason": c.finish_reason,
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
    **backend_kwargs: Any,
) -> None:
    """Load the model and serve until interrupted."""
    server = make_server(HFBackend(model, adapter, **backend_kwargs), host, port, served_name)
    try:
        server.serve_forever()
    finally:
        server.server_close()
