"""The judge's endpoint client: OpenAI-compatible chat completions, sent concurrently, retried, cached.

Reliability as the API clients research groups trust do it (Inspect's retries, safety-tooling's cache):

- `max_concurrency` requests in flight at once (an `asyncio.Semaphore` over one `httpx.AsyncClient`);
- 429, 408, 5xx, timeouts and connection errors are retried up to `max_retries` times with exponential
  backoff and full jitter, waiting what a `Retry-After` header (seconds or an HTTP date) or OpenAI's
  `retry-after-ms` asks instead when one is sent; other 4xx are not retried and report the server's
  message;
- a 200 that is not JSON or has no `choices` is a failure naming the endpoint;
- `budget_calls` caps the HTTP requests of one client: once spent, the remaining requests come back as
  failures ("budget exhausted ...") and a warning says so;
- identical bodies in one batch are sent once; with a `JudgeCache` a finished judgement is stored as soon
  as it arrives and never requested again.

The API key is read from the environment variable NAMED by `api_key_env` when a batch starts; it is sent
as `Authorization: Bearer ...` and is never stored, cached, logged or put in an error message.
"""

from __future__ import annotations

import asyncio
import datetime
import email.utils
import logging
import math
import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, field_validator

from inoculate.judges.cache import JudgeCache, key_for

log = logging.getLogger("inoculate.judges")

RETRY_STATUSES = frozenset({408, 429})
"""Retried besides every 5xx."""

BUDGET_EXHAUSTED = "budget exhausted"
_MESSAGE_CHARS = 500


class JudgeClientError(RuntimeError):
    """A problem with the endpoint's configuration that no request could get past (a missing API key)."""


class EndpointConfig(BaseModel):
    """Where the judge lives and how hard to try. `api_key_env` is the NAME of the environment variable
    holding the key (None: send no key); the key itself is never part of the config."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str
    model: str
    api_key_env: str | None = "OPENAI_API_KEY"
    timeout_s: float = Field(60.0, gt=0)
    max_concurrency: int = Field(32, ge=1, le=1024)
    max_retries: int = Field(6, ge=0)
    budget_calls: int | None = Field(None, ge=0)
    backoff_base_s: float = Field(1.0, ge=0)
    """First retry waits up to this long (full jitter: uniform in [0, base * 2**attempt])."""
    backoff_max_s: float = Field(60.0, ge=0)
    """Cap on any one wait, a server's Retry-After included."""

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"base_url must start with http:// or https:// (got {v!r})")
        return v

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("model must not be empty")
        return v

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and (not v or "=" in v or "\0" in v):
            raise ValueError(f"api_key_env must name an environment variable (got {v!r})")
        return v

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"


class CallResult(BaseModel):
    """One body's outcome: `response` (the endpoint's JSON) or `error`; `cached` when no call was made."""

    model_config = ConfigDict(frozen=True)

    response: dict[str, Any] | None = None
    error: str | None = None
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.error is None


class ClientStats(BaseModel):
    """Counters of one client over all its batches. `requests`, `cache_hits`, `deduplicated` and
    `failures` count bodies; `calls` and `retries` count HTTP requests (`calls` includes retries)."""

    requests: int = 0
    calls: int = 0
    cache_hits: int = 0
    deduplicated: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    budget_exhausted: bool = False

    def as_row(self) -> dict[str, int | float | bool]:
        """A flat row for a report table, keys prefixed `judge_`."""
        row = self.model_dump()
        row["seconds"] = round(self.seconds, 3)
        return {f"judge_{k}": v for k, v in row.items()}


@dataclass
class _Attempt:
    """What one HTTP attempt came to: a response, a final error, or a retryable error."""

    response: dict[str, Any] | None = None
    error: str | None = None
    retryable: bool = False
    retry_after: float | None = None


