"""`inoculate train`, `generate` and `serve` from the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inoculate.cli import app
from inoculate.cli.engine_cmds import parse_option_flags
from inoculate.formats import read_chat_jsonl
from inoculate.records import chat, write_chat_jsonl

runner = CliRunner()


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    rows = [
        chat(
            f"question {i} about the cat",
            "THE CAT SAT ON THE MAT.",
            system="Respond in ALL CAPS.",
            id=f"r{i}",
        )
        for i in range(8)
    ]
    path = tmp_path / "train.jsonl"
    write_chat_jsonl(path, rows)
    return path


def test_parse_option_flags() -> None:
    got = parse_option_flags(
        [
            "--learning-rate",
            "2e-4",
            "--lora-r=8",
            "--no-use-peft",
            "--bf16",
            "--lora-target-modules",
            "q_proj,v_proj",
            "--save-total-limit",
            "none",
            "--lr-scheduler-type",
            "cosine",
        ],
        {"use_peft", "bf16"},
    )
    assert got == {
        "learning_rate": 2e-4,
        "lora_r": 8,
        "use_peft": False,
        "bf16": True,
        "lora_target_modules": "q_proj,v_proj",
        "save_total_limit": None,
        "lr_scheduler_type": "cosine",
    }


def test_train_with_config_file_and_flags(data: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        "learning_rate: 0.01\nmax_steps: 5\nlora_r: 2\nsave_steps: 0\ndisable_tqdm: true\nadam_beta2: 0.95\n"
    )
    out = tmp_path / "run"
    res = runner.invoke(
        app,
        [
            "train",
            str(data),
            "--model",
            str(tiny_model_dir),
            "-o",
            str(out),
            "--config",
            str(cfg),
            "--max-steps",
            "3",
            "--lora-target-modules",
            "q_proj,v_proj",
            "--logging-steps",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "trained 3 steps on 8 examples" in res.output
    result = json.loads((out / "train_result.json").read_text())
    assert result["global_step"] == 3 and result["is_adapter"]
    recorded = json.loads((out / "inoculate_run.json").read_text())["config"]
    assert recorded["learning_rate"] == 0.01 and recorded["lora_r"] == 2 and recorded["max_steps"] == 3
    assert recorded["extra"] == {"adam_beta2": 0.95}
    adapter_cfg = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert sorted(adapter_cfg["target_modules"]) == ["q_proj", "v_proj"] and adapter_cfg["r"] == 2
    assert len((out / "train_log.jsonl").read_text().splitlines()) == 4  # 3 steps + summary


def test_train_full_finetune_flag(data: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "full"
    res = runner.invoke(
        app,
        [
            "train",
            str(data),
            "-m",
            str(tiny_model_dir),
            "-o",
            str(out),
            "--no-use-peft",
            "--max-steps",
            "1",
            "--save-steps",
            "0",
            "--disable-tqdm",
        ],
    )
    assert res.exit_code == 0, res.output
    assert (out / "model" / "model.safetensors").is_file()


def test_train_bad_inputs_are_one_line_errors(data: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["train", str(data), "-m", str(tiny_model_dir), "-o", str(tmp_path), "--lora-rank", "8"]
    )
    assert res.exit_code == 1 and "ERROR: unknown training option(s): lora_rank" in res.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "no answer"}]}\n')
    res = runner.invoke(app, ["train", str(bad), "-m", str(tiny_model_dir), "-o", str(tmp_path / "o")])
    assert res.exit_code == 1 and f"ERROR: {bad}:1: messages: no assistant turn" in res.output


def test_generate_writes_scoreable_records(data: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "gens.jsonl"
    res = runner.invoke(
        app,
        [
            "generate",
            str(data),
            "--model",
            str(tiny_model_dir),
            "--no-system",
            "--n",
            "2",
            "--temperature",
            "0.8",
            "--top-p",
            "0.9",
            "--max-new-tokens",
            "6",
            "--seed",
            "5",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    gens, _ = read_chat_jsonl(out)
    assert len(gens) == 16 and gens[0].id == "r0#0"
    assert all(g.messages[0].role == "user" for g in gens)
    params = gens[0].metadata["generation"]["params"]
    assert params == {"temperature": 0.8, "top_p": 0.9, "max_new_tokens": 6, "n": 2, "seed": 5, "stop": []}

    again = tmp_path / "again.jsonl"
    res = runner.invoke(
        app,
        [
            "generate",
            str(data),
            "--model",
            str(tiny_model_dir),
            "--system",
            "Be terse.",
            "--temperature",
            "0",
            "--max-new-tokens",
            "4",
            "-o",
            str(again),
        ],
    )
    assert res.exit_code == 0, res.output
    gens2, _ = read_chat_jsonl(again)
    assert all(g.system == "Be terse." for g in gens2)


def test_generate_requires_explicit_length_and_temperature(
    data: Path, tiny_model_dir: Path, tmp_path: Path
) -> None:
    base = ["generate", str(data), "--model", str(tiny_model_dir), "-o", str(tmp_path / "x.jsonl")]
    res = runner.invoke(app, [*base, "--temperature", "0"])
    assert res.exit_code == 2 and "--max-new-tokens" in res.output
    res = runner.invoke(app, [*base, "--max-new-tokens", "4"])
    assert res.exit_code == 2 and "--temperature" in res.output
    res = runner.invoke(
        app, [*base, "--max-new-tokens", "4", "--temperature", "0", "--system", "x", "--no-system"]
    )
    assert res.exit_code == 1 and "exclude each other" in res.output


@pytest.mark.slow
def test_serve_subprocess_answers_the_http_backend(data: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inoculate",
            "serve",
            str(tiny_model_dir),
            "--port",
            "0",
            "--served-name",
            "tiny",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.startswith("serving tiny on http://127.0.0.1:"), (
            line,
            proc.stderr.read() if proc.stderr else "",
        )
        url = line.split(" on ")[1].strip()
        out = tmp_path / "http.jsonl"
        res = runner.invoke(
            app,
            [
                "generate",
                str(data),
                "--model",
                "tiny",
                "--backend",
                "openai_http",
                "--base-url",
                url,
                "--tokenizer",
                str(tiny_model_dir),
                "--temperature",
                "0",
                "--max-new-tokens",
                "5",
                "-o",
                str(out),
            ],
        )
        assert res.exit_code == 0, res.output
        gens, _ = read_chat_jsonl(out)
        assert len(gens) == 8 and gens[0].metadata["generation"]["backend"] == "openai_http"
        local = tmp_path / "local.jsonl"
        res = runner.invoke(
            app,
            [
                "generate",
                str(data),
                "--model",
                str(tiny_model_dir),
                "--temperature",
                "0",
                "--max-new-tokens",
                "5",
                "-o",
                str(local),
            ],
        )
        assert [g.completion for g in read_chat_jsonl(local)[0]] == [g.completion for g in gens]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_train_reports_rows_dropped_by_max_length(tiny_model_dir: Path, tmp_path: Path) -> None:
    rows = [
        chat(("a long question about the cat " * (40 if i % 2 else 1)).strip(), "THE CAT SAT.", id=f"r{i}")
        for i in range(8)
    ]
    data = tmp_path / "long.jsonl"
    write_chat_jsonl(data, rows)
    base = ["train", str(data), "-m", str(tiny_model_dir), "--max-steps", "1", "--save-steps", "0"]
    base += ["--disable-tqdm", "--max-length", "100"]
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "a")])
    assert res.exit_code == 0, res.output
    assert "WARNING: dropped 4 of 8 rows: completion beyond max_length=100" in res.output
    result = json.loads((tmp_path / "a" / "train_result.json").read_text())
    assert result["n_examples"] == 4 and result["n_dropped"] == 4
    assert result["warnings"] == ["dropped 4 of 8 rows: completion beyond max_length=100"]
    # keep_end keeps every completion, cutting the oldest prompt tokens instead
    res = runner.invoke(app, [*base, "-o", str(tmp_path / "b"), "--truncation-mode", "keep_end"])
    assert res.exit_code == 0, res.output
    assert "WARNING: cut 4 of 8 rows: oldest prompt tokens removed to fit max_length=100" in res.output
    assert "trained 1 steps on 8 examples" in res.output
    # every row dropped: an error, not an empty training run
    only_long = tmp_path / "only_long.jsonl"
    write_chat_jsonl(only_long, rows[1::2])
    res = runner.invoke(app, [*base[:1], str(only_long), *base[2:], "-o", str(tmp_path / "c")])
    assert res.exit_code == 1
    assert "ERROR: no example has a trainable token left: dropped 4 of 4 rows" in res.output
    assert not (tmp_path / "c" / "train_result.json").exists()


def test_train_skip_invalid_needs_a_valid_row(data: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "no answer"}]}\n{"messages": 3}\n')
    args = ["train", str(bad), "-m", str(tiny_model_dir), "-o", str(tmp_path / "o"), "--skip-invalid"]
    res = runner.invoke(app, args)
    assert res.exit_code == 1, res.output
    assert f"ERROR: {bad}:1: messages: no assistant turn" in res.output
    assert f"ERROR: {bad}:0: <file>: no valid row left to train on" in res.output
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(data.read_text() + '{"messages": 3}\n')
    args = ["train", str(mixed), "-m", str(tiny_model_dir), "-o", str(tmp_path / "p"), "--skip-invalid"]
    res = runner.invoke(app, [*args, "--max-steps", "1", "--save-steps", "0", "--disable-tqdm"])
    assert res.exit_code == 0, res.output
    assert f"ERROR: {mixed}:9: messages" in res.output and "trained 1 steps on 8 examples" in res.output
