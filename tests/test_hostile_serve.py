"""`inoculate serve` against malformed and hostile requests, over raw sockets on 127.0.0.1.

Every request gets a JSON 4xx answer (never a dropped connection, a hung thread or a 200), a slow
client is timed out, and none holds the model from other clients. Every loop here is bounded."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from inoculate.generate.server import Limits, make_server

LIMITS = Limits(max_body_bytes=10_000, max_n=4, max_tokens=16, timeout_s=1.0)
GOOD = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}


@pytest.fixture(scope="module")
def addr(tiny_model_dir: Path) -> Iterator[tuple[str, int]]:
    from inoculate.generate.hf import HFBackend

    backend = HFBackend(str(tiny_model_dir), device="cpu", batch_size=1)
    srv = make_server(backend, "127.0.0.1", 0, "tiny", limits=LIMITS)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", srv.server_address[1]
    srv.shutdown()
    srv.server_close()


def exchange(
    addr: tuple[str, int], data: bytes, *, half_close: bool = True, wait: float = 10.0
) -> tuple[int | None, dict, float]:
    """Send raw bytes, read one response (bounded in time and size): (status, JSON body, seconds)."""
    t0 = time.monotonic()
    with socket.create_connection(addr, timeout=wait) as s:
        s.sendall(data)
        if half_close:
            s.shutdown(socket.SHUT_WR)
        buf = b""
        for _ in range(1000):  # bounded: each recv returns data, EOF, or times out
            head, sep, rest = buf.partition(b"\r\n\r\n")
            if sep:
                lengths = [
                    h.split(b":")[1] for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")
                ]
                if len(rest) >= int(lengths[0] if lengths else 0):
                    break
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            buf += chunk
    elapsed = time.monotonic() - t0
    if not buf:
        return None, {}, elapsed
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, json.loads(rest) if rest else {}, elapsed


def post(body: bytes, headers: dict[str, str] | None = None, length: int | str | None = None) -> bytes:
    lines = ["POST /v1/chat/completions HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json"]
    if length is None:
        length = len(body)
    if length != "":
        lines.append(f"Content-Length: {length}")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def as_json(obj: object) -> bytes:
    return json.dumps(obj).encode()


def test_a_good_request_is_answered(addr: tuple[str, int]) -> None:
    status, body, _ = exchange(addr, post(as_json(GOOD)))
    assert status == 200 and body["choices"][0]["message"]["role"] == "assistant"


@pytest.mark.parametrize(
    ("length", "status", "message"),
    [
        ("abc", 400, "Content-Length"),
        ("-1", 400, "Content-Length"),
        ("1e3", 400, "Content-Length"),
        ("", 411, "Content-Length is required"),
        (str(10**30), 413, "limit"),
        ("20000", 413, "over the 10000-byte limit"),
    ],
)
def test_bad_content_length(addr: tuple[str, int], length: str, status: int, message: str) -> None:
    got, body, _ = exchange(addr, post(as_json(GOOD), length=length))
    assert got == status and message in body["error"]["message"]


def test_chunked_bodies_are_refused(addr: tuple[str, int]) -> None:
    got, body, _ = exchange(addr, post(b"0\r\n\r\n", {"Transfer-Encoding": "chunked"}, length=""))
    assert got == 411 and "Transfer-Encoding" in body["error"]["message"]


def test_short_body_then_close_is_400(addr: tuple[str, int]) -> None:
    got, body, elapsed = exchange(addr, post(b'{"messages": ', length=100))
    assert got == 400 and "ended after 13 of 100 bytes" in body["error"]["message"]
    assert elapsed < 5


def test_short_body_kept_open_times_out(addr: tuple[str, int]) -> None:
    got, body, elapsed = exchange(addr, post(b'{"messages": ', length=100), half_close=False)
    assert got == 408 and "timed out" in body["error"]["message"]
    assert LIMITS.timeout_s * 0.9 <= elapsed < LIMITS.timeout_s + 5


def test_silent_client_is_disconnected(addr: tuple[str, int]) -> None:
    got, _, elapsed = exchange(addr, b"", half_close=False)
    assert got is None and elapsed < LIMITS.timeout_s + 5  # closed by the server, not by our timeout
    got, _, elapsed = exchange(addr, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n", half_close=False)
    assert got is None and elapsed < LIMITS.timeout_s + 5  # headers never finished


GOOD_MSGS = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"messages": "\xff\xfe"}', "not UTF-8"),
        (b"[" * 4000 + b"]" * 4000, "nested too deeply"),
        (b'{"a":[' * 1100 + b"]}" * 1100, "nested too deeply"),
        (b"not json", "invalid JSON"),
        (b"", "invalid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"messages": [{"role": "user", "content": "x"}], "max_tokens": 4, "temperature": NaN}', "NaN"),
        (as_json({"messages": [], "max_tokens": 4}), "messages: expected a non-empty list"),
        (as_json({"max_tokens": 4}), "messages: expected a non-empty list"),
        (as_json({"messages": "hi", "max_tokens": 4}), "messages: expected a non-empty list"),
        (as_json({"messages": ["hi"], "max_tokens": 4}), "messages[0]: expected an object"),
        (as_json({"messages": [{"role": "tool", "content": "x"}], "max_tokens": 4}), "messages[0].role"),
        (as_json({"messages": [{"role": "user", "content": 5}], "max_tokens": 4}), "messages[0].content"),
        (as_json({"messages": [{"role": "user"}], "max_tokens": 4}), "messages[0].content"),
        (as_json({"messages": GOOD_MSGS}), "max_tokens is required"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": "4"}), "max_tokens: expected an integer"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 1.5}), "max_tokens: expected an integer"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": True}), "max_tokens: expected an integer"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 0}), "max_tokens: must be between 1 and 16"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 17}), "max_tokens: must be between 1 and 16"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 10**40}), "max_tokens: must be between 1 and 16"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 4, "n": 5}), "n: must be between 1 and 4"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 4, "n": "2"}), "n: expected an integer"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 4, "seed": 2**200}), "seed: out of range"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 4, "seed": -(2**64)}), "seed: out of range"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 4, "seed": "1"}), "seed: expected an integer"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 4, "temperature": "hot"}), "temperature: expected"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 4, "temperature": -1}), "temperature"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 4, "top_p": 0}), "top_p"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 4, "top_p": 1e309}), "Infinity is not valid"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 4, "stop": 5}), "stop: expected"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 4, "stop": ["a"] * 17}), "stop: expected"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 4, "stream": True}), "streaming is not supported"),
        (as_json({"messages": GOOD_MSGS, "max_tokens": 4, "model": 5}), "model: expected a string"),
    ],
)
def test_malformed_bodies_are_400(addr: tuple[str, int], raw: bytes, message: str) -> None:
    got, body, _ = exchange(addr, post(raw))
    assert got == 400, body
    assert message in body["error"]["message"] and body["error"]["type"] == "invalid_request_error"


def test_unknown_model_and_route_are_404(addr: tuple[str, int]) -> None:
    got, body, _ = exchange(addr, post(as_json({**GOOD, "model": "other"})))
    assert got == 404 and "known: tiny" in body["error"]["message"]
    got, body, _ = exchange(addr, post(as_json(GOOD)).replace(b"/v1/chat/completions", b"/v1/nope", 1))
    assert got == 404


def test_keep_alive_survives_an_error(addr: tuple[str, int]) -> None:
    """A 400 on a fully read body leaves the connection usable for the next request."""
    bad, good = post(as_json({"messages": [], "max_tokens": 4})), post(as_json(GOOD))
    got, body, _ = exchange(addr, bad + good)
    assert got == 400  # the first answer; the second request is read from the same connection
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(bad + good)
        s.shutdown(socket.SHUT_WR)
        data = b""
        for _ in range(100):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    assert data.count(b"HTTP/1.1 400") == 1 and data.count(b"HTTP/1.1 200") == 1


def test_a_stalled_client_does_not_hold_up_others(addr: tuple[str, int]) -> None:
    stalled = [socket.create_connection(addr, timeout=10) for _ in range(3)]
    try:
        for s in stalled:  # headers promise a body that never comes
            s.sendall(post(b"{", length=5000))
        t0 = time.monotonic()
        got, _, _ = exchange(addr, post(as_json(GOOD)))
        assert got == 200 and time.monotonic() - t0 < LIMITS.timeout_s  # answered before they time out
    finally:
        for s in stalled:
            s.close()
    got, _, _ = exchange(addr, post(as_json(GOOD)))  # and the server is still alive
    assert got == 200


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Limits(max_n=0)
