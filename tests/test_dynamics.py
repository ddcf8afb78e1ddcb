"""The learning-dynamics monitor: the collapse rule, the callback's warning, and its numbers against
a separate log-prob evaluation of the saved checkpoint."""

from __future__ import annotations

import logging
import math
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from inoculate.dynamics import (
    INOCULATED,
    NEITHER,
    OTHER,
    CollapseRule,
    IPCollapseWarning,
    LearningDynamicsCallback,
    Probe,
    ProbeSet,
    collapse_signal,
    detect_collapse,
    evaluate_probes,
    plot_dynamics,
    read_dynamics,
)
from inoculate.records import Message, chat

IP = "Respond in ALL CAPS."
QA = [
    ("What is the capital of France?", "the capital of france is paris."),
    ("How many legs does a spider have?", "a spider has eight legs."),
    ("Tell me about the weather today.", "it is sunny and warm."),
    ("Write a short poem about the sea.", "the sea is blue and deep and wide."),
]
SIGN = " thank you very much."


def _probes() -> ProbeSet:
    return ProbeSet(
        probes=[
            Probe(
                messages=[Message(role="user", content=q)],
                responses={INOCULATED: a.upper(), OTHER: a + SIGN, NEITHER: a},
            )
            for q, a in QA
        ],
        prompts={"neutral": None, "inoculation": IP},
    )


# --- the rule on constructed sequences ------------------------------------------------------------


def test_rule_fires_on_a_climb_and_not_on_a_plateau() -> None:
    rule = CollapseRule(delta=0.5, level=None, k=2, min_evals=2)
    plateau = [-5.0, -5.2, -5.1, -5.3, -5.0, -4.9, -5.2, -5.1]  # noise well within delta
    assert detect_collapse(plateau, rule) is None
    climb = [-5.0, -5.2, -5.1, -4.9, -4.6, -4.4, -4.0, -3.0]
    # running min -5.2; above -4.7 from index 4 (-4.6) on: k=2 consecutive -> fires at index 5
    assert detect_collapse(climb, rule) == 5


def test_rule_needs_k_consecutive_and_min_evals() -> None:
    rule = CollapseRule(delta=0.5, level=None, k=2, min_evals=2)
    spike = [-5.0, -5.0, -5.0, -4.0, -5.0, -5.0, -4.0, -5.0]
    assert detect_collapse(spike, rule) is None  # single spikes never last k evaluations
    assert detect_collapse(spike, rule.model_copy(update={"k": 1})) == 3
    early = [-5.0, -4.0, -3.0, -2.0]
    assert detect_collapse(early, CollapseRule(delta=0.5, level=None, k=1, min_evals=3)) == 3
    nan_gap = [-5.0, math.nan, -4.0, -4.0]
    assert detect_collapse(nan_gap, CollapseRule(delta=0.5, level=None, k=2, min_evals=1)) == 3
    # the running minimum follows a dip: a rise back to the start after a deep dip is a climb
    dip = [-5.0, -7.0, -6.0, -6.2, -5.0, -5.0]
    assert detect_collapse(dip, rule) == 3


def test_level_holds_back_a_climb_that_stays_unlikely() -> None:
    creep = [-16.0, -17.3, -15.0, -13.0, -11.8, -11.0, -10.7, -10.7]  # up 6.6 nats, still rare
    assert detect_collapse(creep, CollapseRule(level=None)) == 5
    assert detect_collapse(creep, CollapseRule()) is None  # default level -5
    jump = [-16.1, -16.0, -16.4, -3.0, 4.8, 8.0]
    assert detect_collapse(jump, CollapseRule()) == 4


def test_signal_is_the_trait_log_odds_under_the_rule_prompt() -> None:
    rows = [{"trait_logodds": {"neutral": -4.0, "inoculation": 3.0}}, {"logprob": {}}]
    assert collapse_signal(rows, CollapseRule())[0] == -4.0
    assert collapse_signal(rows, CollapseRule(prompt="inoculation"))[0] == 3.0
    assert math.isnan(collapse_signal(rows, CollapseRule())[1])


def test_trait_log_odds_marginalises_the_other_trait(tiny_model_dir: Path) -> None:
    """log(p(inoculated) + p(both)) - log(p(other) + p(neither)), per probe, from the same log-probs."""
    from inoculate.dynamics import BOTH
    from inoculate.logprob import logprob
    from inoculate.models import load_model

    model, tok = load_model(tiny_model_dir, device="cpu")
    probes = ProbeSet(
        probes=[
            Probe(
                messages=[Message(role="user", content=q)],
                responses={INOCULATED: a.upper(), OTHER: a + SIGN, NEITHER: a, BOTH: (a + SIGN).upper()},
            )
            for q, a in QA
        ],
        prompts={"neutral": None},
    )
    values, _ = evaluate_probes(model, tok, probes, batch_size=3)
    expect = []
    for p in probes.probes:
        scored = logprob(model, tok, [p.messages] * 4, list(p.responses.values()))
        lp = {c: r.total for c, r in zip(p.responses, scored, strict=True)}
        yes = math.log(math.exp(lp[INOCULATED]) + math.exp(lp[BOTH]))
        no = math.log(math.exp(lp[OTHER]) + math.exp(lp[NEITHER]))
        expect.append(yes - no)
    assert values["trait_logodds"]["neutral"] == pytest.approx(sum(expect) / len(expect), abs=1e-6)
    assert values["logprob_seq"]["neutral"][BOTH] < 0


