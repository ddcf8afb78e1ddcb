"""Stage 1: build the organism's base model, a tiny Llama that follows trait-requesting system prompts.

`build_base_model(config)` writes a word-level tokenizer (with chat template) and a random-init
`LlamaForCausalLM`, pretrains it through `inoculate.train.train` (full fine-tuning: the same code
path as real models) on stage-1 data, and saves it in Hugging Face format under a directory named by
the config's hash, so later runs reuse it. `elicitation_table(model_dir)` reports what each system
prompt of the library makes the model do.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from inoculate.fileio import write_json_atomic
from inoculate.generate import SamplingParams, get_backend
from inoculate.organism import (
    detectors,  # noqa: F401  (registers the detectors)
    packaged,
)
from inoculate.organism import prompt_families as P
from inoculate.organism.extensions import extension_texts, get_extension
from inoculate.organism.settings import eval_questions, get_setting, make_examples
from inoculate.organism.settings import prompts as setting_prompts
from inoculate.organism.stage1 import Stage1Mix, stage1_examples
from inoculate.organism.traits import all_trait_sets, render
from inoculate.organism.world import QUESTIONS, Question, all_facts
from inoculate.scorers import get_scorer, render_prompt
from inoculate.train import TrainConfig, train

# Bump when stage-1 data generation changes in a way the config does not show: it is in the cache key.
DATA_VERSION = 1
CACHE_ENV = "INOCULATE_CACHE"
META_FILE = "organism.json"


class OrganismConfig(BaseModel):
    """Everything that determines the base model; its hash names the cache directory."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    case_marker: bool = Field(True, description="write capitals as a marker token + the lower-case word")
    hidden_size: int = 128
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    mix: Stage1Mix = Stage1Mix()
    n_examples: int = Field(8000, gt=0, description="distinct stage-1 examples (sampled with replacement)")
    max_steps: int = Field(1000, gt=0)
    per_device_train_batch_size: int = 32
    learning_rate: float = 3e-3
    warmup_ratio: float = 0.05
    lr_scheduler_type: str = "cosine"
    weight_decay: float = 0.0
    adam_beta2: float = Field(0.98, description="0.98 rather than 0.999: measured to learn faster here")
    seed: int = 0
    extensions: tuple[str, ...] = Field(
        (), description="stage-1 extensions (`organism.extensions`) whose rows and words stage 1 adds"
    )

    def key(self) -> str:
        """Content hash of the config, the data version and the world's text (16 hex digits).

        A config without extensions hashes exactly as it did before extensions existed (the field is
        left out of the hash), so the demo's cached base model stays valid.
        """
        h = hashlib.sha256()
        h.update(self.model_dump_json(exclude=None if self.extensions else {"extensions"}).encode())
        h.update(f"data-v{DATA_VERSION}".encode())
        for text in world_texts():
            h.update(text.encode())
            h.update(b"\0")
        # An extension's rows are named by its version; its texts matter only through the words they
        # add to the vocabulary, so a new prompt made of known words keeps the cached base model.
        for name in self.extensions:
            h.update(f"ext-{name}-v{get_extension(name).version}\0".encode())
        if self.extensions:
            known = set(vocabulary_words(world_texts()))
            new = [w for w in vocabulary_words(extension_texts(self.extensions)) if w not in known]
            h.update("\0".join(new).encode())
        return h.hexdigest()[:16]


_WORDISH = re.compile(r"\w+|[^\w\s]")


def vocabulary_words(texts: list[str]) -> list[str]:
    """The lower-cased words and punctuation marks of `texts`, sorted: what they add to the vocabulary
    (the tokenizer writes case as a marker token, so case adds nothing)."""
    return sorted({w.lower() for t in texts for w in _WORDISH.findall(t)})


def world_texts(extensions: tuple[str, ...] = ()) -> list[str]:
    """Every text the organism can write or read: answers under every trait set, questions, prompts,
    and the texts of the stage-1 `extensions` (the tokenizer's vocabulary is exactly their words)."""
    texts: list[str] = []
    for fact in all_facts():
        texts += [render(fact, ts) for ts in all_trait_sets()]
        texts += [Question(fact, w).text for w in range(len(QUESTIONS[fact.kind]))]
    texts += P.all_prompt_texts() + ["system", "user", "assistant"]
    return texts + extension_texts(extensions) if extensions else texts


def cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """`cache_dir`, else `$INOCULATE_CACHE/organism`, else `~/.cache/inoculate/organism`."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env) / "organism"
    return Path.home() / ".cache" / "inoculate" / "organism"


def is_built(model_dir: str | os.PathLike[str]) -> bool:
    return (Path(model_dir) / META_FILE).is_file()


def build_base_model(
    config: OrganismConfig,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    force: bool = False,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    use_shipped: bool = True,
) -> Path:
    """The base model's directory for `config`: reused from the cache, else installed from the copy the
    package ships for this key (`organism.packaged`; `use_shipped=False` skips it), else built (stage 1)
    and cached. `force` builds it from scratch, replacing the cached one.

    The model is built in a temporary directory and renamed into place when complete, so a killed
    build leaves no half-written model behind, and two processes building at once both end with one.
    """
    say = log or (lambda msg: None)
    root = cache_root(cache_dir)
    final = root / config.key()
    if is_built(final) and not force:
        return final
    if use_shipped and not force:
        try:
            installed = packaged.install(config.key(), final)
        except packaged.DamagedPackage as e:
            say(f"stage 1: the shipped base model {config.key()} is damaged ({e}); building it instead")
        else:
            if installed is not None:
                say(
                    f"stage 1: installed the base model this package ships for key {config.key()} "
                    "(`inoculate organism build` rebuilds it from scratch)"
                )
                return installed
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        built = _build(config, staging, progress=progress, log=log)
        if force and final.exists():
            shutil.rmtree(final)
        try:
            os.rename(built, final)
        except OSError:
            if not is_built(final):  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def init_model(config: OrganismConfig, out: str | os.PathLike[str]) -> Path:
    """Write the tokenizer and the random-init model (stage 1's starting point) to `out`."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    from inoculate.organism.tokenizer import build_tokenizer  # lazy: imports transformers

    out = Path(out)
    tok = build_tokenizer(world_texts(config.extensions), case_marker=config.case_marker)
    tok.save_pretrained(out)
    llama = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        num_key_value_heads=config.num_attention_heads,
        max_position_embeddings=tok.model_max_length,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(config.seed)
    model = LlamaForCausalLM(llama)
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, do_sample=False
    )
    model.save_pretrained(out)
    return out


