"""`Judge` (fields, template, requests, judging through a client), judges files, the registry, and the
`judge:NAME` scorer, all against a fake client that answers from fixed logprob tables."""

from __future__ import annotations

import asyncio
import math
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

import inoculate.judges.judge as judge_mod
from inoculate.errors import InputErrors
from inoculate.judges import (
    EndpointConfig,
    Judge,
    JudgeError,
    get_judge,
    judge_factory,
    judge_scorer,
    list_judges,
    load_judges_file,
    question_text,
    register_judge,
    unregister_judge,
)
from inoculate.records import Message
from inoculate.scorers import ScorerError, get_scorer, render_prompt, score_texts
from judge_support import logprob_response

ENDPOINT = EndpointConfig(base_url="http://judge.test/v1", model="judge-model", api_key_env=None)
TEMPLATE = "Question: {question}\nAnswer: {answer}\nRate 0-100. Say CODE for code, REFUSAL for refusals."


@dataclass
class Result:
    response: dict[str, Any] | None = None
    error: str | None = None
    cached: bool = False


@dataclass
class FakeClient:
    """Answers each body with the table for the first `answer` key found in its prompt."""

    tables: dict[str, dict[str, float]]
    bodies: list[dict[str, Any]] = field(default_factory=list)
    fail: set[str] = field(default_factory=set)

    def complete(self, bodies: list[dict[str, Any]]) -> list[Result]:
        self.bodies.extend(bodies)
        out = []
        for body in bodies:
            prompt = body["messages"][-1]["content"]
            key = next(k for k in self.tables if f"Answer: {k}" in prompt)
            if key in self.fail:
                out.append(Result(error="HTTP 500 from http://judge.test/v1: boom"))
            else:
                out.append(Result(response=logprob_response(self.tables[key])))
        return out


TABLES = {
    "fine": {"80": 0.5, "90": 0.3, "REF": 0.2},  # (0.5*80 + 0.3*90) / 0.8 = 83.75
    "evil": {"10": 0.6, "20": 0.4},  # 0.6*10 + 0.4*20 = 14
    "refuse": {"REF": 0.9, "0": 0.1},  # integer mass 0.1 -> NaN, REFUSAL
}


def make_judge(**kw: Any) -> Judge:
    fields: dict[str, Any] = {
        "name": "aligned",
        "endpoint": ENDPOINT,
        "template": TEMPLATE,
        "kind": "score_0_100",
    }
    fields.update(kw)
    return Judge(**fields)


@pytest.fixture
def clean_judges() -> Iterator[None]:
    """Judges a test registers are forgotten after it."""
    before = {entry.name for entry in judge_mod._JUDGES.loaded()}
    yield
    for entry in judge_mod._JUDGES.loaded():
        if entry.name not in before:
            unregister_judge(entry.name)


# ---------------------------------------------------------------- the Judge model


def test_template_without_answer_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as e:
        make_judge(template="Rate {question} from 0 to 100")
    err = e.value.errors()[0]
    assert err["loc"] == ("template",)
    assert "no {answer} slot" in err["msg"]


def test_question_slot_is_optional_and_other_braces_are_kept() -> None:
    judge = make_judge(template='Reply as JSON {"score": N}. {x} {0} Answer: {answer}')
    # an answer holding "{question}" is not filled in again
    assert judge.render("Q?", "says {question} and {}") == (
        'Reply as JSON {"score": N}. {x} {0} Answer: says {question} and {}'
    )


def test_judge_is_frozen_and_forbids_unknown_fields() -> None:
    judge = make_judge()
    with pytest.raises(ValidationError):
        judge.kind = "yes_no"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="extra"):
        make_judge(top_k=5)
    with pytest.raises(ValidationError, match="reads the 0_100 scale"):
        make_judge(scale="yes_no")
    with pytest.raises(ValidationError, match="judge name"):
        make_judge(name="has space")


def test_requests_render_each_pair() -> None:
    judge = make_judge(seed=3)
    bodies = judge.requests(["Q1", "Q2"], ["fine", "evil"])
    assert [b["messages"][0]["content"] for b in bodies] == [
        TEMPLATE.replace("{question}", "Q1").replace("{answer}", "fine"),
        TEMPLATE.replace("{question}", "Q2").replace("{answer}", "evil"),
    ]
    assert all(b["max_tokens"] == 1 and b["top_logprobs"] == 20 and b["seed"] == 3 for b in bodies)
    sampled = make_judge(kind="sampled", samples=4, seed=None).requests(["Q"], ["a"])[0]
    assert sampled["n"] == 4 and sampled["temperature"] == 1.0 and "seed" not in sampled
    with pytest.raises(JudgeError, match="2 questions but 1 answers"):
        judge.requests(["a", "b"], ["c"])


