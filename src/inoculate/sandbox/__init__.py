"""Run untrusted Python (model-written code and its tests) isolated from the host; see docs/sandbox.md.

`run_tests(program, tests, setup, policy)` runs each test in a fresh process tree and returns one
`RunResult` per test (passed, reason, detail, captured output); `run_many` runs any requests in parallel.
"""

from inoculate.sandbox.isolation import Isolation, SandboxUnavailable, choose, detect
from inoculate.sandbox.policy import UNSAFE_ENV, SandboxPolicy, default_policy, set_default_policy
from inoculate.sandbox.run import Reason, RunRequest, RunResult, classify, run_many, run_one, run_tests

__all__ = [
    "UNSAFE_ENV",
    "default_policy",
    "set_default_policy",
    "Isolation",
    "Reason",
    "RunRequest",
    "RunResult",
    "SandboxPolicy",
    "SandboxUnavailable",
    "choose",
    "classify",
    "detect",
    "run_many",
    "run_one",
    "run_tests",
]
