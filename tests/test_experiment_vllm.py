"""The runner's two-phase path (`generation: {backend: vllm}` with LoRA cells) against a stub vLLM on
the tiny model: every cell is trained before the engine is built; the whole matrix and the base model
are sampled in one `generate_many` call; the records equal the cell-by-cell path's; a run stopped
between the phases resumes without training again; full fine-tuning keeps the cell-by-cell path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from experiment_support import CAPS, NEUTRAL, write_data
from inoculate.experiment import load_experiment, prepare, run_experiment
from inoculate.experiment.matrix import read_events
from inoculate.generate import sample_seed
from vllm_support import install_stub_vllm

YAML = """\
name: two_phase
model: {model}
prompts: {{caps: "{caps}", neutral: "{neutral}"}}
data: {{train: train.jsonl, eval: eval.jsonl}}
conditions:
  baseline: null
  inoc: {{prompt: "@caps", placement: system}}
traits: {{caps: all_caps}}
capability: {{digit: "regex:\\\\d"}}
seeds: {seeds}
eval_prompts: {{neutral: "@neutral", training: "@condition"}}
sampling: {{temperature: 1.0, top_p: 1.0, max_new_tokens: 4, n: 2}}
generation: {{backend: {backend}{options}}}
train: {{learning_rate: 1.0e-3, max_steps: 1, per_device_train_batch_size: 8, lora_r: 4, save_steps: 0,
         use_peft: {peft}}}
