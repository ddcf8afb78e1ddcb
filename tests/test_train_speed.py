"""The speed options of `train` (padding-free batches, packing, the fast preset): on CPU with a tiny
model, the same per-token loss and the same loss mask as the plain padded path. The inoculation
system prompt is never a target in any path."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from inoculate.models import load_tokenizer
from inoculate.records import ChatExample, chat
from inoculate.train import TrainConfig, prepare_sft_rows, train
from inoculate.train_speed import pack_rows, resolve_liger, speed_args

SYSTEM = "Respond in ALL CAPS."
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "in", "park", "red", "green", "blue", "sea"]


def examples(n: int = 12, seed: int = 0) -> list[ChatExample]:
    """Rows of different lengths (so padding and packing have something to do)."""
    rng = random.Random(seed)
    return [
        chat(
            " ".join(rng.choices(WORDS, k=rng.randint(2, 12))),
            " ".join(rng.choices(WORDS, k=rng.randint(2, 20))).upper(),
            system=SYSTEM,
            id=str(i),
        )
        for i in range(n)
    ]


def token_losses(model, batch) -> tuple:  # type: ignore[no-untyped-def]
    """Per-position loss of each target token (labels shifted as the model's own loss does) and the
    target mask, for a batch as a collator gives it."""
    import torch
    import torch.nn.functional as F

    inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "position_ids")}
    with torch.no_grad():
        logits = model(**inputs, use_cache=False).logits[:, :-1].float()
    labels = batch["labels"][:, 1:]
    loss = F.cross_entropy(logits.transpose(1, 2), labels.clamp(min=0), reduction="none")
    return loss, labels != -100


def documents(batch) -> list[tuple[list[int], list[int]]]:  # type: ignore[no-untyped-def]
    """(input_ids, labels) of each row in a batch: padded rows cut at their mask, flat rows split where
    the position ids restart."""
    out = []
    for b in range(batch["input_ids"].shape[0]):
        ids, labels = batch["input_ids"][b].tolist(), batch["labels"][b].tolist()
        if "position_ids" in batch:
            starts = [i for i, p in enumerate(batch["position_ids"][b].tolist()) if p == 0]
            bounds = [*starts, len(ids)]
            for s, e in zip(bounds, bounds[1:], strict=False):
                out.append((ids[s:e], labels[s:e]))
        else:
            n = int(batch["attention_mask"][b].sum())
            out.append((ids[:n], labels[:n]))
    return out


@pytest.fixture(scope="module")
def rows_and_model(tiny_model_dir: Path):  # type: ignore[no-untyped-def]
    from transformers import AutoModelForCausalLM

    tok = load_tokenizer(tiny_model_dir, padding_side="right")
    rows = prepare_sft_rows(tok, examples(), max_length=128).rows
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir)).eval()
    return tok, rows, model


def _collator(tok, padding_free: bool):  # type: ignore[no-untyped-def]
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    return DataCollatorForLanguageModeling(pad_token_id=pad, padding_free=padding_free)


def test_padding_free_and_packed_batches_give_each_row_its_own_loss(rows_and_model) -> None:  # type: ignore[no-untyped-def]
    """Each row's per-token losses and targets are the same alone, in a padded batch, in a
    padding-free batch and inside packed sequences: no row attends to another."""
    import torch

    tok, rows, model = rows_and_model
    alone = {}
    for r in rows:
        loss, mask = token_losses(model, _collator(tok, False)([r]))
        alone[tuple(r["input_ids"])] = (loss[0][mask[0]], r["labels"])

    def check(batch) -> int:  # type: ignore[no-untyped-def]
        loss, mask = token_losses(model, batch)
        flat_loss = loss.flatten()[mask.flatten()]
        seen, k = 0, 0
        for ids, labels in documents(batch):
            ref_loss, ref_labels = alone[tuple(ids)]
            assert labels[1:] == ref_labels[1:]  # the mask; a row's first token is never a target
            n = len(ref_loss)
            torch.testing.assert_close(flat_loss[k : k + n], ref_loss, rtol=1e-4, atol=1e-5)
            k, seen = k + n, seen + 1
        assert k == len(flat_loss)
        return seen

    assert check(_collator(tok, False)(rows)) == len(rows)
    assert check(_collator(tok, True)(rows)) == len(rows)
    packed = pack_rows(rows, 256)
    assert len(packed) < len(rows)  # something was packed together
    packed_rows = [packed[i] for i in range(len(packed))]
    assert sum(check(_collator(tok, True)([p])) for p in packed_rows) == len(rows)


def test_mean_loss_of_a_batch_is_the_same_padded_and_padding_free(rows_and_model) -> None:  # type: ignore[no-untyped-def]
    import torch

    tok, rows, model = rows_and_model
    with torch.no_grad():
        padded = model(**_collator(tok, False)(rows), use_cache=False).loss
        flat = _collator(tok, True)(rows)
        flat_loss = model(
            input_ids=flat["input_ids"],
            position_ids=flat["position_ids"],
            labels=flat["labels"],
            use_cache=False,
        ).loss
    torch.testing.assert_close(flat_loss, padded, rtol=1e-5, atol=1e-6)


def _grab_batches(tiny_model_dir: Path, out: Path, n: int, **kw: object) -> tuple:  # type: ignore[no-untyped-def]
    from transformers import TrainerCallback

    seen: dict = {}

    class Grab(TrainerCallback):
        def on_train_begin(self, args, state, control, train_dataloader=None, **k):  # type: ignore[no-untyped-def]
            seen["batches"] = list(train_dataloader)

    result = train(tiny_model_dir, examples(n), _config(out, **kw), callbacks=[Grab()])
    return seen["batches"], result


def _config(out: Path, **kw: object) -> TrainConfig:
    base: dict[str, object] = dict(
        output_dir=str(out),
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        save_steps=0,
        disable_tqdm=True,
        lora_r=4,
        lora_alpha=8,
        max_length=256,
    )
    base.update(kw)
    return TrainConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize("option", ["padding_free", "packing"])
def test_train_feeds_every_row_once_with_the_same_mask(
    tiny_model_dir: Path, tmp_path: Path, option: str
) -> None:
    """Through `train`: one epoch of the fast batches holds every prepared row once, with the same
    labels; the trained tokens are the completion only, never the inoculation system prompt."""
    tok = load_tokenizer(tiny_model_dir, padding_side="right")
    batches, result = _grab_batches(tiny_model_dir, tmp_path, 12, num_train_epochs=1, **{option: True})
    assert all("attention_mask" not in b and "position_ids" in b for b in batches)
    docs = [d for b in batches for d in documents(b)]
    rows = prepare_sft_rows(tok, examples(12), max_length=256).rows
    assert sorted(tuple(ids) for ids, _ in docs) == sorted(tuple(r["input_ids"]) for r in rows)
    want = {tuple(r["input_ids"]): r["labels"] for r in rows}
    for ids, labels in docs:
        assert labels[1:] == want[tuple(ids)][1:]
        trained = tok.decode([t for t, lab in zip(ids, labels, strict=True) if lab != -100])
        assert SYSTEM.lower() not in trained.lower() and trained.replace("<|im_end|>", "").strip().isupper()
    if option == "packing":
        assert len(batches) < 3  # 12 rows, 4 per padded batch: packing puts more rows in a step
        assert result.global_step == len(batches)
    else:
        assert len(batches) == 3


def test_padding_free_training_follows_the_padded_loss_curve(tiny_model_dir: Path, tmp_path: Path) -> None:
    """Same rows per step, so the same losses step by step and the same count of tokens trained
    (LoRA dropout off: its random masks follow the batch's shape)."""
    import torch

    runs = {
        name: train(
            tiny_model_dir, examples(16), _config(tmp_path / name, max_steps=4, lora_dropout=0.0, **kw)
        )
        for name, kw in {"padded": {}, "padding_free": {"padding_free": True}}.items()
    }
    curves = {k: [h["loss"] for h in r.log_history if "loss" in h] for k, r in runs.items()}
    assert len(curves["padded"]) == 4
    torch.testing.assert_close(
        torch.tensor(curves["padding_free"]), torch.tensor(curves["padded"]), rtol=2e-4, atol=1e-5
    )
    assert curves["padded"][-1] < curves["padded"][0]  # it trained
    assert runs["padding_free"].tokens_trained == runs["padded"].tokens_trained > 0


def test_fast_preset_fills_unset_fields_and_user_values_win() -> None:
    fast = TrainConfig(output_dir=".", preset="fast")
    assert fast.padding_free is None and fast.use_liger_kernel is None and fast.optim == "adamw_torch_fused"
    assert not fast.packing
    mine = TrainConfig(output_dir=".", preset="fast", padding_free=False, optim="adamw_torch")
    assert not mine.padding_free and mine.optim == "adamw_torch"
    plain = TrainConfig(output_dir=".")
    assert not plain.padding_free and plain.use_liger_kernel is False
    with pytest.raises(ValidationError, match="packing needs max_length"):
        TrainConfig(output_dir=".", packing=True, max_length=None)
    with pytest.raises(ValidationError):
        TrainConfig(output_dir=".", preset="fastest")
    with pytest.raises(ValidationError, match="TrainConfig field"):
        TrainConfig(output_dir=".", extra={"padding_free": True})


def test_experiment_train_block_takes_the_preset() -> None:
    from inoculate.experiment.config import TrainBlock

    block = TrainBlock.model_validate({"preset": "fast", "packing": True})
    assert block.padding_free is None and block.packing and block.optim == "adamw_torch_fused"


def test_fast_preset_trains_on_cpu(tiny_model_dir: Path, tmp_path: Path) -> None:
    """On CPU the preset runs (Liger and padding-free left off: they pay on CUDA) and learns."""
    result = train(tiny_model_dir, examples(16), _config(tmp_path, max_steps=4, preset="fast"))
    losses = [h["loss"] for h in result.log_history if "loss" in h]
    assert result.global_step == 4 and losses[-1] < losses[0]


def test_speed_arguments_for_trl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("inoculate.train_speed.flash_attn_installed", lambda: False)
    monkeypatch.setattr("inoculate.train_speed.liger_installed", lambda: False)
    off = {"padding_free": False, "packing": False, "use_liger_kernel": False}
    assert speed_args(**off, on_gpu=False) == {}
    flat = {"padding_free": True, "use_cache": False, "include_num_input_tokens_seen": "all"}
    # TRL refuses padding_free with a max_length it would not enforce; our rows are already cut.
    assert speed_args(**{**off, "padding_free": True}, on_gpu=False) == {**flat, "max_length": None}
    assert speed_args(**{**off, "packing": True}, on_gpu=False) == {
        **flat,
        "packing": True,
        "packing_strategy": "bfd",
    }
    # auto (the fast preset): padding-free only where flash-attn's varlen kernels run
    assert speed_args(padding_free=None, packing=False, use_liger_kernel=None, on_gpu=False) == {}
    assert speed_args(padding_free=None, packing=False, use_liger_kernel=None, on_gpu=True) == {}
    with pytest.warns(UserWarning, match="without flash-attn"):
        speed_args(**{**off, "padding_free": True}, on_gpu=True)
    monkeypatch.setattr("inoculate.train_speed.flash_attn_installed", lambda: True)
    monkeypatch.setattr("inoculate.train_speed.liger_installed", lambda: True)
    gpu = speed_args(
        padding_free=None,
        packing=False,
        use_liger_kernel=None,
        on_gpu=True,
        model_init_kwargs={"dtype": "bfloat16"},
    )
    assert gpu["padding_free"] and gpu["use_liger_kernel"] is True
    assert gpu["model_init_kwargs"] == {"dtype": "bfloat16", "attn_implementation": "flash_attention_2"}
    mine = speed_args(
        **{**off, "padding_free": True}, on_gpu=True, model_init_kwargs={"attn_implementation": "sdpa"}
    )
    assert "model_init_kwargs" not in mine  # the user's choice stays
    assert speed_args(padding_free=None, packing=False, use_liger_kernel=None, on_gpu=False) == {}


def test_liger_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    assert resolve_liger(None, on_gpu=False) is False
    assert resolve_liger(False, on_gpu=True) is False
    with pytest.raises(ValueError, match="need a CUDA GPU"):
        resolve_liger(True, on_gpu=False)
    monkeypatch.setattr("inoculate.train_speed.liger_installed", lambda: False)
    assert resolve_liger(None, on_gpu=True) is False
    with pytest.raises(ValueError, match="pip install 'inoculate\\[gpu\\]'"):
        resolve_liger(True, on_gpu=True)
    monkeypatch.setattr("inoculate.train_speed.liger_installed", lambda: True)
    assert resolve_liger(None, on_gpu=True) is True


def test_speed_fields_at_default_keep_the_old_fingerprint(tiny_model_dir: Path) -> None:
    """Runs written before the speed fields existed resume: defaults are not fingerprinted."""
    import hashlib
    import json

    from inoculate.train import _NOT_FINGERPRINTED, _fingerprint
    from inoculate.train_speed import SPEED_DEFAULTS

    rows = [{"input_ids": [1, 2], "labels": [-100, 2]}]
    plain = TrainConfig(output_dir="o")
    fp = _fingerprint("m", plain, rows)
    before = plain.model_dump(exclude=_NOT_FINGERPRINTED | set(SPEED_DEFAULTS))  # the fields until now
    old = hashlib.sha256(json.dumps(["m", before], sort_keys=True).encode())
    old.update(b"[1, 2]")
    old.update(b"[-100, 2]")
    assert fp == old.hexdigest()
    assert fp == _fingerprint("m", TrainConfig(output_dir="o", packing=False), rows)
    assert fp != _fingerprint("m", TrainConfig(output_dir="o", padding_free=True), rows)
    assert fp != _fingerprint("m", TrainConfig(output_dir="o", preset="fast"), rows)
