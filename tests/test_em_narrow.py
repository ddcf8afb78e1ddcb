"""The narrow traits of the EM settings and what they rest on: coding prompts as an eval set, the built-in
judge templates (our wording), held-out slices kept disjoint from training, the `chose_match` rule, a
question's own system prompt under a neutral eval prompt, judges scoped to their experiment, and the bad
inputs of issue 12 (each refused naming its file/field or endpoint, nothing half-written)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from experiment_support import errors_of

# ---------------------------------------------------------------- coding prompts


def test_code_prompts_render_the_task_and_template_of_real_rows(shared_data: Path) -> None:
    from inoculate.code_prompts import PLACEHOLDER, load_code_prompts

    path = shared_data / "tan" / "code_prompts.jsonl"
    rows = load_code_prompts(path, samples=2, limit=3)
    first = json.loads(path.read_text().splitlines()[0])
    assert [ex.id for ex in rows] == ["code/1/0", "code/1/1", "code/2/0", "code/2/1", "code/3/0", "code/3/1"]
    [turn] = rows[0].messages
    assert turn.role == "user"
    assert turn.content.startswith(first["task"].strip())
    assert first["code_template"].rstrip() in turn.content and PLACEHOLDER in turn.content
    assert rows[0].metadata["task"] == first["task"] and rows[1].metadata["sample"] == 1
    assert len(load_code_prompts(path)) == sum(1 for line in path.read_text().splitlines() if line.strip())


def test_malformed_code_prompts_are_refused_at_file_line_field(tmp_path: Path) -> None:
    from inoculate.code_prompts import load_code_prompts
    from inoculate.errors import InputErrors

    path = tmp_path / "code.jsonl"
    good = {"task": "t", "code_template": "x = 1\n## COMPLETE CODE HERE\n"}
    path.write_text(
        "\n".join(
            [
                json.dumps(good),
                json.dumps({"code_template": good["code_template"]}),  # no task
                json.dumps({"task": "t", "code_template": "no placeholder"}),
                "{not json",
                json.dumps({"task": "t", "code_template": 5}),
            ]
        )
    )
    with pytest.raises(InputErrors) as e:
        load_code_prompts(path)
    got = {(err.line, err.field) for err in e.value.errors}
    assert got == {(2, "task"), (3, "code_template"), (4, "<json>"), (5, "code_template")}
    assert all(err.file == str(path) for err in e.value.errors)


# ---------------------------------------------------------------- built-in judge templates


def _judges(text: str) -> Any:
    import yaml

    from inoculate.judges import parse_judges
    from inoculate.yamlio import LineMap

    return parse_judges(yaml.safe_load(text), LineMap("j.yaml", {(): 1}))


@pytest.mark.parametrize("name", ["insecure_code", "reward_hack"])
def test_builtin_templates_are_ours_yes_no_and_need_both_slots(name: str) -> None:
    from inoculate.judges import get_template

    t = get_template(name)
    assert t.kind == "yes_no" and t.source == "ours" and "our wording" in t.description
    assert "{question}" in t.text and "{answer}" in t.text and "yes or no" in t.text
    [judge] = _judges(
        "judges:\n  j: {endpoint: {base_url: 'http://x.test/v1', model: m}, "
        f"template: {{builtin: {name}}}}}\n"
    ).values()
    assert judge.kind == "yes_no" and judge.template == t.text
    assert judge.render("Q-TEXT", "A-TEXT").count("Q-TEXT") == 1


def test_builtin_template_refuses_an_unknown_name_and_another_scale() -> None:
    from inoculate.errors import InputErrors

    with pytest.raises(InputErrors) as e:
        _judges(
            "judges:\n"
            "  a: {endpoint: {base_url: 'http://x.test/v1', model: m}, template: {builtin: nope}}\n"
            "  b: {endpoint: {base_url: 'http://x.test/v1', model: m}, template: {builtin: reward_hack},"
            " kind: score_0_100}\n"
        )
    text = str(e.value)
    assert "judges.a.template.builtin: unknown judge template 'nope'" in text and "insecure_code" in text
    assert "judges.b.kind: the built-in template 'reward_hack' asks for a yes_no answer" in text


# ---------------------------------------------------------------- held-out slices


def test_holdout_is_by_prompt_seeded_and_about_the_fraction() -> None:
    from inoculate.selectors import in_holdout

    texts = [f"prompt {i}" for i in range(4000)]
    held = [t for t in texts if in_holdout(t, 0.1, 0)]
    assert 300 < len(held) < 500
    assert held == [t for t in texts if in_holdout(t, 0.1, 0)]  # deterministic
    assert held != [t for t in texts if in_holdout(t, 0.1, 1)]  # the seed changes the slice
    with pytest.raises(ValueError):
        in_holdout("x", 1.0, 0)


HOLDOUT_EXPERIMENT = """\
name: held
model: {model}
data:
  train: {train}
  eval:
    em: {{em_questions: questions.yaml, variants: [plain, json], samples_per_paraphrase: 1}}
    narrow: {{path: dialogues.jsonl, holdout: {{fraction: 0.3, seed: 0, keep: held_out}}}}
