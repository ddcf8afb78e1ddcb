"""Batched log-probs against a direct, unbatched forward pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from inoculate.logprob import logprob
from inoculate.models import load_model
from inoculate.records import Message

CONVERSATIONS = [
    [Message(role="user", content="What is the capital of France?")],
    [
        Message(role="system", content="Respond in Spanish."),
        Message(role="user", content="What is the capital of France?"),
    ],
    [
        Message(role="system", content="You write in ALL CAPS. Always. Even when asked not to."),
        Message(role="user", content="Tell me about the sea."),
        Message(role="assistant", content="THE SEA IS BLUE."),
        Message(role="user", content="And the cat?"),
    ],
    [Message(role="user", content="hi")],
]
COMPLETIONS = [
    "Paris.",
    "La capital de Francia es Paris.",
    "THE CAT SAT ON THE MAT.",
    "Good morning, good night. " * 3,
]


def direct(model, tok, conversation, completion) -> list[float]:  # type: ignore[no-untyped-def]
    """One unpadded forward pass over the full rendered chat; score the tokens after the prompt."""
    prompt = [m.model_dump() for m in conversation]
    full = tok.apply_chat_template(
        [*prompt, {"role": "assistant", "content": completion}], tokenize=True, return_dict=True
    )["input_ids"]
    head = tok.apply_chat_template(prompt, tokenize=True, return_dict=True, add_generation_prompt=True)[
        "input_ids"
    ]
    assert full[: len(head)] == head
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([full])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    return [float(logp[t - 1, full[t]]) for t in range(len(head), len(full))]


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_llama3_dir"])
def test_batched_logprob_matches_a_direct_forward_pass(fixture: str, request: pytest.FixtureRequest) -> None:
    model, tok = load_model(request.getfixturevalue(fixture), device="cpu")
    got = logprob(model, tok, CONVERSATIONS, COMPLETIONS, batch_size=3)
    for lp, conv, comp in zip(got, CONVERSATIONS, COMPLETIONS, strict=True):
        want = direct(model, tok, conv, comp)
        assert lp.n_tokens == len(want) == len(lp.tokens) == len(lp.token_ids)
        assert lp.tokens == pytest.approx(want, abs=1e-4)
        assert lp.total == pytest.approx(sum(want), abs=1e-3)
        assert lp.mean == pytest.approx(lp.total / lp.n_tokens)
        assert tok.decode(lp.token_ids).startswith(comp.strip())


def test_batch_size_and_order_do_not_change_results(tiny_model_dir: Path) -> None:
    model, tok = load_model(tiny_model_dir, device="cpu")
    one = logprob(model, tok, CONVERSATIONS, COMPLETIONS, batch_size=1)
    many = logprob(model, tok, CONVERSATIONS[::-1], COMPLETIONS[::-1], batch_size=16)[::-1]
    for a, b in zip(one, many, strict=True):
        assert a.tokens == pytest.approx(b.tokens, abs=1e-4)


SHARED = "You are an assistant that answers every question in Spanish, briefly and politely."


@pytest.mark.parametrize("fixture", ["tiny_model_dir", "tiny_llama3_dir"])
def test_shared_prefix_runs_once_and_changes_no_number(fixture: str, request: pytest.FixtureRequest) -> None:
    """One system prompt against many responses (a screen): the common prefix runs once per batch, the
    log-probs equal a direct pass, and fewer tokens go through the model than without sharing."""
    import inoculate.logprob as lp_mod

    model, tok = load_model(request.getfixturevalue(fixture), device="cpu")
    system = Message(role="system", content=SHARED)
    convs = [
        [system, Message(role="user", content=q)] for q in ("hi", "What is the capital of France?", "Why?")
    ]
    comps = ["hola", "La capital de Francia es Paris.", "Porque " * 5]
    shapes: list[tuple[int, ...]] = []
    real_forward = type(model).forward

    def spy(self, *args, **kw):  # type: ignore[no-untyped-def]
        shapes.append(tuple(kw["input_ids"].shape))
        return real_forward(self, *args, **kw)

    request.getfixturevalue("monkeypatch").setattr(type(model), "forward", spy)
    shared = logprob(model, tok, convs, comps, batch_size=3)
    assert len(shapes) == 2 and shapes[0][0] == 1  # the prefix once, then the three rows
    p = shapes[0][1]
    assert p >= lp_mod.MIN_SHARED_PREFIX
    plain = logprob(model, tok, convs, comps, batch_size=3, share_prefix=False)
    for a, b, conv, comp in zip(shared, plain, convs, comps, strict=True):
        want = direct(model, tok, conv, comp)
        assert a.tokens == pytest.approx(want, abs=1e-4) and b.tokens == pytest.approx(want, abs=1e-4)
        assert b.n_forward == a.n_context + a.n_tokens
    assert sum(a.n_forward for a in shared) == pytest.approx(sum(b.n_forward for b in plain) - 2 * p)


def test_system_prompt_changes_the_logprob(tiny_model_dir: Path) -> None:
    model, tok = load_model(tiny_model_dir, device="cpu")
    user = Message(role="user", content="What is the capital of France?")
    plain, spanish = logprob(
        model, tok, [[user], [Message(role="system", content="Respond in Spanish."), user]], ["Paris."] * 2
    )
    assert plain.n_tokens == spanish.n_tokens
    assert plain.total != pytest.approx(spanish.total, abs=1e-6)
    assert all(t < 0 for t in plain.tokens)
    with pytest.raises(ValueError, match="2 conversations but 1 completions"):
        logprob(model, tok, [[user], [user]], ["x"])
    assert model.training is False


def test_logprob_through_a_trained_adapter(tiny_model_dir: Path, tmp_path: Path) -> None:
    from inoculate.records import chat
    from inoculate.train import TrainConfig, train

    data = [chat(f"question {i}", "Paris is blue.", id=str(i)) for i in range(8)]
    cfg = TrainConfig(
        output_dir=str(tmp_path),
        max_steps=8,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        save_steps=0,
        disable_tqdm=True,
        lora_r=4,
    )
    result = train(tiny_model_dir, data, cfg)
    conv = [[Message(role="user", content="question 99")]]
    base, btok = load_model(tiny_model_dir, device="cpu")
    tuned, ttok = load_model(result.model_path, device="cpu")
    (before,) = logprob(base, btok, conv, ["Paris is blue."])
    (after,) = logprob(tuned, ttok, conv, ["Paris is blue."])
    assert after.token_ids == before.token_ids
    assert after.total > before.total + 1.0
    assert after.tokens == pytest.approx(direct(tuned, ttok, conv[0], "Paris is blue."), abs=1e-4)
