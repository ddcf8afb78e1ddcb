"""Sampling completions: parameters, the backend registry (hf, openai_http, vllm) and records.

`get_backend("hf", model=..., adapter=...)` returns a backend; `generate_examples(backend, examples,
params)` samples `params.n` completions per example and returns them as chat examples.
"""

from inoculate.generate.base import (
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

__all__ = [
    "KEEP_SYSTEM",
    "Backend",
    "Completion",
    "SamplingParams",
    "available_backends",
    "backend",
    "generate_examples",
    "get_backend",
    "sample_seed",
    "with_system",
]
