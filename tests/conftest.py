"""Shared fixtures: tiny offline models, built once per test session. Nothing is downloaded."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The base model's elicitation cache (inoculate.experiment.base_cache): one temporary folder per test
# session, so no test reads another session's entries or writes into the user's cache.
os.environ.setdefault("INOCULATE_BASE_CACHE", tempfile.mkdtemp(prefix="inoculate-base-cache-"))

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init 2-layer Llama with a byte-level BPE tokenizer and a ChatML template."""
    from inoculate.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-chatml"), "chatml")


@pytest.fixture(scope="session")
def tiny_llama3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same kind of model with a Llama-3-style template (BOS, headers, <|eot_id|>)."""
    from inoculate.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama3"), "llama3", seed=1)


@pytest.fixture(scope="session")
def tiny_qwen2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ChatML with a default system prompt inserted when none is given (like Qwen2.x)."""
    from inoculate.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"), "qwen2", seed=2)


SHARED_DATA = Path(
    os.environ.get("INOCULATE_SHARED_DATA") or Path(__file__).resolve().parents[1].parent / "shared" / "data"
)
"""`../shared/data` beside the checkout; INOCULATE_SHARED_DATA points elsewhere (a git worktree's parent)."""


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real published files in `../shared/data` (see its README); skip where a clone has none."""
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (it holds real published files; a user's clone has none)")
    return SHARED_DATA
