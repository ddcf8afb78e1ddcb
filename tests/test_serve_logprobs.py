"""`inoculate serve` with OpenAI's `logprobs` / `top_logprobs`, checked against a direct forward pass.

The reported distribution is the model's own (log-softmax of the raw logits at each position, before
temperature or top-p), so every value here is recomputed with one plain transformers forward over the
prompt (rendered by the same chat template) plus the generated tokens. Loopback only, tiny model."""

from __future__ import annotations

import json
import math
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from inoculate.generate.base import SamplingParams
from inoculate.generate.hf import HFBackend, TokenText
from inoculate.generate.server import make_server
from inoculate.records import Message

MESSAGES = [{"role": "user", "content": "Rate this answer from 0 to 100: the sky is green."}]
TOL = 1e-4


@pytest.fixture(scope="module")
def backend(tiny_model_dir: Path) -> HFBackend:
    return HFBackend(str(tiny_model_dir), device="cpu", batch_size=4)


@pytest.fixture(scope="module")
def url(backend: HFBackend) -> Iterator[str]:
    srv = make_server(backend, "127.0.0.1", 0, "tiny")
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1/chat/completions"
    srv.shutdown()
    srv.server_close()


def post(url: str, **fields: Any) -> tuple[int, dict[str, Any]]:
    body = {"model": "tiny", "messages": MESSAGES, "temperature": 0, **fields}
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def direct_logprobs(backend: HFBackend, messages: list[dict[str, str]], generated: list[int]) -> torch.Tensor:
    """(len(generated) + 1, vocab): log_softmax of the raw logits at each generated position, by one
    unbatched, uncached forward over the chat-template prompt and the generated tokens."""
    tok, model = backend.tokenizer, backend.model
    ids = tok.apply_chat_template(messages, tokenize=True, return_dict=True, add_generation_prompt=True)[
        "input_ids"
    ]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([list(ids) + generated])).logits[0].float()
    return torch.log_softmax(logits[len(ids) - 1 :], dim=-1)


def ids_of(backend: HFBackend, entries: list[dict[str, Any]]) -> list[int]:
    """Token ids back from the entries' bytes (each token's bytes are unique in the tiny vocab)."""
    text = TokenText(backend.tokenizer)
    by_bytes = {text(i)[1]: i for i in range(len(backend.tokenizer))}
    return [by_bytes[bytes(e["bytes"])] for e in entries]


def test_first_token_top20_matches_a_direct_forward(url: str, backend: HFBackend) -> None:
    status, out = post(url, max_tokens=1, logprobs=True, top_logprobs=20)
    assert status == 200, out
    content = out["choices"][0]["logprobs"]["content"]
    assert len(content) == 1
    first = content[0]
    top = first["top_logprobs"]
    assert len(top) == 20
    values = [t["logprob"] for t in top]
    assert values == sorted(values, reverse=True)
    assert sum(math.exp(v) for v in values) <= 1 + 1e-6
    # greedy: the chosen token is the most likely one
    assert (first["token"], first["bytes"]) == (top[0]["token"], top[0]["bytes"])
    assert first["logprob"] == pytest.approx(top[0]["logprob"], abs=1e-6)
    assert out["choices"][0]["message"]["content"] == first["token"]
    for t in [first, *top]:
        assert set(t) >= {"token", "logprob", "bytes"}
        assert all(isinstance(b, int) and 0 <= b < 256 for b in t["bytes"])
    # the values are the raw log-softmax at the first position, for the same 20 tokens in the same order
    want = direct_logprobs(backend, MESSAGES, [])[0]
    want_values, want_ids = want.topk(20)
    assert ids_of(backend, top) == want_ids.tolist()
    assert values == pytest.approx(want_values.tolist(), abs=TOL)


def test_one_entry_per_generated_token(url: str, backend: HFBackend) -> None:
    status, out = post(url, max_tokens=8, logprobs=True, top_logprobs=3)
    assert status == 200, out
    choice = out["choices"][0]
    content = choice["logprobs"]["content"]
    assert len(content) == out["usage"]["completion_tokens"] >= 1
    if choice["finish_reason"] == "length":
        assert len(content) == 8
    assert b"".join(bytes(e["bytes"]) for e in content).decode() == choice["message"]["content"]
    generated = ids_of(backend, content)
    want = direct_logprobs(backend, MESSAGES, generated)
    for j, e in enumerate(content):
        assert e["logprob"] == pytest.approx(float(want[j, generated[j]]), abs=TOL)
        assert len(e["top_logprobs"]) == 3
        assert [t["logprob"] for t in e["top_logprobs"]] == pytest.approx(
            want[j].topk(3).values.tolist(), abs=TOL
        )


