"""Declared expectations (`expect:` in the experiment YAML) and their honest PASS/FAIL check.

An expectation names a condition, a metric (optionally `metric@eval_prompt`; the default eval prompt
is `neutral`) and a rule on the mean over seeds:

    "<= 0.10"                  absolute bound (also <, >=, >)
    ">= baseline - 0.10"       bound relative to another condition's mean on the same metric/prompt
    "within 0.10 of baseline"  |mean - baseline mean| <= 0.10
    "CI above abstract"        the 95% CI lies wholly above another condition's (low > its high)
    "CI below baseline"        the 95% CI lies wholly below another condition's (high < its low)

The reference may also be `base_model`: the untrained base model's mean under the same eval prompt
(one model, no seeds, so no CI: the CI rules need a condition).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

Op = Literal["<=", ">=", "<", ">", "within", "ci_above", "ci_below"]

_ABS = re.compile(r"^\s*(<=|>=|<|>)\s*([-+]?\d*\.?\d+(?:[eE][-+]?\d+)?)\s*$")
_REL = re.compile(r"^\s*(<=|>=|<|>)\s*([A-Za-z_][\w.-]*)\s*(?:([-+])\s*(\d*\.?\d+(?:[eE][-+]?\d+)?))?\s*$")
_WITHIN = re.compile(r"^\s*within\s+(\d*\.?\d+(?:[eE][-+]?\d+)?)\s+of\s+([A-Za-z_][\w.-]*)\s*$")
_CI = re.compile(r"^\s*CI\s+(above|below)\s+([A-Za-z_][\w.-]*)\s*$", re.IGNORECASE)

DEFAULT_EVAL_PROMPT = "neutral"
BASE_MODEL = "base_model"
"""The reserved reference name for the base model before fine-tuning (its elicitation in `base/`)."""


@dataclass(frozen=True)
class Rule:
    op: Op
    value: float
    """The bound, or the offset added to the reference condition's mean, or the `within` tolerance."""
    reference: str | None = None
    """Another condition whose mean the bound is relative to."""

    def describe(self) -> str:
        if self.op == "within":
            return f"within {self.value:g} of {self.reference}"
        if self.op in ("ci_above", "ci_below"):
            return f"CI {self.op[3:]} {self.reference}"
        if self.reference is None:
            return f"{self.op} {self.value:g}"
        if self.value == 0:
            return f"{self.op} {self.reference}"
        sign = "+" if self.value > 0 else "-"
        return f"{self.op} {self.reference} {sign} {abs(self.value):g}"


def parse_rule(text: str) -> Rule:
    """Parse one rule; raises ValueError with the accepted forms on anything else."""
    if not isinstance(text, str):
        raise ValueError(f"expected a rule string such as '<= 0.10', got {type(text).__name__}")
    m = _ABS.match(text)
    if m:
        return Rule(op=m.group(1), value=float(m.group(2)))  # type: ignore[arg-type]
    m = _WITHIN.match(text)
    if m:
        return Rule(op="within", value=float(m.group(1)), reference=m.group(2))
    m = _CI.match(text)
    if m:
        return Rule(op=f"ci_{m.group(1).lower()}", value=0.0, reference=m.group(2))  # type: ignore[arg-type]
    m = _REL.match(text)
    if m:
        offset = float(m.group(4)) if m.group(4) else 0.0
        if m.group(3) == "-":
            offset = -offset
        return Rule(op=m.group(1), value=offset, reference=m.group(2))  # type: ignore[arg-type]
    raise ValueError(
        f"cannot parse rule {text!r}; use '<= 0.10', '>= baseline - 0.10', 'within 0.10 of baseline' "
        "or 'CI above baseline'"
    )


def split_target(key: str, default_prompt: str = DEFAULT_EVAL_PROMPT) -> tuple[str, str]:
    """`"spanish@training"` -> ("spanish", "training"); `"spanish"` -> ("spanish", default_prompt)."""
    metric, _, prompt = key.partition("@")
    return metric.strip(), (prompt.strip() or default_prompt)


@dataclass(frozen=True)
class Verdict:
    condition: str
    metric: str
    eval_prompt: str
    rule: Rule
    observed: float
    """The condition's mean over seeds (nan when the run has no result for it)."""
    threshold: float
    """The bound the mean was compared with (for `within`, the reference mean; for `CI above`/`CI below`,
    the reference condition's CI bound the observed CI was compared with)."""
    passed: bool | None
    """None when it could not be checked (missing results)."""

    @property
    def status(self) -> str:
        return "MISSING" if self.passed is None else ("PASS" if self.passed else "FAIL")


def check(
    rule: Rule,
    observed: float,
    reference_mean: float | None,
    observed_ci: tuple[float, float] | None = None,
    reference_ci: tuple[float, float] | None = None,
) -> tuple[float, bool | None]:
    """Return (threshold, passed) for one rule against an observed mean (and, for the CI rules, the
    observed and reference 95% CIs; without them the rule cannot be checked)."""
    if rule.op in ("ci_above", "ci_below"):
        if observed_ci is None or reference_ci is None or any(map(math.isnan, (*observed_ci, *reference_ci))):
            return math.nan, None
        if rule.op == "ci_above":
            return reference_ci[1], observed_ci[0] > reference_ci[1]
        return reference_ci[0], observed_ci[1] < reference_ci[0]
    if rule.reference is not None:
        if reference_mean is None or math.isnan(reference_mean):
            return math.nan, None
        base = reference_mean
    else:
        base = 0.0
    if math.isnan(observed):
        return (base + rule.value if rule.op != "within" else base), None
    if rule.op == "within":
        return base, abs(observed - base) <= rule.value + 1e-12
    threshold = base + rule.value
    eps = 1e-12
    passed = {
        "<=": observed <= threshold + eps,
        ">=": observed >= threshold - eps,
        "<": observed < threshold,
        ">": observed > threshold,
    }[rule.op]
    return threshold, passed