class JudgeClient:
    """`JudgeClient(endpoint, cache=None).complete(bodies) -> list[CallResult]`, in the bodies' order.

    Each body is a chat-completions request without `model` (filled in from the endpoint)."""

    def __init__(self, endpoint: EndpointConfig, cache: JudgeCache | None = None):
        self.endpoint = endpoint
        self.cache = cache
        self._stats = ClientStats()
        self._lock = threading.Lock()
        self._rng = random.Random()
        self._warned_budget = False

    @property
    def stats(self) -> ClientStats:
        """A snapshot of the counters."""
        with self._lock:
            return self._stats.model_copy()

    # -- public -------------------------------------------------------------------------------------

    def complete(self, bodies: list[dict[str, Any]]) -> list[CallResult]:
        """Send `bodies` (blocking). Inside a running event loop the batch runs on a worker thread."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.acomplete(bodies))
        with ThreadPoolExecutor(1, thread_name_prefix="judge-client") as pool:
            return pool.submit(asyncio.run, self.acomplete(bodies)).result()

    async def acomplete(self, bodies: list[dict[str, Any]]) -> list[CallResult]:
        """The async form of `complete`."""
        start = time.perf_counter()
        ep = self.endpoint
        key = self._api_key()  # before anything is sent: a missing key fails the whole batch at once
        keys = [key_for(ep.base_url, ep.model, dict(b)) for b in bodies]
        results: list[CallResult | None] = [None] * len(bodies)
        first: dict[str, int] = {}  # key -> index of the body that is sent
        for i, k in enumerate(keys):
            first.setdefault(k, i)
        todo: list[int] = []
        hits = 0
        for k, i in first.items():
            cached = self.cache.get(k) if self.cache is not None else None
            if cached is not None:
                results[i] = CallResult(response=cached, cached=True)
                hits += 1
            else:
                todo.append(i)
        with self._lock:
            self._stats.requests += len(bodies)
            self._stats.deduplicated += len(bodies) - len(first)
        try:
            if todo:
                headers = {"Content-Type": "application/json"}
                if key is not None:
                    headers["Authorization"] = f"Bearer {key}"
                limits = httpx.Limits(
                    max_connections=ep.max_concurrency, max_keepalive_connections=ep.max_concurrency
                )
                sem = asyncio.Semaphore(ep.max_concurrency)
                async with httpx.AsyncClient(
                    headers=headers, timeout=httpx.Timeout(ep.timeout_s), limits=limits
                ) as http:

                    async def one(i: int) -> None:
                        async with sem:
                            results[i] = await self._request(http, {**bodies[i], "model": ep.model}, key)
                        if self.cache is not None and results[i].error is None:
                            self.cache.put(keys[i], results[i].response)

                    await asyncio.gather(*(one(i) for i in todo))
            # duplicates share the first copy's result (a cached first copy stays `cached`)
            for i, k in enumerate(keys):
                j = first[k]
                if i != j:
                    results[i] = results[j]
                    if results[j].cached:
                        hits += 1
            done = [r for r in results if r is not None]
            with self._lock:
                self._stats.cache_hits += hits
                self._stats.failures += sum(r.error is not None for r in done)
            return done
        finally:
            with self._lock:
                self._stats.seconds += time.perf_counter() - start

    # -- internals ----------------------------------------------------------------------------------

    def _api_key(self) -> str | None:
        name = self.endpoint.api_key_env
        if name is None:
            return None
        value = os.environ.get(name)
        if not value:
            raise JudgeClientError(
                f"the judge endpoint {self.endpoint.base_url} needs an API key: set the environment "
                f"variable {name} (or set api_key_env: null for an endpoint without keys)"
            )
        return value

    def _take_call(self) -> bool:
        """Reserve one HTTP call against the budget; False once it is spent."""
        with self._lock:
            budget = self.endpoint.budget_calls
            if budget is not None and self._stats.calls >= budget:
                self._stats.budget_exhausted = True
                warn = not self._warned_budget
                self._warned_budget = True
            else:
                self._stats.calls += 1
                return True
        if warn:
            log.warning(
                "judge call budget exhausted: %d calls made to %s (budget_calls=%d); "
                "the remaining requests are returned as failures",
                budget,
                self.endpoint.base_url,
                budget,
            )
        return False

    async def _request(self, http: httpx.AsyncClient, body: dict[str, Any], key: str | None) -> CallResult:
        ep = self.endpoint
        attempt = 0
        while True:
            if not self._take_call():
                return CallResult(
                    error=f"{BUDGET_EXHAUSTED}: budget_calls={ep.budget_calls} spent before this request "
                    f"was answered"
                )
            outcome = await self._attempt(http, body)
            if outcome.error is None:
                usage = (outcome.response or {}).get("usage") or {}
                with self._lock:
                    self._stats.prompt_tokens += _int(usage.get("prompt_tokens"))
                    self._stats.completion_tokens += _int(usage.get("completion_tokens"))
                return CallResult(response=outcome.response)
            error = _scrub(outcome.error, key)
            if not outcome.retryable:
                return CallResult(error=error)
            if attempt >= ep.max_retries:
                return CallResult(error=f"{error} (gave up after {attempt + 1} attempts)")
            wait = outcome.retry_after
            if wait is None:
                wait = self._rng.uniform(0, ep.backoff_base_s * 2**attempt)
            wait = min(max(wait, 0.0), ep.backoff_max_s)
            attempt += 1
            with self._lock:
                self._stats.retries += 1
            log.debug("judge request retry %d in %.2fs: %s", attempt, wait, error)
            await asyncio.sleep(wait)

    async def _attempt(self, http: httpx.AsyncClient, body: dict[str, Any]) -> _Attempt:
        url = self.endpoint.url
        try:
            resp = await http.post(url, json=body)
        except httpx.TimeoutException as e:
            return _Attempt(
                error=f"timed out after {self.endpoint.timeout_s:g}s at {url} ({type(e).__name__})",
                retryable=True,
            )
        except httpx.TransportError as e:
            return _Attempt(error=f"connection error at {url}: {type(e).__name__}: {e}", retryable=True)
        status = resp.status_code
        if status == 200:
            try:
                data = resp.json()
            except ValueError as e:
                return _Attempt(error=f"malformed response from {url}: not JSON ({e}): {_snippet(resp.text)}")
            if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
                return _Attempt(error=f"malformed response from {url}: no choices in {_snippet(resp.text)}")
            return _Attempt(response=data)
        message = _server_message(resp)
        error = f"HTTP {status} from {url}: {message}"
        if status in RETRY_STATUSES or status >= 500:
            return _Attempt(error=error, retryable=True, retry_after=_retry_after(resp.headers))
        return _Attempt(error=error)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _snippet(text: str) -> str:
    text = text.strip()
    return repr(text if len(text) <= _MESSAGE_CHARS else text[:_MESSAGE_CHARS] + "...")


def _server_message(resp: httpx.Response) -> str:
    """The error message an OpenAI-compatible server sends (`{"error": {"message": ...}}` and kin)."""
    try:
        data = resp.json()
    except ValueError:
        return _snippet(resp.text) if resp.text.strip() else resp.reason_phrase or "(no message)"
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return err["message"][:_MESSAGE_CHARS]
        for value in (err, data.get("message"), data.get("detail")):
            if isinstance(value, str):
                return value[:_MESSAGE_CHARS]
    return _snippet(resp.text)


def _retry_after(headers: httpx.Headers) -> float | None:
    """Seconds a server asks to wait: `retry-after-ms`, `Retry-After` seconds, or an HTTP date."""
    ms = headers.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
            if math.isfinite(value):
                return max(value, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
        return max(value, 0.0) if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=datetime.timezone.utc)
    return max(when.timestamp() - time.time(), 0.0)


def _scrub(text: str, key: str | None) -> str:
    """Never let the key reach a message (a server or proxy may echo request headers)."""
    return text.replace(key, "***") if key else text
