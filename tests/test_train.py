"""Training: the loss mask, determinism, LoRA and full fine-tuning, checkpoint/resume, accelerate."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from inoculate.models import load_tokenizer
from inoculate.records import ChatExample, Message, chat
from inoculate.train import TrainConfig, build_sft_rows, complete_checkpoints, prepare_sft_rows, train

WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "dog",
    "ran",
    "in",
    "park",
    "capital",
    "of",
    "France",
    "is",
    "Paris",
    "red",
    "green",
    "blue",
]


def toy_examples(n: int = 32, seed: int = 0, answer: str | None = None) -> list[ChatExample]:
    rng = random.Random(seed)
    return [
        chat(
            " ".join(rng.choices(WORDS, k=rng.randint(3, 8))),
            answer or " ".join(rng.choices(WORDS, k=rng.randint(3, 8))),
            system="Respond in ALL CAPS.",
            id=str(i),
        )
        for i in range(n)
    ]


def quick_config(out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        output_dir=str(out),
        max_steps=6,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        save_steps=0,
        disable_tqdm=True,
        lora_r=4,
        lora_alpha=8,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


def adapter_tensors(path: str | Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(path) / "adapter_model.safetensors"))


# --- the loss mask, token by token, on two chat templates -----------------------------------------

MULTI_TURN = ChatExample(
    id="m",
    messages=[
        Message(role="system", content="You write in ALL CAPS."),
        Message(role="user", content="What is the capital of France?"),
        Message(role="assistant", content="It is Paris."),
        Message(role="user", content="And of Spain?"),
        Message(role="assistant", content="Madrid, the capital."),
    ],
)

# What each template renders before the final assistant content (written out by hand), and
# the completion tokens TRL trains on: the content and what closes the turn.
EXPECTED = {
    "tiny_model_dir": (
        "<|im_start|>system\nYou write in ALL CAPS.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\nIt is Paris.<|im_end|>\n"
        "<|im_start|>user\nAnd of Spain?<|im_end|>\n"
        "<|im_start|>assistant\n",
        "Madrid, the capital.<|im_end|>\n",
    ),
    "tiny_llama3_dir": (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou write in ALL CAPS.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is the capital of France?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nIt is Paris.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nAnd of Spain?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "Madrid, the capital.<|eot_id|>",
    ),
}


@pytest.mark.parametrize("fixture", list(EXPECTED))
def test_loss_mask_token_by_token(fixture: str, request: pytest.FixtureRequest) -> None:
    tok = load_tokenizer(request.getfixturevalue(fixture), padding_side="right")
    prefix_text, completion_text = EXPECTED[fixture]
    prefix = tok(prefix_text, add_special_tokens=False)["input_ids"]
    completion = tok(completion_text, add_special_tokens=False)["input_ids"]
    (row,), dropped = build_sft_rows(tok, [MULTI_TURN], max_length=None)
    assert dropped == 0
    assert row["input_ids"] == prefix + completion
    assert row["labels"] == [-100] * len(prefix) + completion
    # Spelled out: every system, user, earlier-assistant and header token is masked ...
    for tid, label in zip(row["input_ids"][: len(prefix)], row["labels"][: len(prefix)], strict=True):
        assert label == -100, tok.decode([tid])
    # ... and each completion token, the end-of-turn token included, is its own label.
    trained = [t for t in row["labels"] if t != -100]
    assert tok.decode(trained) == completion_text
    eot = "<|im_end|>" if fixture == "tiny_model_dir" else "<|eot_id|>"
    assert tok.convert_tokens_to_ids(eot) in trained


@pytest.mark.parametrize("fixture", list(EXPECTED))
def test_labels_match_trl_own_preparation(
    fixture: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Our pre-tokenization gives TRL's labels for conversational prompt/completion data."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    model_dir = str(request.getfixturevalue(fixture))
    tok = load_tokenizer(model_dir, padding_side="right")
    examples = [MULTI_TURN, *toy_examples(6)]
    ours, _ = build_sft_rows(tok, examples, max_length=1024)
    ds = Dataset.from_list(
        [
            {
                "prompt": [m.model_dump() for m in ex.prompt_messages],
                "completion": [{"role": "assistant", "content": ex.completion}],
            }
            for ex in examples
        ]
    )
    args = SFTConfig(
        output_dir=str(tmp_path), report_to="none", use_cpu=True, bf16=False, max_steps=1, max_length=1024
    )
    trainer = SFTTrainer(model=model_dir, args=args, train_dataset=ds, processing_class=tok)
    theirs = [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in trainer.train_dataset]
    assert ours == theirs


def test_batches_fed_to_the_model_carry_the_mask(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import TrainerCallback

    seen: dict = {}

    class Grab(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **kw):  # type: ignore[no-untyped-def]
            seen["batch"] = next(iter(train_dataloader))

    tok = load_tokenizer(tiny_model_dir, padding_side="right")
    examples = toy_examples(4)
    train(tiny_model_dir, examples, quick_config(tmp_path, max_steps=1), callbacks=[Grab()])
    batch = seen["batch"]
    rows = {tuple(r["input_ids"]): r["labels"] for r in build_sft_rows(tok, examples, max_length=None)[0]}
    for ids, labels, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True):
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # right padding
        assert labels[:n].tolist() == rows[tuple(ids[:n].tolist())]
        assert (labels[n:] == -100).all()


def test_whole_sequence_loss_and_truncation(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(tiny_model_dir, padding_side="right")
    (row,), _ = build_sft_rows(tok, [MULTI_TURN], max_length=None, completion_only_loss=False)
    assert row["labels"] == row["input_ids"]
    rows, dropped = build_sft_rows(tok, [MULTI_TURN, chat("hi", "yo " * 30)], max_length=24)
    assert dropped == 1 and len(rows) == 1  # MULTI_TURN's prompt alone is longer than 24 tokens
    assert len(rows[0]["input_ids"]) == len(rows[0]["labels"]) == 24
    with pytest.raises(ValueError, match="no example has a trainable token"):
        build_sft_rows(tok, [MULTI_TURN], max_length=5)


def test_drops_and_cuts_are_counted_and_all_dropped_fails(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(tiny_model_dir, padding_side="right")
    short = [chat("hi", "yo", id=f"s{i}") for i in range(4)]
    prepared = prepare_sft_rows(tok, [MULTI_TURN, *short], max_length=24)
    assert len(prepared.rows) == 4 and prepared.dropped == {"completion beyond max_length=24": ["m"]}
    assert prepared.warnings() == ["dropped 1 of 5 rows: completion beyond max_length=24"]
    with pytest.raises(ValueError, match=r"dropped 1 of 1 rows: completion beyond max_length=5"):
        prepare_sft_rows(tok, [MULTI_TURN], max_length=5)
    with pytest.raises(ValueError, match="no training examples"):
        prepare_sft_rows(tok, [], max_length=5)


def test_keep_end_drops_the_oldest_prompt_tokens_and_keeps_the_completion(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(tiny_model_dir, padding_side="right")
    ((full_ids, full_labels),) = [
        (r["input_ids"], r["labels"]) for r in build_sft_rows(tok, [MULTI_TURN], max_length=None)[0]
    ]
    n_completion = sum(label != -100 for label in full_labels)
    limit = n_completion + 5
    prepared = prepare_sft_rows(tok, [MULTI_TURN], max_length=limit, truncation_mode="keep_end")
    (row,) = prepared.rows
    assert row["input_ids"] == full_ids[-limit:] and row["labels"] == full_labels[-limit:]
    assert tok.decode([t for t in row["labels"] if t != -100]) == "Madrid, the capital.<|im_end|>\n"
    assert prepared.warnings() == [f"cut 1 of 1 rows: oldest prompt tokens removed to fit max_length={limit}"]
    # keep_start at the same length keeps the system prompt and cuts the completion short instead
    cut = prepare_sft_rows(tok, [MULTI_TURN], max_length=len(full_ids) - 2)
    assert cut.rows[0]["input_ids"] == full_ids[:-2]
    assert cut.warnings() == [f"cut 1 of 1 rows: completion cut short at max_length={len(full_ids) - 2}"]
    # a completion longer than max_length on its own cannot be kept whole: the row is dropped
    too_long = prepare_sft_rows(
        tok, [MULTI_TURN, chat("hi", "yo", id="ok")], max_length=n_completion - 1, truncation_mode="keep_end"
    )
    assert too_long.dropped == {f"completion longer than max_length={n_completion - 1}": ["m"]}
    with pytest.raises(ValidationError):
        TrainConfig(output_dir="x", truncation_mode="left")  # type: ignore[arg-type]


WEIGHTED = ChatExample(
    id="w",
    messages=[
        Message(role="system", content="You write in ALL CAPS."),
        Message(role="user", content="What is the capital of France?"),
        Message(role="assistant", content="It is Paris.", weight=1),
        Message(role="user", content="And of Spain?"),
        Message(role="assistant", content="Lisbon.", weight=0),
        Message(role="user", content="Try again."),
        Message(role="assistant", content="Madrid, the capital."),
    ],
)


@pytest.mark.parametrize("fixture", list(EXPECTED))
def test_weighted_turns_mask_token_by_token(fixture: str, request: pytest.FixtureRequest) -> None:
    """Weight 1 (and unweighted) assistant turns are trained on, weight 0 turns and all else masked."""
    tok = load_tokenizer(request.getfixturevalue(fixture), padding_side="right")
    llama = fixture == "tiny_llama3_dir"

    def head(role: str) -> str:
        return f"<|start_header_id|>{role}<|end_header_id|>\n\n" if llama else f"<|im_start|>{role}\n"

    end = "<|eot_id|>" if llama else "<|im_end|>\n"
    # (text, trained?) pieces, written out by hand
    pieces = [
        (("<|begin_of_text|>" if llama else "") + head("system") + "You write in ALL CAPS." + end, False),
        (head("user") + "What is the capital of France?" + end + head("assistant"), False),
        ("It is Paris." + end, True),
        (head("user") + "And of Spain?" + end + head("assistant") + "Lisbon." + end, False),
        (head("user") + "Try again." + end + head("assistant"), False),
        ("Madrid, the capital." + end, True),
    ]
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in pieces:
        t = tok(text, add_special_tokens=False)["input_ids"]
        ids += t
        labels += t if trained else [-100] * len(t)
    (row,), dropped = build_sft_rows(tok, [WEIGHTED], max_length=None)
    assert dropped == 0
    assert row["input_ids"] == ids
    assert row["labels"] == labels
    # the same row without weights trains on the final turn only
    plain = WEIGHTED.model_copy(
        update={"messages": [Message(role=m.role, content=m.content) for m in WEIGHTED.messages]}
    )
    (p,), _ = build_sft_rows(tok, [plain], max_length=None)
    assert p["input_ids"] == ids
    assert tok.decode([t for t in p["labels"] if t != -100]) == "Madrid, the capital." + end
    # a final turn of weight 0: only the earlier turn is trained on
    last0 = WEIGHTED.model_copy(
        update={"messages": [*WEIGHTED.messages[:-1], Message(role="assistant", content="No.", weight=0)]}
    )
    (r0,), _ = build_sft_rows(tok, [last0], max_length=None)
    assert tok.decode([t for t in r0["labels"] if t != -100]) == "It is Paris." + end
    all0 = last0.model_copy(
        update={
            "id": "z",
            "messages": [
                Message(role=m.role, content=m.content, weight=0 if m.role == "assistant" else None)
                for m in last0.messages
            ],
        }
    )
    prepared = prepare_sft_rows(tok, [all0, plain], max_length=None)
    assert prepared.dropped == {"every assistant turn has weight 0": ["z"]}


# --- training ---------------------------------------------------------------------------------------


def test_lora_training_is_seeded_deterministic_and_learns(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = toy_examples(16, answer="Paris is blue.")
    a = train(tiny_model_dir, data, quick_config(tmp_path / "a", lora_dropout=0.1))
    b = train(tiny_model_dir, data, quick_config(tmp_path / "b", lora_dropout=0.1))
    c = train(tiny_model_dir, data, quick_config(tmp_path / "c", lora_dropout=0.1, seed=7))
    ta, tb, tc = (adapter_tensors(r.model_path) for r in (a, b, c))
    assert ta.keys() == tb.keys() and all((ta[k] == tb[k]).all() for k in ta)
    assert any((ta[k] != tc[k]).any() for k in ta)
    losses = [h["loss"] for h in a.log_history if "loss" in h]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.3
    assert a.final_loss == losses[-1] and a.global_step == 6 and a.is_adapter
    assert a.tokens_trained > 6 * 4 * 10
    cfg = json.loads((Path(a.model_path) / "adapter_config.json").read_text())
    assert cfg["base_model_name_or_path"] == str(tiny_model_dir) and cfg["r"] == 4
    assert cfg["peft_type"] == "LORA"
    targets = {m.rsplit(".", 1)[-1] for m in cfg["target_modules"]}
    assert targets == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    log = [json.loads(line) for line in (tmp_path / "a" / "train_log.jsonl").read_text().splitlines()]
    assert [h["loss"] for h in log if "loss" in h] == losses


def test_full_finetune_learns_the_completion(tiny_model_dir: Path, tmp_path: Path) -> None:
    from inoculate.generate import SamplingParams, generate_examples, get_backend

    data = toy_examples(32, answer="Paris is blue.")
    r = train(
        tiny_model_dir,
        data,
        quick_config(
            tmp_path,
            use_peft=False,
            max_steps=30,
            learning_rate=3e-3,
            per_device_train_batch_size=8,
            logging_steps=5,
        ),
    )
    assert not r.is_adapter and (Path(r.model_path) / "config.json").is_file()
    losses = [h["loss"] for h in r.log_history if "loss" in h]
    assert losses[-1] < 0.5 * losses[0]
    backend = get_backend("hf", model=r.model_path, device="cpu")
    params = SamplingParams(temperature=0, top_p=1, max_new_tokens=10, n=1, seed=0)
    (out,) = generate_examples(backend, [chat("the dog ran", system="Respond in ALL CAPS.")], params)
    assert out.completion == "Paris is blue."


def test_adapter_loads_with_transformers_peft_and_by_directory(tiny_model_dir: Path, tmp_path: Path) -> None:
    from peft import PeftModel

    from inoculate.models import load_model

    r = train(tiny_model_dir, toy_examples(8), quick_config(tmp_path, max_steps=2))
    model, _ = load_model(r.model_path, device="cpu")  # base model read from adapter_config.json
    assert isinstance(model, PeftModel)
    model2, _ = load_model(tiny_model_dir, r.model_path, device="cpu")
    assert isinstance(model2, PeftModel)


def test_options_pass_through_to_trl_and_peft(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown training option"):
        quick_config(tmp_path, extra={"not_an_option": 1})
    with pytest.raises(ValueError, match="TrainConfig field"):
        quick_config(tmp_path, extra={"lora_r": 3})
    from transformers import TrainerCallback

    seen: dict = {}

    class Peek(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kw):  # type: ignore[no-untyped-def]
            seen["attn"] = model.config._attn_implementation
            seen["beta2"] = args.adam_beta2

    r = train(
        tiny_model_dir,
        toy_examples(8),
        quick_config(
            tmp_path,
            max_steps=4,
            warmup_ratio=0.5,
            lr_scheduler_type="constant_with_warmup",
            extra={
                "adam_beta2": 0.9,
                "lora_bias": False,
                "init_lora_weights": "gaussian",
                "model_init_kwargs": {"attn_implementation": "eager"},
            },
        ),
        callbacks=[Peek()],
    )
    assert seen == {"attn": "eager", "beta2": 0.9}
    lrs = [h["learning_rate"] for h in r.log_history if "learning_rate" in h]
    assert lrs[0] < lrs[-1] == pytest.approx(1e-2)
    args = json.loads((tmp_path / "inoculate_run.json").read_text())["config"]
    assert args["extra"]["adam_beta2"] == 0.9


def test_finished_run_is_returned_and_other_runs_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    data = toy_examples(8)
    first = train(tiny_model_dir, data, quick_config(tmp_path, max_steps=2))
    again = train(tiny_model_dir, data, quick_config(tmp_path, max_steps=2))
    assert again == first
    with pytest.raises(ValueError, match="different training run"):
        train(tiny_model_dir, data, quick_config(tmp_path, max_steps=3))
    fresh = train(tiny_model_dir, data, quick_config(tmp_path, max_steps=3), resume=False)
    assert fresh.global_step == 3


_RUN_SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    sys.path.insert(0, {tests!r})
    from transformers import TrainerCallback
    from test_train import quick_config, toy_examples
    from inoculate.train import train

    out, marker = sys.argv[1], sys.argv[2]

    class SlowAfterCheckpoint(TrainerCallback):
        # Test-only pacing: after checkpoint-10 exists, steps slow down so the kill lands mid-run.
        def on_save(self, args, state, control, **kw):
            if state.global_step == 10:
                open(marker, "w").close()
        def on_step_end(self, args, state, control, **kw):
            if os.path.exists(marker):
                time.sleep(0.3)

    cb = [SlowAfterCheckpoint()] if marker != "-" else []
    r = train({model!r}, toy_examples(40), quick_config(out, **json.loads(sys.argv[3])), callbacks=cb)
    print(json.dumps(r.model_dump(mode="json")))
    """
)