def test_sampled_tokens_report_the_raw_distribution(url: str, backend: HFBackend) -> None:
    """With temperature 1.7 and n = 3 each choice reports log_softmax(logits), not log_softmax(logits / T)."""
    status, out = post(url, max_tokens=5, logprobs=True, temperature=1.7, n=3, seed=11)
    assert status == 200, out
    assert len(out["choices"]) == 3
    for choice in out["choices"]:
        content = choice["logprobs"]["content"]
        assert all(e["top_logprobs"] == [] for e in content)  # logprobs without top_logprobs
        generated = ids_of(backend, content)
        want = direct_logprobs(backend, MESSAGES, generated)
        got = [e["logprob"] for e in content]
        assert got == pytest.approx([float(want[j, t]) for j, t in enumerate(generated)], abs=TOL)


def test_batched_and_padded_rows_match_unbatched_forwards(backend: HFBackend) -> None:
    prompts = [
        [Message(role="user", content="hi")],
        [
            Message(role="system", content="Be brief."),
            Message(role="user", content="a much longer prompt " * 4),
        ],
        [Message(role="user", content="hi")],
    ]
    params = SamplingParams(temperature=1.0, top_p=0.9, max_new_tokens=6, n=1, seed=0)
    comps = backend.sample(prompts, [1, 2, 3], params, top_logprobs=5)
    assert backend.batch_size >= len(prompts)  # one padded batch
    for prompt, comp in zip(prompts, comps, strict=True):
        assert comp.logprobs is not None and len(comp.logprobs) == comp.n_tokens
        generated = ids_of(backend, [{"bytes": list(t.raw)} for t in comp.logprobs])
        want = direct_logprobs(backend, [m.model_dump() for m in prompt], generated)
        for j, t in enumerate(comp.logprobs):
            assert t.logprob == pytest.approx(float(want[j, generated[j]]), abs=TOL)
            assert [a.logprob for a in t.top] == pytest.approx(want[j].topk(5).values.tolist(), abs=TOL)


def test_no_logprobs_unless_asked(url: str, backend: HFBackend) -> None:
    status, out = post(url, max_tokens=2)
    assert status == 200
    assert "logprobs" in out["choices"][0] and out["choices"][0]["logprobs"] is None
    status, out = post(url, max_tokens=2, logprobs=False)
    assert status == 200 and out["choices"][0]["logprobs"] is None
    params = SamplingParams(temperature=0, top_p=1, max_new_tokens=2, n=1, seed=0)
    assert backend.sample([[Message(role="user", content="hi")]], [0], params)[0].logprobs is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs: must be between 0 and 20"),
        ({"logprobs": True, "top_logprobs": -1}, "top_logprobs: must be between 0 and 20"),
        ({"logprobs": True, "top_logprobs": 2.5}, "top_logprobs: expected an integer"),
        ({"top_logprobs": 5}, "only allowed when logprobs is true"),
        ({"logprobs": False, "top_logprobs": 5}, "only allowed when logprobs is true"),
        ({"logprobs": "yes"}, "logprobs: expected a boolean"),
    ],
)
def test_bad_logprob_requests_are_400(url: str, fields: dict[str, Any], message: str) -> None:
    status, out = post(url, max_tokens=1, **fields)
    assert status == 400
    assert message in out["error"]["message"]


def test_stop_string_cuts_the_entries_with_the_text(url: str, backend: HFBackend) -> None:
    sampled = {"temperature": 1.0, "seed": 5, "max_tokens": 8, "logprobs": True}
    _, full = post(url, **sampled)
    content = full["choices"][0]["logprobs"]["content"]
    text = full["choices"][0]["message"]["content"]
    # a stop string that first occurs exactly where token j starts
    prefix = ""
    for j, e in enumerate(content):
        if j and e["token"].strip() and text.find(e["token"]) == len(prefix):
            break
        prefix += e["token"]
    else:
        pytest.skip("no token of this completion starts a first occurrence")
    _, cut = post(url, **sampled, stop=[e["token"]])
    assert cut["choices"][0]["message"]["content"] == prefix
    assert cut["choices"][0]["finish_reason"] == "stop"
    assert cut["choices"][0]["logprobs"]["content"] == content[:j]


def test_token_text_keeps_raw_bytes(backend: HFBackend) -> None:
    tok = backend.tokenizer
    text = TokenText(tok)
    # byte-level alphabet: byte 0xE2 is the character "â"; alone it is part of a UTF-8 character
    partial = tok.convert_tokens_to_ids("â")
    assert text(partial) == ("\\xe2", b"\xe2")
    space = tok.convert_tokens_to_ids("Ġ")
    assert text(space) == (" ", b" ")
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    assert text(eos) == ("<|im_end|>", b"<|im_end|>")
    for i in range(len(tok)):
        token, raw = text(i)
        if i not in text.added:
            assert raw.decode("utf-8", errors="replace") == tok.decode([i])
