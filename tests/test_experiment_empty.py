"""`inoculate run`: a condition whose spec inoculates no training row is refused before the run folder is
touched (unless `allow_empty: true`), and the report states how many rows carried each prompt."""

from __future__ import annotations

import pytest

from experiment_support import write_small_experiment
from inoculate.errors import InputErrors
from inoculate.experiment import load_experiment, prepare, run_experiment

MIX = """mix: {prompt: "@spanish", placement: system, where: 'lang == "es"'}"""


def _with_mix(path, new: str):
    text = path.read_text()
    assert MIX in text
    path.write_text(text.replace(MIX, new))
    return path


def test_condition_selecting_no_row_is_refused_before_the_run_folder(tiny_model_dir, tmp_path):
    path = _with_mix(
        write_small_experiment(tmp_path, tiny_model_dir),
        """mix: {prompt: "@spanish", placement: system, where: 'lang == "de"'}""",
    )
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if t.strip().startswith("mix:"))
    with pytest.raises(InputErrors) as info:
        run_experiment(path, tmp_path / "run")
    assert [str(e) for e in info.value.errors] == [
        f"{path}:{line}: conditions.mix.where: condition 'mix' inoculates no training row: "
        """no row matches 'lang == "de"' (0 of 16 rows); values seen for lang: "es" ×8, "fr" ×8; """
        "set allow_empty: true (--allow-empty) to accept a condition that inoculates no row"
    ]
    assert not (tmp_path / "run").exists()


def test_allow_empty_lets_the_condition_through(tiny_model_dir, tmp_path):
    path = _with_mix(
        write_small_experiment(tmp_path, tiny_model_dir),
        """mix: {prompt: "@spanish", placement: system, where: 'lang == "de"', allow_empty: true}""",
    )
    prep = prepare(load_experiment(path))
    examples, manifest = prep.train_sets["mix"]
    assert manifest is not None and (manifest.n_inoculated, manifest.n_rows) == (0, 16)
    assert all("inoculation" not in ex.metadata for ex in examples)


def test_report_states_rows_inoculated_per_condition(tiny_model_dir, tmp_path):
    path = write_small_experiment(tmp_path, tiny_model_dir, seeds=1)
    outcome = run_experiment(path, tmp_path / "run")
    report = (outcome.out_dir / "report.md").read_text()
    lines = report.splitlines()
    start = lines.index("| condition | inoculation prompt | placement | rows | inoculated | data |")
    table = []
    for t in lines[start + 2 :]:
        if not t.startswith("|"):
            break
        table.append(t)
    rows = {t.split("|")[1].strip(): t.split("|")[5].strip() for t in table}
    assert rows["inoc"] == "16 / 16"
    assert rows["mix"] == "8 / 16"
    assert rows["baseline"] == ""
    assert {t.split("|")[6].strip() for t in table} == {"data.train"}