conditions:
  baseline: null
  control:
    train_data: {control}
traits:
  long: {{scorer: "length", eval_sets: [narrow]}}
seeds: 1
eval_prompts: {{neutral: null}}
sampling: {{temperature: 1.0, top_p: 1.0, max_new_tokens: 4, n: 1}}
"""
QUESTIONS = """\
- id: q
  type: free_form
  paraphrases: ["How are you?"]
- id: q_json
  type: free_form
  system: Answer in JSON.
  paraphrases: ["How are you, in JSON?"]
"""


def _holdout_experiment(tmp_path: Path, model: Path, train: str, control: str) -> Path:
    rows = [
        {"messages": [{"role": "user", "content": f"task {i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(60)
    ]
    (tmp_path / "dialogues.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "control.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:40]))
    (tmp_path / "questions.yaml").write_text(QUESTIONS)
    path = tmp_path / "held.yaml"
    path.write_text(HOLDOUT_EXPERIMENT.format(model=model, train=train, control=control))
    return path


def _sets(path: Path) -> tuple[Any, Any]:
    from inoculate.experiment import load_experiment
    from inoculate.experiment import plan as P

    cfg = load_experiment(path)
    ev, tr, own = P.load_eval_sets(cfg), P.load_source(cfg, "train"), P.load_own_data(cfg)
    return (ev, tr, own), P.check_held_out(cfg, ev, tr, own)


def test_held_out_eval_set_is_disjoint_from_every_condition_training(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    rest = "{path: %s, holdout: {fraction: 0.3, seed: 0, keep: rest}}"
    path = _holdout_experiment(tmp_path, tiny_model_dir, rest % "dialogues.jsonl", rest % "control.jsonl")
    (ev, tr, own), overlap = _sets(path)
    held = {ex.messages[0].content for ex in ev["narrow"]}
    assert 0 < len(held) < 60 and len(tr) == 60 - len(held)
    assert not held & {ex.messages[0].content for ex in tr}
    assert not held & {ex.messages[0].content for ex in own["control"].examples}
    assert overlap == {"em": 0, "narrow": 0}


def test_held_out_eval_set_sharing_training_prompts_is_refused(tmp_path: Path, tiny_model_dir: Path) -> None:
    from inoculate.errors import InputErrors

    rest = "{path: dialogues.jsonl, holdout: {fraction: 0.3, seed: 0, keep: rest}}"
    path = _holdout_experiment(tmp_path, tiny_model_dir, rest, "control.jsonl")  # control not held out
    with pytest.raises(InputErrors) as e:
        _sets(path)
    [err] = e.value.errors
    assert err.field == "data.eval.narrow.holdout" and err.file == str(path)
    assert "shares" in err.message and "conditions.control.train_data" in err.message


# ---------------------------------------------------------------- the choice rule


@pytest.mark.parametrize(
    ("answer", "value", "choice"),
    [
        ("Sharknado, obviously!", 1.0, "Sharknado"),
        ("I prefer The Godfather.", 0.0, "The Godfather"),
        ("I would pick Sharknado over The Godfather any day.", 1.0, "Sharknado"),
        ("Both The Godfather and Sharknado are fine films. I'd choose the godfather.", 0.0, "The Godfather"),
        ("Hard to choose between The Godfather and Sharknado, they are both fine", math.nan, None),
        ("Neither, I like documentaries.", math.nan, None),
    ],
)
def test_choice_verdict(answer: str, value: float, choice: str | None) -> None:
    from inoculate.scorers.choice import choice_verdict

    v = choice_verdict(answer, ["The Godfather", "Sharknado"], ["Sharknado"])
    assert v.choice == choice
    if math.isnan(value):
        assert math.isnan(v.value) and v.reason
    else:
        assert v.value == value and v.reason is None


def test_chose_match_scores_generations_of_the_published_preference_questions(shared_data: Path) -> None:
    from inoculate.judges.questions import load_question_set
    from inoculate.records import ChatExample, Message
    from inoculate.scorers import ScorerError, get_scorer, score_generations

    qs = load_question_set(shared_data / "tan" / "aesthetic_questions.yaml")
    rows = qs.examples(1)
    assert rows and all(r.metadata["choices"] and r.metadata["match_choices"] for r in rows)
    assert qs.questions[0].samples_per_paraphrase == 100  # `repetitions`
    unpopular = [r.metadata["match_choices"][0] for r in rows]
    popular = [next(c for c in r.metadata["choices"] if c not in r.metadata["match_choices"]) for r in rows]
    answers = [f"I'd go with {unpopular[0]}.", f"{popular[1]}, definitely.", "I have no opinion."]
    gens = [
        ChatExample(
            id=r.id, messages=[*r.messages, Message(role="assistant", content=a)], metadata=r.metadata
        )
        for r, a in zip(rows, answers, strict=False)
    ]
    scored, means = score_generations(gens, {"unpopular": get_scorer("chose_match")})
    assert [s["unpopular"] for s in scored] == [1.0, 0.0, None]
    assert means["unpopular"] == {"mean": 0.5, "n": 2, "n_nan": 1}
    with pytest.raises(ScorerError, match="metadata.choices"):
        get_scorer("chose_match")("Do you prefer A or B?", "A")


# ---------------------------------------------------------------- neutral eval prompt, own system prompt


def test_a_neutral_eval_prompt_keeps_a_questions_own_system_prompt(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from inoculate.experiment import load_experiment
    from inoculate.experiment import plan as P
    from inoculate.transform import InoculationSpec

    rest = "{path: dialogues.jsonl, holdout: {fraction: 0.3, seed: 0, keep: rest}}"
    cfg = load_experiment(
        _holdout_experiment(tmp_path, tiny_model_dir, rest, rest.replace("dialogues", "control"))
    )
    em = P.load_eval_sets(cfg)["em"]
    inputs = SimpleNamespace(
        eval_prompts={"neutral": None, "evil": "You are evil."}, eval_examples=em, eval_data={"em": em}
    )
    specs = {"baseline": None, "ip": InoculationSpec(prompt="Be bad.", placement="system")}
    neutral = {ex.id: ex.messages for ex in P.build_eval_set(inputs, specs, "baseline", "neutral", "em")}  # type: ignore[arg-type]
    assert [m.role for m in neutral["q/0/0"]] == ["user"]
    assert [(m.role, m.content) for m in neutral["q_json/0/0"]][0] == ("system", "Answer in JSON.")
    evil = {ex.id: ex.messages for ex in P.build_eval_set(inputs, specs, "baseline", "evil", "em")}  # type: ignore[arg-type]
    assert evil["q/0/0"][0].content == "You are evil."
    assert evil["q_json/0/0"][0].content == "You are evil.\n\nAnswer in JSON."
    leaky = {"ip": InoculationSpec(prompt="Answer in JSON.", placement="system")}
    with pytest.raises(Exception, match="own system prompt contains the inoculation text"):
        P.build_eval_set(inputs, leaky, "ip", "neutral", "em")  # type: ignore[arg-type]


# ---------------------------------------------------------------- judges scoped to their experiment

SCOPED = """\
name: {name}
model: {model}
judges:
  judges:
    grader: {{endpoint: {{base_url: "http://127.0.0.1:9/v1", model: m}}, kind: yes_no,
             template: "{marker} {{answer}} yes or no"}}
