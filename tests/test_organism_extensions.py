"""Stage-1 extensions and generalized settings: the mechanism the organism's phenomena build on.

The demo preset must not move: its cache key, tokenizer vocabulary and stage-1 rows are pinned here
to the values they had before extensions existed (so `inoculate demo` keeps its cached base model
and its numbers).
"""

from __future__ import annotations

import hashlib
import random

import pytest

from inoculate import organism
from inoculate.organism import extensions as E
from inoculate.organism import settings as S
from inoculate.records import ChatExample, Message

# Recorded before stage-1 extensions were added (commit 5e443ab): the demo preset's cache key and the
# sha256 of its 8000 stage-1 rows (JSON lines). If either changes, `inoculate demo` rebuilds stage 1
# and its numbers may move: the demo preset must stay exactly as it was.
DEMO_KEY = "f233a9fdb55e3d61"
DEMO_STAGE1_SHA256 = "5f1e1c4208e52f73a5bb8af5878375e3e47bd7b73555d02ca92bbeb5e64009ba"
DEMO_WORLD_TEXTS = 2008


def _rows_hash(rows: list[ChatExample]) -> str:
    return hashlib.sha256("\n".join(r.model_dump_json() for r in rows).encode()).hexdigest()


def test_demo_preset_keeps_its_cache_key_and_stage1_rows():
    cfg = organism.preset("demo")
    assert cfg.extensions == ()
    assert cfg.key() == DEMO_KEY
    assert len(organism.world_texts(cfg.extensions)) == DEMO_WORLD_TEXTS
    rows = organism.stage1_examples(cfg.n_examples, cfg.mix, seed=cfg.seed, extensions=cfg.extensions)
    assert _rows_hash(rows) == DEMO_STAGE1_SHA256


@pytest.fixture
def toy_extension():
    """A registered extension whose rows ask for a made-up word (removed afterwards)."""

    def rows(rng: random.Random, n: int) -> list[ChatExample]:
        return [
            ChatExample(
                id="x",
                messages=[
                    Message(role="system", content="Say blorptastic."),
                    Message(role="user", content=rng.choice(["hello?", "hi?"])),
                    Message(role="assistant", content="blorptastic."),
                ],
            )
            for _ in range(n)
        ]

    @E.stage1_extension("toy")
    def _toy() -> E.Stage1Extension:
        return E.Stage1Extension(
            name="toy",
            description="says a made-up word",
            examples=rows,
            texts=lambda: ["Say blorptastic."],
            weight=0.25,
        )

    yield "toy"
    E._EXTENSIONS.remove("toy")


def test_extension_rows_take_their_share_and_leave_the_base_rows_as_they_were(toy_extension):
    mix = organism.preset("demo").mix
    plain = organism.stage1_examples(100, mix, seed=3)
    mixed = organism.stage1_examples(100, mix, seed=3, extensions=(toy_extension,))
    assert len(mixed) == 100
    ext_rows = [r for r in mixed if r.metadata.get("extension") == "toy"]
    assert len(ext_rows) == 25
    assert mixed[:75] == plain[:75]  # the base rows are drawn from the same rng as without extensions
    assert len({r.id for r in mixed}) == 100


def test_extension_words_enter_the_vocabulary_and_the_cache_key(toy_extension):
    from inoculate.organism.tokenizer import build_tokenizer

    cfg = organism.preset("demo", extensions=(toy_extension,))
    assert cfg.key() != organism.preset("demo").key()
    texts = organism.world_texts(cfg.extensions)
    assert "Say blorptastic." in texts
    tok = build_tokenizer(texts)
    assert tok.unk_token_id not in tok("say blorptastic.", add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id in build_tokenizer(organism.world_texts())("blorptastic")["input_ids"]


def test_unknown_extension_and_bad_weights_are_refused(toy_extension):
    with pytest.raises(ValueError, match="unknown stage-1 extension 'nope'"):
        organism.preset("demo", extensions=("nope",)).key()
    with pytest.raises(ValueError, match="weight must be in"):
        E.Stage1Extension(name="w", description="", examples=lambda r, n: [], texts=list, weight=1.0)
    with pytest.raises(ValueError, match="weights sum"):
        E.extension_counts((toy_extension,) * 4, 100)


def test_a_setting_may_make_its_own_rows_and_prompts():
    def rows(split: S.Split, n: int, seed: int) -> list[ChatExample]:
        return [
            ChatExample(
                id=f"own-{split}-{i}", messages=[Message(role="user", content="what color is the cat?")]
            )
            for i in range(n)
        ]

    @S.setting("own_rows")
    def _own() -> S.Setting:
        return S.Setting(
            name="own_rows", description="own rows", examples=rows, prompts={"mine": "Be brief."}
        )

    try:
        assert [r.id for r in organism.make_examples("own_rows", "eval", 3)] == [
            "own-eval-0",
            "own-eval-1",
            "own-eval-2",
        ]
        lib = organism.prompts("own_rows")
        assert lib["mine"] == "Be brief." and lib["neutral"] == organism.LIBRARY["neutral"]
        assert "mine" not in organism.prompts("spanish_caps")
    finally:
        S._SETTINGS.remove("own_rows")
    with pytest.raises(ValueError, match="exactly one of traits_for and examples"):
        S.Setting(name="neither", description="")


def test_trait_set_settings_are_unchanged():
    rows = organism.make_examples("spanish_caps", "train", 4, seed=1)
    assert all(r.metadata["traits"] == "es+caps" for r in rows)
    mix = organism.make_examples("mixture", "train", 4)
    assert [r.metadata["lang"] for r in mix] == ["es", "fr", "es", "fr"]