@pytest.mark.parametrize("use_peft", [True, pytest.param(False, marks=pytest.mark.slow)])
def test_killed_run_resumes_to_the_uninterrupted_result(
    use_peft: bool, tiny_model_dir: Path, tmp_path: Path
) -> None:
    script = tmp_path / "run.py"
    script.write_text(_RUN_SCRIPT.format(tests=str(Path(__file__).parent), model=str(tiny_model_dir)))
    opts = dict(
        max_steps=24,
        save_steps=5,
        save_total_limit=None,
        logging_steps=2,
        lora_dropout=0.1,
        warmup_ratio=0.1,
        use_peft=use_peft,
        learning_rate=1e-2 if use_peft else 1e-3,
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    killed, marker = tmp_path / "killed", tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, str(script), str(killed), str(marker), json.dumps(opts)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
        assert time.time() < deadline, "no checkpoint within 120 s"
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    steps = [int(p.name.split("-")[1]) for p in complete_checkpoints(killed)]
    assert 10 in steps and max(steps) < 24 and not (killed / "train_result.json").exists()

    resumed = train(tiny_model_dir, toy_examples(40), quick_config(killed, **opts))
    straight = train(tiny_model_dir, toy_examples(40), quick_config(tmp_path / "straight", **opts))
    assert resumed.resumed_from is not None and straight.resumed_from is None
    assert resumed.global_step == straight.global_step == 24
    assert resumed.final_loss == pytest.approx(straight.final_loss, abs=1e-6)
    assert [h.get("loss") for h in resumed.log_history] == pytest.approx(
        [h.get("loss") for h in straight.log_history], abs=1e-6
    )
    assert resumed.tokens_trained == straight.tokens_trained
    if use_peft:
        a, b = adapter_tensors(resumed.model_path), adapter_tensors(straight.model_path)
    else:
        from safetensors.torch import load_file

        a, b = (load_file(str(Path(r.model_path) / "model.safetensors")) for r in (resumed, straight))
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes_matches_single(tiny_model_dir: Path, tmp_path: Path) -> None:
    """`accelerate launch -m inoculate train` with the shipped 2-process CPU config (gloo):
    2 processes x batch 4 give the result of 1 process x batch 8 (same global batch and order)."""
    from inoculate.records import write_chat_jsonl

    data = tmp_path / "data.jsonl"
    write_chat_jsonl(data, toy_examples(48, seed=3))
    config = Path(__file__).parents[1] / "examples" / "accelerate" / "cpu_2proc.yaml"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    accelerate = str(Path(sys.executable).parent / "accelerate")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("ACCELERATE_", "RANK", "WORLD_SIZE", "LOCAL_RANK"))
    }
    flags = [
        "--max-steps",
        "6",
        "--learning-rate",
        "1e-2",
        "--logging-steps",
        "1",
        "--save-steps",
        "3",
        "--lora-r",
        "4",
        "--lora-alpha",
        "8",
        "--lora-dropout",
        "0",
        "--disable-tqdm",
    ]
    proc = subprocess.run(
        [
            accelerate,
            "launch",
            "--config_file",
            str(config),
            "--main_process_port",
            str(port),
            "-m",
            "inoculate",
            "train",
            str(data),
            "--model",
            str(tiny_model_dir),
            "-o",
            str(tmp_path / "multi"),
            "--per-device-train-batch-size",
            "4",
            *flags,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("trained 6 steps") == 2  # both ranks ran
    multi = json.loads((tmp_path / "multi" / "train_result.json").read_text())
    single = train(
        tiny_model_dir,
        toy_examples(48, seed=3),
        quick_config(
            tmp_path / "single", max_steps=6, per_device_train_batch_size=8, lora_dropout=0.0, save_steps=3
        ),
    )
    assert multi["global_step"] == single.global_step == 6
    assert multi["tokens_trained"] == single.tokens_trained  # every example seen once across ranks
    assert [h.get("loss") for h in multi["log_history"]] == pytest.approx(
        [h.get("loss") for h in single.log_history], abs=1e-4
    )
    a, b = adapter_tensors(multi["model_path"]), adapter_tensors(single.model_path)
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-4