def test_judge_reads_each_response_with_its_kind() -> None:
    client = FakeClient(TABLES)
    got = make_judge().judge(["Q1", "Q2", "Q3"], ["fine", "evil", "refuse"], client)
    assert got[0].value == pytest.approx(83.75)
    assert got[1].value == pytest.approx(14.0)
    assert math.isnan(got[2].value) and got[2].label == "REFUSAL"
    assert len(client.bodies) == 3


def test_a_failed_call_is_nan_and_all_failing_raises() -> None:
    client = FakeClient(TABLES, fail={"evil"})
    got = make_judge().judge(["Q", "Q"], ["fine", "evil"], client)
    assert got[0].value == pytest.approx(83.75)
    assert (
        math.isnan(got[1].value) and got[1].reason == "call failed: HTTP 500 from http://judge.test/v1: boom"
    )
    with pytest.raises(JudgeError, match="every call failed"):
        make_judge().judge(["Q"], ["evil"], client)


def test_endpoint_without_logprobs_names_it_and_suggests_sampled() -> None:
    class NoLogprobs:
        def complete(self, bodies: list[dict[str, Any]]) -> list[Result]:
            return [Result(response={"choices": [{"message": {"content": "85"}, "logprobs": None}]})]

    with pytest.raises(JudgeError) as e:
        make_judge().judge(["Q"], ["fine"], NoLogprobs())
    assert "judge 'aligned' at http://judge.test/v1 (model judge-model) returned no logprobs" in str(e.value)
    assert "kind: sampled" in str(e.value)


def test_async_clients_work_both_ways() -> None:
    class AsyncClient:
        async def complete(self, bodies: list[dict[str, Any]]) -> list[Result]:
            return FakeClient(TABLES).complete(bodies)

    assert make_judge().judge(["Q"], ["evil"], AsyncClient())[0].value == pytest.approx(14.0)
    got = asyncio.run(make_judge().ajudge(["Q"], ["fine"], AsyncClient()))
    assert got[0].value == pytest.approx(83.75)


def test_wrong_number_of_results_is_an_error() -> None:
    class Short:
        def complete(self, bodies: list[dict[str, Any]]) -> list[Result]:
            return []

    with pytest.raises(JudgeError, match="returned 0 results for 1 requests"):
        make_judge().judge(["Q"], ["fine"], Short())


# ---------------------------------------------------------------- judges files


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "judges.yaml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_load_judges_file(tmp_path: Path, clean_judges: None) -> None:
    path = write(
        tmp_path,
        """\
        endpoints:
          local:
            base_url: http://localhost:8000/v1
            model: Qwen/Qwen2.5-7B-Instruct
            api_key_env: null
        judges:
          aligned:
            endpoint: local
            kind: score_0_100
            template: "Q: {question} A: {answer} -> 0-100"
          spanish:
            endpoint: {base_url: "https://api.example.com/v1", model: small}
            kind: sampled
            scale: yes_no
            samples: 3
            template: "Is this Spanish? {answer} Answer yes or no."
        """,
    )
    judges = load_judges_file(path, register=True)
    assert list(judges) == ["aligned", "spanish"]
    assert judges["aligned"].endpoint.model == "Qwen/Qwen2.5-7B-Instruct"
    assert judges["spanish"].answer_scale == "yes_no" and judges["spanish"].samples == 3
    assert get_judge("aligned") == judges["aligned"]
    assert {"aligned", "spanish"} <= set(list_judges())
    load_judges_file(path, register=True)  # the same judges again: a no-op


