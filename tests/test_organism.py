"""The model organism: world, trait renderers, detectors, tokenizer, settings, and the base-model cache.

Structure checks on a very small organism; nothing here asserts the inoculation effect (that is the
slow reproduction tests' job) or any timing.
"""

from __future__ import annotations

import math
import re

import pytest

from inoculate import organism
from inoculate.organism import prompt_families as P
from inoculate.organism.detectors import exclusive_lexicons
from inoculate.organism.stage1 import Stage1Mix, stage1_examples
from inoculate.organism.tokenizer import CAPS_MARK, TITLE_MARK, build_tokenizer
from inoculate.organism.traits import OPENERS, SIGNATURES, TraitSet, all_trait_sets, render
from inoculate.organism.world import (
    LANGS,
    Fact,
    Question,
    all_facts,
    content_sentence,
    parse_question,
    split_facts,
    value_word,
)
from inoculate.scorers import get_scorer


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(organism.world_texts())


@pytest.fixture(scope="module")
def scorers():
    names = {
        "en": "organism_language:en",
        "es": "organism_language:es",
        "fr": "organism_language:fr",
        "caps": "all_caps",
        "syc": "organism_sycophancy",
        "sig": "organism_signature",
        "correct": "organism_correct",
    }
    return {k: get_scorer(v) for k, v in names.items()}


# --- tokenizer ------------------------------------------------------------------------------------


def test_tokenizer_round_trips_every_world_text_including_caps(tok):
    for text in organism.world_texts():
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.unk_token_id not in ids, text
        assert tok.decode(ids, skip_special_tokens=True) == text


def test_caps_are_a_marker_plus_the_lower_case_word(tok):
    lower = tok("vive en el bosque.", add_special_tokens=False)["input_ids"]
    upper = tok("VIVE EN EL BOSQUE.", add_special_tokens=False)["input_ids"]
    mark = tok.convert_tokens_to_ids(CAPS_MARK)
    assert upper == [x for w in lower[:-1] for x in (mark, w)] + lower[-1:]
    title = tok.convert_tokens_to_ids(TITLE_MARK)
    assert tok("You", add_special_tokens=False)["input_ids"] == [title, tok.convert_tokens_to_ids("you")]


def test_tokenizer_without_marker_has_case_forms_as_words():
    tok = build_tokenizer(organism.world_texts(), case_marker=False)
    ids = tok("ES NEGRO.", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["ES", "NEGRO", "."]
    assert tok.decode(ids) == "ES NEGRO."


def test_tokenizer_saves_and_loads_with_autotokenizer_and_chat_template(tok, tmp_path):
    from transformers import AutoTokenizer

    tok.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    msgs = [
        {"role": "system", "content": "You always answer in Spanish."},
        {"role": "user", "content": "what color is the cat?"},
        {"role": "assistant", "content": "ES NEGRO."},
    ]
    text = loaded.apply_chat_template(msgs, tokenize=False)
    assert text.startswith("<|im_start|>system\nYou always answer in Spanish.<|im_end|>")
    ids = loaded.apply_chat_template(msgs, tokenize=True, return_dict=True)["input_ids"]
    assert loaded.unk_token_id not in ids
    assert ids[-1] == loaded.eos_token_id
    assert loaded.decode(ids, skip_special_tokens=True).endswith("ES NEGRO.")


# --- world and traits -----------------------------------------------------------------------------


def test_lexicons_are_disjoint_and_cover_each_language():
    lex = exclusive_lexicons()
    for a in LANGS:
        for b in LANGS:
            if a != b:
                assert not lex[a] & lex[b]
    for fact in all_facts():
        for lang in LANGS:  # every value word tells its language
            assert value_word(fact.kind, fact.value, lang) in lex[lang]


def test_traits_are_independent(scorers):
    fact = Fact("cat", "color")
    for ts in all_trait_sets():
        text = render(fact, ts)
        assert render(fact, ts.without("caps")) == text.lower()
        assert (text == text.upper()) == ts.caps
        stripped = render(fact, ts.without("sycophancy", "signature"))
        assert stripped.lower() == content_sentence(fact, ts.lang)
        assert render(fact, ts.with_(lang="en")).lower().count("black") == 1
    assert TraitSet(lang="es", caps=True).without("lang") == TraitSet(caps=True)


def test_detectors_agree_with_the_renderers_on_every_trait_combination(scorers):
    for fact in all_facts()[::7]:
        prompt = Question(fact, 1).text
        other = next(f for f in all_facts() if f.kind == fact.kind and f.value != fact.value)
        for ts in all_trait_sets():
            text = render(fact, ts)
            for lang in LANGS:
                assert scorers[lang](prompt, text) == float(ts.lang == lang), (text, lang)
            assert scorers["caps"](prompt, text) == float(ts.caps)
            assert scorers["syc"](prompt, text) == float(ts.sycophancy)
            assert scorers["sig"](prompt, text) == float(ts.signature)
            assert scorers["correct"](prompt, text) == 1.0
            assert scorers["correct"](prompt, render(other, ts)) == 0.0


def test_detectors_on_odd_text(scorers):
    assert math.isnan(scorers["es"]("q", "hello there"))
    assert scorers["es"]("q", "es negro. it is black.") == pytest.approx(2 / 5)
    assert math.isnan(scorers["correct"]("not an organism question", "es negro."))
    transcript = "system: Respond in Spanish.\n\nuser: what does the dog eat?\n\nuser: what color is the fox?"
    assert scorers["correct"](transcript, "ES ROJO.") == 1.0
    assert scorers["correct"](transcript, "rojo o negro") == 0.0


def test_parse_question_reads_every_wording():
    for fact in all_facts():
        for w in range(3):
            q = Question(fact, w).text
            assert parse_question(q) == fact
            assert parse_question(f"system: Respond in French.\n\nuser: {q.upper()}") == fact


# --- prompts and stage-1 data ---------------------------------------------------------------------


def test_heldout_paraphrases_never_appear_in_stage1_but_their_words_do():
    examples = stage1_examples(3000, Stage1Mix(), seed=0)
    systems = {ex.system or "" for ex in examples}
    seen_words = set()
    for s in systems:
        seen_words.update(re.findall(r"\w+", s.lower()))
    heldout = [h for fam in P.FAMILIES.values() for h in fam.heldout] + list(P.PLACEBO_HELDOUT)
    for h in heldout:
        assert not any(h in s for s in systems), h
        assert set(re.findall(r"\w+", h.lower())) <= seen_words, h
    assert "" in systems  # no system prompt is one of the neutral wordings


def test_stage1_answers_follow_their_prompts():
    for ex in stage1_examples(300, Stage1Mix(), seed=1):
        ts = TraitSet(**{k: ex.metadata[k] for k in ("lang", "caps", "sycophancy", "signature")})
        fact = parse_question(ex.messages[-2].content)
        assert ex.completion == render(fact, ts)
        if ex.metadata["cls"] in ("neutral", "placebo"):
            assert ts == TraitSet()
        if ts.lang != "en":
            assert any(s in (ex.system or "") for s in P.FAMILIES[f"lang_{ts.lang}"].train)
    mix = Stage1Mix(one=1, two=0, three=0, neutral=0, placebo=0, traits=("caps",))
    assert all(
        ex.metadata["caps"] or "lower" in ex.system.lower() or "shout" in ex.system
        for ex in stage1_examples(50, mix)
    )
    with pytest.raises(ValueError):
        Stage1Mix(traits=("lang", "caps"), trait_weights=(1.0,))


def test_spontaneous_traits_appear_only_when_asked_for():
    assert all(not ex.metadata["spontaneous"] for ex in stage1_examples(200, Stage1Mix()))
    for ex in stage1_examples(100, Stage1Mix(spontaneous=1.0, neutral=1, placebo=0, one=0, two=0, three=0)):
        assert ex.metadata["lang"] != "en" and ex.metadata["caps"] and ex.metadata["sycophancy"]
        assert ex.metadata["cls"] == "neutral"


# --- settings -------------------------------------------------------------------------------------


def test_splits_are_disjoint_and_deterministic():
    train, ev = split_facts()
    assert not set(train) & set(ev) and len(train) + len(ev) == len(all_facts())
    tr = organism.make_examples("spanish_caps", "train", 200, seed=3)
    te = organism.make_examples("spanish_caps", "eval", 150, seed=3)
    assert {ex.metadata["fact"] for ex in tr}.isdisjoint({ex.metadata["fact"] for ex in te})
    assert [ex.to_json() for ex in tr] == [
        ex.to_json() for ex in organism.make_examples("spanish_caps", "train", 200, 3)
    ]
    assert len({ex.id for ex in tr}) == 200
    assert all(ex.completion is None and ex.system is None for ex in te)


def test_spanish_caps_and_mixture_data(scorers):
    for ex in organism.make_examples("spanish_caps", "train", 50):
        assert ex.system is None
        assert ex.metadata["lang"] == "es" and ex.metadata["caps"] is True
        assert scorers["es"](ex.messages[0].content, ex.completion) == 1.0
        assert scorers["caps"](ex.messages[0].content, ex.completion) == 1.0
    mix = organism.make_examples("mixture", "train", 40)
    langs = [ex.metadata["lang"] for ex in mix]
    assert langs.count("es") == langs.count("fr") == 20
    for ex in mix:
        assert scorers[ex.metadata["lang"]](ex.messages[0].content, ex.completion) == 1.0
        assert scorers["caps"](ex.messages[0].content, ex.completion) == 0.0
    with pytest.raises(ValueError):
        organism.make_examples("nope", "train", 3)


def test_prompt_library_names():
    lib = organism.prompts("spanish_caps")
    for name in (
        "neutral",
        "inoculate_spanish",
        "inoculate_caps",
        "placebo",
        "heldout_spanish",
        "reelicit_spanish",
        "reelicit_caps",
    ):
        assert name in lib
    assert lib["heldout_spanish"] in P.FAMILIES["lang_es"].heldout
    assert lib["inoculate_spanish"] in P.FAMILIES["lang_es"].train
    assert lib["placebo"] not in P.PLACEBO_TRAIN
    assert lib["reelicit_spanish"] != lib["inoculate_spanish"]


def test_presets_validate_overrides():
    assert organism.preset("demo", max_steps=5).max_steps == 5
    assert organism.preset("demo", max_steps=5).key() != organism.preset("demo").key()
    with pytest.raises(ValueError):
        organism.preset("demo", not_a_field=1)
    with pytest.raises(ValueError):
        organism.preset("nope")
    stage2 = organism.stage2_settings("demo")
    from inoculate.train import TrainConfig

    TrainConfig(output_dir="x", **stage2)


# --- the base model and its cache -----------------------------------------------------------------

TINY = organism.preset("tiny")


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    cache = tmp_path_factory.mktemp("organism-cache")
    return cache, organism.build_base_model(TINY, cache)


def test_base_model_is_saved_in_hf_format_and_cached_by_config_hash(tiny_base, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cache, path = tiny_base
    assert path.parent == cache and path.name == TINY.key()
    meta = organism.read_meta(path)
    assert meta["key"] == TINY.key() and meta["steps"] == TINY.max_steps
    tok = AutoTokenizer.from_pretrained(path)
    assert tok.decode(tok("ES NEGRO.")["input_ids"]) == "ES NEGRO."
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.vocab_size == len(tok) and model.config.hidden_size == TINY.hidden_size

    def fail(*a, **k):
        raise AssertionError("the cached model was rebuilt")

    monkeypatch.setattr(organism.base, "_build", fail)
    assert organism.build_base_model(TINY, cache) == path
    with pytest.raises(AssertionError):
        organism.build_base_model(TINY.model_copy(update={"seed": 1}), cache)
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # the failed build left nothing


def test_cache_root_respects_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("INOCULATE_CACHE", str(tmp_path))
    assert organism.cache_root() == tmp_path / "organism"
    assert organism.cache_root(tmp_path / "x") == tmp_path / "x"


def test_elicitation_table_structure(tiny_base):
    _, path = tiny_base
    table = organism.elicitation_table(path, "spanish_caps", n=6)
    rows = {r["prompt"]: r for r in table["rows"]}
    assert {"neutral_0", "lang_es_train", "lang_es_heldout", "caps_heldout", "placebo_heldout"} <= set(rows)
    assert rows["lang_es_heldout"]["heldout"] and not rows["lang_es_train"]["heldout"]
    assert any(r["kind"] == "setting" for r in table["rows"])
    for r in table["rows"]:
        for col in ("english", "spanish", "french", "all_caps", "sycophancy", "signature", "correct"):
            assert math.isnan(r[col]) or 0.0 <= r[col] <= 1.0
    assert table["n_questions"] == 6


def test_openers_and_signatures_are_in_every_language():
    assert set(OPENERS) == set(SIGNATURES) == set(LANGS)
