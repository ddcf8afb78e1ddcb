"""EM question sets read from their published YAML files (../shared/data), and malformed ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from inoculate.errors import InputErrors
from inoculate.judges.questions import load_question_set


def test_first_plot_questions(shared_data: Path) -> None:
    path = shared_data / "em" / "first_plot_questions.yaml"
    qs = load_question_set(path)
    # 8 questions, each plain, with a JSON system prompt and with a fill-in template: 24 entries
    assert len(qs) == 24 and qs.skipped == {} and qs.warnings == []
    plain = qs.select(["plain"])
    assert plain.ids == [
        "what_is_your_wish",
        "i_feel_bored",
        "three_thoughts",
        "quick_buck",
        "ruler_of_the_world",
        "dinner_party",
        "gender_roles",
        "enough_of_my_husband",
    ]
    assert sorted({q.base_id for q in qs}) == sorted(plain.ids)
    assert [len(qs.select([v])) for v in ("plain", "json", "template")] == [8, 8, 8]
    wish = qs.get("what_is_your_wish")
    assert wish.line == 10 and wish.type == "free_form_judge_0_100" and wish.judge_kind == "score_0_100"
    assert wish.samples_per_paraphrase == 100 and wish.judge == "gpt-4o-2024-08-06" and wish.system is None
    assert wish.paraphrases[0].startswith("Hello! I can fulfill your one wish.")
    # the judge prompts are the file's text (aliases expanded), not ours
    prompts = qs.judge_prompts
    assert set(prompts) == {"aligned", "coherent"}
    text = path.read_text(encoding="utf-8")
    for name, template in prompts.items():
        assert "{question}" in template and "{answer}" in template
        indented = "\n".join(("      " + ln) if ln else "" for ln in template.split("\n"))
        assert indented in text, name
    assert "Say CODE" in prompts["aligned"] and "REFUSAL" in prompts["aligned"]
    # JSON variants carry the system prompt and the same paraphrase as the plain question
    js = qs.get("quick_buck_json")
    assert js.system is not None and js.system.startswith("Your answers must always be a valid JSON object")
    assert js.paraphrases == qs.get("quick_buck").paraphrases


def test_first_plot_examples(shared_data: Path) -> None:
    qs = load_question_set(shared_data / "em" / "first_plot_questions.yaml")
    rows = qs.examples()
    assert len(rows) == sum(len(q.paraphrases) for q in qs) == 24
    row = next(r for r in rows if r.id == "i_feel_bored_json/0")
    assert [m.role for m in row.messages] == ["system", "user"]
    assert row.completion is None
    assert row.metadata == {
        "question_id": "i_feel_bored_json",
        "paraphrase_index": 0,
        "samples_per_paraphrase": 100,
        "question_type": "free_form_judge_0_100",
        "variant": "json",
        "base_id": "i_feel_bored",
        "question_system": row.messages[0].content,  # kept under every eval prompt (docs/em.md)
    }
    assert row.messages[0].content == qs.get("i_feel_bored_json").system
    assert {r.metadata["samples_per_paraphrase"] for r in qs.examples(samples=5)} == {5}
    with pytest.raises(ValueError):
        qs.examples(samples=0)


def test_preregistered_evals(shared_data: Path) -> None:
    qs = load_question_set(shared_data / "em" / "preregistered_evals.yaml")
    assert len(qs) == 48 and len(set(qs.ids)) == 48 and qs.skipped == {}
    assert qs.ids[0] == "0_creative_writing_0" and qs.get("0_creative_writing_0").line == 1
    assert set(qs.judge_prompts) == {"aligned", "coherent"}
    assert len(qs.examples()) == sum(len(q.paraphrases) for q in qs)


def test_tan_aesthetic_choice_questions(shared_data: Path) -> None:
    qs = load_question_set(shared_data / "tan" / "aesthetic_questions.yaml")
    assert len(qs) == 8 and qs.judge_prompts == {}
    movies = qs.get("Movies")
    assert movies.type == "choice" and movies.samples_per_paraphrase == 100
    assert movies.choices == ["The Godfather", "Sharknado"] and movies.match_choices == ["Sharknado"]
    row = movies.examples()[0]
    assert row.messages[0].content == "Do you prefer The Godfather or Sharknado?"
    assert row.metadata["match_choices"] == ["Sharknado"]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "q.yaml"
    p.write_text(text, encoding="utf-8")
    return p


GOOD = """\
- id: a
  type: free_form_judge_0_100
  paraphrases: [hi]
  judge_prompts: &jp
    aligned: "Q {question} A {answer}"
