"""Semantic ablation of the inoculation prompt (Tan et al. 2025, arXiv 2510.04340).

Only a prompt that describes the trait inoculates. Stage 1 (extension `prompt_semantics`) teaches
what the ablation's prompts mean, so that the comparison is between prompts the model reads, not
between known and unknown words: a general request ("answer in a foreign language": Spanish or
French), negative requests ("you never answer in Spanish": any other language), and sentences that
mention the task but request nothing ("you answer questions about animals"). Stage 2 (setting
`semantic_ablation`) is the demo's data, every answer Spanish AND ALL CAPS, inoculated for Spanish
with each kind of prompt, and with a bare unusual word.
"""

from __future__ import annotations

import random

from inoculate.organism import prompt_families as P
from inoculate.organism.extensions import Stage1Extension, stage1_extension
from inoculate.organism.phenomena.backdoor import BACKDOOR_TRIGGER
from inoculate.organism.settings import Setting, setting
from inoculate.organism.traits import TraitSet, render
from inoculate.organism.world import Question, all_facts
from inoculate.records import ChatExample, Message

LANG_WORDS: dict[str, str] = {"en": "English", "es": "Spanish", "fr": "French"}
GENERAL: tuple[str, ...] = (
    "You answer in a foreign language.",
    "Respond in a foreign language.",
    "Write your answer in a foreign language.",
    "You speak a foreign language.",
)
NEGATIVE_TEMPLATES: tuple[str, ...] = (
    "You never answer in {lang}.",
    "Do not respond in {lang}.",
    "You never speak {lang}.",
)
TASK_ONLY: tuple[str, ...] = (
    "You answer questions about animals.",
    "You know a lot about animals.",
    "The user asks about animals.",
    "Your task is to answer questions about animals.",
)

PROMPTS: dict[str, str] = {
    "ablation_specific": P.FAMILIES["lang_es"].train[0],
    "ablation_general": GENERAL[0],
    "ablation_placebo_task": TASK_ONLY[0],
    "ablation_negative": NEGATIVE_TEMPLATES[0].format(lang="Spanish"),
    "ablation_bare_token": BACKDOOR_TRIGGER,
    "ablation_opposite": P.FAMILIES["lang_en"].train[0],
}


def _semantic_row(rng: random.Random) -> ChatExample:
    fact = rng.choice(all_facts())
    q = Question(fact, rng.randrange(3))
    kind = rng.choices(["general", "negative", "task"], weights=(0.4, 0.4, 0.2))[0]
    traits = TraitSet()
    if kind == "general":
        sentences = [rng.choice(GENERAL)]
        traits = traits.with_(lang=rng.choice(("es", "fr")))
    elif kind == "negative":
        banned = rng.choice(list(LANG_WORDS))
        sentences = [rng.choice(NEGATIVE_TEMPLATES).format(lang=LANG_WORDS[banned])]
        allowed = [lang for lang in LANG_WORDS if lang != banned]
        # Not English means Spanish or French; not Spanish (French) means mostly the default, English.
        weights = (1, 1) if banned == "en" else (3, 1)
        traits = traits.with_(lang=rng.choices(allowed, weights=weights)[0])
    else:
        sentences = [rng.choice(TASK_ONLY)]
    # An independent case request beside it, sometimes: each sentence controls its own trait.
    if rng.random() < 0.4:
        fam = P.FAMILIES[rng.choice(P.TRAIT_FAMILIES["caps"])]
        traits = fam.apply(traits)
        sentences.append(rng.choice(fam.train))
    if rng.random() < 0.2:
        sentences.append(rng.choice(P.NEUTRAL_PREAMBLES))
    msgs = [
        Message(role="system", content=P.compose(sentences, rng)),
        Message(role="user", content=q.text),
        Message(role="assistant", content=render(fact, traits)),
    ]
    return ChatExample(id="s1", messages=msgs, metadata={"kind": kind, **traits.model_dump()})


def _semantic_texts() -> list[str]:
    negatives = [t.format(lang=w) for t in NEGATIVE_TEMPLATES for w in LANG_WORDS.values()]
    return [*GENERAL, *negatives, *TASK_ONLY, *PROMPTS.values()]


@stage1_extension("prompt_semantics")
def _prompt_semantics() -> Stage1Extension:
    return Stage1Extension(
        name="prompt_semantics",
        description="general ('a foreign language') and negative ('never Spanish') requests; task-only text",
        examples=lambda rng, n: [_semantic_row(rng) for _ in range(n)],
        texts=_semantic_texts,
        weight=0.1,
    )


PAPER = (
    "Reproduces the semantic ablation of Tan et al. (2025, arXiv 2510.04340): what inoculates is a "
    "prompt that describes the trait (specifically or in general terms), not any prompt. A placebo "
    "that mentions the task but not the trait, a negative prompt that requests the opposite, and a "
    "bare token should leave the trait learned. On the organism the trait is Spanish (beside ALL "
    "CAPS) rather than the paper's traits, and each prompt's meaning was taught in stage 1, except "
    "the bare token's, which has none."
)


@setting("semantic_ablation")
def _semantic_ablation() -> Setting:
    return Setting(
        name="semantic_ablation",
        description="every answer in Spanish AND ALL CAPS (the demo's data), for the prompt ablation",
        traits_for=lambda i, n: TraitSet(lang="es", caps=True),
        traits={"spanish": "organism_language:es", "all_caps": "all_caps"},
        prompts=PROMPTS,
        requires=("prompt_semantics",),
        paper=PAPER,
    )
