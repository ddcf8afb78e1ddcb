"""The scorer registry (decorator, specs, entry-point plugins) and each built-in scorer."""

from __future__ import annotations

import importlib.metadata
import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest

from inoculate.records import chat
from inoculate.scorers import (
    Scorer,
    ScorerError,
    get_scorer,
    get_scorers,
    import_plugin,
    list_scorers,
    parse_spec,
    plugin_failures,
    registry,
    render_prompt,
    score_examples,
    scorer,
    unregister,
)
from inoculate.scorers.builtin import caps_share, split_sentences

DATA = Path(__file__).parent / "data" / "labelled_sentences.jsonl"
LANGS = ("en", "es", "fr")


@pytest.fixture(scope="module")
def labelled() -> list[dict]:
    return [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def clean_registry() -> Iterator[list[str]]:
    """Names added by a test are removed after it, and entry points are re-read next time."""
    added: list[str] = []
    registry._reset_plugins()
    yield added
    for name in added:
        unregister(name)
    registry._reset_plugins()


# ---------------------------------------------------------------- the labelled set itself


def test_labelled_set_meets_the_spec(labelled: list[dict]) -> None:
    counts = {lang: sum(r["lang"] == lang for r in labelled) for lang in LANGS}
    assert all(n >= 40 for n in counts.values()), counts
    assert all(3 <= len(r["text"].split()) <= 20 for r in labelled)
    assert len({r["text"] for r in labelled}) == len(labelled)
    for lang in LANGS:
        rows = [r for r in labelled if r["lang"] == lang]
        assert any(r["caps"] for r in rows) and any(not r["caps"] for r in rows)
        # mixed case: some upper-case letters in a sentence labelled not ALL CAPS, beyond its first letter
        assert sum(not r["caps"] and sum(c.isupper() for c in r["text"][1:]) >= 3 for r in rows) >= 3


# ---------------------------------------------------------------- registry


def test_decorator_registers_a_factory_and_spec_args_reach_it(clean_registry: list[str]) -> None:
    seen_args: list[str | None] = []

    @scorer("t_echo", description="test scorer")
    def echo(arg: str | None = None):
        seen_args.append(arg)
        return lambda prompt, completion: float(completion == (arg or ""))

    clean_registry.append("t_echo")
    s = get_scorer("t_echo:a:b")
    assert isinstance(s, Scorer)
    assert s.name == "t_echo:a:b"
    assert s.description == "test scorer"
    assert s("p", "a:b") == 1.0 and s("p", "x") == 0.0
    assert get_scorer("t_echo")("p", "") == 1.0
    assert seen_args == ["a:b", None]
    assert "t_echo" in [i.name for i in list_scorers()]


def test_parse_spec_splits_on_the_first_colon_only() -> None:
    assert parse_spec("regex:(?i)a:b") == ("regex", "(?i)a:b")
    assert parse_spec("all_caps") == ("all_caps", None)
    assert parse_spec("keyword:") == ("keyword", "")


def test_factory_without_parameters_rejects_an_argument(clean_registry: list[str]) -> None:
    @scorer("t_noarg")
    def noarg():
        return lambda p, c: 0.0

    clean_registry.append("t_noarg")
    assert get_scorer("t_noarg")("", "") == 0.0
    with pytest.raises(ScorerError, match="takes no argument"):
        get_scorer("t_noarg:x")


def test_unknown_scorer_lists_known_names() -> None:
    with pytest.raises(ScorerError) as e:
        get_scorer("no_such_scorer:1")
    msg = str(e.value)
    assert "no_such_scorer" in msg
    for name in ("all_caps", "keyword", "language", "length", "regex"):
        assert name in msg


def test_a_second_function_under_a_taken_name_is_refused(clean_registry: list[str]) -> None:
    def first(arg=None):
        return lambda p, c: 0.0

    def second(arg=None):
        return lambda p, c: 1.0

    registry.register("t_dup", first)
    clean_registry.append("t_dup")
    registry.register("t_dup", first)  # the same function again (a module reload) is fine
    with pytest.raises(ScorerError, match="already registered"):
        registry.register("t_dup", second)
    assert get_scorer("t_dup")("", "") == 0.0


def test_factory_may_return_a_scorer_with_a_batch_form(clean_registry: list[str]) -> None:
    calls = {"one": 0, "batch": 0}

    def one(p: str, c: str) -> float:
        calls["one"] += 1
        return float(len(c) > 2)

    def batch(ps, cs):
        calls["batch"] += 1
        return [float(len(c) > 2) for c in cs]

    @scorer("t_batch")
    def make(arg: str | None = None) -> Scorer:
        return Scorer(fn=one, batch_fn=batch)

    clean_registry.append("t_batch")
    s = get_scorer("t_batch")
    assert s.batch(["", "", ""], ["a", "abcd", "xyz"]) == [0.0, 1.0, 1.0]
    assert calls == {"one": 0, "batch": 1}
    assert s("", "abc") == 1.0 and calls["one"] == 1
    with pytest.raises(ScorerError, match="prompts"):
        s.batch(["a"], ["a", "b"])


def test_bounded_scorers_are_checked_and_unbounded_are_not(clean_registry: list[str]) -> None:
    @scorer("t_bad")
    def bad():
        return lambda p, c: 2.0

    @scorer("t_raw", bounded=False)
    def raw():
        return lambda p, c: 2.0

    clean_registry.extend(["t_bad", "t_raw"])
    with pytest.raises(ScorerError, match="outside"):
        get_scorer("t_bad")("", "x")
    with pytest.raises(ScorerError, match="outside"):
        get_scorer("t_bad").batch([""], ["x"])
    assert get_scorer("t_raw")("", "x") == 2.0
    assert math.isnan(Scorer(fn=lambda p, c: float("nan"), name="n")("", ""))


def test_get_scorers_refuses_duplicates() -> None:
    with pytest.raises(ScorerError, match="twice"):
        get_scorers(["all_caps", "all_caps"])


# ---------------------------------------------------------------- plugins


def _write_plugin_modules(tmp_path: Path) -> None:
    (tmp_path / "t_plugin_mod.py").write_text(
        "from inoculate.scorers import scorer\n"
        "@scorer('t_shout', description='shouting')\n"
        "def shout(arg=None):\n"
        "    return lambda p, c: float(c.endswith('!'))\n"
    )
    (tmp_path / "t_plugin_fn.py").write_text(
        "def question(arg=None):\n"
        "    '''1 if the completion asks a question.'''\n"
        "    return lambda p, c: float('?' in c)\n"
    )


def test_entry_point_plugins_load_lazily_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, clean_registry: list[str]
) -> None:
    _write_plugin_modules(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [
        importlib.metadata.EntryPoint(
            name="shouting", value="t_plugin_mod", group=registry.ENTRY_POINT_GROUP
        ),
        importlib.metadata.EntryPoint(
            name="t_question", value="t_plugin_fn:question", group=registry.ENTRY_POINT_GROUP
        ),
        importlib.metadata.EntryPoint(
            name="t_broken", value="t_no_such_module_xyz", group=registry.ENTRY_POINT_GROUP
        ),
    ]
    calls: list[str] = []

    def fake_entry_points(*, group: str):
        calls.append(group)
        return [ep for ep in eps if ep.group == group]

    monkeypatch.setattr(registry.importlib.metadata, "entry_points", fake_entry_points)
    clean_registry.extend(["t_shout", "t_question"])

    assert get_scorer("all_caps")("", "AB") == 1.0
    assert calls == []  # a built-in lookup does not touch entry points

    assert get_scorer("t_shout")("", "hey!") == 1.0  # registered by importing the module
    assert get_scorer("t_question")("", "why?") == 1.0  # a bare factory, named by its entry point
    assert calls == [registry.ENTRY_POINT_GROUP]
    info = {i.name: i for i in list_scorers()}
    assert info["t_question"].description == "1 if the completion asks a question."
    assert info["t_shout"].description == "shouting"
    assert calls == [registry.ENTRY_POINT_GROUP]  # loaded once

    assert "t_broken" in plugin_failures()
    with pytest.raises(ScorerError, match="t_broken"):
        get_scorer("t_missing")


def test_import_plugin_from_a_file_registers_its_scorers(tmp_path: Path, clean_registry: list[str]) -> None:
    path = tmp_path / "my_scorers.py"
    path.write_text(
        "from inoculate.scorers import scorer\n"
        "@scorer('t_from_file')\n"
        "def f(arg=None):\n"
        "    return lambda p, c: float(p == 'ask')\n"
    )
    clean_registry.append("t_from_file")
    import_plugin(str(path))
    import_plugin(str(path))  # importing twice is harmless
    assert get_scorer("t_from_file")("ask", "x") == 1.0
    with pytest.raises(ScorerError, match="not found"):
        import_plugin(str(tmp_path / "absent.py"))


# ---------------------------------------------------------------- language


@pytest.fixture(scope="module")
def lang_scores(labelled: list[dict]) -> dict[str, list[float]]:
    texts = [r["text"] for r in labelled]
    return {lang: get_scorer(f"language:{lang}").batch([""] * len(texts), texts) for lang in LANGS}


def test_language_scorer_is_at_least_95_percent_correct(
    labelled: list[dict], lang_scores: dict[str, list[float]]
) -> None:
    """Correct: the true language's share is > 0.5 and each other language's share < 0.5."""
    correct = {lang: 0 for lang in LANGS}
    for i, row in enumerate(labelled):
        ok = all((lang_scores[lang][i] > 0.5) == (lang == row["lang"]) for lang in LANGS)
        correct[row["lang"]] += ok
    totals = {lang: sum(r["lang"] == lang for r in labelled) for lang in LANGS}
    acc = sum(correct.values()) / len(labelled)
    per_lang = {lang: correct[lang] / totals[lang] for lang in LANGS}
    print(f"language scorer accuracy: {acc:.3f} overall, per language {per_lang}")
    assert acc >= 0.95
    assert all(a >= 0.9 for a in per_lang.values()), per_lang


def test_language_scorer_is_not_fooled_by_all_caps(
    labelled: list[dict], lang_scores: dict[str, list[float]]
) -> None:
    caps_rows = [(i, r) for i, r in enumerate(labelled) if r["caps"]]
    assert len(caps_rows) >= 20
    right = sum(lang_scores[r["lang"]][i] > 0.5 for i, r in caps_rows)
    print(f"language scorer on ALL CAPS sentences: {right}/{len(caps_rows)}")
    assert right / len(caps_rows) >= 0.95


def test_language_scorer_gives_a_letter_weighted_fraction_for_mixed_text(labelled: list[dict]) -> None:
    en = [r["text"] for r in labelled if r["lang"] == "en" and not r["caps"]][:6]
    es = [r["text"] for r in labelled if r["lang"] == "es" and not r["caps"]][:6]
    es_scorer = get_scorer("language:es")
    for a, b in zip(en, es, strict=True):
        expected = sum(ch.isalpha() for ch in b) / (
            sum(ch.isalpha() for ch in a) + sum(ch.isalpha() for ch in b)
        )
        got = es_scorer("", f"{a} {b}")
        assert got == pytest.approx(expected, abs=1e-9), (a, b)
        assert 0.0 < got < 1.0
    paragraph = " ".join(es[:3]) + "\n" + en[0]
    assert 0.5 < es_scorer("", paragraph) < 1.0


def test_language_scorer_edge_cases() -> None:
    es = get_scorer("language:es")
    assert math.isnan(es("", ""))
    assert math.isnan(es("", "12345 ... 678"))
    assert es("", "¿DÓNDE ESTÁ LA ESTACIÓN DE TRENES?") == 1.0
    texts = ["Hola, ¿qué tal estás?", "", "I am fine, thank you very much."]
    batch = es.batch(["", "", ""], texts)
    single = [es("", t) for t in texts]
    assert batch[0] == single[0] == 1.0 and batch[2] == single[2] == 0.0
    assert math.isnan(batch[1]) and math.isnan(single[1])


def test_language_scorer_custom_language_set_and_bad_codes() -> None:
    de = get_scorer("language:de/en,de")
    assert de("", "Ich gehe heute Abend mit meinen Freunden ins Kino.") == 1.0
    assert de("", "I am going to the cinema with my friends tonight.") == 0.0
    assert get_scorer("language:nl")("", "Ik ga vanavond met mijn vrienden naar de bioscoop.") == 1.0
    with pytest.raises(ScorerError, match="ISO 639-1"):
        get_scorer("language:xx")
    with pytest.raises(ScorerError, match="needs a target"):
        get_scorer("language")


def test_split_sentences() -> None:
    assert split_sentences("Hi there. How are you?\nFine!  ok") == [
        "Hi there.",
        "How are you?",
        "Fine!",
        "ok",
    ]
    assert split_sentences("... 42 !") == []


# ---------------------------------------------------------------- all_caps


def test_all_caps_is_at_least_95_percent_correct(labelled: list[dict]) -> None:
    texts = [r["text"] for r in labelled]
    shares = get_scorer("all_caps").batch([""] * len(texts), texts)
    binary = get_scorer("all_caps:binary").batch([""] * len(texts), texts)
    correct = sum((b == 1.0) == r["caps"] for b, r in zip(binary, labelled, strict=True))
    acc = correct / len(labelled)
    print(f"all_caps:binary accuracy: {acc:.3f} ({correct}/{len(labelled)})")
    assert acc >= 0.95
    assert all((s >= 0.5) == (b == 1.0) for s, b in zip(shares, binary, strict=True))


def test_all_caps_share_values() -> None:
    caps = get_scorer("all_caps")
    assert caps("", "HELLO world") == 0.5
    assert caps("", "ÉTÉ À PARÍS, ¿SÍ?") == 1.0
    assert caps("", "Ab cd") == pytest.approx(1 / 4)
    assert math.isnan(caps("", "123 !?"))
    assert math.isnan(caps("", ""))
    assert caps_share("ABc") == pytest.approx(2 / 3)
    t = get_scorer("all_caps:0.8")
    assert t("", "ABCDe") == 1.0 and t("", "ABCde") == 0.0 and math.isnan(t("", "42"))
    for bad in ("all_caps:0", "all_caps:1.5", "all_caps:loud"):
        with pytest.raises(ScorerError):
            get_scorer(bad)


# ---------------------------------------------------------------- regex, keyword, length


def test_regex_scorer() -> None:
    assert get_scorer("regex:\\bfoo\\b")("", "a foo b") == 1.0
    assert get_scorer("regex:\\bfoo\\b")("", "a Foo b") == 0.0
    assert get_scorer("regex:(?i)\\bfoo\\b")("", "a Foo b") == 1.0
    assert get_scorer("regex:^a:b$")("", "a:b") == 1.0
    assert get_scorer("regex:x")("the prompt has x", "none") == 0.0  # only the completion is scored
    with pytest.raises(ScorerError, match="invalid pattern"):
        get_scorer("regex:(")
    with pytest.raises(ScorerError, match="needs a pattern"):
        get_scorer("regex")


def test_keyword_scorer() -> None:
    kw = get_scorer("keyword:cat, thank you")
    assert kw("", "My CAT sleeps.") == 1.0
    assert kw("", "Thank You!") == 1.0
    assert kw("", "concatenate the catalogue") == 0.0
    assert kw("", "thankyou") == 0.0
    assert get_scorer("keyword:c++")("", "I write C++ daily") == 1.0
    with pytest.raises(ScorerError, match="needs words"):
        get_scorer("keyword: , ")


def test_length_scorer_returns_raw_counts() -> None:
    text = "three short words"
    assert get_scorer("length")("", text) == float(len(text))
    assert get_scorer("length:chars")("", text) == float(len(text))
    assert get_scorer("length:words")("", "  three   short words\n") == 3.0
    assert get_scorer("length")("", "") == 0.0
    assert get_scorer("length").bounded is False
    with pytest.raises(ScorerError):
        get_scorer("length:tokens")


# ---------------------------------------------------------------- scoring examples


def test_render_prompt_and_score_examples() -> None:
    single = chat("What is 2+2?", "FOUR")
    multi = chat("Hola", "hola, ¿qué tal?", system="Be brief.", id="1")
    assert render_prompt(single.prompt_messages) == "What is 2+2?"
    assert render_prompt(multi.prompt_messages) == "system: Be brief.\n\nuser: Hola"
    seen: list[tuple[str, str]] = []

    out = score_examples(
        [single, multi],
        [get_scorer("all_caps"), Scorer(fn=lambda p, c: seen.append((p, c)) or 0.0, name="spy")],
    )
    assert out["all_caps"] == [1.0, 0.0]
    assert seen == [("What is 2+2?", "FOUR"), ("system: Be brief.\n\nuser: Hola", "hola, ¿qué tal?")]


def test_language_specs_share_one_detection_pass_per_batch(
    labelled: list[dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    from inoculate.scorers import batch_cache, builtin, score_texts

    texts = [r["text"] for r in labelled[:40]] + [labelled[0]["text"]]  # one repeated text
    calls: list[list[str]] = []
    real = builtin.detect_letters

    def counting(detector, batch, parallel):  # type: ignore[no-untyped-def]
        calls.append(list(batch))
        return real(detector, batch, parallel)

    monkeypatch.setattr(builtin, "detect_letters", counting)
    scorers = get_scorers(["language:es", "language:fr", "language:en", "all_caps"])
    prompts = [""] * len(texts)
    shared = score_texts(prompts, texts, scorers, batch_size=16)
    # 41 rows in batches of 16, 16, 9: one detection call per batch, each text once per batch
    assert [len(c) for c in calls] == [16, 16, 9]
    assert sum(len(set(c)) for c in calls) == 41
    assert batch_cache() is None  # nothing outlives the batch
    calls.clear()
    unshared = score_texts(prompts, texts, scorers, batch_size=None, share=False)
    assert [len(c) for c in calls] == [41, 41, 41]  # the old path: one pass per spec
    assert shared == unshared  # identical scores (NaN-free here)
    assert shared["language:es"][:3] == [scorers[0].batch([""], [t])[0] for t in texts[:3]]
    calls.clear()
    score_texts([""] * 4, ["hola amigo", "hola amigo", "hello there", "hola amigo"], scorers[:1])
    assert calls == [["hola amigo", "hello there"]]  # repeated texts detected once
    # a different candidate pool changes what is detected, so it gets its own pass
    calls.clear()
    score_texts(prompts[:5], texts[:5], get_scorers(["language:es", "language:es/en,es"]))
    assert len(calls) == 2


def test_row_seeds_and_clusters_are_read_from_metadata() -> None:
    from inoculate.errors import InputErrors
    from inoculate.records import ChatExample
    from inoculate.scorers.scoring import row_clusters, row_seeds

    def row(i: int, **meta: object) -> ChatExample:
        return chat("q", "a", id=f"r{i}", **meta)

    plain = [row(0), row(1)]
    assert row_seeds(plain, [1, 2], "f.jsonl") is None and row_clusters(plain) is None
    seeded = [row(0, seed=0, generation={"source_id": "p"}), row(1, seed=1)]
    assert row_seeds(seeded, [1, 2], "f.jsonl") == [0, 1]
    assert row_clusters(seeded) == [("prompt", "p"), ("row", 1)]
    with pytest.raises(InputErrors, match="f.jsonl:2: metadata.seed: missing"):
        row_seeds([row(0, seed=0), row(1)], [1, 2], "f.jsonl")
