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


def _demo_plus(*extensions: str) -> OrganismConfig:
    """The demo's base model and stage-1 mix plus the named stage-1 extensions (one build per preset)."""
    return OrganismConfig.model_validate({**PRESETS["demo"].model_dump(), "extensions": extensions})


# Each phenomenon preset is the demo plus the stage-1 extensions its phenomena need; one build serves
# the phenomena named beside it (organism.phenomena).
PRESETS |= {
    # backdoor, semantic_ablation: conditional requests; general and negative requests
    "extended": _demo_plus("conditional", "prompt_semantics"),
    # broad, subliminal: wrong-answer requests; number continuation
    "generalization": _demo_plus("wrong_answers", "numbers"),
    # sycophancy, association: user proposals; personas; personas tied to traits
    "social": _demo_plus("proposals", "personas", "association"),
    # association_control: the same minus the association stage
    "social_plain": _demo_plus("proposals", "personas"),
}
STAGE2 |= {
    "extended": dict(STAGE2["demo"]),
    # measured at one seed: 5e-4 left the baseline's broad rate at 0.21, 2e-3 raised the inoculated one
    # to 0.11 (docs/organism.md)
    "generalization": {**STAGE2["demo"], "learning_rate": 1.5e-3},
    "social": dict(STAGE2["demo"]),
    "social_plain": dict(STAGE2["demo"]),
}


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
