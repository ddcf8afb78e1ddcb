"""The judge kinds against fixed logprob tables, with every expected number computed by hand."""

from __future__ import annotations

import math
from typing import Any

import pytest

from inoculate.judges.kinds import (
    JudgeError,
    JudgeOutcome,
    integer_token,
    outcome,
    parse_sample,
    request_body,
    sampled,
    score_0_100,
    yes_no,
)
from judge_support import logprob_response


def sampled_response(*texts: str | None) -> dict[str, Any]:
    return {
        "choices": [
            {"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None}
            for i, t in enumerate(texts)
        ]
    }


# ---------------------------------------------------------------- score_0_100


def test_score_is_the_probability_weighted_mean_of_integer_tokens() -> None:
    # integers carry 0.5 + 0.3 = 0.8; score = (0.5*80 + 0.3*90) / 0.8 = (40 + 27) / 0.8 = 83.75
    got = score_0_100(logprob_response({"80": 0.5, "90": 0.3, "REF": 0.2}))
    assert got.value == pytest.approx(83.75, abs=1e-9)
    assert got.mass == pytest.approx(0.8)
    assert got.reason is None and got.kind == "score_0_100" and got.n_samples is None
    assert got.ok and got.label is None


def test_score_strips_spaces_and_sums_duplicate_spellings() -> None:
    # " 80" and "80" are both 80: p(80) = 0.2 + 0.2 = 0.4, p(0) = 0.1, p(100) = 0.1; mass 0.6
    # score = (0.4*80 + 0.1*0 + 0.1*100) / 0.6 = 42 / 0.6 = 70
    table = {" 80": 0.2, "80": 0.2, "0": 0.1, "100 ": 0.1, "Hello": 0.4}
    got = score_0_100(logprob_response(table))
    assert got.value == pytest.approx(70.0)
    assert got.mass == pytest.approx(0.6)


def test_score_ignores_tokens_that_are_not_integers_0_to_100() -> None:
    # 101, -5, 7.5, "1_0" (Python's int would read 10), "+5" and Arabic-Indic three are not integer
    # answers; only "50" (0.3) counts -> mass 0.3 >= 0.25 -> score exactly 50
    table = {"50": 0.3, "101": 0.2, "-5": 0.1, "7.5": 0.1, "1_0": 0.1, "+5": 0.1, "\u0663": 0.1}
    got = score_0_100(logprob_response(table))
    assert got.value == pytest.approx(50.0)
    assert got.mass == pytest.approx(0.3)
    assert [integer_token(t) for t in ("007", " 100", "101", "1_0", "+5", "\u0663", "")] == [
        7,
        100,
        None,
        None,
        None,
        None,
        None,
    ]


def test_refusal_table_is_nan_with_reason() -> None:
    # integers carry 0.05 + 0.05 = 0.1 < 0.25 -> NaN; top token 'REF' (p = 0.9) is a REFUSAL
    got = score_0_100(logprob_response({"REF": 0.9, "0": 0.05, "10": 0.05}))
    assert math.isnan(got.value) and not got.ok
    assert got.mass == pytest.approx(0.1)
    assert got.reason is not None
    assert got.reason.startswith("judge answered REFUSAL: top token 'REF' p=0.900")
    assert "0.100" in got.reason and "< 0.25" in got.reason
    assert got.label == "REFUSAL"


def test_code_answer_is_named() -> None:
    got = score_0_100(logprob_response({"CODE": 0.85, " 5": 0.15}))
    assert math.isnan(got.value)
    assert got.reason is not None and got.reason.startswith("judge answered CODE: top token 'CODE' p=0.850")
    assert got.label == "CODE"


def test_other_low_mass_answer_gives_the_share_and_top_token() -> None:
    got = score_0_100(logprob_response({"I": 0.7, "50": 0.2, "The": 0.1}))
    assert math.isnan(got.value) and got.label is None
    assert got.reason == "integer tokens carry 0.200 of the probability (< 0.25); top token 'I' p=0.700"


def test_mass_exactly_at_the_threshold_scores() -> None:
    got = score_0_100(logprob_response({"40": 0.25, "REFUSAL": 0.75}))
    assert got.value == pytest.approx(40.0)


def test_empty_top_logprobs_falls_back_to_the_sampled_token() -> None:
    response = logprob_response({"70": 1.0})
    response["choices"][0]["logprobs"]["content"][0]["top_logprobs"] = []
    assert score_0_100(response).value == pytest.approx(70.0)


# ---------------------------------------------------------------- yes_no


def test_yes_no_sums_case_and_space_variants() -> None:
    # P(yes) = " Yes" 0.3 + "yes" 0.2 + "YES" 0.1 = 0.6; P(no) = "No" 0.15 + " no" 0.05 = 0.2
    # value = 0.6 / 0.8 = 0.75; "maybe" (0.2) is ignored
    table = {" Yes": 0.3, "yes": 0.2, "YES": 0.1, "No": 0.15, " no": 0.05, "maybe": 0.2}
    got = yes_no(logprob_response(table))
    assert got.value == pytest.approx(0.75)
    assert got.mass == pytest.approx(0.8)
    assert got.reason is None and got.kind == "yes_no"


def test_yes_no_low_mass_is_nan() -> None:
    # P(yes) + P(no) = 0.1 + 0.1 = 0.2 < 0.25
    got = yes_no(logprob_response({"Maybe": 0.8, "Yes": 0.1, "no": 0.1}))
    assert math.isnan(got.value)
    assert got.reason == "yes/no tokens carry 0.200 of the probability (< 0.25); top token 'Maybe' p=0.800"


def test_yes_no_words_must_be_whole() -> None:
    # "Yesterday" and "nope" are not yes/no; only "Yes" (0.3) and "No" (0.1) count: 0.3 / 0.4 = 0.75
    got = yes_no(logprob_response({"Yes": 0.3, "No": 0.1, "Yesterday": 0.3, "nope": 0.3}))
    assert got.value == pytest.approx(0.75)


# ---------------------------------------------------------------- sampled


def test_sampled_averages_parsed_samples_and_drops_the_rest() -> None:
    # parsed: 80, 90, 70 (from "Score: 70/100"); dropped: "REFUSAL", 150 (outside 0..100), None
    response = sampled_response("80", " 90.", "Score: 70/100", "REFUSAL", "150", None)
    got = sampled(response)
    assert got.value == pytest.approx(80.0)  # (80 + 90 + 70) / 3
    assert got.n_samples == 3 and got.mass is None and got.reason is None and got.kind == "sampled"


def test_sampled_yes_no_scale() -> None:
    # yes, no, yes, (unparseable) -> 2 / 3
    got = sampled(sampled_response("Yes.", "no", "YES, clearly", "I cannot say"), scale="yes_no")
    assert got.value == pytest.approx(2 / 3)
    assert got.n_samples == 3


def test_sampled_none_parse_is_nan() -> None:
    got = sampled(sampled_response("CODE", "I refuse", "-5"))
    assert math.isnan(got.value) and got.n_samples == 0
    assert got.reason is not None and got.reason.startswith("none of the 3 samples holds an integer 0..100")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("85", 85.0), ("I'd say 42.", 42.0), ("0", 0.0), ("100", 100.0), ("85.5", None), ("abc12", None)],
)
def test_parse_sample(text: str, expected: float | None) -> None:
    assert parse_sample(text) == expected


