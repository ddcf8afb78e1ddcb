"""A stub vLLM for the tests (vLLM itself needs a GPU): `install_stub_vllm` puts modules named `vllm`,
`vllm.lora` and `vllm.lora.request` in `sys.modules` whose `LLM` records what it is built with and
asked, and answers each request with a text that names its adapter, seed and prompt length."""

from __future__ import annotations

import contextlib
import sys
import types
from dataclasses import dataclass, field
from typing import Any

import pytest


@dataclass
class StubLoRA:
    lora_name: str
    lora_int_id: int
    lora_path: str


@dataclass
class StubSampling:
    kwargs: dict[str, Any]


@dataclass
class StubLLM:
    """Records what it is built with and asked; each output's text names its request's adapter,
    seed and prompt length, so a test can tell which request an output belongs to. `log` (shared with
    the test) gets `("build",)` when the engine is built and `("generate", n_requests)` per call."""

    kwargs: dict[str, Any]
    calls: list[dict[str, Any]] = field(default_factory=list)
    log: list[tuple[Any, ...]] = field(default_factory=list)
    fail: BaseException | None = None
    """raised by `generate` when set (an engine that dies mid-run)"""

    def __post_init__(self) -> None:
        self.log.append(("build",))

    def generate(self, requests, sampling_params=None, lora_request=None, use_tqdm=True):  # type: ignore[no-untyped-def]
        self.log.append(("generate", len(requests)))
        if self.fail is not None:
            raise self.fail
        self.calls.append({"requests": requests, "sampling": sampling_params, "lora": lora_request})
        loras = lora_request if isinstance(lora_request, list) else [lora_request] * len(requests)
        outs = []
        for req, sp, lora in zip(requests, sampling_params, loras, strict=True):
            name = "base" if lora is None else lora.lora_name
            text = f"{name}|{sp.kwargs['seed']}|{len(req['prompt_token_ids'])}"
            tokens = list(range(sp.kwargs["max_tokens"]))
            outs.append(
                types.SimpleNamespace(
                    outputs=[types.SimpleNamespace(text=text, token_ids=tokens, finish_reason="length")]
                )
            )
        return outs


def install_stub_vllm(
    monkeypatch: pytest.MonkeyPatch,
    log: list[tuple[Any, ...]] | None = None,
    fail: BaseException | None = None,
) -> list[StubLLM]:
    """Install the stub (undone with `monkeypatch`) and forget the process's shared engines; returns
    the list every engine built is appended to. `log` and `fail` go to each engine built."""
    with contextlib.suppress(ImportError):  # trl looks for vLLM when first imported: not at the stub
        import trl  # noqa: F401
    built: list[StubLLM] = []
    shared_log = log if log is not None else []

    def build(**kw: Any) -> StubLLM:
        built.append(StubLLM(kw, log=shared_log, fail=fail))
        return built[-1]

    vllm = types.ModuleType("vllm")
    vllm.LLM = build  # type: ignore[attr-defined]
    vllm.SamplingParams = lambda **kw: StubSampling(kw)  # type: ignore[attr-defined]
    lora_mod = types.ModuleType("vllm.lora")
    request_mod = types.ModuleType("vllm.lora.request")
    request_mod.LoRARequest = StubLoRA  # type: ignore[attr-defined]
    for name, mod in {"vllm": vllm, "vllm.lora": lora_mod, "vllm.lora.request": request_mod}.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr("inoculate.generate.vllm._ENGINES", {})
    return built
