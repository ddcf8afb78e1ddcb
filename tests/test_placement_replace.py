"""Placement `user-replace`: the inoculation prompt replaces a neutral instruction in the user turn
(Wichers et al.'s Reddit CMV setting); the manifest records it and `neutralize` puts it back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from inoculate.cli import app
from inoculate.errors import InputErrors
from inoculate.records import ChatExample, Message
from inoculate.transform import InoculationSpec, Manifest, apply_inoculation, neutralize

NEUTRAL = "Write a response to this post:"
MEAN = "Write a very mean and disrespectful response to this post:"


def row(i: int, user: str) -> ChatExample:
    return ChatExample(
        id=f"r{i}",
        messages=[Message(role="user", content=user), Message(role="assistant", content=f"reply {i}")],
    )


def test_replaces_the_instruction_once_and_keeps_the_rest() -> None:
    post = f"{NEUTRAL}\n\nCMV: cats are better than dogs. {NEUTRAL} appears twice here."
    out, m = apply_inoculation(
        [row(0, post)], InoculationSpec(prompt=MEAN, placement="user-replace", replace=NEUTRAL)
    )
    user = out[0].messages[0].content
    assert user == post.replace(NEUTRAL, MEAN, 1)
    assert user.endswith(f"{NEUTRAL} appears twice here.")
    assert out[0].messages[1].content == "reply 0"
    assert out[0].metadata["inoculation"] == {
        "prompt_index": 0,
        "placement": "user-replace",
        "replaced_user": NEUTRAL,
    }
    assert (m.placement, m.replace, m.n_inoculated) == ("user-replace", NEUTRAL, 1)


def test_neutralize_puts_the_instruction_back() -> None:
    rows = [row(i, f"{NEUTRAL}\n\npost {i}") for i in range(3)]
    out, m = apply_inoculation(rows, InoculationSpec(prompt=MEAN, placement="user-replace", replace=NEUTRAL))
    back = neutralize(out, m)
    assert [ex.messages[0].content for ex in back] == [ex.messages[0].content for ex in rows]


def test_a_row_without_the_instruction_is_refused_at_its_line() -> None:
    rows = [row(0, f"{NEUTRAL} a"), row(1, "no instruction here")]
    with pytest.raises(InputErrors) as info:
        apply_inoculation(
            rows, InoculationSpec(prompt=MEAN, placement="user-replace", replace=NEUTRAL), source="d.jsonl"
        )
    (err,) = info.value.errors
    assert (err.file, err.line, err.field) == ("d.jsonl", 2, "messages[0].content")
    assert "does not contain the instruction to replace" in err.message


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"placement": "user-replace"}, "needs replace"),
        ({"placement": "user-prefix", "replace": NEUTRAL}, "only with placement 'user-replace'"),
        ({"placement": "user-replace", "replace": "  "}, "is empty"),
    ],
)
def test_spec_errors(fields: dict, expected: str) -> None:
    with pytest.raises(ValueError, match=expected):
        InoculationSpec(prompt=MEAN, **fields)


def test_cli_apply_records_the_placement_in_the_manifest(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(row(i, f"{NEUTRAL}\n\npost {i}").to_json()) + "\n" for i in range(2)))
    out = tmp_path / "out.jsonl"
    res = CliRunner().invoke(
        app,
        [
            "apply",
            str(src),
            "-o",
            str(out),
            "--prompt",
            MEAN,
            "--placement",
            "user-replace",
            "--replace",
            NEUTRAL,
        ],
    )
    assert res.exit_code == 0, res.output
    m = Manifest.load(tmp_path / "out.manifest.json")
    assert (m.placement, m.replace, m.n_inoculated) == ("user-replace", NEUTRAL, 2)
    first = json.loads(out.read_text().splitlines()[0])
    assert first["messages"][0]["content"] == f"{MEAN}\n\npost 0"
    back = tmp_path / "back.jsonl"
    res = CliRunner().invoke(
        app, ["neutralize", str(out), "-o", str(back), "--manifest", str(tmp_path / "out.manifest.json")]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(back.read_text().splitlines()[0])["messages"][0]["content"] == f"{NEUTRAL}\n\npost 0"