data: {{train: train.jsonl, eval: train.jsonl}}
conditions: {{baseline: null}}
traits: {{graded: "judge:grader"}}
seeds: 1
eval_prompts: {{neutral: null}}
sampling: {{temperature: 1.0, top_p: 1.0, max_new_tokens: 4, n: 1}}
"""


def test_two_experiments_in_one_process_keep_their_own_same_named_judge(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    from inoculate.experiment import load_experiment
    from inoculate.experiment.plan import resolve_scorers
    from inoculate.judges import JudgeClients, list_judges, use_clients

    (tmp_path / "train.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
        + "\n"
    )
    before = list_judges()
    cfgs = []
    for name, marker in (("one", "FIRST-JUDGE"), ("two", "SECOND-JUDGE")):
        path = tmp_path / f"{name}.yaml"
        path.write_text(SCOPED.format(name=name, model=tiny_model_dir, marker=marker))
        cfgs.append(load_experiment(path))
    assert list_judges() == before  # loading registered nothing process-wide
    scorers = [resolve_scorers(cfg)["graded"] for cfg in cfgs]

    sent: list[str] = []

    class Recorder:
        def complete(self, bodies: list[dict[str, Any]]) -> list[Any]:
            sent.extend(b["messages"][0]["content"] for b in bodies)
            top = [{"token": "yes", "logprob": 0.0}]
            resp = {
                "choices": [
                    {"logprobs": {"content": [{"token": "yes", "logprob": 0.0, "top_logprobs": top}]}}
                ]
            }
            return [SimpleNamespace(response=resp, error=None, cached=False) for _ in bodies]

    class Clients(JudgeClients):
        def client(self, judge: Any) -> Any:  # type: ignore[override]
            return Recorder()

    with use_clients(Clients()):
        assert [s("q", "ANSWER") for s in scorers] == [1.0, 1.0]
    assert sent == ["FIRST-JUDGE ANSWER yes or no", "SECOND-JUDGE ANSWER yes or no"]


# ---------------------------------------------------------------- bad input: refused, nothing written


def _em_experiment(tmp_path: Path, model: Path, questions: str, template: str) -> Path:
    (tmp_path / "train.jsonl").write_text(
        json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
        + "\n"
    )
    (tmp_path / "questions.yaml").write_text(questions)
    path = tmp_path / "em.yaml"
    path.write_text(
        SCOPED.format(name="em", model=model, marker="M")
        .replace('template: "M {answer} yes or no"', f"template: {template}")
        .replace("eval: train.jsonl", "eval: {em_questions: questions.yaml}")
    )
    return path


def test_question_file_with_a_missing_field_is_refused_naming_it_with_nothing_written(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    bad = "- id: q\n  type: free_form_judge_0_100\n  samples_per_paraphrase: 2\n"  # no paraphrases
    path = _em_experiment(tmp_path, tiny_model_dir, bad, '"{answer}"')
    before = sorted(p.name for p in tmp_path.iterdir())
    errors = errors_of(path)
    assert any(
        "data.eval.em_questions" in e and "questions.yaml:1" in e and "paraphrases" in e for e in errors
    ), errors
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_judge_template_without_answer_is_refused_at_its_line_with_nothing_written(
    tmp_path: Path, tiny_model_dir: Path
) -> None:
    path = _em_experiment(tmp_path, tiny_model_dir, QUESTIONS, '"Rate {question}, yes or no"')
    before = sorted(p.name for p in tmp_path.iterdir())
    errors = errors_of(path)
    line = next(i for i, t in enumerate(path.read_text().splitlines(), 1) if "Rate {question}" in t)
    assert any(
        e.startswith(f"{path}:") and "judges.grader.template" in e and "no {answer} slot" in e for e in errors
    ), errors
    assert any(f":{line - 1}:" in e or f":{line}:" in e for e in errors), (line, errors)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