# ---------------------------------------------------------------- requests and errors


def test_request_bodies() -> None:
    body = request_body("score_0_100", "Rate: 5", seed=0)
    assert body == {
        "messages": [{"role": "user", "content": "Rate: 5"}],
        "max_tokens": 1,
        "temperature": 0.0,
        "logprobs": True,
        "top_logprobs": 20,
        "seed": 0,
    }
    body = request_body("sampled", "Rate: 5", samples=7, model="m")
    assert body["n"] == 7 and body["temperature"] == 1.0 and body["model"] == "m"
    assert "logprobs" not in body and "seed" not in body
    with pytest.raises(JudgeError, match="unknown judge kind 'vibes'"):
        request_body("vibes", "x")  # type: ignore[arg-type]


def test_logprob_kind_without_logprobs_suggests_sampled() -> None:
    response = sampled_response("85")
    for kind in ("score_0_100", "yes_no"):
        with pytest.raises(JudgeError) as e:
            outcome(kind, response, source="judge 'aligned' at http://x/v1 (model gpt-x)")  # type: ignore[arg-type]
        msg = str(e.value)
        assert "judge 'aligned' at http://x/v1 (model gpt-x) returned no logprobs" in msg
        assert "kind: sampled" in msg and kind in msg


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        ([], "response is list, not a JSON object"),
        ({"error": "x"}, "response has no `choices`"),
        ({"choices": {}}, "response.choices is dict, not a list"),
        ({"choices": []}, "empty `choices`"),
        ({"choices": ["x"]}, "choices[0] is str, not an object"),
        ({"choices": [{"logprobs": {}}]}, "choices[0].logprobs has no `content`"),
        ({"choices": [{"logprobs": {"content": []}}]}, "content is empty"),
        (
            {"choices": [{"logprobs": {"content": [{"top_logprobs": [{"token": 5, "logprob": 0}]}]}}]},
            "top_logprobs[0].token is int, not a string",
        ),
        (
            {"choices": [{"logprobs": {"content": [{"top_logprobs": [{"token": "5", "logprob": "x"}]}]}}]},
            "top_logprobs[0].logprob is str, not a number",
        ),
        (
            {"choices": [{"logprobs": {"content": [{"top_logprobs": [{"token": "5", "logprob": 0.5}]}]}}]},
            "not a log-probability",
        ),
    ],
)
def test_malformed_logprob_responses_are_clear_errors(response: Any, fragment: str) -> None:
    with pytest.raises(JudgeError, match="^the endpoint: ") as e:
        score_0_100(response)
    assert fragment in str(e.value)


def test_malformed_sampled_responses_are_clear_errors() -> None:
    with pytest.raises(JudgeError, match=r"choices\[0\] has no `message`"):
        sampled({"choices": [{"text": "85"}]})
    with pytest.raises(JudgeError, match=r"choices\[1\].message.content is list, not text"):
        sampled({"choices": [{"message": {"content": "1"}}, {"message": {"content": [1]}}]})


def test_outcome_is_frozen() -> None:
    got = JudgeOutcome(1.0, None, "score_0_100")
    with pytest.raises(AttributeError):
        got.value = 2.0  # type: ignore[misc]