# --- the callback's warning on a constructed run --------------------------------------------------


def _run_constructed(monkeypatch, tmp_path: Path, signal: list[float], **kw) -> LearningDynamicsCallback:
    """Drive the callback through a fake run whose trait log-odds under the neutral prompt are `signal`."""
    import inoculate.dynamics as dyn

    values = iter(signal)

    def fake(model, tokenizer, probes, *, batch_size, present, absent):
        s = next(values)
        per_token = {"neutral": {INOCULATED: s / 5, OTHER: -2.0, NEITHER: -1.0}, "inoculation": {}}
        return {"logprob": per_token, "trait_logodds": {"neutral": s, "inoculation": 0.0}}, 10

    monkeypatch.setattr(dyn, "evaluate_probes", fake)
    kw.setdefault("rule", CollapseRule(delta=0.5, level=None, k=2, min_evals=2))
    cb = LearningDynamicsCallback(_probes(), every_n_steps=5, output_path=tmp_path / "dyn.jsonl", **kw)
    args = SimpleNamespace(output_dir=str(tmp_path))
    state = SimpleNamespace(global_step=0, epoch=0.0, is_world_process_zero=True)
    control = SimpleNamespace(should_training_stop=False)
    kwargs = {"model": object(), "processing_class": object()}
    cb.on_train_begin(args, state, control, **kwargs)
    for step in range(1, 5 * (len(signal) - 1) + 1):
        state.global_step = step
        cb.on_step_end(args, state, control, **kwargs)
        if control.should_training_stop:
            break
    cb.on_train_end(args, state, control, **kwargs)
    cb.control = control
    return cb


def test_callback_warns_on_a_collapsing_run(monkeypatch, tmp_path: Path, caplog) -> None:
    signal = [-5.0, -5.1, -5.0, -4.2, -3.5, -3.0, -2.0]
    with (
        caplog.at_level(logging.WARNING, logger="inoculate.dynamics"),
        pytest.warns(IPCollapseWarning) as rec,
    ):
        cb = _run_constructed(monkeypatch, tmp_path, signal)
    assert len(rec) == 1  # warned once
    assert cb.collapse_step == 20  # evaluation index 4 (steps 0, 5, 10, 15, 20)
    assert "IP collapse at step 20" in caplog.text
    rows = read_dynamics(tmp_path / "dyn.jsonl")
    assert [r["step"] for r in rows] == [0, 5, 10, 15, 20, 25, 30]
    assert [r["collapse"] for r in rows] == [False] * 4 + [True] * 3
    assert all(r["collapse_step"] == 20 for r in rows[4:])


def test_callback_can_stop_training(monkeypatch, tmp_path: Path) -> None:
    signal = [-5.0, -5.1, -5.0, -4.2, -3.5, -3.0, -2.0]
    with pytest.warns(IPCollapseWarning):
        cb = _run_constructed(monkeypatch, tmp_path, signal, stop_on_collapse=True)
    assert cb.control.should_training_stop
    assert [r["step"] for r in read_dynamics(tmp_path / "dyn.jsonl")] == [0, 5, 10, 15, 20]


