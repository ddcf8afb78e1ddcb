"""Generation: explicit sampling parameters, the hf backend, and the HTTP backend on a real local server."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from inoculate.errors import InputErrors
from inoculate.generate import (
    KEEP_SYSTEM,
    Backend,
    Completion,
    SamplingParams,
    available_backends,
    backend,
    generate_examples,
    get_backend,
    sample_seed,
    with_system,
)
from inoculate.generate.base import truncate_at_stop
from inoculate.records import ChatExample, Message, chat

GREEDY = SamplingParams(temperature=0, top_p=1, max_new_tokens=8, n=1, seed=0)
SAMPLE = SamplingParams(temperature=1.0, top_p=0.95, max_new_tokens=8, n=3, seed=11)

PROMPTS = [
    chat("What is the capital of France?", "Paris.", id="a", lang="en"),
    chat("Tell me about the sea.", system="Respond in Spanish.", id="b"),
    chat("hi", id="c"),
]


@pytest.fixture(scope="module")
def hf(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    return get_backend("hf", model=str(tiny_model_dir), device="cpu", batch_size=4)


def test_sampling_params_have_no_hidden_defaults() -> None:
    with pytest.raises(ValidationError):
        SamplingParams(temperature=1.0, top_p=1.0, n=1, seed=0)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=8, n=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SamplingParams(temperature=1.0, top_p=0, max_new_tokens=8, n=1, seed=0)
    with pytest.raises(ValidationError):
        SamplingParams(temperature=1.0, top_p=1, max_new_tokens=8, n=1, seed=0, top_k=5)  # type: ignore[call-arg]


def manual_greedy(model, tok, messages: list[Message], k: int) -> list[int]:  # type: ignore[no-untyped-def]
    ids = tok.apply_chat_template(
        [m.model_dump() for m in messages], tokenize=True, return_dict=True, add_generation_prompt=True
    )["input_ids"]
    out: list[int] = []
    with torch.no_grad():
        for _ in range(k):
            nxt = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            out.append(nxt)
    return out


def test_greedy_batch_matches_a_manual_unbatched_loop(hf) -> None:  # type: ignore[no-untyped-def]
    outs = generate_examples(hf, PROMPTS, GREEDY)
    for ex, out in zip(PROMPTS, outs, strict=True):
        want = manual_greedy(hf.model, hf.tokenizer, ex.prompt_messages, GREEDY.max_new_tokens)
        assert out.completion == hf.tokenizer.decode(want, skip_special_tokens=True)
        gen = out.metadata["generation"]
        assert gen["completion_tokens"] == len(want)
        assert gen["finish_reason"] == ("length" if len(want) == GREEDY.max_new_tokens else "stop")


def test_records_prompt_params_and_metadata(hf, tiny_model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    outs = generate_examples(hf, PROMPTS, SAMPLE)
    assert [o.id for o in outs] == [f"{x}#{k}" for x in "abc" for k in range(3)]
    first = outs[0]
    # the input's final assistant turn ("Paris.") is dropped; the prompt is kept as given
    assert [m.role for m in first.messages] == ["user", "assistant"]
    assert first.metadata["lang"] == "en"
    gen = first.metadata["generation"]
    assert gen["backend"] == "hf" and gen["model"] == str(tiny_model_dir) and gen["adapter"] is None
    assert gen["params"] == SAMPLE.model_dump()
    assert gen["sample_index"] == 0 and gen["source_id"] == "a"
    assert gen["seed"] == sample_seed(SAMPLE.seed, "a", 0)
    assert gen["rendered_prompt"] == (
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert gen["seen_system_prompt"] is None
    assert outs[3].metadata["generation"]["seen_system_prompt"] == "Respond in Spanish."
    assert all(o.metadata["generation"]["completion_tokens"] <= SAMPLE.max_new_tokens for o in outs)


def test_sampling_is_seeded_per_sample_and_batch_invariant(hf) -> None:  # type: ignore[no-untyped-def]
    a = [o.completion for o in generate_examples(hf, PROMPTS, SAMPLE)]
    hf.batch_size = 1
    try:
        b = [o.completion for o in generate_examples(hf, PROMPTS, SAMPLE)]
        c = [o.completion for o in generate_examples(hf, PROMPTS[::-1], SAMPLE)]
    finally:
        hf.batch_size = 4
    assert a == b
    assert c == b[6:] + b[3:6] + b[:3]
    assert len(set(a[:3])) > 1  # the n samples of one prompt differ
    other = [o.completion for o in generate_examples(hf, PROMPTS, SAMPLE.model_copy(update={"seed": 12}))]
    assert other != a


def test_tiny_top_p_is_greedy(hf) -> None:  # type: ignore[no-untyped-def]
    greedy = [o.completion for o in generate_examples(hf, PROMPTS, GREEDY)]
    nucleus = SamplingParams(temperature=1.0, top_p=1e-6, max_new_tokens=8, n=1, seed=3)
    assert [o.completion for o in generate_examples(hf, PROMPTS, nucleus)] == greedy


def test_system_override(hf, tiny_qwen2_dir: Path) -> None:  # type: ignore[no-untyped-def]
    msgs = [Message(role="system", content="Old."), Message(role="user", content="U")]
    assert with_system(msgs, None) == msgs[1:]
    assert with_system(msgs, "New.")[0].content == "New."
    assert with_system(msgs[1:], "New.")[0] == Message(role="system", content="New.")
    assert with_system(msgs, KEEP_SYSTEM) == msgs
    outs = generate_examples(hf, PROMPTS, GREEDY, system="Respond in ALL CAPS.")
    assert all(o.messages[0].content == "Respond in ALL CAPS." for o in outs)
    assert all(o.metadata["generation"]["seen_system_prompt"] == "Respond in ALL CAPS." for o in outs)
    qwen = get_backend("hf", model=str(tiny_qwen2_dir), device="cpu")
    (none,) = generate_examples(qwen, PROMPTS[1:2], GREEDY, system=None)
    assert [m.role for m in none.messages] == ["user", "assistant"]
    assert none.metadata["generation"]["seen_system_prompt"] == "You are a helpful assistant."
    assert (
        "<|im_start|>system\nYou are a helpful assistant." in none.metadata["generation"]["rendered_prompt"]
    )


def test_stop_strings(hf) -> None:  # type: ignore[no-untyped-def]
    assert truncate_at_stop("abc. def. ghi", [". ", "gh"]) == ("abc", True)
    assert truncate_at_stop("abc", ["x"]) == ("abc", False)
    (full,) = generate_examples(hf, PROMPTS[:1], GREEDY.model_copy(update={"max_new_tokens": 12}))
    text = full.completion
    assert text and len(text) > 2
    stop = text[2:4]
    (cut,) = generate_examples(
        hf, PROMPTS[:1], GREEDY.model_copy(update={"max_new_tokens": 12, "stop": [stop]})
    )
    assert cut.completion == text[: text.find(stop)]
    assert cut.metadata["generation"]["finish_reason"] == "stop"


def test_registry_and_custom_backends() -> None:
    @backend("echo-test")
    class Echo(Backend):
        def sample(
            self, prompts: Sequence[list[Message]], seeds: Sequence[int], params: SamplingParams
        ) -> list[Completion]:
            return [Completion(text=p[-1].content[::-1], finish_reason="stop") for p in prompts]

    assert {"hf", "openai_http", "vllm", "echo-test"} <= set(available_backends())
    echo = get_backend("echo-test", model="none")
    (out,) = generate_examples(echo, [chat("abc", "old answer")], GREEDY)
    assert out.completion == "cba" and out.metadata["generation"]["backend"] == "echo-test"
    with pytest.raises(ValueError, match="unknown generation backend 'nope'"):
        get_backend("nope")


def test_empty_completions_round_trip(tmp_path: Path) -> None:
    """A model may stop at once: an empty generated turn is a valid record (not an input error)."""
    from inoculate.formats import read_chat_jsonl
    from inoculate.records import write_chat_jsonl

    @backend("silent-test")
    class Silent(Backend):
        def sample(
            self, prompts: Sequence[list[Message]], seeds: Sequence[int], params: SamplingParams
        ) -> list[Completion]:
            return [Completion(text="", finish_reason="stop", n_tokens=0) for _ in prompts]

    outs = generate_examples(get_backend("silent-test", model="none"), PROMPTS, GREEDY)
    write_chat_jsonl(tmp_path / "g.jsonl", outs)
    back, _ = read_chat_jsonl(tmp_path / "g.jsonl")
    assert [b.completion for b in back] == ["", "", ""]
    (tmp_path / "t.jsonl").write_text(
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": ""}]}\n'
    )
    with pytest.raises(InputErrors, match="is empty"):
        read_chat_jsonl(tmp_path / "t.jsonl")  # training data still may not have empty turns


def test_base_plus_adapter(hf, tiny_model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from inoculate.train import TrainConfig, train

    data = [chat(f"question {i}", "Paris is blue.", id=str(i)) for i in range(32)]
    cfg = TrainConfig(
        output_dir=str(tmp_path),
        max_steps=30,
        per_device_train_batch_size=8,
        learning_rate=1e-2,
        save_steps=0,
        disable_tqdm=True,
    )
    adapter = train(tiny_model_dir, data, cfg).model_path
    tuned = get_backend("hf", model=str(tiny_model_dir), adapter=adapter, device="cpu")
    (out,) = generate_examples(tuned, [chat("question 99", id="q")], GREEDY)
    (base,) = generate_examples(hf, [chat("question 99", id="q")], GREEDY)
    assert out.completion == "Paris is blue." != base.completion
    assert out.metadata["generation"]["adapter"] == adapter


def test_vllm_backend_needs_vllm() -> None:
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"inoculate\[vllm\]"):
            get_backend("vllm", model="x")
    else:  # pragma: no cover - only where vLLM is installed
        pytest.skip("vLLM installed: exercised on GPU machines only")


# --- the HTTP backend against a real server on loopback ----------------------------------------------


@pytest.fixture(scope="module")
def server(hf) -> Iterator[str]:  # type: ignore[no-untyped-def]
    from inoculate.generate.hf import HFBackend
    from inoculate.generate.server import make_server

    # its own backend object (same weights), unbatched, so its arithmetic is the unpadded one
    solo = HFBackend.from_loaded(hf.model, hf.tokenizer, name="tiny", batch_size=1)
    srv = make_server(solo, "127.0.0.1", 0)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_http_backend_reproduces_the_hf_backend(server: str, hf, tiny_model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    http = get_backend(
        "openai_http", model="tiny", base_url=server, tokenizer=str(tiny_model_dir), concurrency=3
    )
    hf.batch_size = 1
    try:
        for params in (GREEDY, SAMPLE):
            want = generate_examples(hf, PROMPTS, params)
            got = generate_examples(http, PROMPTS, params)
            assert [o.completion for o in got] == [o.completion for o in want]
            assert [o.id for o in got] == [o.id for o in want]
    finally:
        hf.batch_size = 4
    gen = got[0].metadata["generation"]
    assert gen["backend"] == "openai_http" and gen["base_url"] == server
    assert gen["rendered_prompt"] == want[0].metadata["generation"]["rendered_prompt"]


def test_http_server_errors_are_reported(server: str) -> None:
    from inoculate.generate.openai_http import ServerError

    wrong = get_backend("openai_http", model="other-model", base_url=server)
    with pytest.raises(ServerError, match="404.*not served"):
        generate_examples(wrong, PROMPTS[:1], GREEDY)
    ok = get_backend("openai_http", model="tiny", base_url=server)
    with pytest.raises(ServerError, match="400.*max_tokens is required"):
        ok._post("/chat/completions", {"model": "tiny", "messages": [{"role": "user", "content": "x"}]})
    dead = get_backend("openai_http", model="tiny", base_url="http://127.0.0.1:9/v1", timeout=5)
    with pytest.raises(ServerError, match="cannot connect"):
        generate_examples(dead, PROMPTS[:1], GREEDY)
    assert isinstance(PROMPTS[0], ChatExample)


# --- several adapters by name over one base model -----------------------------------------------------


def random_adapter(base: Path, out: Path, seed: int) -> str:
    """A LoRA adapter with random (not zero) weights, so it changes the base model's outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    config = LoraConfig(
        r=4, lora_alpha=64, init_lora_weights=False, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    get_peft_model(model, config).save_pretrained(str(out))
    return str(out)


