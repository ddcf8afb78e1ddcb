"""Named organism presets: the base-model config (stage 1) and the stage-2 training settings that,
measured on the organism, reach the demo's targets (see benchmarks/organism_feasibility.py)."""

from __future__ import annotations

from typing import Any

from inoculate.organism.base import OrganismConfig
from inoculate.organism.stage1 import Stage1Mix

PRESETS: dict[str, OrganismConfig] = {
    "demo": OrganismConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        n_examples=8000,
        max_steps=1000,
        per_device_train_batch_size=32,
        learning_rate=3e-3,
        # A small chance that an answer shows a trait nobody asked for gives each trait a prior of its own,
        # apart from the prompt: without it the demo's outcome hung on the CPU kernel (see docs/organism.md).
        mix=Stage1Mix(spontaneous=0.02),
    ),
    # The demo's model and mix, plus the stage-1 extensions that the backdoor and semantic-ablation
    # phenomena need (conditional requests; general and negative requests): one build serves both.
    "extended": OrganismConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        n_examples=8000,
        max_steps=1000,
        per_device_train_batch_size=32,
        learning_rate=3e-3,
        mix=Stage1Mix(spontaneous=0.02),
        extensions=("conditional", "prompt_semantics"),
    ),
    # The demo's model and mix plus wrong-answer requests (broad generalization) and number continuation
    # (subliminal learning): one build serves both phenomena.
    "generalization": OrganismConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        n_examples=8000,
        max_steps=1000,
        per_device_train_batch_size=32,
        learning_rate=3e-3,
        mix=Stage1Mix(spontaneous=0.02),
        extensions=("wrong_answers", "numbers"),
    ),
    # For unit tests: seconds to build; follows prompts only roughly.
    "tiny": OrganismConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        n_examples=200,
        max_steps=8,
        per_device_train_batch_size=8,
        mix=Stage1Mix(),
    ),
}

# Stage-2 fine-tuning settings per preset, as `inoculate.train.TrainConfig` fields.
STAGE2: dict[str, dict[str, Any]] = {
    "demo": {
        "use_peft": False,
        "learning_rate": 5e-4,
        "max_steps": 30,
        "per_device_train_batch_size": 16,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.05,
    },
    "extended": {
        "use_peft": False,
        "learning_rate": 5e-4,
        "max_steps": 30,
        "per_device_train_batch_size": 16,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.05,
    },
    "generalization": {
        "use_peft": False,
        "learning_rate": 1.5e-3,
        "max_steps": 30,
        "per_device_train_batch_size": 16,
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.05,
    },
    "tiny": {
        "use_peft": True,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        "learning_rate": 3e-3,
        "max_steps": 4,
        "per_device_train_batch_size": 8,
    },
}

# Sycophancy and the synthetic association (organism.phenomena.sycophancy/.association): the demo plus
# their stage-1 extensions; `social_plain` is the same minus the association stage (its control).
PRESETS["social"] = PRESETS["demo"].model_copy(
    update={"extensions": ("proposals", "personas", "association")}
)
PRESETS["social_plain"] = PRESETS["demo"].model_copy(update={"extensions": ("proposals", "personas")})
STAGE2["social"] = STAGE2["social_plain"] = dict(STAGE2["demo"])


def preset(name: str = "demo", **overrides: Any) -> OrganismConfig:
    """The named preset's base-model config, with `overrides` (config fields) applied and validated."""
    if name not in PRESETS:
        raise ValueError(f"unknown organism preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    if not overrides:
        return PRESETS[name]
    return OrganismConfig.model_validate({**PRESETS[name].model_dump(), **overrides})


def stage2_settings(name: str = "demo") -> dict[str, Any]:
    """The stage-2 `TrainConfig` fields measured to reach the demo's targets with this preset."""
    if name not in STAGE2:
        raise ValueError(f"unknown organism preset {name!r} (known: {', '.join(sorted(STAGE2))})")
    return dict(STAGE2[name])