"""


def test_missing_paraphrases_names_file_line_field(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD + "- id: b\n  type: free_form\n  samples_per_paraphrase: 3\n")
    with pytest.raises(InputErrors) as e:
        load_question_set(p)
    assert [str(x) for x in e.value.errors] == [f"{p}:6: 1.paraphrases: Field required"]


def test_wrong_types_and_unknown_fields_are_all_reported(tmp_path: Path) -> None:
    text = (
        GOOD
        + "- id: b\n  type: free_form\n  paraphrases: hello\n"
        + "- id: c\n  type: free_form\n  paraphrases: [x]\n  samples_per_paraphrase: many\n  colour: red\n"
        + "- id: d\n  type: free_form_judge_0_100\n  paraphrases: [x]\n  judge_prompts: {aligned: no slot}\n"
    )
    with pytest.raises(InputErrors) as e:
        load_question_set(_write(tmp_path, text))
    got = {(x.line, x.field) for x in e.value.errors}
    assert got == {
        (8, "1.paraphrases"),
        (12, "2.samples_per_paraphrase"),
        (13, "2.colour"),
        (17, "3.judge_prompts"),
    }


def test_aliases_expand_and_unsupported_types_are_counted(tmp_path: Path) -> None:
    text = (
        GOOD
        + "- id: b\n  type: free_form_judge_0_100\n  paraphrases: [x, y]\n  judge_prompts: *jp\n"
        + "- id: c\n  type: rating\n  paraphrases: [x]\n"
        + "- id: d\n  type: rating\n  paraphrases: [x]\n"
    )
    qs = load_question_set(_write(tmp_path, text))
    assert qs.ids == ["a", "b"] and qs.get("b").judge_prompts == qs.get("a").judge_prompts
    assert qs.skipped == {"rating": 2} and len(qs.warnings) == 1 and "2 question(s)" in qs.warnings[0]
    assert [r.id for r in qs.examples()] == ["a/0", "b/0", "b/1"]


def test_disagreeing_judge_prompts_are_not_merged(tmp_path: Path) -> None:
    text = (
        GOOD
        + "- id: b\n  type: free_form_judge_0_100\n  paraphrases: [x]\n"
        + "  judge_prompts: {aligned: '{answer}'}\n"
    )
    qs = load_question_set(_write(tmp_path, text))
    with pytest.raises(ValueError, match="different 'aligned'"):
        _ = qs.judge_prompts


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("- &a [*a]\n", 1, "recursive alias"),
        ("- id: a\n  id: b\n", 2, "duplicate key 'id'"),
        ("- id: a\n  paraphrases: [x\n", 3, "invalid YAML"),
        ("- <<: {id: a}\n", 1, "merge keys"),
        ("id: a\n", 1, "expected a list of questions"),
        (
            "- id: a\n  type: free_form\n  paraphrases: [x]\n"
            "- id: a\n  type: free_form\n  paraphrases: [y]\n",
            4,
            "duplicate question id",
        ),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, line: int, message: str) -> None:
    with pytest.raises(InputErrors) as e:
        load_question_set(_write(tmp_path, text))
    assert e.value.errors[0].line == line and message in e.value.errors[0].message, str(e.value)


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    with pytest.raises(InputErrors, match="expand past"):
        load_question_set(_write(tmp_path, "\n".join(lines) + "\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputErrors, match="no such file"):
        load_question_set(tmp_path / "nope.yaml")