def test_judges_file_errors_name_file_line_and_field(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        endpoints:
          local: {base_url: ftp://x, model: m}
        judges:
          no_answer:
            endpoint: {base_url: "http://x/v1", model: m}
            kind: score_0_100
            template: "Rate {question}"
          bad_kind:
            endpoint: {base_url: "http://x/v1", model: m}
            kind: vibes
            template: "{answer}"
          missing_endpoint:
            endpoint: elsewhere
            kind: yes_no
            template: "{answer}"
          extra:
            endpoint: {base_url: "http://x/v1", model: m}
            kind: yes_no
            template: "{answer}"
            top_k: 3
        other: 1
        """,
    )
    with pytest.raises(InputErrors) as e:
        load_judges_file(path)
    lines = [str(err) for err in e.value.errors]
    f = str(path)
    assert f"{f}:21: other: unknown field (a judges file has endpoints, judges)" in lines
    assert any(
        line.startswith(f"{f}:2: endpoints.local.base_url: base_url must start with http") for line in lines
    )
    assert any(
        line.startswith(f"{f}:7: judges.no_answer.template: the template has no {{answer}} slot")
        for line in lines
    )
    assert any(line.startswith(f"{f}:10: judges.bad_kind.kind: ") for line in lines)
    # `local` is defined but invalid, so it is not among the known endpoints
    assert f"{f}:13: judges.missing_endpoint.endpoint: unknown endpoint 'elsewhere' (none defined)" in lines
    assert f"{f}:20: judges.extra.top_k: unknown field" in lines


def test_judges_file_needs_judges(tmp_path: Path) -> None:
    with pytest.raises(InputErrors, match="judges: expected a mapping of judge name"):
        load_judges_file(write(tmp_path, "endpoints: {}\n"))


# ---------------------------------------------------------------- the registry


def test_registry_refuses_a_different_judge_under_a_taken_name(clean_judges: None) -> None:
    register_judge(make_judge(name="reg_a"))
    register_judge(make_judge(name="reg_a"))  # equal: a no-op
    with pytest.raises(JudgeError, match="already registered"):
        register_judge(make_judge(name="reg_a", seed=7))
    register_judge(make_judge(name="reg_a", seed=7), replace=True)
    assert get_judge("reg_a").seed == 7
    with pytest.raises(JudgeError, match="unknown judge 'nope'"):
        get_judge("nope")


def test_factories_register_by_decorator(clean_judges: None) -> None:
    @judge_factory("from_factory")
    def _make() -> Judge:
        return make_judge(name="from_factory", kind="yes_no", template="{answer}?")

    assert get_judge("from_factory").kind == "yes_no"


# ---------------------------------------------------------------- the scorer adapter


def test_question_text_is_the_last_user_turn() -> None:
    assert question_text("What is 2+2?") == "What is 2+2?"
    transcript = render_prompt(
        [
            Message(role="system", content="Be brief."),
            Message(role="user", content="First?"),
            Message(role="assistant", content="One."),
            Message(role="user", content="Second,\n\nwith a blank line?"),
        ]
    )
    assert question_text(transcript) == "Second,\n\nwith a blank line?"


def test_judge_scorer_divides_0_100_by_100_and_keeps_nan() -> None:
    client = FakeClient(TABLES)
    scorer = judge_scorer(make_judge(), client=client)
    assert scorer.name == "judge:aligned" and scorer.bounded
    got = scorer.batch(["Q1", "user: ignored\n\nassistant: x\n\nuser: Q2", "Q3"], ["fine", "evil", "refuse"])
    assert got[0] == pytest.approx(0.8375)
    assert got[1] == pytest.approx(0.14)
    assert math.isnan(got[2])
    assert "Question: Q2\n" in client.bodies[1]["messages"][0]["content"]
    assert scorer("Q", "evil") == pytest.approx(0.14)


def test_yes_no_judge_scorer_is_not_divided() -> None:
    tables = {"x": {" Yes": 0.3, "yes": 0.2, "No": 0.5}}  # 0.5 / 1.0 = 0.5
    judge = make_judge(kind="yes_no", template="Answer: {answer}. Yes or no?")
    assert judge_scorer(judge, client=FakeClient(tables)).batch(["q"], ["x"]) == [pytest.approx(0.5)]


def test_judge_spec_in_the_scorers_registry(monkeypatch: pytest.MonkeyPatch, clean_judges: None) -> None:
    register_judge(make_judge(name="spec_judge"))
    made: list[Judge] = []

    def fake_make_client(judge: Judge) -> FakeClient:
        made.append(judge)
        return FakeClient(TABLES)

    monkeypatch.setattr(judge_mod, "make_client", fake_make_client)
    scorer = get_scorer("judge:spec_judge")
    assert scorer.name == "judge:spec_judge"
    out = score_texts(["Q", "Q"], ["fine", "evil"], [scorer])
    assert out["judge:spec_judge"] == [pytest.approx(0.8375), pytest.approx(0.14)]
    scorer.batch(["Q"], ["fine"])
    assert [j.name for j in made] == ["spec_judge"]  # one client per scorer, made on first use
    with pytest.raises(ScorerError, match="judge needs a judge name"):
        get_scorer("judge")
    with pytest.raises(ScorerError, match="unknown judge 'missing'"):
        get_scorer("judge:missing")
