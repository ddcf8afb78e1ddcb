"""The vllm backend against a stub vLLM (vLLM itself needs a GPU): one engine for every adapter, the
requests it is given (token ids, adapter, sampling settings, seed per sample) and the way outputs go
back to their rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from inoculate.generate import SamplingParams, get_backend, sample_seed
from inoculate.models import encode_prompts, load_tokenizer
from inoculate.records import ChatExample, Message, chat
from vllm_support import install_stub_vllm


@pytest.fixture
def stub_vllm(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    return install_stub_vllm(monkeypatch)


def questions(n: int = 3) -> list[ChatExample]:
    return [
        ChatExample(
            id=f"q{i}",
            messages=[
                Message(role="system", content="Be brief."),
                Message(role="user", content="word " * (i + 1)),
            ],
        )
        for i in range(n)
    ]


def adapters(tmp_path: Path, n: int) -> list[str]:
    out = []
    for i in range(n):
        d = tmp_path / f"cond{i}" / "adapter"
        d.mkdir(parents=True)
        out.append(str(d))
    return out


PARAMS = SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=5, n=2, seed=11, stop=["STOP"])


def test_one_engine_serves_every_adapter_of_a_run(stub_vllm, tiny_model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Backends built one per cell (as the runner does) share one engine, started with LoRA on."""
    paths = adapters(tmp_path, 6)
    backends = [get_backend("vllm", model=str(tiny_model_dir), adapter=p, max_loras=6) for p in paths]
    base = get_backend("vllm", model=str(tiny_model_dir), max_loras=6)
    assert len(stub_vllm) == 1
    assert stub_vllm[0].kwargs["enable_lora"] is True and stub_vllm[0].kwargs["max_loras"] == 6
    assert all(b.engine is base.engine for b in backends)
    ids = [b._lora.lora_int_id for b in backends]
    assert len(set(ids)) == 6 and base._lora is None
    # the same adapter again keeps its id (vLLM loads it once)
    again = get_backend("vllm", model=str(tiny_model_dir), adapter=paths[2], max_loras=6)
    assert again._lora.lora_int_id == ids[2]
    # other engine settings: another engine
    get_backend("vllm", model=str(tiny_model_dir), max_loras=2)
    assert len(stub_vllm) == 2