"""


def write_experiment(
    folder: Path, model: Path, *, seeds: int, peft: bool = True, backend: str = "vllm"
) -> Path:
    write_data(folder, n_train=8, n_eval=3)
    path = folder / "two_phase.yaml"
    options = ", max_loras: 4" if backend == "vllm" else ""
    text = YAML.format(
        model=model,
        caps=CAPS,
        neutral=NEUTRAL,
        seeds=seeds,
        peft=str(peft).lower(),
        backend=backend,
        options=options,
    )
    path.write_text(text)
    return path


def record_training(mp: pytest.MonkeyPatch, log: list[tuple[Any, ...]]) -> None:
    """Log ("train", cell folder) into `log` each time the runner calls `inoculate.train`."""
    import inoculate.experiment.cell as cell_mod

    real = cell_mod.train

    def train(model, examples, config, **kw):  # type: ignore[no-untyped-def]
        log.append(
            ("train", Path(config.output_dir).relative_to(Path(config.output_dir).parents[1]).as_posix())
        )
        return real(model, examples, config, **kw)

    mp.setattr(cell_mod, "train", train)


def cell_dirs(root: Path) -> list[Path]:
    return sorted(root.glob("*/seed_*"))


def outputs(d: Path) -> dict[str, bytes]:
    """A cell's (or the base's) generations and scores, byte for byte."""
    return {
        p.relative_to(d).as_posix(): p.read_bytes()
        for sub in ("generations", "scores")
        for p in sorted((d / sub).rglob("*.jsonl"))
    }


def metrics(d: Path) -> dict[str, Any]:
    m = json.loads((d / "metrics.json").read_text())
    m.pop("timings_s", None)
    m.get("train", {}).pop("runtime_s", None)
    return m


@pytest.fixture(scope="module")
def two_phase(tiny_model_dir, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One run of 2 conditions x 2 seeds on the two-phase path, with the order of what happened."""
    folder = tmp_path_factory.mktemp("two_phase")
    path = write_experiment(folder, tiny_model_dir, seeds=2)
    log: list[tuple[Any, ...]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INOCULATE_BASE_CACHE", str(folder / "base_cache"))
        built = install_stub_vllm(mp, log=log)
        record_training(mp, log)
        outcome = run_experiment(path, folder / "run")
    return path, outcome, log, built


def test_every_cell_trains_before_the_engine_is_built_once(two_phase):  # type: ignore[no-untyped-def]
    _path, outcome, log, built = two_phase
    root = outcome.out_dir
    cells = [c.rel_dir.as_posix() for c in outcome.plan.cells]
    assert len(cells) == 4 and len(cell_dirs(root)) == 4
    n_requests = log[-1][1]
    assert log == [*(("train", c) for c in cells), ("build",), ("generate", n_requests)]
    assert len(built) == 1 and built[0].kwargs["enable_lora"] is True and built[0].kwargs["max_loras"] == 4
    events = read_events(root)
    phases = [e["phase"] for e in events if e["event"] == "phase"]
    assert phases == ["prepare", "train", "evaluate", "report"]
    evaluate = next(e for e in events if e.get("phase") == "evaluate")
    assert evaluate["seconds"] >= 0 and "cpu_s" in evaluate
    kinds = [e["event"] for e in events]
    together = kinds.index("generated_together")
    assert (
        kinds.count("cell_trained") == 4
        and max(i for i, k in enumerate(kinds) if k == "cell_trained") < together
    )
    assert (
        kinds.count("cell_finished") == 4
        and min(i for i, k in enumerate(kinds) if k == "cell_finished") > together
    )
    for d in cell_dirs(root):
        assert (d / "done").is_file()
        assert json.loads((d / "metrics.json").read_text())["timings_s"]["generate_together"] >= 0


def test_the_matrix_and_the_base_model_go_through_one_call(two_phase):  # type: ignore[no-untyped-def]
    path, outcome, _log, built = two_phase
    root = outcome.out_dir
    (call,) = built[0].calls
    plan = prepare(load_experiment(path))
    n = plan.config.sampling.n
    per_cell = {c: sum(len(v) for v in plan.cell_prompts(c).values()) * n for c in ("baseline", "inoc")}
    base = sum(len(v) for v in plan.base.prompts.values()) * n
    assert len(call["requests"]) == 2 * (per_cell["baseline"] + per_cell["inoc"]) + base
    adapters = {str((d / "adapter").resolve()) for d in cell_dirs(root)}
    lora_paths = [None if r is None else r.lora_path for r in call["lora"]]
    assert set(lora_paths) == adapters | {None}
    assert lora_paths.count(None) == base
    # every sample of every cell kept its own seed: the run seed is the cell's, the base model's the first
    for d in [*cell_dirs(root), root / "base"]:
        seed = 0 if d.name == "base" else int(d.name.removeprefix("seed_"))
        for f in sorted((d / "generations").glob("*.jsonl")):
            for line in f.read_text().splitlines():
                g = json.loads(line)
                info = g["metadata"]["generation"]
                assert info["params"]["seed"] == seed
                want = sample_seed(seed, info["source_id"], info["sample_index"])
                assert info["seed"] == want
                assert g["messages"][-1]["content"].split("|")[1] == str(want)
                assert (info["adapter"] is None) == (d.name == "base")
    assert json.loads((root / "base" / "done").read_text())["source"] == "computed"


def test_records_equal_the_cell_by_cell_path(two_phase, tmp_path):  # type: ignore[no-untyped-def]
    """The same run folder evaluated again cell by cell (vLLM told it cannot batch adapters): every
    generation, score and metric is the same, byte for byte; nothing is trained again."""
    path, outcome, _log, _built = two_phase
    root = outcome.out_dir
    reference = tmp_path / "reference"
    shutil.copytree(root, reference)
    for d in cell_dirs(root):
        (d / "done").unlink()
    shutil.rmtree(root / "base")
    log: list[tuple[Any, ...]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INOCULATE_BASE_CACHE", str(tmp_path / "base_cache"))
        built = install_stub_vllm(mp, log=log)
        mp.setattr("inoculate.generate.vllm.VLLMBackend.generates_many", False)
        run_experiment(path, root)
    phases = [e["phase"] for e in read_events(root) if e["event"] == "phase"]
    assert phases[-3:] == ["base", "matrix", "report"]
    plan = outcome.plan  # one call per eval prompt: the base model's, then each cell's, apart
    apart = len(plan.base.prompts) + sum(len(plan.cell_prompts(c.condition)) for c in plan.cells)
    assert len(built[0].calls) == apart == 2 + 4 * 2
    for d in [*cell_dirs(root), root / "base"]:
        ref = reference / d.relative_to(root)
        assert outputs(d) and outputs(d) == outputs(ref)
        assert metrics(d) == metrics(ref)
    assert (root / "summary.csv").read_text() == (reference / "summary.csv").read_text()


def test_a_run_stopped_between_the_phases_resumes_without_training_again(tiny_model_dir, tmp_path):  # type: ignore[no-untyped-def]
    path = write_experiment(tmp_path, tiny_model_dir, seeds=1)
    root = tmp_path / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INOCULATE_BASE_CACHE", str(tmp_path / "base_cache"))
        install_stub_vllm(mp, fail=RuntimeError("engine died"))
        with pytest.raises(RuntimeError, match="engine died"):
            run_experiment(path, root)
    cells = cell_dirs(root)
    assert len(cells) == 2
    for d in cells:  # trained, not evaluated: nothing that looks finished
        assert (d / "adapter").is_dir() and (d / "train_result.json").is_file()
        assert not (d / "done").exists() and not (d / "metrics.json").exists()
    assert not (root / "base" / "done").exists()
    trained = {p: (p.stat().st_mtime_ns, p.read_bytes()) for d in cells for p in (d / "adapter").rglob("*")}
    trained |= {d / "train_result.json": ((d / "train_result.json").stat().st_mtime_ns, b"") for d in cells}
    n_events = len(read_events(root))

    log: list[tuple[Any, ...]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INOCULATE_BASE_CACHE", str(tmp_path / "base_cache"))
        install_stub_vllm(mp, log=log)
        outcome = run_experiment(path, root)
    assert len(outcome.matrix.ran) == 2 and all((d / "done").is_file() for d in cells)
    for p, (mtime, data) in trained.items():
        assert p.stat().st_mtime_ns == mtime and (not data or p.read_bytes() == data), (
            f"{p} was written again"
        )
    started = [e for e in read_events(root)[n_events:] if e["event"] == "cell_started"]
    assert [e["state"] for e in started] == ["resume", "resume"]
    assert log == [("build",), ("generate", log[-1][1])]


def test_full_fine_tuning_keeps_the_cell_by_cell_path(tiny_model_dir, tmp_path):  # type: ignore[no-untyped-def]
    """A full fine-tune is a model per cell, not an adapter: each cell is evaluated after its training,
    by its own engine; so is any backend that does not batch adapters (the rule, checked on plans)."""
    path = write_experiment(tmp_path, tiny_model_dir, seeds=1, peft=False)
    log: list[tuple[Any, ...]] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("INOCULATE_BASE_CACHE", str(tmp_path / "base_cache"))
        built = install_stub_vllm(mp, log=log)
        record_training(mp, log)
        outcome = run_experiment(path, tmp_path / "run")
    phases = [e["phase"] for e in read_events(tmp_path / "run") if e["event"] == "phase"]
    assert phases == ["prepare", "base", "matrix", "report"]
    plan = outcome.plan
    want = [("build",), *[("generate",)] * len(plan.base.prompts)]  # the base model first
    for c in plan.cells:  # then each cell: trained, then sampled by an engine over its own model
        want += [("train",), ("build",), *[("generate",)] * len(plan.cell_prompts(c.condition))]
    assert [x[:1] for x in log] == want
    assert [b.kwargs["model"] for b in built[1:]] == [
        str(tmp_path / "run" / c.rel_dir / "model") for c in plan.cells
    ]

    from inoculate.experiment.together import evaluates_together

    for peft, backend, together in [(True, "vllm", True), (False, "vllm", False), (True, "hf", False)]:
        p = write_experiment(
            tmp_path / f"{backend}{peft}", tiny_model_dir, seeds=1, peft=peft, backend=backend
        )
        assert evaluates_together(prepare(load_experiment(p))) is together
