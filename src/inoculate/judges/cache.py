"""A request-hash cache for judge calls (safety-tooling's idea): a finished judgement is never paid twice.

One SQLite file in WAL mode, one table `responses(key, response, created)`. The key is the sha256 of a
canonical JSON (sorted keys, no spaces) of the endpoint's base URL, the model and the full request body
(messages and every sampling field: temperature, max_tokens, logprobs, top_logprobs, n, seed, ...), so
any change to what is asked makes a new key. Only the body and the response are hashed or stored: never
headers, never API keys.

Each `put` is its own committed transaction, so a run killed midway keeps every judgement it finished.
Each thread gets its own connection; several processes may share the file (WAL readers never block, a
writer waits up to `busy_timeout_s` for another).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS responses ("
    "key TEXT PRIMARY KEY, response TEXT NOT NULL, created REAL NOT NULL)"
)


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, UTF-8 kept, NaN refused: equal requests give equal strings."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def key_for(base_url: str, model: str, body: dict[str, Any]) -> str:
    """The cache key of one request: sha256 hex of the canonical JSON of (base_url, model, body).

    `base_url` loses a trailing slash; the body's own `model` field, if any, is replaced by `model`
    (it is what the client sends)."""
    full = {**body, "model": model}
    payload = canonical_json({"base_url": base_url.rstrip("/"), "model": model, "body": full})
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class JudgeCache:
    """`JudgeCache(path)`: `get(key) -> dict | None`, `put(key, response)`, `key_for(base_url, model, body)`.

    Usable as a context manager; `close()` closes every thread's connection."""

    key_for = staticmethod(key_for)

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        conn = self._conn()  # create the file and table now, so a bad path fails here
        with self._lock:
            conn.execute(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        if self._closed:
            raise RuntimeError(f"judge cache {self.path} is closed")
        # isolation_level=None: autocommit, so every put is committed when execute returns.
        conn = sqlite3.connect(
            self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_s * 1000)}")
        conn.execute("PRAGMA journal_mode = WAL")
        # NORMAL in WAL mode: a committed transaction survives the process being killed (only a power
        # loss may drop the last few), without an fsync per judgement.
        conn.execute("PRAGMA synchronous = NORMAL")
        self._local.conn = conn
        with self._lock:
            self._connections.append(conn)
        return conn

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT response FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, response: dict[str, Any]) -> None:
        """Store `response` under `key` (replacing any earlier one), committed before returning."""
        text = canonical_json(response)
        self._conn().execute(
            "INSERT OR REPLACE INTO responses (key, response, created) VALUES (?, ?, ?)",
            (key, text, time.time()),
        )

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return self._conn().execute("SELECT 1 FROM responses WHERE key = ?", (key,)).fetchone() is not None

    def close(self) -> None:
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> JudgeCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JudgeCache({str(self.path)!r})"
