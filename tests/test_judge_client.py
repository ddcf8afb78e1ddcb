"""The judge endpoint client against a scripted local server: retries, Retry-After, failures that name the
endpoint, the call budget, the request cache, bounded concurrency and the API key's path."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from inoculate.judges.cache import JudgeCache, key_for
from inoculate.judges.client import (
    CallResult,
    ClientStats,
    EndpointConfig,
    JudgeClient,
    JudgeClientError,
    _retry_after,
)


@dataclass
class Reply:
    status: int = 200
    body: Any = None  # None: a well-formed completion; bytes: sent as is; else JSON-encoded
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0


def completion(text: str) -> dict[str, Any]:
    return {
        "id": "cmpl-test",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
    }


class FakeJudge:
    """A threaded OpenAI-compatible server on 127.0.0.1. `script(n, body, headers)` (n counts requests
    from 1) gives each reply; by default every request gets a completion echoing the last message."""

    def __init__(self, script: Callable[[int, dict, dict], Reply] | None = None, delay: float = 0.0):
        self.script = script
        self.delay = delay
        self.requests: list[tuple[float, str, dict, dict]] = []  # (time, path, body, headers)
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()
        judge = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                body = json.loads(raw)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with judge.lock:
                    judge.requests.append((time.monotonic(), self.path, body, headers))
                    n = len(judge.requests)
                    judge.in_flight += 1
                    judge.max_in_flight = max(judge.max_in_flight, judge.in_flight)
                try:
                    reply = judge.script(n, body, headers) if judge.script else Reply()
                    time.sleep(reply.delay or judge.delay)
                    if reply.body is None:
                        payload = json.dumps(completion("echo: " + body["messages"][-1]["content"])).encode()
                    elif isinstance(reply.body, bytes):
                        payload = reply.body
                    else:
                        payload = json.dumps(reply.body).encode()
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with judge.lock:
                        judge.in_flight -= 1

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            request_queue_size = 256

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05})
        self.thread.daemon = True
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def judge_server() -> Iterator[Callable[..., FakeJudge]]:
    servers: list[FakeJudge] = []

    def start(script: Callable[[int, dict, dict], Reply] | None = None, delay: float = 0.0) -> FakeJudge:
        servers.append(FakeJudge(script, delay))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def endpoint(server: FakeJudge, **kw: Any) -> EndpointConfig:
    kw.setdefault("api_key_env", None)
    kw.setdefault("backoff_base_s", 0.01)
    kw.setdefault("timeout_s", 5.0)
    return EndpointConfig(base_url=server.base_url, model="judge-model", **kw)


def ask(text: str, **sampling: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}], "temperature": 0, **sampling}


def test_success_fills_model_keeps_order_and_counts_tokens(judge_server):
    server = judge_server()
    client = JudgeClient(endpoint(server))
    results = client.complete([ask(f"q{i}", max_tokens=5, logprobs=True, top_logprobs=20) for i in range(3)])
    assert [r.response["choices"][0]["message"]["content"] for r in results] == [
        "echo: q0",
        "echo: q1",
        "echo: q2",
    ]
    assert all(r.ok and not r.cached for r in results)
    paths = {p for _, p, _, _ in server.requests}
    assert paths == {"/v1/chat/completions"}
    sent = server.requests[0][2]
    assert sent["model"] == "judge-model" and sent["logprobs"] is True and sent["top_logprobs"] == 20
    s = client.stats
    assert (s.requests, s.calls, s.failures, s.retries, s.cache_hits) == (3, 3, 0, 0, 0)
    assert (s.prompt_tokens, s.completion_tokens) == (21, 6)
    row = s.as_row()
    assert row["judge_calls"] == 3 and row["judge_prompt_tokens"] == 21 and "judge_seconds" in row


def test_429_retry_after_is_honoured(judge_server):
    def script(n, body, headers):
        return Reply(429, {"error": {"message": "slow down"}}, {"Retry-After": "0.3"}) if n == 1 else Reply()

    server = judge_server(script)
    client = JudgeClient(endpoint(server, backoff_base_s=0.0))  # without Retry-After the wait would be 0
    t0 = time.perf_counter()
    [result] = client.complete([ask("q")])
    assert result.ok
    assert server.count == 2
    gap = server.requests[1][0] - server.requests[0][0]
    assert gap >= 0.28 and time.perf_counter() - t0 >= 0.28
    assert client.stats.retries == 1 and client.stats.calls == 2


def test_retry_after_forms():
    assert _retry_after(httpx.Headers({"Retry-After": "2"})) == 2.0
    assert _retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 27 <= _retry_after(httpx.Headers({"Retry-After": future})) <= 31
    past = email.utils.formatdate(time.time() - 30, usegmt=True)
    assert _retry_after(httpx.Headers({"Retry-After": past})) == 0.0
    assert _retry_after(httpx.Headers({"Retry-After": "soon"})) is None
    assert _retry_after(httpx.Headers({})) is None


def test_500_twice_then_success(judge_server):
    server = judge_server(lambda n, b, h: Reply(500, {"error": "boom"}) if n <= 2 else Reply())
    client = JudgeClient(endpoint(server))
    [result] = client.complete([ask("q")])
    assert result.ok and server.count == 3
    assert client.stats.retries == 2 and client.stats.calls == 3 and client.stats.failures == 0


def test_persistent_5xx_gives_up_after_max_retries(judge_server):
    server = judge_server(lambda n, b, h: Reply(503, {"error": {"message": "overloaded"}}))
    client = JudgeClient(endpoint(server, max_retries=3))
    [result] = client.complete([ask("q")])
    assert server.count == 4
    assert (
        "HTTP 503" in result.error
        and "overloaded" in result.error
        and "gave up after 4 attempts" in result.error
    )


def test_400_is_not_retried_and_reports_the_server_message(judge_server):
    server = judge_server(lambda n, b, h: Reply(400, {"error": {"message": "max_tokens is too large"}}))
    client = JudgeClient(endpoint(server))
    [result] = client.complete([ask("q")])
    assert server.count == 1 and client.stats.retries == 0 and client.stats.failures == 1
    assert result.response is None
    assert result.error == f"HTTP 400 from {server.base_url}/chat/completions: max_tokens is too large"


@pytest.mark.parametrize(
    ("body", "what"), [(b"<html>bad gateway</html>", "not JSON"), ({"result": "no choices"}, "no choices")]
)
def test_malformed_response_names_the_endpoint(judge_server, body, what):
    server = judge_server(lambda n, b, h: Reply(200, body))
    client = JudgeClient(endpoint(server))
    [result] = client.complete([ask("q")])
    assert result.error.startswith(f"malformed response from {server.base_url}/chat/completions: {what}")
    assert server.count == 1


def test_timeout_is_retried_then_fails(judge_server):
    server = judge_server(delay=1.0)
    client = JudgeClient(endpoint(server, timeout_s=0.2, max_retries=2))
    t0 = time.perf_counter()
    [result] = client.complete([ask("q")])
    assert time.perf_counter() - t0 < 3.0
    assert "timed out after 0.2s" in result.error and "gave up after 3 attempts" in result.error
    deadline = time.monotonic() + 2
    while server.count < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.count == 3 and client.stats.retries == 2


def test_connection_refused_is_retried_then_fails():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ep = EndpointConfig(
        base_url=f"http://127.0.0.1:{port}/v1",
        model="m",
        api_key_env=None,
        backoff_base_s=0.01,
        max_retries=2,
    )
    client = JudgeClient(ep)
    [result] = client.complete([ask("q")])
    assert result.error.startswith(f"connection error at http://127.0.0.1:{port}/v1/chat/completions")
    assert client.stats.calls == 3


def test_budget_stops_cleanly(judge_server, caplog):
    server = judge_server()
    client = JudgeClient(endpoint(server, budget_calls=3, max_concurrency=1))
    with caplog.at_level(logging.WARNING, logger="inoculate.judges"):
        results = client.complete([ask(f"q{i}") for i in range(5)])
    assert server.count == 3
    assert [r.ok for r in results] == [True, True, True, False, False]
    assert all(r.error.startswith("budget exhausted") for r in results[3:])
    s = client.stats
    assert s.budget_exhausted and s.calls == 3 and s.failures == 2
    assert sum("budget exhausted" in r.message for r in caplog.records) == 1
    # the budget is per client: a later batch makes no call either
    [later] = client.complete([ask("q9")])
    assert later.error.startswith("budget exhausted") and server.count == 3


def test_budget_counts_retries(judge_server):
    server = judge_server(lambda n, b, h: Reply(500, {"error": "x"}) if n == 1 else Reply())
    client = JudgeClient(endpoint(server, budget_calls=1))
    [result] = client.complete([ask("q")])
    assert result.error.startswith("budget exhausted") and server.count == 1


def test_identical_bodies_are_sent_once(judge_server):
    server = judge_server()
    client = JudgeClient(endpoint(server))
    results = client.complete([ask("same"), ask("other"), ask("same"), {**ask("same")}])
    assert server.count == 2
    assert [r.response["choices"][0]["message"]["content"] for r in results] == [
        "echo: same",
        "echo: other",
        "echo: same",
        "echo: same",
    ]
    assert client.stats.deduplicated == 2 and client.stats.requests == 4


def test_rerun_with_cache_makes_zero_calls(judge_server, tmp_path):
    server = judge_server()
    bodies = [ask(f"q{i}") for i in range(4)]
    with JudgeCache(tmp_path / "judge.sqlite") as cache:
        first = JudgeClient(endpoint(server), cache).complete(bodies)
    assert server.count == 4
    with JudgeCache(tmp_path / "judge.sqlite") as cache:
        client = JudgeClient(endpoint(server), cache)
        again = client.complete(bodies)
    assert server.count == 4
    assert all(r.cached for r in again) and [r.response for r in again] == [r.response for r in first]
    assert client.stats.calls == 0 and client.stats.cache_hits == 4
    # another model or another sampling field is another request
    with JudgeCache(tmp_path / "judge.sqlite") as cache:
        JudgeClient(endpoint(server), cache).complete([ask("q0", seed=1)])
    assert server.count == 5


def test_cache_is_written_per_result(judge_server, tmp_path):
    """A run that stops midway keeps what it finished: 5 done, then 3 fail; a fresh client on the same
    file (as after a kill) finds the 5 and asks only for the rest."""
    state = {"down": True}  # the endpoint "dies" after 5 answers
    server = judge_server(
        lambda n, b, h: Reply(400, {"error": "nope"}) if n > 5 and state["down"] else Reply()
    )
    path = tmp_path / "cache" / "judge.sqlite"
    cache = JudgeCache(path)  # left open, as a killed process leaves it
    results = JudgeClient(endpoint(server, max_concurrency=1), cache).complete(
        [ask(f"q{i}") for i in range(8)]
    )
    assert [r.ok for r in results] == [True] * 5 + [False] * 3
    other = sqlite3.connect(path)  # what another process sees now
    assert other.execute("SELECT COUNT(*) FROM responses").fetchone()[0] == 5
    other.close()

    state["down"] = False
    with JudgeCache(path) as cache2:
        client = JudgeClient(endpoint(server), cache2)
        again = client.complete([ask(f"q{i}") for i in range(8)])
    assert all(r.ok for r in again)
    assert client.stats.cache_hits == 5 and client.stats.calls == 3 and server.count == 11
    cache.close()


def test_cache_is_shared_across_threads(tmp_path):
    with JudgeCache(tmp_path / "c.sqlite") as cache:

        def work(t: int) -> None:
            for i in range(20):
                k = key_for("http://x/v1", "m", {"t": t, "i": i})
                cache.put(k, {"t": t, "i": i})
                assert cache.get(k) == {"t": t, "i": i}

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert len(cache) == 80
        assert cache.get("missing") is None
        mode = sqlite3.connect(tmp_path / "c.sqlite").execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_key_for_is_canonical_and_sees_every_field():
    base = ask("q", max_tokens=1, logprobs=True, top_logprobs=20)
    k = key_for("http://h/v1", "m", base)
    assert k == key_for("http://h/v1/", "m", dict(reversed(list(base.items()))))
    assert k == JudgeCache.key_for("http://h/v1", "m", {**base, "model": "ignored"})
    for change in ({"temperature": 1}, {"top_logprobs": 5}, {"seed": 3}, {"n": 2}, {"logprobs": False}):
        assert key_for("http://h/v1", "m", {**base, **change}) != k
    assert key_for("http://h/v1", "m2", base) != k
    assert key_for("http://other/v1", "m", base) != k
    assert len(k) == 64


def test_concurrency_is_bounded(judge_server):
    server = judge_server(delay=0.1)
    client = JudgeClient(endpoint(server, max_concurrency=4))
    results = client.complete([ask(f"q{i}") for i in range(16)])
    assert all(r.ok for r in results)
    assert server.max_in_flight == 4


def test_requests_run_in_parallel(judge_server):
    server = judge_server(delay=0.2)
    client = JudgeClient(endpoint(server, max_concurrency=32))
    t0 = time.perf_counter()
    results = client.complete([ask(f"q{i}") for i in range(32)])
    elapsed = time.perf_counter() - t0
    assert all(r.ok for r in results)
    assert elapsed < 2.0, f"32 requests of 0.2 s took {elapsed:.2f}s (serial: 6.4 s)"
    assert server.max_in_flight >= 16


def test_api_key_reaches_the_server_and_nothing_else(judge_server, tmp_path, monkeypatch):
    sentinel = "sk-SENTINEL-7f3a9c1e-do-not-store"
    monkeypatch.setenv("INOCULATE_TEST_JUDGE_KEY", sentinel)

    def script(n, body, headers):  # a server that echoes the header back in an error
        return (
            Reply() if n == 1 else Reply(401, {"error": {"message": f"bad key {headers['authorization']}"}})
        )

    server = judge_server(script)
    folder = tmp_path / "cache"
    ep = endpoint(server, api_key_env="INOCULATE_TEST_JUDGE_KEY")
    with JudgeCache(folder / "judge.sqlite") as cache:
        client = JudgeClient(ep, cache)
        [ok] = client.complete([ask("q1")])
        [bad] = client.complete([ask("q2")])
    assert server.requests[0][3]["authorization"] == f"Bearer {sentinel}"
    assert ok.ok and bad.error is not None and sentinel not in bad.error and "***" in bad.error
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files
    for p in files:
        assert sentinel.encode() not in p.read_bytes(), p
    for text in (repr(ep), ep.model_dump_json(), repr(client.stats), json.dumps(client.stats.as_row())):
        assert sentinel not in text


def test_missing_api_key_names_the_variable(judge_server, monkeypatch):
    monkeypatch.delenv("INOCULATE_TEST_MISSING_KEY", raising=False)
    server = judge_server()
    client = JudgeClient(endpoint(server, api_key_env="INOCULATE_TEST_MISSING_KEY"))
    with pytest.raises(JudgeClientError, match="INOCULATE_TEST_MISSING_KEY"):
        client.complete([ask("q")])
    assert server.count == 0
    # api_key_env None: no key, no Authorization header
    JudgeClient(endpoint(server, api_key_env=None)).complete([ask("q")])
    assert "authorization" not in server.requests[0][3]


def test_endpoint_config_is_strict():
    ep = EndpointConfig(base_url="http://h:1/v1/", model="m")
    assert ep.base_url == "http://h:1/v1" and ep.api_key_env == "OPENAI_API_KEY"
    assert ep.url == "http://h:1/v1/chat/completions"
    with pytest.raises(ValidationError):
        EndpointConfig(base_url="http://h/v1", model="m", api_key="sk-x")  # extra forbidden
    with pytest.raises(ValidationError):
        EndpointConfig(base_url="h/v1", model="m")
    for bad in (0, 1025):
        with pytest.raises(ValidationError):
            EndpointConfig(base_url="http://h/v1", model="m", max_concurrency=bad)
    with pytest.raises(ValidationError):
        ep.model = "other"  # frozen


def test_complete_inside_a_running_event_loop(judge_server):
    server = judge_server()
    client = JudgeClient(endpoint(server))

    async def main() -> list[CallResult]:
        return client.complete([ask("q")])

    [result] = asyncio.run(main())
    assert result.ok
    assert isinstance(client.stats, ClientStats)
