"""LLM judges: an OpenAI-compatible endpoint, a prompt template and a scoring rule, usable wherever a scorer
is (the emergent-misalignment metrics of Betley et al. and Tan et al. need them).

- `kinds`: how a response becomes a number (`score_0_100`, `yes_no`, `sampled`) -> `JudgeOutcome`.
- `judge`: `Judge` (the judges-file entry), the judges registry, `load_judges_file`, and the scorer
  family `judge:NAME` (registered when this package is imported).
- `client` / `cache`: the concurrent, retrying endpoint client and its request-hash SQLite cache.

See docs/judges.md.
"""

from inoculate.judges.cache import JudgeCache
from inoculate.judges.client import CallResult, EndpointConfig, JudgeClient
from inoculate.judges.judge import (
    ENTRY_POINT_GROUP,
    Judge,
    JudgeClients,
    active_clients,
    add_stats,
    get_judge,
    judge_factory,
    judge_scorer,
    judges_in_scope,
    list_judges,
    load_judges_file,
    misaligned_description,
    misaligned_scorer,
    parse_judges,
    parse_misaligned_spec,
    question_text,
    register_judge,
    scoped_judges,
    unregister_judge,
    use_clients,
)
from inoculate.judges.kinds import (
    KINDS,
    MIN_MASS,
    TOP_LOGPROBS,
    JudgeError,
    JudgeOutcome,
    integer_token,
    parse_sample,
    request_body,
    sampled,
    score_0_100,
    yes_no,
)
from inoculate.judges.templates import JudgeTemplate, get_template, judge_template, list_templates

__all__ = [
    "ENTRY_POINT_GROUP",
    "KINDS",
    "MIN_MASS",
    "TOP_LOGPROBS",
    "active_clients",
    "add_stats",
    "CallResult",
    "EndpointConfig",
    "Judge",
    "JudgeCache",
    "JudgeClient",
    "JudgeClients",
    "JudgeError",
    "JudgeOutcome",
    "JudgeTemplate",
    "get_template",
    "judge_template",
    "list_templates",
    "get_judge",
    "integer_token",
    "judge_factory",
    "judge_scorer",
    "judges_in_scope",
    "list_judges",
    "load_judges_file",
    "misaligned_description",
    "misaligned_scorer",
    "parse_judges",
    "parse_misaligned_spec",
    "parse_sample",
    "question_text",
    "register_judge",
    "request_body",
    "sampled",
    "score_0_100",
    "scoped_judges",
    "unregister_judge",
    "use_clients",
    "yes_no",
]