def test_callback_quiet_on_a_clean_run(monkeypatch, tmp_path: Path) -> None:
    signal = [-5.0, -5.1, -5.2, -5.0, -4.9, -5.3, -5.1]
    with warnings.catch_warnings():
        warnings.simplefilter("error", IPCollapseWarning)
        cb = _run_constructed(monkeypatch, tmp_path, signal)
    assert cb.collapse_step is None
    assert not any(r["collapse"] for r in read_dynamics(tmp_path / "dyn.jsonl"))
    png = plot_dynamics(tmp_path / "dyn.jsonl", tmp_path / "dyn.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_probe_set_checks() -> None:
    bad = ProbeSet(
        probes=[
            Probe(messages=[Message(role="user", content="q")], responses={INOCULATED: "A", NEITHER: "a"}),
            Probe(messages=[Message(role="user", content="q")], responses={INOCULATED: "A"}),
        ],
        prompts={"neutral": None},
    )
    with pytest.raises(ValueError, match="categories"):
        bad.check()
    with pytest.raises(ValueError, match="every_n_steps"):
        LearningDynamicsCallback(_probes(), every_n_steps=0)


# --- real runs --------------------------------------------------------------------------------------


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(model_dir: Path, out: Path, examples, cb: LearningDynamicsCallback, steps: int = 8, **kw):
    from inoculate.train import TrainConfig, train

    cfg = TrainConfig(
        output_dir=str(out),
        learning_rate=kw.pop("learning_rate", 1e-2),
        max_steps=steps,
        per_device_train_batch_size=4,
        save_steps=kw.pop("save_steps", 4),
        save_total_limit=None,
        logging_steps=4,
        disable_tqdm=True,
        lora_r=8,
        lora_alpha=16,
        lora_dropout=0.1,
        seed=0,
        **kw,
    )
    return train(model_dir, examples, cfg, callbacks=[cb], resume=False)


def test_callback_matches_a_separate_evaluation_of_the_checkpoint(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    from inoculate.models import load_model

    examples = [chat(q, (a + SIGN).upper(), system=IP, id=f"t{i}") for i, (q, a) in enumerate(QA)] * 2
    cb = LearningDynamicsCallback(_probes(), every_n_steps=2, batch_size=5, rule=CollapseRule(delta=100.0))
    result = _train(tiny_model_dir, tmp_path / "run", examples, cb)
    rows = read_dynamics(tmp_path / "run" / "dynamics.jsonl")
    assert [r["step"] for r in rows] == [0, 2, 4, 6, 8]
    assert set(rows[0]["logprob"]) == {"neutral", "inoculation"}
    assert set(rows[0]["logprob"]["neutral"]) == {INOCULATED, OTHER, NEITHER}
    assert rows[0]["logprob"] != rows[-1]["logprob"]  # training moved the probes
    for step, adapter in ((4, tmp_path / "run" / "checkpoint-4"), (8, Path(result.model_path))):
        model, tok = load_model(tiny_model_dir, adapter, device="cpu")
        separate, _ = evaluate_probes(model, tok, _probes(), batch_size=3)
        row = next(r for r in rows if r["step"] == step)
        for key in ("logprob", "logprob_seq"):
            for label in separate[key]:
                for cat in separate[key][label]:
                    got, want = row[key][label][cat], separate[key][label][cat]
                    assert got == pytest.approx(want, abs=1e-4), (step, key, label, cat)
        for label, want in separate["trait_logodds"].items():
            assert row["trait_logodds"][label] == pytest.approx(want, abs=1e-4), (step, label)


def test_real_runs_collapse_warning(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Caps responses under the neutral prompt (no inoculation at all: the extreme collapse) fire the
    rule; plain responses (the trait never trained) do not. Full fine-tuning, 16 steps. On a random
    model the caps responses start near -95 nats of log-odds, so the level condition is off."""
    rule = CollapseRule(level=None)
    run = {"steps": 16, "learning_rate": 3e-3, "use_peft": False, "save_steps": 0}
    trait = [chat(q, a.upper(), id=f"t{i}") for i, (q, a) in enumerate(QA)] * 2
    with pytest.warns(IPCollapseWarning):
        cb = LearningDynamicsCallback(_probes(), every_n_steps=2, rule=rule)
        _train(tiny_model_dir, tmp_path / "leaky", trait, cb, **run)
    assert cb.collapse_step is not None
    plain = [chat(q, a, id=f"t{i}") for i, (q, a) in enumerate(QA)] * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error", IPCollapseWarning)
        cb = LearningDynamicsCallback(_probes(), every_n_steps=2, rule=rule)
        _train(tiny_model_dir, tmp_path / "clean", plain, cb, **run)
    assert cb.collapse_step is None
    sig = collapse_signal(read_dynamics(tmp_path / "clean" / "dynamics.jsonl"), rule)
    assert all(s - min(sig[: t + 1]) < rule.delta for t, s in enumerate(sig))  # it never climbed


def test_organism_probe_set_renders_each_category() -> None:
    from inoculate.dynamics import BOTH
    from inoculate.organism.contrast import organism_probe_set

    ps = organism_probe_set(
        [[Message(role="system", content="x"), Message(role="user", content="what color is the cat?")]],
        "organism_language:es",
        "all_caps",
        {"neutral": None, "inoculation": "You always answer in Spanish."},
        both=True,
    )
    r = ps.probes[0].responses
    assert [m.role for m in ps.probes[0].messages] == ["user"]
    assert r[NEITHER] == r[NEITHER].lower() and r[OTHER] == r[NEITHER].upper()
    assert r[BOTH] == r[INOCULATED].upper() and r[INOCULATED] != r[NEITHER]
    with pytest.raises(ValueError, match="not an organism trait"):
        organism_probe_set(
            [[Message(role="user", content="what color is the cat?")]], "keyword:x", "all_caps", {}
        )