def test_generate_many_sends_one_call_and_maps_outputs_back(
    stub_vllm, tiny_model_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from inoculate.generate.vllm import AdapterJob, VLLMEngine

    engine = VLLMEngine(str(tiny_model_dir), max_loras=4)
    paths = adapters(tmp_path, 3)
    jobs = [AdapterJob(p, questions(3)) for p in paths] + [AdapterJob(None, questions(2), system=None)]
    results = engine.generate_many(jobs, PARAMS)

    (call,) = stub_vllm[0].calls  # ONE engine call for the whole matrix
    n_requests = sum(len(j.examples) for j in jobs) * PARAMS.n
    assert len(call["requests"]) == len(call["sampling"]) == len(call["lora"]) == n_requests
    tok = load_tokenizer(tiny_model_dir)
    k = 0
    for job, gens in zip(jobs, results, strict=True):
        assert [g.id for g in gens] == [f"{ex.id}#{s}" for ex in job.examples for s in range(PARAMS.n)]
        for g in gens:
            info = g.metadata["generation"]
            name = "base" if job.adapter is None else job.adapter
            seed = sample_seed(PARAMS.seed, info["source_id"], info["sample_index"])
            assert info["seed"] == seed and info["adapter"] == job.adapter and info["backend"] == "vllm"
            # the request at this position carried this row's prompt, adapter and seed
            (want_ids,) = encode_prompts(tok, [g.prompt_messages])
            assert call["requests"][k]["prompt_token_ids"] == want_ids
            lora = call["lora"][k]
            assert (lora is None) == (job.adapter is None)
            if lora is not None:
                assert lora.lora_path == str(Path(job.adapter).resolve())
            sp = call["sampling"][k].kwargs
            assert sp == {
                "n": 1,
                "temperature": 0.7,
                "top_p": 0.9,
                "top_k": -1,
                "repetition_penalty": 1.0,
                "max_tokens": 5,
                "seed": seed,
                "stop": ["STOP"],
            }
            assert g.completion == f"{name}|{seed}|{len(want_ids)}"
            assert info["finish_reason"] == "length" and info["completion_tokens"] == 5
            k += 1
    # the base job's system turn was removed (system=None), the adapters' kept
    assert results[-1][0].messages[0].role == "user" and results[0][0].messages[0].role == "system"


def test_generate_many_matches_one_backend_per_adapter(
    stub_vllm, tiny_model_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """Batching the adapters together changes nothing in the records."""
    from inoculate.generate.vllm import AdapterJob, VLLMEngine

    engine = VLLMEngine(str(tiny_model_dir))
    paths = adapters(tmp_path, 2)
    together = engine.generate_many([AdapterJob(p, questions()) for p in paths], PARAMS)
    apart = [engine.backend(p).generate(questions(), PARAMS) for p in paths]
    assert [[g.to_json() for g in r] for r in together] == [[g.to_json() for g in r] for r in apart]
    assert len(stub_vllm[0].calls) == 3


def test_base_model_alone_sends_no_lora_and_short_outputs_are_refused(
    stub_vllm, tiny_model_dir: Path
) -> None:  # type: ignore[no-untyped-def]
    from inoculate.generate.vllm import VLLMEngine

    engine = VLLMEngine(str(tiny_model_dir))
    engine.backend(None).generate([chat("hi", "x", id="a")], PARAMS)
    assert stub_vllm[0].calls[-1]["lora"] is None
    stub_vllm[0].generate = lambda requests, **kw: []  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="0 outputs for 2 requests"):
        engine.backend(None).generate([chat("hi", "x", id="a")], PARAMS)


def test_adapter_tokenizer_is_used_when_saved_with_the_adapter(
    stub_vllm, tiny_model_dir: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    """As the hf backend does: an adapter folder holding a tokenizer (here with another chat
    template) tokenizes its prompts; the engine stays one."""
    from inoculate.generate.vllm import VLLMEngine

    tok = load_tokenizer(tiny_model_dir)
    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}[assistant]"
    own = tmp_path / "own" / "adapter"
    tok.save_pretrained(own)
    engine = VLLMEngine(str(tiny_model_dir))
    mine, base = engine.backend(str(own)), engine.backend(None)
    msgs = [Message(role="user", content="hello")]
    assert mine.encode([msgs]) != base.encode([msgs])
    assert mine.rendered_prompt(msgs) == "[user]hello[assistant]"
    assert len(stub_vllm) == 1


def test_jobs_with_their_own_seeds_share_one_call(stub_vllm, tiny_model_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A matrix's cells differ in their seed: each job samples with its own parameters, all in one
    call, and gets the records its own backend would give it."""
    from inoculate.generate.base import AdapterJob

    engine = engine_for(tiny_model_dir)
    paths = adapters(tmp_path, 2)
    own = [PARAMS.model_copy(update={"seed": s}) for s in (0, 1)]
    jobs = [AdapterJob(p, questions(), params=q) for p, q in zip(paths, own, strict=True)]
    jobs.append(AdapterJob(None, questions(2)))  # the call's parameters
    together = engine.generate_many(jobs, PARAMS)
    assert len(stub_vllm[0].calls) == 1
    apart = [engine.backend(p).generate(questions(), q) for p, q in zip(paths, own, strict=True)]
    apart.append(engine.backend(None).generate(questions(2), PARAMS))
    assert [[g.to_json() for g in r] for r in together] == [[g.to_json() for g in r] for r in apart]
    seeds = [{g.metadata["generation"]["params"]["seed"] for g in r} for r in together]
    assert seeds == [{0}, {1}, {PARAMS.seed}]
    with pytest.raises(ValueError, match="no sampling parameters"):
        engine.generate_many([AdapterJob(None, questions(1))])


def test_only_backends_that_batch_adapters_say_so(stub_vllm, tiny_model_dir: Path) -> None:  # type: ignore[no-untyped-def]
    """The runner's rule reads the capability, not the backend's name; the engine it gets is the one
    the per-adapter backends share."""
    from inoculate.generate.base import adapter_engine, generates_many

    assert generates_many("vllm") and not generates_many("hf") and not generates_many("openai_http")
    engine = adapter_engine("vllm", str(tiny_model_dir), max_loras=3)
    assert get_backend("vllm", model=str(tiny_model_dir), max_loras=3).engine is engine
    assert len(stub_vllm) == 1
    with pytest.raises(ValueError, match="does not sample many adapters"):
        adapter_engine("hf", str(tiny_model_dir))


def engine_for(model: Path):  # type: ignore[no-untyped-def]
    from inoculate.generate.vllm import VLLMEngine

    return VLLMEngine(str(model))