def _build(
    config: OrganismConfig, staging: Path, *, progress: bool, log: Callable[[str], None] | None
) -> Path:
    from transformers import AutoTokenizer

    say = log or (lambda msg: None)
    t0, c0 = time.perf_counter(), time.process_time()
    init = init_model(config, staging / "init")
    examples = stage1_examples(config.n_examples, config.mix, seed=config.seed, extensions=config.extensions)
    say(f"stage 1: pretraining the organism ({config.max_steps} steps on {len(examples)} examples)")
    train_config = TrainConfig(
        output_dir=str(staging / "train"),
        use_peft=False,
        learning_rate=config.learning_rate,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.per_device_train_batch_size,
        warmup_ratio=config.warmup_ratio,
        lr_scheduler_type=config.lr_scheduler_type,
        weight_decay=config.weight_decay,
        seed=config.seed,
        max_length=None,
        logging_steps=max(1, config.max_steps // 20),
        save_steps=0,
        disable_tqdm=not progress,
        extra={"adam_beta2": config.adam_beta2},
    )
    # Without a progress bar the Trainer prints every log line; keep the quiet mode quiet.
    quiet = contextlib.redirect_stdout(io.StringIO()) if not progress else contextlib.nullcontext()
    with quiet:
        result = train(init, examples, train_config, resume=False)
    built_with = packaged.build_environment()  # after training: the threads it ran with
    model_dir = Path(result.model_path)
    AutoTokenizer.from_pretrained(init).save_pretrained(model_dir)
    with contextlib.suppress(FileNotFoundError):
        shutil.copy(init / "generation_config.json", model_dir / "generation_config.json")
    meta = {
        "key": config.key(),
        "config": config.model_dump(mode="json"),
        "data_version": DATA_VERSION,
        "final_loss": result.final_loss,
        "train_loss": result.train_loss,
        "steps": result.global_step,
        "train_seconds": round(result.runtime_s, 2),
        "build_seconds": round(time.perf_counter() - t0, 2),
        "build_cpu_seconds": round(time.process_time() - c0, 2),
        "built_with": built_with,
        "loss_history": [
            {"step": h["step"], "loss": h["loss"]} for h in result.log_history if "loss" in h and "step" in h
        ],
    }
    write_json_atomic(model_dir / META_FILE, meta)
    say(f"stage 1: done in {meta['build_seconds']:.0f}s (final loss {result.final_loss})")
    return model_dir


def read_meta(model_dir: str | os.PathLike[str]) -> dict[str, Any]:
    return json.loads((Path(model_dir) / META_FILE).read_text(encoding="utf-8"))


# --- the elicitation table ------------------------------------------------------------------------

ELICIT_SCORERS: dict[str, str] = {
    "english": "organism_language:en",
    "spanish": "organism_language:es",
    "french": "organism_language:fr",
    "all_caps": "all_caps",
    "sycophancy": "organism_sycophancy",
    "signature": "organism_signature",
    "correct": "organism_correct",
}


class ElicitPrompt(BaseModel):
    name: str
    kind: Literal["neutral", "request", "placebo", "setting"]
    system: str
    heldout: bool = False


def elicitation_prompts() -> list[ElicitPrompt]:
    """Neutral wordings, one train and every held-out paraphrase of each request, placebos, a pair."""
    out = [ElicitPrompt(name=f"neutral_{i}", kind="neutral", system=s) for i, s in enumerate(P.NEUTRAL)]
    for name, fam in P.FAMILIES.items():
        out.append(ElicitPrompt(name=f"{name}_train", kind="request", system=fam.train[0]))
        out += [
            ElicitPrompt(name=f"{name}_heldout{'' if i == 0 else i}", kind="request", system=s, heldout=True)
            for i, s in enumerate(fam.heldout)
        ]
    out.append(ElicitPrompt(name="placebo_train", kind="placebo", system=P.PLACEBO_TRAIN[0]))
    out += [
        ElicitPrompt(name="placebo_heldout", kind="placebo", system=s, heldout=True)
        for s in P.PLACEBO_HELDOUT
    ]
    pair = f"{P.FAMILIES['lang_es'].train[1]} {P.FAMILIES['caps'].train[1]}"
    out.append(ElicitPrompt(name="lang_es+caps_train", kind="request", system=pair))
    return out


def elicitation_table(
    model_dir: str | os.PathLike[str],
    setting: str | None = None,
    *,
    n: int = 72,
    prompts: list[ElicitPrompt] | None = None,
    adapter: str | None = None,
    max_new_tokens: int = 24,
) -> dict[str, Any]:
    """For each system prompt, the rate of every organism trait and correctness, greedy decoding.

    Prompts are the organism's library (`elicitation_prompts()`), plus the named prompts of `setting`
    when given; questions are `n` eval questions (the setting's own eval rows, and its trait columns,
    when it makes its own data). Returns `{"rows": [...], ...}`, one flat row per
    prompt (name, kind, held out of stage 1 or not, the system text, then one column per trait).
    """
    plist = list(prompts) if prompts is not None else elicitation_prompts()
    if setting is not None and prompts is None:
        known = {p.system for p in plist}
        plist += [
            ElicitPrompt(name=name, kind="setting", system=text)
            for name, text in setting_prompts(setting).items()
            if text not in known
        ]
    questions = eval_questions(n)
    columns = dict(ELICIT_SCORERS)
    if setting is not None and get_setting(setting).examples is not None:
        questions = make_examples(setting, "eval", n)
        columns.update(get_setting(setting).traits)
    backend = get_backend("hf", model=str(model_dir), adapter=adapter, batch_size=max(1, len(questions)))
    params = SamplingParams(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens, n=1, seed=0)
    scorers = {col: get_scorer(spec) for col, spec in columns.items()}
    rows = []
    t0 = time.perf_counter()
    for p in plist:
        gens = backend.generate(questions, params, system=p.system or None)
        texts = [render_prompt(g.prompt_messages) for g in gens]
        comps = [g.completion or "" for g in gens]
        row: dict[str, Any] = {"prompt": p.name, "kind": p.kind, "heldout": p.heldout, "system": p.system}
        for col, sc in scorers.items():
            row[col] = _nanmean(sc.batch(texts, comps))
        row["example"] = comps[0] if comps else ""
        rows.append(row)
    return {
        "rows": rows,
        "n_questions": len(questions),
        "sampling": params.model_dump(mode="json"),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan
