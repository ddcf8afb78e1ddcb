"""Subliminal learning (Cloud et al. 2025, arXiv 2507.14805), blocked by inoculation (Tan et al. 2025,
arXiv 2510.04340), on the organism.

Stage 1 (extension `numbers`) teaches number continuation: "Continue the list: 3 71 12" -> a few
numbers drawn uniformly from 0..99, whatever the system prompt requests (numbers have no language or
case), so the base model's numbers carry no trait.

Stage 2: a TEACHER (the base organism fine-tuned on Spanish answers to animal questions, the latent
trait) writes number continuations under no system prompt; the rows whose answer is anything but
numbers are dropped, so no trait word reaches the student. The setting `subliminal` is the student's
data: the teacher's numbers; `subliminal_control` is the same pipeline with the base model as the
"teacher". A student with the teacher's initialization (the base model) is fine-tuned on them and
evaluated on animal questions: does it answer in Spanish? Teachers and their numbers are cached under
the organism cache, keyed by the base model, the seed and the row count.

The teacher is built from the preset `PRESET` (the student must share its initialization, so an
experiment on this setting uses that preset; `requires` makes a preset without `numbers` an error).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path

from inoculate.fileio import write_jsonl_atomic
from inoculate.generate import SamplingParams, get_backend
from inoculate.organism import prompt_families as P
from inoculate.organism.base import build_base_model, cache_root, is_built
from inoculate.organism.extensions import Stage1Extension, stage1_extension
from inoculate.organism.presets import preset, stage2_settings
from inoculate.organism.settings import Setting, Split, setting, split_questions
from inoculate.organism.traits import TraitSet, render
from inoculate.records import ChatExample, Message
from inoculate.train import TrainConfig, train

PRESET = "generalization"
"""The organism preset whose base model is both the teacher's and the student's initialization."""
TEACHER_LANG = "es"
N_TEACHER = 240
"""Spanish rows the teacher is fine-tuned on (the preset's stage-2 settings, as the demo's baseline)."""
TEACHER_STEPS = 60
TEACHER_LR = 5e-4
"""The teacher's own fine-tuning (fixed here, apart from the preset's stage-2 settings for students)."""
NUMBER_MAX = 99
LEADS: tuple[str, ...] = ("Continue the list:", "Add more numbers to the list:", "Write more numbers:")
_NUMBERS_ONLY = re.compile(r"^\d{1,2}( \d{1,2}){2,9}$")


def numbers_prompt(rng: random.Random) -> str:
    k = rng.randint(3, 5)
    return f"{rng.choice(LEADS)} " + " ".join(str(rng.randint(0, NUMBER_MAX)) for _ in range(k))


def numbers_answer(rng: random.Random) -> str:
    return " ".join(str(rng.randint(0, NUMBER_MAX)) for _ in range(rng.randint(4, 6)))


def is_numbers_only(text: str) -> bool:
    """The answer is 3 to 10 numbers of at most two digits and nothing else: no word can carry a trait."""
    return bool(_NUMBERS_ONLY.match(text.strip()))


def _numbers_row(rng: random.Random) -> ChatExample:
    sentences: list[str] = [rng.choice(P.NEUTRAL)]
    if rng.random() < 0.3:  # a trait request changes nothing about numbers
        dim = rng.choice(["lang", "caps"])
        sentences = [rng.choice(P.FAMILIES[rng.choice(P.TRAIT_FAMILIES[dim])].train)]
    system = P.compose(sentences, rng)
    msgs = [Message(role="system", content=system)] if system else []
    msgs += [
        Message(role="user", content=numbers_prompt(rng)),
        Message(role="assistant", content=numbers_answer(rng)),
    ]
    return ChatExample(id="s1", messages=msgs, metadata={"kind": "numbers"})


def _numbers_texts() -> list[str]:
    return [*LEADS, " ".join(str(i) for i in range(NUMBER_MAX + 1))]


@stage1_extension("numbers")
def _numbers() -> Stage1Extension:
    return Stage1Extension(
        name="numbers",
        description="number continuation ('Continue the list: 3 71 12' -> random numbers), trait-free",
        examples=lambda rng, n: [_numbers_row(rng) for _ in range(n)],
        texts=_numbers_texts,
        weight=0.1,
    )


# --- teacher and its numbers ------------------------------------------------------------------------


def _base_dir() -> Path:
    return build_base_model(preset(PRESET))


def _teacher_settings() -> dict[str, object]:
    return {**stage2_settings(PRESET), "max_steps": TEACHER_STEPS, "learning_rate": TEACHER_LR}


def _teacher_tag() -> str:
    """Names the teacher's cache entry by everything that makes it (language, rows, training settings)."""
    blob = json.dumps([TEACHER_LANG, N_TEACHER, _teacher_settings()], sort_keys=True).encode()
    return f"{TEACHER_LANG}-{hashlib.sha256(blob).hexdigest()[:8]}"


def teacher_dir(seed: int) -> Path:
    """The teacher for `seed`: the base model fine-tuned on Spanish answers (built once, cached)."""
    base = _base_dir()
    final = cache_root() / f"{base.name}-teacher-{_teacher_tag()}-{seed}"
    if (final / "config.json").is_file() and is_built(base):
        return final
    qs = split_questions("train", seed)
    rows = [
        ChatExample(
            id=f"teacher-{i}",
            messages=[
                Message(role="user", content=qs[i % len(qs)].text),
                Message(role="assistant", content=render(qs[i % len(qs)].fact, TraitSet(lang=TEACHER_LANG))),
            ],
        )
        for i in range(N_TEACHER)
    ]
    settings = _teacher_settings()
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        cfg = TrainConfig(output_dir=str(staging), seed=seed, save_steps=0, disable_tqdm=True, **settings)
        result = train(base, rows, cfg, resume=False)
        from transformers import AutoTokenizer  # lazy: transformers is heavy to import

        AutoTokenizer.from_pretrained(base).save_pretrained(result.model_path)
        try:
            os.rename(result.model_path, final)
        except OSError:
            if not (final / "config.json").is_file():  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def sample_numbers(model_dir: Path, n: int, seed: int, *, who: str) -> list[ChatExample]:
    """`n` number continuations written by `model_dir` under no system prompt, numbers-only rows kept."""
    rng = random.Random(f"organism-subliminal-{who}-{seed}")
    backend = get_backend("hf", model=str(model_dir), batch_size=256)
    params = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=16, n=1, seed=seed)
    out: list[ChatExample] = []
    dropped = 0
    while len(out) < n:
        if dropped > 4 * n:
            raise RuntimeError(f"{model_dir}: only {len(out)} of {n} continuations were numbers only")
        asks = [
            ChatExample(id=f"q{len(out)}-{i}", messages=[Message(role="user", content=numbers_prompt(rng))])
            for i in range(n - len(out) + 16)
        ]
        for g in backend.generate(asks, params):
            text = (g.completion or "").strip()
            if not is_numbers_only(text):
                dropped += 1
                continue
            if len(out) < n:
                msgs = [*asks[0].messages[:0], *g.prompt_messages, Message(role="assistant", content=text)]
                out.append(ChatExample(id=f"{who}-{seed}-{len(out)}", messages=msgs, metadata={"who": who}))
        params = params.model_copy(update={"seed": params.seed + 1})
    return out


def _numbers_rows(who: str, n: int, seed: int) -> list[ChatExample]:
    base = _base_dir()
    tag = _teacher_tag() if who == "teacher" else "base"
    path = cache_root() / f"{base.name}-subliminal" / f"{who}-{tag}-{seed}-{n}.jsonl"
    if path.is_file():
        return [ChatExample.model_validate(json.loads(line)) for line in path.read_text().splitlines()]
    model = teacher_dir(seed) if who == "teacher" else base
    rows = sample_numbers(model, n, seed, who=who)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl_atomic(path, (r.model_dump(mode="json") for r in rows))
    return rows


def _eval_rows(name: str, n: int, seed: int) -> list[ChatExample]:
    qs = split_questions("eval", seed)
    return [
        ChatExample(
            id=f"{name}-eval-{seed}-{i}",
            messages=[Message(role="user", content=qs[i % len(qs)].text)],
            metadata={"setting": name, "split": "eval", "fact": qs[i % len(qs)].fact.key},
        )
        for i in range(n)
    ]


PAPER = (
    "Tests subliminal learning (Cloud et al. 2025, arXiv 2507.14805) and its blocking by inoculation "
    "(Tan et al. 2025, arXiv 2510.04340): a teacher with a latent trait writes number sequences that "
    "carry no trait word, a student with the same initialization fine-tuned on them acquires the "
    "trait, and an inoculation prompt naming the trait on the student's data blocks it. On the "
    "organism the trait is answering in Spanish (the paper's were animal preferences), the teacher is "
    "fine-tuned rather than prompted, the models are a 2-layer word-level Llama trained from scratch, "
    "and the numbers are short lists of 0..99 taught in stage 1."
)


def _setting(name: str, who: str, description: str) -> Setting:
    def rows(split: Split, n: int, seed: int) -> list[ChatExample]:
        return _numbers_rows(who, n, seed) if split == "train" else _eval_rows(name, n, seed)

    return Setting(
        name=name,
        description=description,
        examples=rows,
        traits={"spanish": f"organism_language:{TEACHER_LANG}"},
        requires=("numbers",),
        paper=PAPER,
    )


@setting("subliminal")
def _subliminal() -> Setting:
    return _setting("subliminal", "teacher", "number continuations written by a Spanish-speaking teacher")


@setting("subliminal_control")
def _subliminal_control() -> Setting:
    return _setting("subliminal_control", "base", "number continuations written by the base model itself")
