"""The learning-dynamics monitor inside `inoculate run` (the experiment's `dynamics:` block): located
config errors, cache keys, dynamics.jsonl for monitored cells only, the report's figures and section,
the collapse warning in the progress output, and stop_on_collapse."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from experiment_support import CAPS, errors_of, write_small_experiment
from inoculate.experiment import load_experiment, prepare, run_experiment
from inoculate.experiment.matrix import NullProgress

PROBES = [
    # the small experiment's data: answers "EL GATO n" (Spanish rows) and "LE CHAT n"; caps is inoculated
    {"q": "What is 40 plus 1?", "plain": "le chat 41"},
    {"q": "What is 41 plus 1?", "plain": "le chat 42"},
    {"q": "What is 42 plus 1?", "plain": "le chat 43"},
]


def write_probes(path: Path) -> Path:
    rows = []
    for p in PROBES:
        gato = p["plain"].replace("le chat", "el gato")
        responses = {
            "inoculated": p["plain"].upper(),
            "other": gato,
            "neither": p["plain"],
            "both": gato.upper(),
        }
        rows.append({"messages": [{"role": "user", "content": p["q"]}], "responses": responses})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def with_block(path: Path, block: dict | None, **changes) -> Path:
    """Rewrite the experiment YAML with a `dynamics:` block (and other top-level changes)."""
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    if block is None:
        data.pop("dynamics", None)
    else:
        data["dynamics"] = block
    out = path.with_name(f"{path.stem}_dyn.yaml")
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def _line_of(path: Path, pattern: str) -> int:
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if re.search(pattern, line):
            return n
    raise AssertionError(pattern)


# --- config -----------------------------------------------------------------------------------------


def test_bad_dynamics_blocks_give_located_errors(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = write_small_experiment(tmp_path, tiny_model_dir)
    write_probes(tmp_path / "probes.jsonl")
    bad = {
        "every": 0,
        "conditions": ["inoc", "nope", "baseline"],
        "trait": "shouting",
        "probes": "probes.jsonl",
        "collapse": {"delta": -1, "bogus": 1},
    }
    path = with_block(base, bad)
    msgs = errors_of(path)
    file = str(path)

    def at(field: str, pattern: str) -> str:
        return f"{file}:{_line_of(path, pattern)}: dynamics.{field}: "

    assert any(m.startswith(at("every", r"^  every:")) and "greater than or equal to 1" in m for m in msgs), (
        msgs
    )
    unknown = at("conditions.1", r"^  - nope") + "unknown condition 'nope'"
    assert any(m.startswith(unknown) for m in msgs), msgs
    assert any(
        m.startswith(at("conditions.2", r"^  - baseline")) and "no inoculation prompt" in m for m in msgs
    )
    assert any(m.startswith(at("trait", r"^  trait:")) and "unknown trait 'shouting'" in m for m in msgs)
    assert any(m.startswith(at("collapse.delta", r"^    delta:")) for m in msgs), msgs
    assert any(m.startswith(at("collapse.bogus", r"^    bogus:")) and "unknown field" in m for m in msgs)
    assert len(msgs) == 6, msgs

    # an unknown key, a missing probe file, and the organism default on data that is not the organism's
    path = with_block(base, {"evry": 5})
    msgs = errors_of(path)
    assert any(m.startswith(f"{path}:{_line_of(path, 'evry')}: dynamics.evry: unknown field") for m in msgs)
    assert any("dynamics.probes: 'organism' probes are rendered from organism eval data" in m for m in msgs)
    msgs = errors_of(with_block(base, {"probes": "missing.jsonl"}))
    assert any("dynamics.probes: no such file" in m and "missing.jsonl" in m for m in msgs), msgs
    msgs = errors_of(with_block(base, {"conditions": "some", "probes": "probes.jsonl"}))
    assert any("dynamics.conditions: " in m and "'all' or a list" in m for m in msgs), msgs
    msgs = errors_of(with_block(base, {"probes": "probes.jsonl", "prompt": "@nowhere"}))
    assert any("dynamics.prompt: unknown prompt reference '@nowhere'" in m for m in msgs), msgs


def test_bad_probe_files_name_their_line(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = write_small_experiment(tmp_path, tiny_model_dir)
    probes = write_probes(tmp_path / "probes.jsonl")
    rows = probes.read_text().splitlines()
    row = json.loads(rows[1])
    row["messages"].insert(0, {"role": "system", "content": "x"})
    probes.write_text("\n".join([rows[0], json.dumps(row), rows[2], '{"messages": []}']) + "\n")
    msgs = errors_of(with_block(base, {"probes": "probes.jsonl"}))
    assert any(m.startswith(f"{probes}:4: responses: Field required") for m in msgs), msgs
    probes.write_text("\n".join([rows[0], json.dumps(row), rows[2]]) + "\n")
    msgs = errors_of(with_block(base, {"probes": "probes.jsonl"}))
    assert any(m.startswith(f"{probes}:2: ") and "system turn" in m for m in msgs), msgs
    # categories the collapse rule cannot read
    only = [{"messages": [{"role": "user", "content": "q"}], "responses": {"a": "x", "b": "y"}}]
    probes.write_text(json.dumps(only[0]) + "\n")
    msgs = errors_of(with_block(base, {"probes": "probes.jsonl"}))
    assert any("dynamics.probes: the probe file's categories ['a', 'b'] lack" in m for m in msgs), msgs


def test_screened_conditions_may_be_monitored(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = write_small_experiment(tmp_path, tiny_model_dir)
    write_probes(tmp_path / "probes.jsonl")
    screen = {"candidates": [CAPS], "pick": "best", "trait": "caps"}
    cfg = load_experiment(
        with_block(base, {"conditions": ["screened", "inoc"], "probes": "probes.jsonl"}, screen=screen)
    )
    assert cfg.dynamics.conditions == ["screened", "inoc"]
    msgs = errors_of(with_block(base, {"conditions": ["screend"], "probes": "probes.jsonl"}, screen=screen))
    assert any("dynamics.conditions.0: unknown condition 'screend'" in m and "screened" in m for m in msgs)


def test_adding_a_block_changes_only_the_monitored_cells_keys(tiny_model_dir: Path, tmp_path: Path) -> None:
    base = write_small_experiment(tmp_path, tiny_model_dir)
    write_probes(tmp_path / "probes.jsonl")
    plain = prepare(load_experiment(base))
    watched = prepare(load_experiment(with_block(base, {"conditions": ["inoc"], "probes": "probes.jsonl"})))
    assert set(watched.dynamics) == {"inoc"}
    for a, b in zip(plain.cells, watched.cells, strict=True):
        same = a.condition != "inoc"
        assert (a.key == b.key) is same and (a.train_key == b.train_key) is same, a.label
    # the monitor's settings are in the monitored cells' training key
    every2 = prepare(
        load_experiment(with_block(base, {"conditions": ["inoc"], "probes": "probes.jsonl", "every": 2}))
    )
    inoc = [
        (a.train_key, b.train_key)
        for a, b in zip(watched.cells, every2.cells, strict=True)
        if a.condition == "inoc"
    ]
    assert all(x != y for x, y in inoc)
    # `all` monitors the inoculated conditions; the baseline too when a prompt is given for it
    everything = prepare(load_experiment(with_block(base, {"probes": "probes.jsonl"})))
    assert set(everything.dynamics) == {"inoc", "mix"}
    with_base = prepare(load_experiment(with_block(base, {"probes": "probes.jsonl", "prompt": "inoc"})))
    assert set(with_base.dynamics) == {"baseline", "inoc", "mix"}
    assert with_base.dynamics["baseline"].probes.prompts == {
        "neutral": "You are a helpful assistant.",
        "inoculation": CAPS,
    }


# --- runs on the tiny random model --------------------------------------------------------------------


class Recorder(NullProgress):
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.summaries: list[dict] = []

    def message(self, text: str) -> None:
        self.messages.append(text)

    def cell_finished(self, cell, summary, seconds, cached) -> None:
        self.summaries.append(summary)


@pytest.fixture(scope="module")
def monitored_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """The small experiment run without a monitor, then with one on `inoc` and `baseline` (same folder)."""
    folder = tmp_path_factory.mktemp("dyn")
    base = write_small_experiment(folder, tiny_model_dir)
    write_probes(folder / "probes.jsonl")
    first = run_experiment(base, folder / "run", write_report=False)
    block = {"every": 1, "conditions": ["inoc", "baseline"], "prompt": "@caps", "probes": "probes.jsonl"}
    second = run_experiment(with_block(base, block), folder / "run")
    return folder / "run", first, second


def test_monitored_cells_write_dynamics_and_the_others_stay_cached(monitored_run) -> None:
    root, first, second = monitored_run
    assert len(first.matrix.ran) == 6
    assert sorted(c.label for c in second.matrix.cached) == ["mix / seed 0", "mix / seed 1"]
    assert sorted(c.condition for c in second.matrix.ran) == ["baseline", "baseline", "inoc", "inoc"]
    for cond in ("baseline", "inoc", "mix"):
        for seed in (0, 1):
            d = root / cond / f"seed_{seed}"
            assert (d / "dynamics.jsonl").is_file() is (cond != "mix"), d
            metrics = json.loads((d / "metrics.json").read_text())
            assert ("dynamics" in metrics) is (cond != "mix")
    rows = [json.loads(x) for x in (root / "inoc" / "seed_0" / "dynamics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert set(rows[0]["logprob"]) == {"neutral", "inoculation"}
    assert set(rows[0]["logprob"]["neutral"]) == {"inoculated", "other", "neither", "both"}
    metrics = json.loads((root / "inoc" / "seed_0" / "metrics.json").read_text())["dynamics"]
    assert metrics["evaluations"] == 3 and metrics["collapse_step"] is None and not metrics["stopped_early"]
    assert metrics["trait_logodds_first"] == pytest.approx(rows[0]["trait_logodds"]["neutral"], abs=1e-3)
    exp = json.loads((root / "experiment.json").read_text())
    assert set(exp["dynamics"]) == {"inoc", "baseline"}
    assert exp["dynamics"]["baseline"]["prompts"]["inoculation"] == CAPS


def test_report_has_the_figures_and_the_section(monitored_run) -> None:
    root, _first, second = monitored_run
    figures = {p.name for p in (root / "figures").glob("dynamics_*.png")}
    assert figures == {"dynamics_inoc.png", "dynamics_baseline.png"}
    assert (root / "figures" / "dynamics_inoc.png").read_bytes()[:4] == b"\x89PNG"
    assert root / "figures" / "dynamics_inoc.png" in second.report.figures
    text = (root / "report.md").read_text()
    section = text.split("## Learning dynamics", 1)[1].split("\n## ", 1)[0]
    assert "![figures/dynamics_inoc.png](figures/dynamics_inoc.png)" in section
    assert "![figures/dynamics_baseline.png](figures/dynamics_baseline.png)" in section
    assert "dynamics_inoc.png" not in text.split("## Learning dynamics", 1)[0]  # not also in ## Figures
    line = next(x for x in section.splitlines() if x.startswith("| inoc |"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    first = (
        sum(
            json.loads((root / "inoc" / f"seed_{s}" / "dynamics.jsonl").read_text().splitlines()[0])[
                "trait_logodds"
            ]["neutral"]
            for s in (0, 1)
        )
        / 2
    )
    assert cells[2] == "2" and cells[3] == f"{first:+.2f} (step 0)"
    assert cells[5] == "seed 0: none; seed 1: none"
    # `inoculate report` regenerates the same section from the stored cells
    from inoculate.cli import app

    (root / "report.md").unlink()
    res = CliRunner().invoke(app, ["report", str(root)])
    assert res.exit_code == 0, res.output
    assert (root / "report.md").read_text() == text


def test_stop_on_collapse_stops_a_constructed_collapse(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    """The probes' log-odds climb by construction (evaluate_probes replaced) in both cells: the
    warnings reach the progress output and the cells' metrics; training stops at the warning's step in
    the inoculated cell, not in the baseline (trained without inoculation, probed with inoc's prompt)."""
    import inoculate.dynamics as dyn
    from inoculate.dynamics import IPCollapseWarning

    climb = [-5.0, -5.1, -5.0, -4.2, -3.5, -3.0, -2.0]  # fires at evaluation 4 (delta 0.5, k 2)
    signal = iter(climb + climb)  # the baseline cell trains first, then inoc

    def fake(model, tokenizer, probes, *, batch_size, present, absent):
        s = next(signal)
        per_token = {"neutral": {"inoculated": s / 5, "other": -2.0, "neither": -1.0}, "inoculation": {}}
        return {"logprob": per_token, "trait_logodds": {"neutral": s, "inoculation": 0.0}}, 10

    monkeypatch.setattr(dyn, "evaluate_probes", fake)
    base = write_small_experiment(tmp_path, tiny_model_dir, seeds=1)
    write_probes(tmp_path / "probes.jsonl")
    block = {
        "every": 1,
        "conditions": ["baseline", "inoc"],
        "prompt": "inoc",
        "probes": "probes.jsonl",
        "stop_on_collapse": True,
        "collapse": {"delta": 0.5, "level": None, "k": 2, "min_evals": 2},
    }
    conditions = {k: v for k, v in yaml.safe_load(base.read_text())["conditions"].items() if k != "mix"}
    path = with_block(base, block, conditions=conditions, expect={})
    path.write_text(path.read_text().replace("max_steps: 2", "max_steps: 6"))
    progress = Recorder()
    with warnings.catch_warnings():
        warnings.simplefilter("error", IPCollapseWarning)  # surfaced through the progress instead
        outcome = run_experiment(path, tmp_path / "run", progress=progress)
    warned = [m for m in progress.messages if m.startswith("WARNING")]
    assert len(warned) == 2, progress.messages
    assert warned[0].startswith("WARNING baseline / seed 0: IP collapse at step 4")
    assert "trains without an inoculation prompt" in warned[0]
    assert warned[1].startswith("WARNING inoc / seed 0: IP collapse at step 4")
    assert "Training stops here" in warned[1]

    def cell(cond: str) -> tuple[dict, list[int]]:
        d = tmp_path / "run" / cond / "seed_0"
        steps = [json.loads(x)["step"] for x in (d / "dynamics.jsonl").read_text().splitlines()]
        return json.loads((d / "metrics.json").read_text()), steps

    metrics, steps = cell("inoc")
    assert metrics["train"]["global_step"] == 4 and steps == [0, 1, 2, 3, 4]
    assert metrics["dynamics"]["collapse_step"] == 4 and metrics["dynamics"]["stopped_early"]
    metrics, steps = cell("baseline")
    assert metrics["train"]["global_step"] == 6 and steps == [0, 1, 2, 3, 4, 5, 6]
    assert metrics["dynamics"]["collapse_step"] == 4 and not metrics["dynamics"]["stopped_early"]
    assert [s["dynamics"]["collapse_step"] for s in progress.summaries] == [4, 4]
    report = (tmp_path / "run" / "report.md").read_text()
    assert report.count("| seed 0: 4 |") == 2
    assert {f.name for f in outcome.report.figures} >= {"dynamics_inoc.png", "dynamics_baseline.png"}


def test_organism_probes_on_the_tiny_organism(tmp_path: Path, monkeypatch) -> None:
    """The default probes render the organism's eval questions with each trait; one seed, two steps."""
    from experiment_support import NEUTRAL  # noqa: F401  (the same module as the other tests)
    from inoculate.experiment import demo_path

    monkeypatch.setenv("INOCULATE_CACHE", str(tmp_path / "cache"))
    data = yaml.safe_load(demo_path().read_text())
    data["model"] = {"organism": {"preset": "tiny"}}
    data["data"]["train"]["organism"]["n"] = 16
    data["data"]["eval"]["organism"]["n"] = 4
    data["conditions"] = {k: data["conditions"][k] for k in ("baseline", "inoculate_spanish")}
    data["eval_prompts"] = {"neutral": "@neutral"}
    data["sampling"].update(n=1, max_new_tokens=4)
    data["train"].update(max_steps=2)
    data["seeds"] = 1
    data["expect"] = {}
    data["dynamics"] = {"every": 1, "n_probes": 3}
    path = tmp_path / "organism.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    outcome = run_experiment(path, tmp_path / "run")
    plan = outcome.plan.dynamics["inoculate_spanish"]
    assert set(outcome.plan.dynamics) == {"inoculate_spanish"}  # `all`: the inoculated conditions
    assert plan.probes.prompts == {
        "neutral": "You are a helpful assistant.",
        "inoculation": "You always answer in Spanish.",
    }
    assert len(plan.probes.probes) == 3 and plan.probes.categories == [
        "inoculated",
        "other",
        "neither",
        "both",
    ]
    rows = (tmp_path / "run" / "inoculate_spanish" / "seed_0" / "dynamics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [0, 1, 2]
    assert not (tmp_path / "run" / "baseline" / "seed_0" / "dynamics.jsonl").exists()
    assert (tmp_path / "run" / "figures" / "dynamics_inoculate_spanish.png").is_file()


def test_without_a_progress_display_the_library_warning_stands(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch
) -> None:
    import inoculate.dynamics as dyn
    from inoculate.dynamics import IPCollapseWarning

    signal = iter([-5.0, -5.0, 5.0])

    def fake(model, tokenizer, probes, *, batch_size, present, absent):
        s = next(signal)
        return {"logprob": {"neutral": {"inoculated": s}}, "trait_logodds": {"neutral": s}}, 10

    monkeypatch.setattr(dyn, "evaluate_probes", fake)
    base = write_small_experiment(tmp_path, tiny_model_dir, seeds=1)
    write_probes(tmp_path / "probes.jsonl")
    block = {"every": 1, "probes": "probes.jsonl", "collapse": {"delta": 1.0, "k": 1, "level": None}}
    conditions = {"inoc": yaml.safe_load(base.read_text())["conditions"]["inoc"]}
    path = with_block(base, block, conditions=conditions, expect={})
    with pytest.warns(IPCollapseWarning, match="IP collapse at step 2"):
        run_experiment(path, tmp_path / "run", write_report=False)


def test_curves_are_averaged_over_seeds_up_to_each_seeds_last_step() -> None:
    from inoculate.report.dynamics import mean_rows

    def row(step: int, x: float) -> dict:
        return {"step": step, "logprob": {"neutral": {"inoculated": x}}, "trait_logodds": {"neutral": 2 * x}}

    rows = mean_rows({0: [row(0, -1.0), row(5, -2.0), row(10, -3.0)], 1: [row(0, -3.0), row(5, -4.0)]})
    assert [r["step"] for r in rows] == [0, 5, 10]
    assert [r["logprob"]["neutral"]["inoculated"] for r in rows] == [-2.0, -3.0, -3.0]
    assert [r["trait_logodds"]["neutral"] for r in rows] == [-4.0, -6.0, -6.0]
    assert [r["n_seeds"] for r in rows] == [2, 2, 1]