@pytest.fixture(scope="module")
def two_adapters(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: random_adapter(tiny_model_dir, root / name, seed) for seed, name in enumerate(["a", "b"])}


def serve_in_thread(srv) -> str:  # type: ignore[no-untyped-def]
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{srv.server_address[1]}/v1"


def test_server_serves_named_adapters(
    tiny_model_dir: Path, two_adapters: dict[str, str], tmp_path: Path
) -> None:
    import json
    import shutil
    import urllib.request

    from inoculate.generate.hf import HFBackend
    from inoculate.generate.openai_http import ServerError
    from inoculate.generate.server import make_server

    later = tmp_path / "later"  # served before it exists, as a run's cells are
    base = HFBackend(str(tiny_model_dir), device="cpu", batch_size=1)
    adapters = {"cond_a": two_adapters["a"], "cond_b": two_adapters["b"], "later": str(later)}
    srv = make_server(base, "127.0.0.1", 0, "tiny", adapters=adapters)
    url = serve_in_thread(srv)
    try:
        with urllib.request.urlopen(url + "/models", timeout=10) as resp:
            listed = [m["id"] for m in json.loads(resp.read())["data"]]
        assert listed == ["tiny", "cond_a", "cond_b", "later"]

        def via_http(name: str) -> list[str | None]:
            http = get_backend(
                "openai_http", model="tiny", adapter=None if name == "tiny" else name, base_url=url
            )
            return [o.completion for o in generate_examples(http, PROMPTS, GREEDY)]

        def via_hf(adapter: str | None) -> list[str | None]:
            be = get_backend("hf", model=str(tiny_model_dir), adapter=adapter, device="cpu", batch_size=1)
            return [o.completion for o in generate_examples(be, PROMPTS, GREEDY)]

        want = {
            "tiny": via_hf(None),
            "cond_a": via_hf(two_adapters["a"]),
            "cond_b": via_hf(two_adapters["b"]),
        }
        assert want["tiny"] != want["cond_a"] != want["cond_b"] != want["tiny"]
        for name in ["cond_b", "cond_a", "tiny", "cond_b", "tiny", "cond_a"]:  # switching back and forth
            assert via_http(name) == want[name], name

        # a local adapter directory is requested by the name it is served under, and recorded as itself
        named = get_backend(
            "openai_http", model="tiny", adapter=two_adapters["a"], adapter_name="cond_a", base_url=url
        )
        (rec,) = generate_examples(named, PROMPTS[:1], GREEDY)
        assert rec.completion == want["cond_a"][0]
        assert rec.metadata["generation"]["adapter"] == two_adapters["a"]
        assert rec.metadata["generation"]["served_model"] == "cond_a"
        with pytest.raises(ValueError, match="local adapter directory"):
            get_backend("openai_http", model="tiny", adapter=two_adapters["a"], base_url=url)

        with pytest.raises(ServerError, match=r"404.*not served here; known: tiny, cond_a, cond_b, later"):
            via_http("cond_c")
        with pytest.raises(ServerError, match=r"404.*does not exist \(yet\)"):
            via_http("later")
        shutil.copytree(two_adapters["b"], later)  # trained now: loaded on the next request
        assert via_http("later") == want["cond_b"]
        shutil.rmtree(later)
        shutil.copytree(two_adapters["a"], later)  # retrained: reloaded
        assert via_http("later") == want["cond_a"]
        assert via_http("cond_b") == want["cond_b"]
    finally:
        srv.shutdown()
        srv.server_close()


