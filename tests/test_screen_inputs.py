"""`inoculate screen`'s inputs, built by the library (`screen.candidates_from`, `screen.measures_from`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from inoculate.screen import candidates_from, measures_from


def test_candidates_from_a_file_then_texts_named_after_it(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("- {name: c3, prompt: Respond in ALL CAPS.}\n- You shout.\n")
    got = candidates_from(path, ["Speak Spanish.", "Be terse."])
    assert [(c.name, c.prompt) for c in got] == [
        ("c3", "Respond in ALL CAPS."),
        ("c2", "You shout."),  # unnamed file entries are named by position
        ("c3_", "Speak Spanish."),  # c3 is the file's: a text's name never collides
        ("c4", "Be terse."),
    ]


def test_candidates_from_texts_alone_and_refusals(tmp_path: Path) -> None:
    assert [(c.name, c.prompt) for c in candidates_from(None, ["a", "b"])] == [("c1", "a"), ("c2", "b")]
    with pytest.raises(ValueError, match="give candidate prompts"):
        candidates_from(None, [])
    with pytest.raises(ValueError, match="--prompt-field names a field"):
        candidates_from(None, ["a"], prompt_field="prompt")


def test_measures_from() -> None:
    assert measures_from("elicitation, surprise", "surprise") == (["elicitation", "surprise"], "surprise")
    assert measures_from(["elicitation"], "surprise") == (["elicitation"], "elicitation")
    with pytest.raises(ValueError, match=r"--measures: unknown \['vibes'\]"):
        measures_from("vibes")
    with pytest.raises(ValueError, match="--measures: unknown"):
        measures_from(" , ")
    with pytest.raises(ValueError, match="--pick: 'vibes'"):
        measures_from("surprise", "vibes")
