"""`inoculate score` and `inoculate scorers`: the CLI contract other tools rely on."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from inoculate.cli import app
from inoculate.scorers import unregister
from inoculate.stats import summarize_rows, wilson

runner = CliRunner()


def _row(rid: str, completion: str, seed: Any = None, system: str | None = None) -> dict[str, Any]:
    msgs = [{"role": "system", "content": system}] if system else []
    msgs += [{"role": "user", "content": "Say something."}, {"role": "assistant", "content": completion}]
    row: dict[str, Any] = {"id": rid, "messages": msgs}
    if seed is not None:
        row["metadata"] = {"seed": seed}
    return row


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


COMPLETIONS = [
    "HOLA, ¿QUÉ TAL ESTÁS HOY?",
    "Hola, me alegro mucho de verte.",
    "Hello, nice to see you again.",
    "GOOD MORNING TO YOU ALL.",
    "12345",
]


@pytest.fixture
def chat_file(tmp_path: Path) -> Path:
    return _write(tmp_path / "gen.jsonl", [_row(f"r{i}", c) for i, c in enumerate(COMPLETIONS)])


def test_score_writes_per_row_scores_and_prints_a_table(chat_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "rows" / "scores.jsonl"
    r = runner.invoke(
        app, ["score", str(chat_file), "-s", "language:es", "--scorer", "all_caps", "-o", str(out)]
    )
    assert r.exit_code == 0, r.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["id"] for row in rows] == [f"r{i}" for i in range(5)]
    assert [row["scores"]["language:es"] for row in rows] == [1.0, 1.0, 0.0, 0.0, None]
    assert [row["scores"]["all_caps"] for row in rows][:4] == [
        1.0,
        pytest.approx(1 / 24),
        pytest.approx(1 / 22),
        1.0,
    ]
    assert rows[4]["scores"]["all_caps"] is None  # no cased letters: not scorable
    assert set(rows[0]) == {"id", "scores"}
    for name in ("language:es", "all_caps", "95% CI", "wilson"):
        assert name in r.stdout
    assert not list(out.parent.glob(".*.tmp"))


def test_score_json_prints_exactly_one_object_with_nan_rows_excluded(chat_file: Path) -> None:
    r = runner.invoke(app, ["score", str(chat_file), "-s", "language:es", "-s", "keyword:hola", "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)  # the whole of stdout is one JSON document
    assert set(obj) == {"language:es", "keyword:hola"}
    lang = obj["language:es"]
    assert set(lang) == {
        "mean",
        "ci_low",
        "ci_high",
        "n",
        "ci_method",
        "unit",
        "n_prompts",
        "n_seeds",
        "interval",
    }
    assert (lang["ci_method"], lang["unit"], lang["n_prompts"]) == ("wilson", "rows", None)
    assert lang["interval"] == "n = 4 rows; CI across rows"
    assert lang["n"] == 4 and lang["mean"] == pytest.approx(0.5)
    assert (lang["ci_low"], lang["ci_high"]) == pytest.approx(wilson(2, 4))
    kw = obj["keyword:hola"]
    assert kw["n"] == 5 and kw["mean"] == pytest.approx(2 / 5)
    assert (kw["ci_low"], kw["ci_high"]) == pytest.approx(wilson(2, 5))


def test_score_averages_within_seed_when_rows_carry_seeds(tmp_path: Path) -> None:
    texts_by_seed = {
        0: ["HELLO THERE", "hello there", "HI"],
        1: ["SHOUTING AGAIN", "quiet"],
        2: ["quiet", "still quiet", "QUIET NO MORE", "calm"],
    }
    rows = [_row(f"{s}-{i}", t, seed=s) for s, ts in texts_by_seed.items() for i, t in enumerate(ts)]
    path = _write(tmp_path / "seeded.jsonl", rows)
    r = runner.invoke(app, ["score", str(path), "-s", "all_caps", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["all_caps"]
    per_seed = [2 / 3, 1 / 2, 1 / 4]
    assert got["mean"] == pytest.approx(sum(per_seed) / 3)
    assert got["n"] == 9
    values = [1.0 if t.isupper() else 0.0 for ts in texts_by_seed.values() for t in ts]
    seeds = [s for s, ts in texts_by_seed.items() for _ in ts]
    expected = summarize_rows(values, seeds)
    assert expected.method == "t"
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((expected.ci_low, expected.ci_high))


def test_score_refuses_rows_where_only_some_have_a_seed(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mixed.jsonl", [_row("a", "HI", seed=0), _row("b", "hi"), _row("c", "x", seed=[1])]
    )
    out = tmp_path / "o.jsonl"
    r = runner.invoke(app, ["score", str(path), "-s", "all_caps", "-o", str(out)])
    assert r.exit_code == 1
    assert f"ERROR: {path}:2: metadata.seed: missing" in r.stderr
    assert f"ERROR: {path}:3: metadata.seed: must be an integer or a string" in r.stderr
    assert "Traceback" not in r.output
    assert not out.exists()


def test_score_bad_input_names_file_line_field_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps(_row("a", "fine"))
        + "\n"
        + '{"messages": [{"role": "user", "content": "q"}]}\n'
        + "{not json\n",
        encoding="utf-8",
    )
    out = tmp_path / "o.jsonl"
    r = runner.invoke(app, ["score", str(path), "-s", "all_caps", "-o", str(out)])
    assert r.exit_code == 1
    assert f"ERROR: {path}:2: messages: no assistant turn" in r.stderr
    assert f"ERROR: {path}:3: <json>: invalid JSON" in r.stderr
    assert not out.exists()
    skipped = runner.invoke(
        app, ["score", str(path), "-s", "all_caps", "--skip-invalid", "--json", "-o", str(out)]
    )
    assert skipped.exit_code == 0, skipped.output
    assert json.loads(skipped.stdout)["all_caps"]["n"] == 1
    assert f"{path}:2" in skipped.stderr
    assert len(out.read_text().splitlines()) == 1


def test_score_unknown_or_bad_scorer_fails_cleanly(chat_file: Path) -> None:
    r = runner.invoke(app, ["score", str(chat_file), "-s", "shouting"])
    assert r.exit_code == 1
    assert r.stderr.startswith("ERROR: unknown scorer 'shouting'")
    assert "language" in r.stderr and "all_caps" in r.stderr
    r = runner.invoke(app, ["score", str(chat_file), "-s", "regex:("])
    assert r.exit_code == 1 and "invalid pattern" in r.stderr
    r = runner.invoke(
        app, ["score", str(tmp_missing := chat_file.with_name("missing.jsonl")), "-s", "all_caps"]
    )
    assert r.exit_code == 1 and f"ERROR: {tmp_missing}:0: <file>: no such file" in r.stderr


def test_score_reads_prompt_completion_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "pc.jsonl"
    path.write_text(
        json.dumps({"id": "x", "prompt": "Greet me.", "completion": "BONJOUR À TOUS"})
        + "\n"
        + json.dumps({"id": "y", "prompt": "Greet me.", "completion": "good day to you"})
        + "\n",
        encoding="utf-8",
    )
    r = runner.invoke(app, ["score", str(path), "-s", "all_caps", "-s", "length:words", "--json"])
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["all_caps"]["mean"] == pytest.approx(0.5)
    assert obj["length:words"]["mean"] == pytest.approx(3.5)


def test_plugin_file_adds_a_scorer_to_score_and_scorers(tmp_path: Path, chat_file: Path) -> None:
    plugin = tmp_path / "cli_plugin_scorers.py"
    plugin.write_text(
        "from inoculate.scorers import scorer\n"
        "@scorer('t_cli_greeting', description='greets in the prompt language')\n"
        "def greeting(arg=None):\n"
        "    return lambda prompt, completion: float(completion.lower().startswith(('hola', 'hello')))\n"
    )
    try:
        listed = runner.invoke(app, ["scorers", "--json", "--plugin", str(plugin)])
        assert listed.exit_code == 0, listed.output
        names = {s["name"]: s for s in json.loads(listed.stdout)}
        assert {"language", "all_caps", "regex", "keyword", "length", "t_cli_greeting"} <= set(names)
        assert names["length"]["range"] == "raw" and names["language"]["range"] == "[0, 1]"
        r = runner.invoke(
            app, ["score", str(chat_file), "-s", "t_cli_greeting", "--json", "--plugin", str(plugin)]
        )
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["t_cli_greeting"]["mean"] == pytest.approx(3 / 5)
        table = runner.invoke(app, ["scorers"])
        assert table.exit_code == 0 and "t_cli_greeting" in table.stdout and "language" in table.stdout
    finally:
        unregister("t_cli_greeting")


def test_score_all_nan_column_reports_null_summary(tmp_path: Path) -> None:
    path = _write(tmp_path / "digits.jsonl", [_row("a", "123"), _row("b", "456")])
    r = runner.invoke(app, ["score", str(path), "-s", "all_caps", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["all_caps"]
    assert {k: got[k] for k in ("mean", "ci_low", "ci_high", "n")} == {
        "mean": None,
        "ci_low": None,
        "ci_high": None,
        "n": 0,
    }
    assert (got["ci_method"], got["interval"]) == ("none", "n = 0 rows; no CI")
    assert not any(isinstance(v, float) and math.isnan(v) for v in got.values())


def _gen_row(source: str, k: int, completion: str) -> dict[str, Any]:
    row = _row(f"{source}-{k}", completion)
    row["metadata"] = {"generation": {"source_id": source, "sample_index": k, "backend": "test"}}
    return row


def test_score_clusters_samples_by_prompt(tmp_path: Path) -> None:
    # 6 prompts x 5 samples; samples of one prompt mostly agree (15 of 30 in capitals in all)
    caps = [5, 4, 1, 0, 3, 2]
    rows = [
        _gen_row(f"p{i}", j, "LOUD WORDS" if j < k else "quiet words")
        for i, k in enumerate(caps)
        for j in range(5)
    ]
    path = _write(tmp_path / "gens.jsonl", rows)
    r = runner.invoke(app, ["score", str(path), "-s", "all_caps:binary", "--json"])
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout)["all_caps:binary"]
    half = 2.570581835636314 * math.sqrt(0.14) / math.sqrt(6)  # t(0.975, 5) * sd(prompt means) / sqrt(6)
    assert got["mean"] == pytest.approx(0.5)
    assert (got["ci_low"], got["ci_high"]) == pytest.approx((0.5 - half, 0.5 + half), abs=1e-12)
    assert (got["ci_method"], got["unit"], got["n"], got["n_prompts"]) == ("cluster-t", "prompts", 30, 6)
    assert got["interval"] == "n = 30 samples from 6 prompts; CI clusters by prompt"
    naive_lo, naive_hi = wilson(15, 30)
    assert got["ci_high"] - got["ci_low"] > naive_hi - naive_lo
    table = runner.invoke(app, ["score", str(path), "-s", "all_caps:binary"])
    assert table.exit_code == 0, table.output
    words = " ".join(w for w in table.stdout.replace("│", " ").split())  # the table wraps the cell
    for phrase in ("cluster-t:", "30 samples from 6 prompts;", "CI clusters", "by prompt"):
        assert phrase in words
    # one sample per prompt: rows are independent, the row-level interval stands
    singles = _write(
        tmp_path / "singles.jsonl", [_gen_row(f"p{i}", 0, "HI" if i < 2 else "hi") for i in range(5)]
    )
    one = json.loads(runner.invoke(app, ["score", str(singles), "-s", "all_caps", "--json"]).stdout)[
        "all_caps"
    ]
    assert (one["ci_method"], one["n_prompts"]) == ("wilson", 5)
    assert (one["ci_low"], one["ci_high"]) == pytest.approx(wilson(2, 5))
