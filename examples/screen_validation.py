"""Validate `inoculate screen` on the organism, then study IP collapse under long training.

    python examples/screen_validation.py [--out runs/screen_validation] [--seeds N] [--no-dynamics]

1. `inoculate run examples/screen_validation.yaml`: screens every candidate (elicitation and surprise,
   cost recorded), trains the organism with each candidate as its inoculation prompt (`pick: all`), and
   writes report.md, whose "Prompt screen" section correlates each screen measure with the
   post-training suppression of the trait (Spearman), plots them (figures/screen_validation.png),
   compares the measures' costs and sample sizes (OUT/screen/validation.json). Printed here too.
2. Unless --no-dynamics: re-trains the standard inoculation condition for 300 steps at the demo's lr
   and at 3x it (seed 0) with the learning-dynamics monitor; plots Tan et al.'s figure to
   OUT/figures/collapse_<run>.png (the collapse warning, if it fires, is marked) and samples each final
   model under the neutral prompt (OUT/collapse/summary.json).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from inoculate.fileio import write_json_atomic

HERE = Path(__file__).resolve().parent


DYNAMICS_RUNS: dict[str, tuple[str, dict[str, Any]]] = {
    # label: (condition, TrainConfig overrides)
    # demo-length runs are in the report (the `dynamics:` block); here long training, where IP is
    # reported to collapse (the inoculated trait leaks back)
    "standard_long": ("standard", {"max_steps": 300}),
    "standard_long_lr3e-3": ("standard", {"learning_rate": 3e-3, "max_steps": 300}),
}


def dynamics_figures(out: Path, every: int) -> dict[str, Any]:
    """Train each DYNAMICS_RUNS entry (seed 0) with the monitor, plot it, sample the result under the
    neutral prompt; write and return the summary."""
    from inoculate.dynamics import LearningDynamicsCallback, plot_dynamics
    from inoculate.experiment import apply_screen, load_experiment, prepare
    from inoculate.organism.contrast import organism_probe_set
    from inoculate.train import TrainConfig, train
    from inoculate.transform import apply_inoculation

    plan = apply_screen(prepare(load_experiment(HERE / "screen_validation.yaml"), seeds=1), out)  # cached
    cfg = plan.config
    summary: dict[str, Any] = {}
    for label, (cond, overrides) in DYNAMICS_RUNS.items():
        spec = plan.specs[cond]
        ip = spec.prompt if spec is not None else cfg.resolve_text("@inoculate_spanish")
        probes = organism_probe_set(
            [ex.prompt_messages for ex in plan.eval_examples[:24]],
            cfg.traits["spanish"],
            cfg.traits["all_caps"],
            {"neutral": plan.eval_prompts["neutral"], "inoculation": ip},
            both=True,
        )
        examples = plan.train_examples
        if spec is not None:
            examples, _ = apply_inoculation(examples, spec, source=cond)
        cb = LearningDynamicsCallback(probes, every_n_steps=every)
        settings = {**plan.train_config, **overrides}
        tc = TrainConfig.model_validate(
            {**settings, "output_dir": str(out / "collapse" / label), "seed": 0, "disable_tqdm": True}
        )
        result = train(plan.model_path, examples, tc, callbacks=[cb], resume=False)
        title = f"{label}: lr {settings['learning_rate']}, {settings['max_steps']} steps; IP {ip!r}"
        plot_dynamics(cb.rows, out / "figures" / f"collapse_{label}.png", title=title)
        rates = _neutral_rates(plan, result)
        summary[label] = {
            "condition": cond,
            "learning_rate": settings["learning_rate"],
            "max_steps": settings["max_steps"],
            "collapse_step": cb.collapse_step,
            "trait_logodds": [(r["step"], round(r["trait_logodds"]["neutral"], 3)) for r in cb.rows],
            "after_training_neutral": rates,
        }
        first, last = (r["trait_logodds"]["neutral"] for r in (cb.rows[0], cb.rows[-1]))
        print(
            f"dynamics {label}: collapse warning at step {cb.collapse_step}; log-odds {first:+.1f} -> "
            f"{last:+.1f}; under the neutral prompt after training: {rates}"
        )
    write_json_atomic(out / "collapse" / "summary.json", summary)
    return summary


def _neutral_rates(plan: Any, result: Any) -> dict[str, float]:
    """Sample the trained model on the eval set under the neutral prompt; mean of each trait scorer."""
    from inoculate.generate import SamplingParams
    from inoculate.generate.hf import HFBackend
    from inoculate.records import ChatExample, Message
    from inoculate.scorers import score_generations

    model = plan.model_path if result.is_adapter else result.model_path
    backend = HFBackend(model, result.model_path if result.is_adapter else None, batch_size=270)
    neutral = plan.eval_prompts["neutral"]
    system = [Message(role="system", content=neutral)] if neutral else []
    questions = [ChatExample(id=ex.id, messages=[*system, *ex.prompt_messages]) for ex in plan.eval_examples]
    gens = backend.generate(questions, SamplingParams(**plan.config.sampling.model_dump(), seed=0))
    _rows, means = score_generations(gens, plan.scorers)
    return {name: round(m["mean"], 3) for name, m in means.items() if m["mean"] is not None}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/screen_validation"))
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--no-dynamics", action="store_true")
    ap.add_argument("--every", type=int, default=5, help="dynamics: probe every N steps")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (tiny models run best on 1)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)

    from inoculate.experiment import run_experiment
    from inoculate.report.screen_validation import ScreenValidation
    from inoculate.screen import ScreenResult

    t0 = time.perf_counter()
    outcome = run_experiment(HERE / "screen_validation.yaml", args.out, seeds=args.seeds)
    ran, cached = len(outcome.matrix.ran), len(outcome.matrix.cached)
    print(f"run: {outcome.seconds:.0f} s ({ran} cells ran, {cached} cached)")
    screen = ScreenResult.model_validate_json((args.out / "screen" / "screen.json").read_text())
    from rich.console import Console

    from inoculate.cli.screen_cmds import screen_table

    Console(width=180).print(screen_table(screen))
    v = ScreenValidation.model_validate_json((args.out / "screen" / "validation.json").read_text())
    print(v.summary())  # the full section, with the sample-size table, is in report.md
    if not args.no_dynamics:
        dynamics_figures(args.out, args.every)
    print(f"total {time.perf_counter() - t0:.0f} s; outputs in {args.out}")


if __name__ == "__main__":
    main()