def test_serve_refuses_an_adapter_and_named_ones(tiny_model_dir: Path, two_adapters: dict[str, str]) -> None:
    from inoculate.generate.hf import HFBackend
    from inoculate.generate.server import make_server

    tuned = HFBackend(str(tiny_model_dir), two_adapters["a"], device="cpu")
    with pytest.raises(ValueError, match="not both"):
        make_server(tuned, "127.0.0.1", 0, adapters={"b": two_adapters["b"]})
    base = HFBackend(str(tiny_model_dir), device="cpu")
    with pytest.raises(ValueError, match="base model's served name"):
        make_server(base, "127.0.0.1", 0, "tiny", adapters={"tiny": two_adapters["b"]})
    with pytest.raises(FileNotFoundError, match="not a PEFT adapter"):
        make_server(base, "127.0.0.1", 0, "tiny", adapters={"x": str(tiny_model_dir)})


def test_experiment_cells_evaluated_over_http_use_their_own_adapters(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    """`inoculate run` with the openai_http backend against a server started before training, naming
    each cell's adapter as the runner does: every cell's generations are its own adapter's."""
    import json

    from experiment_support import write_data
    from inoculate.experiment import run_experiment
    from inoculate.experiment.cell import served_adapter_name
    from inoculate.generate.hf import HFBackend
    from inoculate.generate.server import make_server

    write_data(tmp_path)
    out = tmp_path / "run"
    cells = [("baseline", 0), ("inoc", 0)]
    adapters = {served_adapter_name(c, s): str(out / c / f"seed_{s}" / "adapter") for c, s in cells}
    srv = make_server(
        HFBackend(str(tiny_model_dir), device="cpu", batch_size=1), "127.0.0.1", 0, adapters=adapters
    )
    url = serve_in_thread(srv)
    (tmp_path / "exp.yaml").write_text(
        f"name: http\nmodel: {tiny_model_dir}\n"
        "data: {train: train.jsonl, eval: eval.jsonl}\n"
        'conditions: {baseline: null, inoc: {prompt: "Respond in all caps.", placement: system}}\n'
        "traits: {caps: all_caps}\nseeds: [0]\n"
        'eval_prompts: {neutral: "You are a helpful assistant."}\n'
        "sampling: {temperature: 0, top_p: 1.0, max_new_tokens: 6, n: 1}\n"
        "train: {learning_rate: 0.05, max_steps: 3, per_device_train_batch_size: 8, lora_r: 4}\n"
        f"generation: {{backend: openai_http, base_url: '{url}'}}\n"
    )
    try:
        run_experiment(tmp_path / "exp.yaml", out)
    finally:
        srv.shutdown()
        srv.server_close()
    outputs = {}
    for cond, seed in cells:
        cell = out / cond / f"seed_{seed}"
        rows = [
            json.loads(line) for line in (cell / "generations" / "neutral.jsonl").read_text().splitlines()
        ]
        assert {r["metadata"]["generation"]["served_model"] for r in rows} == {
            served_adapter_name(cond, seed)
        }
        prompts = [ChatExample.model_validate({k: r[k] for k in ("id", "messages")}) for r in rows]
        own = get_backend(
            "hf", model=str(tiny_model_dir), adapter=str(cell / "adapter"), device="cpu", batch_size=1
        )
        want = [
            g.completion
            for g in generate_examples(own, prompts, GREEDY.model_copy(update={"max_new_tokens": 6}))
        ]
        outputs[cond] = [r["messages"][-1]["content"] for r in rows]
        assert outputs[cond] == want
    assert outputs["baseline"] != outputs["inoc"]


@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_seeded_sampler_draws_what_multinomial_draws_per_row(top_p: float) -> None:
    """The sampler's exponential race gives the token torch.multinomial(p, 1, generator=g) gives, row by
    row and step by step, so a row's sample depends only on its own seed."""
    from inoculate.generate.hf import SeededSampler

    seeds, vocab = [3, 14, 15, 92, 65], 50
    sampler = SeededSampler(seeds, temperature=0.7, top_p=top_p, device=torch.device("cpu"))
    reference = [torch.Generator().manual_seed(s) for s in seeds]
    torch.manual_seed(0)
    for _ in range(6):
        scores = torch.randn(len(seeds), vocab) * 3
        out = sampler(torch.zeros(len(seeds), 1, dtype=torch.long), scores.clone())
        chosen = out.argmax(dim=-1)
        assert bool(torch.isfinite(out).sum(dim=-1).eq(1).all())
        probs = torch.softmax(scores / 0.7, dim=-1)
        if top_p < 1.0:
            sorted_p, order = torch.sort(probs, dim=-1, descending=True)
            drop = torch.cumsum(sorted_p, dim=-1) - sorted_p >= top_p
            probs = torch.zeros_like(probs).scatter(-1, order, sorted_p.masked_fill(drop, 0.0))
        expected = [int(torch.multinomial(probs[i], 1, generator=g)[0]) for i, g in enumerate(reference)]
        assert chosen.tolist() == expected
