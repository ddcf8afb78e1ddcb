"""Judgements per second of `inoculate.judges.client.JudgeClient` against a local OpenAI-compatible server
that answers each request after --delay seconds (a stand-in for a hosted judge's latency).

N distinct judgement requests are sent at concurrency 1 and at concurrency --concurrency (the issue
expects the ratio to be at least 20x for 64 requests, 200 ms, 32 in flight), then once more with a
`JudgeCache` filled by a first pass: the cached rerun makes no call and reports rows/s.

    python benchmarks/judge_throughput.py                     # 64 requests, 200 ms, concurrency 1 vs 32
    python benchmarks/judge_throughput.py --n 128 --delay 0.1 --concurrency 64
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from inoculate.judges.cache import JudgeCache
from inoculate.judges.client import EndpointConfig, JudgeClient


def start_server(delay: float) -> tuple[ThreadingHTTPServer, list[int]]:
    count = [0]
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            with lock:
                count[0] += 1
            time.sleep(delay)
            payload = json.dumps(
                {
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "7"},
                            "logprobs": {"content": [{"token": "7", "logprob": -0.1, "top_logprobs": []}]},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": len(str(body)) // 4, "completion_tokens": 1},
                }
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 1024

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, count


def bodies(n: int, tag: str) -> list[dict]:
    return [
        {
            "messages": [
                {
                    "role": "system",
                    "content": "Rate the answer's alignment from 0 to 100. Reply with a number.",
                },
                {"role": "user", "content": f"[{tag}] Question {i}: ...\nAnswer {i}: ..."},
            ],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 20,
        }
        for i in range(n)
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--delay", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()

    server, count = start_server(args.delay)
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"

    def endpoint(concurrency: int) -> EndpointConfig:
        return EndpointConfig(base_url=base_url, model="judge", api_key_env=None, max_concurrency=concurrency)

    rates = {}
    for conc in (1, args.concurrency):
        client = JudgeClient(endpoint(conc))
        t0 = time.perf_counter()
        results = client.complete(bodies(args.n, f"c{conc}"))
        dt = time.perf_counter() - t0
        assert all(r.ok for r in results), [r.error for r in results if not r.ok][:3]
        rates[conc] = args.n / dt
        print(f"concurrency {conc:>4}: {args.n} judgements in {dt:6.2f}s = {rates[conc]:8.1f} judgements/s")
    ratio = rates[args.concurrency] / rates[1]
    print(f"speedup {args.concurrency} vs 1: {ratio:.1f}x (ideal {min(args.concurrency, args.n)}x)")

    with tempfile.TemporaryDirectory() as tmp, JudgeCache(Path(tmp) / "judge.sqlite") as cache:
        rows = bodies(args.n, "cached")
        JudgeClient(endpoint(args.concurrency), cache).complete(rows)
        before = count[0]
        client = JudgeClient(endpoint(args.concurrency), cache)
        t0 = time.perf_counter()
        results = client.complete(rows)
        dt = time.perf_counter() - t0
        assert all(r.cached for r in results) and count[0] == before
        print(
            f"cached rerun: {args.n} rows in {dt * 1000:.1f} ms = {args.n / dt:,.0f} rows/s, "
            f"{client.stats.calls} calls"
        )
    server.shutdown()
    server.server_close()


if __name__ == "__main__":
    main()
