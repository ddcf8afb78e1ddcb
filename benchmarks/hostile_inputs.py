"""Hostile inputs against the `inoculate` CLI, black-box: what a bad input gets back.

    python benchmarks/hostile_inputs.py                          # this repo's src/
    python benchmarks/hostile_inputs.py --src /tmp/orig_tree/src # another source tree
    python benchmarks/hostile_inputs.py --json                   # one JSON object, for machines
    python benchmarks/hostile_inputs.py -k where -k regex        # only cases whose name has these

Each case builds its own input files in a fresh temp folder (nothing from the network, a hub or
../shared/data), then runs `python -m inoculate ...` as a subprocess with `--src` first on
PYTHONPATH, cwd inside that folder, HOME/caches in another, HF_HUB_OFFLINE=1, and a wall-clock
timeout (default 20 s; the process group is killed). Only model-free commands run: validate,
apply, neutralize, score, scorers, `run` with a YAML that must fail at load, and `report` on a
hand-made run folder. Outcomes:

- refused cleanly: exit 1 or 2, stderr's first line is `ERROR:` or a usage error, no `Traceback`,
  and nothing new in the temp folder (no output, manifest, errors file or temp file) and no input
  changed.
- traceback: `Traceback` in stdout or stderr.
- partial output: it failed, but left something new in the temp folder (or changed an input).
- hang: still running at the timeout.
- accepted: exit 0. For a hostile case that is a finding unless the case is marked as legitimately
  accepted (`ok` lists the outcomes that are fine for it).
- unclean failure: a non-zero exit that is none of the above (another code, a signal, or a
  message that is not `ERROR:`).

An outcome is picked in that order: a hang, then a traceback, then exit 0, then something written;
so a `run` case whose YAML got past load shows `traceback` or `partial output` with `[wrote runout...]`
(the base YAML's model is a hub id that cannot load offline: `control_yaml_passes_load` shows that).
A hang under parallel load is rerun alone before it is called a hang.

`output_dev_full` runs alone. Run as root, code that writes by temp file + rename replaces the
/dev/full device with a regular file (4581300 did: `[wrote /dev/full (REPLACED ...)]`); the harness
removes what the case left in /dev and makes the device node again (`dev_full_guard`).

Cases marked `new_flag` use a flag the code before the hardening lacked (4581300); they are skipped
when `--src` has no such flag (checked from `apply --help` / `neutralize --help`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
REFUSED, TRACEBACK, PARTIAL, HANG, ACCEPTED, UNCLEAN = (
    "refused cleanly",
    "traceback",
    "partial output",
    "hang",
    "accepted",
    "unclean failure",
)
OUTCOMES = (REFUSED, TRACEBACK, PARTIAL, HANG, ACCEPTED, UNCLEAN)

# --- inputs -----------------------------------------------------------------------------------------


def row(i: int, user: str = "hola", assistant: str = "HOLA", lang: str = "es") -> dict:
    return {
        "id": f"r{i}",
        "messages": [{"role": "user", "content": f"{user} {i}"}, {"role": "assistant", "content": assistant}],
        "metadata": {"lang": lang},
    }


def good_rows(n: int = 10) -> str:
    return "".join(json.dumps(row(i, lang="es" if i % 2 else "en")) + "\n" for i in range(n))


def write(d: Path, name: str, text: str | bytes) -> str:
    p = d / name
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8", errors="surrogatepass")
    return name


MSGS = '[{"role": "user", "content": "hola"}, {"role": "assistant", "content": "HOLA"}]'
DEEP = 10_000

# name -> (file content, legitimately accepted by validate/apply?)
BAD_JSONL: dict[str, tuple[str | bytes, bool]] = {
    "not_json": ("this is not json\n", False),
    "nan": ('{"id": "a", "messages": ' + MSGS + ', "metadata": {"lang": "es", "w": NaN}}\n', False),
    "infinity": ('{"id": "a", "messages": ' + MSGS + ', "metadata": {"lang": "es", "w": Infinity}}\n', False),
    "1e999": ('{"id": "a", "messages": ' + MSGS + ', "metadata": {"lang": "es", "w": 1e999}}\n', False),
    "lone_surrogate": (
        '{"id": "a", "messages": [{"role": "user", "content": "hi \\ud800"}, '
        '{"role": "assistant", "content": "HOLA"}], "metadata": {"lang": "es"}}\n',
        False,
    ),
    "duplicate_keys": (
        '{"id": "a", "messages": ' + MSGS + ', "messages": [], "metadata": {"lang": "es"}}\n',
        False,
    ),
    "deep_nesting": (
        '{"id": "a", "messages": '
        + MSGS
        + ', "metadata": {"lang": "es", "x": '
        + "[" * DEEP
        + "]" * DEEP
        + "}}\n",
        False,
    ),
    "invalid_utf8": (
        b'{"id": "a", "messages": [{"role": "user", "content": "caf\xe9 \xff\xfe"}, '
        b'{"role": "assistant", "content": "HOLA"}], "metadata": {"lang": "es"}}\n',
        False,
    ),
    "bom": ("\ufeff" + json.dumps(row(0)) + "\n", True),
    "empty_file": ("", False),
    "blank_only": ("\n   \n\t\n\n", False),
    "row_is_list": ("[1, 2, 3]\n", False),
    "messages_not_list": ('{"id": "a", "messages": "hola"}\n', False),
    "unknown_role": (
        '{"id": "a", "messages": [{"role": "wizard", "content": "hola"}, '
        '{"role": "assistant", "content": "HOLA"}]}\n',
        False,
    ),
    "tool_call": (
        json.dumps(
            {
                "id": "a",
                "messages": [
                    {"role": "user", "content": "weather?"},
                    {
                        "role": "assistant",
                        "content": None,
                        "tool_calls": [{"type": "function", "function": {"name": "w", "arguments": "{}"}}],
                    },
                    {"role": "tool", "content": "sunny"},
                    {"role": "assistant", "content": "SUNNY"},
                ],
            }
        )
        + "\n",
        False,
    ),
    "5mb_line": (json.dumps(row(0, user="x" * 5_000_000)) + "\n", True),
}

BASE_YAML = """\
name: hostile
model: nonexistent-org/nonexistent-model
data:
  train: train.jsonl
  eval: train.jsonl
conditions:
  baseline: null
  inoculated: {prompt: "Respond in Spanish.", placement: system}
traits:
  spanish: "language:es"
seeds: 1
eval_prompts:
  neutral: null
sampling: {temperature: 1.0, top_p: 1.0, max_new_tokens: 8, n: 1}
train: {max_steps: 1}
"""

LAUGHS = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n' + "".join(
    f"{b}: &{b} [{','.join(['*' + a] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi", strict=True)
)

# name -> YAML text (each must be refused at load: nothing written at --out)
BAD_YAML: dict[str, str] = {
    "negative_seed": BASE_YAML.replace("seeds: 1", "seeds: [-1]"),
    "seeds_1e9": BASE_YAML.replace("seeds: 1", "seeds: 1000000000"),
    "duplicate_key": BASE_YAML + "seeds: 2\n",
    "billion_laughs": BASE_YAML + "extra:\n" + "".join("  " + line + "\n" for line in LAUGHS.splitlines()),
    "recursive_alias": BASE_YAML.replace(
        "  baseline: null\n", "  baseline: &r {prompt: [*r], placement: system}\n"
    ),
    "condition_named_base": BASE_YAML.replace("  baseline: null\n", "  base: null\n"),
    "name_trailing_newline": BASE_YAML.replace("  baseline: null\n", '  "baseline\\n": null\n'),
    "experiment_name_escapes": BASE_YAML.replace("name: hostile", "name: ../../escaped"),
    "unknown_backend": BASE_YAML + "generation: {backend: no_such_backend}\n",
    "literal_api_key": BASE_YAML + "generation: {backend: openai_http, base_url: 'http://127.0.0.1:9', "
    "api_key: sk-live-0123456789abcdef}\n",
    "not_a_mapping": "- just\n- a list\n",
    "empty_yaml": "",
    "yaml_syntax_error": BASE_YAML + "traits: {spanish: [unclosed\n",
    "samples_1e9": BASE_YAML.replace("n: 1}", "n: 1000000000}"),
    "max_new_tokens_1e12": BASE_YAML.replace("max_new_tokens: 8", "max_new_tokens: 1000000000000"),
}

# --- cases ------------------------------------------------------------------------------------------


@dataclass
class Case:
    name: str
    kind: str
    build: Callable[[Path], list[str]]
    """Writes the inputs into the work folder; returns the arguments after `python -m inoculate`."""
    ok: frozenset[str] = frozenset({REFUSED})
    """Outcomes that are fine for this case (anything else is a finding)."""
    new_flag: str | None = None
    """A flag (`COMMAND --flag`) the case needs; skipped where `--src` lacks it."""
    timeout: float | None = None
    expected_new: tuple[str, ...] = ()
    """Paths (relative to the work folder) a legitimate acceptance writes; refusals must write none."""
    note: str = ""
    dev_full: bool = False
    """Writes at /dev/full: run alone, and check /dev after (see `dev_full_guard`)."""


CASES: list[Case] = []


def case(name: str, kind: str, **kw) -> Callable[[Callable[[Path], list[str]]], Callable[[Path], list[str]]]:
    def deco(fn: Callable[[Path], list[str]]) -> Callable[[Path], list[str]]:
        CASES.append(Case(name, kind, fn, **kw))
        return fn

    return deco


def _jsonl_cases() -> None:
    for name, (text, legit) in BAD_JSONL.items():
        ok = frozenset({REFUSED, ACCEPTED}) if legit else frozenset({REFUSED})

        def build_v(d: Path, text=text) -> list[str]:
            return ["validate", write(d, "in.jsonl", text)]

        def build_a(d: Path, text=text) -> list[str]:
            return ["apply", write(d, "in.jsonl", text), "-o", "out.jsonl", "--prompt", "Respond in Spanish."]

        CASES.append(Case(f"jsonl_{name}", "validate", build_v, ok=ok))
        CASES.append(Case(f"jsonl_{name}", "apply", build_a, ok=ok))


_jsonl_cases()


def _apply(d: Path, *extra: str, rows: str | None = None) -> list[str]:
    write(d, "in.jsonl", good_rows() if rows is None else rows)
    return ["apply", "in.jsonl", "-o", "out.jsonl", "--prompt", "Respond in Spanish.", *extra]


@case("output_is_directory", "apply")
def _(d: Path) -> list[str]:
    (d / "outdir").mkdir()
    return [*_apply(d)[:3], "outdir", "--prompt", "x"]


@case("output_under_regular_file", "apply")
def _(d: Path) -> list[str]:
    write(d, "file", "i am a file\n")
    return [*_apply(d)[:3], "file/out.jsonl", "--prompt", "x"]


@case("output_dev_full", "apply", dev_full=True)
def _(d: Path) -> list[str]:
    return [*_apply(d)[:3], "/dev/full", "--prompt", "x"]


@case("output_overwrites_input", "apply", note="-o IN: the clean data is replaced; refusing is a design call")
def _(d: Path) -> list[str]:
    write(d, "in.jsonl", good_rows())
    return ["apply", "in.jsonl", "-o", "in.jsonl", "--prompt", "x"]


@case("where_typo_operator", "apply")
def _(d: Path) -> list[str]:
    return _apply(d, "--where", 'lang = "es"')


@case("where_typo_field", "apply")
def _(d: Path) -> list[str]:
    return _apply(d, "--where", 'lnag == "es"')


@case("where_5000_nots", "apply")
def _(d: Path) -> list[str]:
    return _apply(d, "--where", "not " * 5000 + 'lang == "es"')


@case("where_bad_escape", "apply")
def _(d: Path) -> list[str]:
    return _apply(d, "--where", 'lang == "\\x"')


@case("regex_catastrophic", "apply", note="(a|a)+$ on 'a'*40+'b'")
def _(d: Path) -> list[str]:
    rows = good_rows(3) + json.dumps(row(99, user="a" * 40 + "b")) + "\n"
    return _apply(d, "--regex", "(a|a)+$", rows=rows)


@case("regex_unbalanced", "apply")
def _(d: Path) -> list[str]:
    return _apply(d, "--regex", "(unclosed")


@case("fraction_rounds_to_zero", "apply", note="--fraction 0.0001 on 10 rows")
def _(d: Path) -> list[str]:
    return _apply(d, "--fraction", "0.0001")


@case("fraction_above_one", "apply")
def _(d: Path) -> list[str]:
    return _apply(d, "--fraction", "1.5")


@case("fraction_nan", "apply")
def _(d: Path) -> list[str]:
    return _apply(d, "--fraction", "nan")


@case("empty_prompt", "apply")
def _(d: Path) -> list[str]:
    return ["apply", write(d, "in.jsonl", good_rows()), "-o", "out.jsonl", "--prompt", ""]


@case("template_without_user", "apply")
def _(d: Path) -> list[str]:
    return _apply(d, "--placement", "template", "--template", "{inoculation} only")


@case("prompt_file_jsonl_ambiguous", "apply", note="objects with two string fields, no --prompt-field")
def _(d: Path) -> list[str]:
    lines = [{"text": "Respond in Spanish.", "note": "v1"}, {"text": "Use Spanish.", "note": "v2"}]
    write(d, "prompts.jsonl", "".join(json.dumps(x) + "\n" for x in lines))
    return ["apply", write(d, "in.jsonl", good_rows()), "-o", "out.jsonl", "--prompt-file", "prompts.jsonl"]


@case("prompt_file_unknown_suffix", "apply")
def _(d: Path) -> list[str]:
    write(d, "prompts.csv", "prompt,weight\nRespond in Spanish.,1\n")
    return ["apply", write(d, "in.jsonl", good_rows()), "-o", "out.jsonl", "--prompt-file", "prompts.csv"]


@case("prompt_file_empty", "apply")
def _(d: Path) -> list[str]:
    write(d, "prompts.txt", "# only a comment\n\n")
    return ["apply", write(d, "in.jsonl", good_rows()), "-o", "out.jsonl", "--prompt-file", "prompts.txt"]


@case("config_billion_laughs", "apply")
def _(d: Path) -> list[str]:
    write(d, "cfg.yaml", "prompt: Respond in Spanish.\n" + LAUGHS)
    return ["apply", write(d, "in.jsonl", good_rows()), "-o", "out.jsonl", "--config", "cfg.yaml"]


@case("skip_invalid_all_bad", "apply")
def _(d: Path) -> list[str]:
    return _apply(d, "--skip-invalid", rows="not json\n[1]\n{}\n")


@case("missing_input_hub_id", "apply", note="offline: a name that looks like a hub id")
def _(d: Path) -> list[str]:
    return ["apply", "no-such-org/no-such-dataset", "-o", "out.jsonl", "--prompt", "x"]


@case("regex_timeout_negative", "apply", new_flag="apply --regex-timeout")
def _(d: Path) -> list[str]:
    return _apply(d, "--regex", "a", "--regex-timeout", "-1")


# neutralize: an honest apply run first (in-process here would import inoculate; use the CLI)


def _applied(d: Path, src: str, tag: str, prompt: str) -> str:
    rows = good_rows() if tag == "a" else good_rows(7)
    write(d, f"in_{tag}.jsonl", rows)
    out = f"applied_{tag}.jsonl"
    before = set(d.glob("*.manifest.json"))
    subprocess.run(
        [sys.executable, "-m", "inoculate", "apply", f"in_{tag}.jsonl", "-o", out, "--prompt", prompt],
        cwd=d,
        env=child_env(src, d),
        check=True,
        capture_output=True,
        timeout=60,
    )
    (manifest,) = set(d.glob("*.manifest.json")) - before  # OUT.manifest.json or OUT-stem.manifest.json
    manifest.rename(d / f"{out}.manifest.json")  # one name the cases below can use on every version
    return out


NEUTRALIZE: list[tuple[str, Callable[[Path, str], list[str]]]] = []


def _n_other_run(d: Path, src: str) -> list[str]:
    _applied(d, src, "a", "Respond in Spanish.")
    b = _applied(d, src, "b", "Answer in capitals.")
    return ["neutralize", b, "-o", "neutral.jsonl", "--manifest", "applied_a.jsonl.manifest.json"]


def _n_hash_differs(d: Path, src: str) -> list[str]:
    a = _applied(d, src, "a", "Respond in Spanish.")
    with open(d / a, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(row(77)) + "\n")
    return ["neutralize", a, "-o", "neutral.jsonl", "--manifest", a + ".manifest.json"]


def _n_manifest_garbage(d: Path, src: str) -> list[str]:
    a = _applied(d, src, "a", "Respond in Spanish.")
    write(d, a + ".manifest.json", '{"prompts": [1, 2, {"x": ')
    return ["neutralize", a, "-o", "neutral.jsonl", "--manifest", a + ".manifest.json"]


def _n_manifest_missing(d: Path, src: str) -> list[str]:
    a = _applied(d, src, "a", "Respond in Spanish.")
    return ["neutralize", a, "-o", "neutral.jsonl", "--manifest", "nope.manifest.json"]


def _n_output_is_input(d: Path, src: str) -> list[str]:
    a = _applied(d, src, "a", "Respond in Spanish.")
    return ["neutralize", a, "-o", a, "--manifest", a + ".manifest.json"]


NEUTRALIZE += [
    ("manifest_of_another_run", _n_other_run),
    ("manifest_output_hash_differs", _n_hash_differs),
    ("manifest_garbage_json", _n_manifest_garbage),
    ("manifest_missing", _n_manifest_missing),
    ("output_overwrites_input", _n_output_is_input),  # -o IN: replaces the inoculated file
]


@case("unknown_scorer", "score")
def _(d: Path) -> list[str]:
    return ["score", write(d, "in.jsonl", good_rows()), "-s", "no_such_scorer"]


@case("scorer_bad_arg", "score")
def _(d: Path) -> list[str]:
    return ["score", write(d, "in.jsonl", good_rows()), "-s", "language:not-a-language"]


@case("score_not_json", "score")
def _(d: Path) -> list[str]:
    return ["score", write(d, "in.jsonl", "not json\n"), "-s", "all_caps"]


@case("score_output_is_directory", "score")
def _(d: Path) -> list[str]:
    (d / "outdir").mkdir()
    return ["score", write(d, "in.jsonl", good_rows()), "-s", "all_caps", "-o", "outdir"]


@case("score_nan_metadata_seed", "score")
def _(d: Path) -> list[str]:
    rows = "".join(
        json.dumps(row(i)).replace('"metadata": {', '"metadata": {"seed": NaN, ') + "\n" for i in range(4)
    )
    return ["score", write(d, "in.jsonl", rows), "-s", "all_caps"]


@case("plugin_syntax_error", "scorers")
def _(d: Path) -> list[str]:
    return ["scorers", "--plugin", write(d, "plug.py", "def broken(:\n")]


@case("plugin_raises", "scorers")
def _(d: Path) -> list[str]:
    return ["scorers", "--plugin", write(d, "plug.py", "raise RuntimeError('plugin exploded')\n")]


@case("plugin_missing_module", "scorers")
def _(d: Path) -> list[str]:
    return ["scorers", "--plugin", "no_such_module_xyz"]


def _yaml_cases() -> None:
    for name, text in BAD_YAML.items():

        def build(d: Path, text=text, name=name) -> list[str]:
            write(d, "train.jsonl", good_rows())
            write(d, "exp.yaml", text)
            if name == "experiment_name_escapes":  # no --out: the default runs/<name> must not escape
                return ["run", "exp.yaml"]
            return ["run", "exp.yaml", "--out", "runout"]

        CASES.append(Case(name, "run", build))

    def control(d: Path) -> list[str]:
        write(d, "train.jsonl", good_rows())
        write(d, "exp.yaml", BASE_YAML)
        return ["run", "exp.yaml", "--out", "runout"]

    note = "control: BASE_YAML passes load, then fails on the offline model; so --out is written"
    CASES.append(Case("control_yaml_passes_load", "run", control, ok=frozenset({PARTIAL}), note=note))


_yaml_cases()

# report: a hand-made run folder (the layout tests/test_experiment_report.py writes), then broken


def make_run_folder(root: Path) -> None:
    cells = []
    for cond in ("baseline", "inoculated"):
        key = f"key-{cond}-0"
        cells.append({"condition": cond, "seed": 0, "key": key})
        d = root / cond / "seed_0"
        d.mkdir(parents=True)
        evals = {"neutral": {"spanish": {"mean": 0.9 if cond == "baseline" else 0.1, "n": 10, "n_nan": 0}}}
        (d / "metrics.json").write_text(json.dumps({"condition": cond, "seed": 0, "eval": evals}))
        (d / "done").write_text(json.dumps({"key": key}))
    experiment = {
        "name": "handmade",
        "conditions": ["baseline", "inoculated"],
        "condition_specs": {"baseline": None, "inoculated": None},
        "eval_prompts": {"neutral": None},
        "metrics": {"spanish": {"kind": "trait", "scorer": "language:es", "bounded": True}},
        "seeds": [0],
        "expect": {},
        "model": {"kind": "hf", "spec": "x", "path": "x", "identity": {"hub_id": "x"}},
        "data": {"n_train": 1, "n_eval": 1, "sha256": {"train": "t", "eval": "e"}},
        "sampling": {"temperature": 1.0},
        "train": {},
        "cells": cells,
    }
    (root / "experiment.json").write_text(json.dumps(experiment, indent=1))


REPORT_OUTPUTS = (
    "run/summary.csv",
    "run/per_seed.csv",
    "run/report.md",
    "run/figures",
    "run/.inoculate.lock",
)


@case(
    "control_valid_run_folder",
    "report",
    ok=frozenset({ACCEPTED}),
    expected_new=REPORT_OUTPUTS,
    note="control: the hand-made folder is a run",
)
def _(d: Path) -> list[str]:
    make_run_folder(d / "run")
    return ["report", "run"]


@case("experiment_json_truncated", "report")
def _(d: Path) -> list[str]:
    make_run_folder(d / "run")
    p = d / "run" / "experiment.json"
    p.write_text(p.read_text()[:150])
    return ["report", "run"]


@case("experiment_json_wrong_types", "report")
def _(d: Path) -> list[str]:
    make_run_folder(d / "run")
    p = d / "run" / "experiment.json"
    obj = json.loads(p.read_text())
    obj.update(cells="not a list", seeds={"a": 1}, conditions=7)
    p.write_text(json.dumps(obj))
    return ["report", "run"]


@case("metrics_json_garbage", "report", ok=frozenset({REFUSED, ACCEPTED}), expected_new=REPORT_OUTPUTS)
def _(d: Path) -> list[str]:
    make_run_folder(d / "run")
    (d / "run" / "inoculated" / "seed_0" / "metrics.json").write_bytes(b"\x00\xffgarbage{{{")
    return ["report", "run"]


@case("metrics_json_wrong_shape", "report", ok=frozenset({REFUSED, ACCEPTED}), expected_new=REPORT_OUTPUTS)
def _(d: Path) -> list[str]:
    make_run_folder(d / "run")
    p = d / "run" / "inoculated" / "seed_0" / "metrics.json"
    p.write_text(json.dumps({"eval": {"neutral": {"spanish": {"mean": "high", "n": -3}}}}))
    return ["report", "run"]


@case("report_on_empty_folder", "report")
def _(d: Path) -> list[str]:
    (d / "run").mkdir()
    return ["report", "run"]


@case("report_on_a_file", "report")
def _(d: Path) -> list[str]:
    return ["report", write(d, "run", "not a folder\n")]


# --- running ------------------------------------------------------------------------------------------


def child_env(src: str, work: Path) -> dict[str, str]:
    home = work.parents[3] / "home"  # outside the scanned tree (see run_case)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_", "OPENAI_"))}
    env.update(
        PYTHONPATH=src,
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        HF_HOME=str(home / ".cache" / "huggingface"),
        MPLCONFIGDIR=str(home / ".mpl"),
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PYTHONDONTWRITEBYTECODE="1",
        NO_COLOR="1",
        COLUMNS="200",
    )
    return env


def dev_full_guard(dev_before: set[str]) -> list[str]:
    """After a case that wrote at /dev/full: what it did to /dev, undone.

    Run as root, code that writes "atomically" (a temp file beside the target, then rename) replaces
    the /dev/full device node with a regular file and leaves OUT.manifest.json in /dev (4581300 did
    both). Anything new in /dev named *full* is removed, and /dev/full is made again as the device
    it was (character 1,7, mode 666), so one run of this harness cannot break the machine.
    """
    notes = []
    dev = Path("/dev")
    for name in sorted({p.name for p in dev.iterdir()} - dev_before):
        if "full" in name:
            (dev / name).unlink(missing_ok=True)
            notes.append(f"/dev/{name} (removed)")
    full = dev / "full"
    try:
        st = full.lstat()
        is_device = stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 7
    except FileNotFoundError:
        is_device = False
    if not is_device:
        full.unlink(missing_ok=True)
        os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        os.chmod(full, 0o666)
        notes.append("/dev/full (REPLACED by a regular file; device node restored)")
    return notes


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            try:
                st = p.lstat()
            except OSError:
                continue
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns) if n in filenames else (-1, 0)
    return out


@dataclass
class Result:
    name: str
    kind: str
    outcome: str
    finding: bool
    rc: int | None
    seconds: float
    message: str
    written: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    note: str = ""


EXC_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit|Warning)\b")


def first_line(stderr: str, stdout: str) -> str:
    """The message: stderr's first line, or for a traceback its last exception line."""
    if "Traceback" in stderr + stdout:
        text = stderr if "Traceback" in stderr else stdout
        lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(" ")]
        exc = [ln for ln in lines if EXC_LINE.match(ln)]
        return (exc or lines or ["Traceback"])[-1]
    for text in (stderr, stdout):
        for ln in text.splitlines():
            ln = ln.strip(" │╭╰─")
            if ln and not ln.startswith(("Usage:", "Try '")) and ln != "Error":
                return ln
    return ""


def is_usage_error(stderr: str) -> bool:
    return stderr.lstrip().startswith("Usage:") or "╭─ Error" in stderr


def run_case(c: Case, src: str, timeout: float) -> Result:
    with tempfile.TemporaryDirectory(prefix="hostile-") as tmp:
        # tmp/tree/a/b/work is the cwd; tmp/tree is scanned, so runs/../../x is still seen; HOME is tmp/home
        tree = Path(tmp) / "tree"
        work = tree / "a" / "b" / "work"
        work.mkdir(parents=True)
        (Path(tmp) / "home").mkdir()
        argv = c.build(work)
        before = snapshot(tree)
        dev_before = {p.name for p in Path("/dev").iterdir()} if c.dev_full else set()
        cmd = [sys.executable, "-m", "inoculate", *argv]
        t0 = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            cwd=work,
            env=child_env(src, work),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out_b, err_b = proc.communicate(timeout=c.timeout or timeout)
            hung = False
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out_b, err_b = proc.communicate()
            hung = True
        seconds = time.monotonic() - t0
        after = snapshot(tree)
        dev_notes = dev_full_guard(dev_before) if c.dev_full else []
    stdout = out_b.decode("utf-8", "replace")
    stderr = err_b.decode("utf-8", "replace")
    written = sorted(p for p in after if p not in before) + dev_notes
    changed = sorted(p for p in before if p in after and before[p] != after[p] and before[p][0] >= 0)
    expected = {str(Path("a/b/work") / e) for e in c.expected_new}
    unexpected = [p for p in written if not any(p == e or p.startswith(e + "/") for e in expected)]
    rc = proc.returncode
    if hung:
        outcome = HANG
    elif "Traceback" in stdout + stderr:
        outcome = TRACEBACK
    elif rc == 0:
        outcome = ACCEPTED
    elif written or changed:
        outcome = PARTIAL
    elif rc in (1, 2) and (stderr.lstrip().startswith("ERROR:") or is_usage_error(stderr)):
        outcome = REFUSED
    else:
        outcome = UNCLEAN
    if outcome == ACCEPTED and unexpected and c.expected_new:
        outcome_note = f"wrote unexpected {unexpected[:3]}"
    else:
        outcome_note = ""
    strip = "a/b/work/"
    return Result(
        name=c.name,
        kind=c.kind,
        outcome=outcome,
        finding=outcome not in c.ok,
        rc=None if hung else rc,
        seconds=round(seconds, 2),
        message=first_line(stderr, stdout),
        written=[p.removeprefix(strip) for p in written],
        changed=[p.removeprefix(strip) for p in changed],
        note="; ".join(x for x in (c.note, outcome_note) if x),
    )


def available_flags(src: str) -> set[str]:
    flags = set()
    for cmd in ("apply", "neutralize", "validate", "score", "run"):
        r = subprocess.run(
            [sys.executable, "-m", "inoculate", cmd, "--help"],
            env={**os.environ, "PYTHONPATH": src, "COLUMNS": "200", "NO_COLOR": "1"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        flags |= {f"{cmd} {w.strip('│ ,')}" for w in r.stdout.split() if w.strip("│ ,").startswith("--")}
    return flags


def all_cases(src: str) -> list[Case]:
    cases = list(CASES)
    for name, fn in NEUTRALIZE:
        cases.append(Case(name, "neutralize", lambda d, fn=fn: fn(d, src)))
    return cases


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", default=str(REPO / "src"), help="source tree for PYTHONPATH")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds per case before it counts as a hang")
    ap.add_argument("--jobs", type=int, default=min(4, os.cpu_count() or 1), help="cases run at once")
    ap.add_argument("-k", action="append", default=[], help="only cases whose name or kind contains this")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = ap.parse_args()
    src = str(Path(args.src).resolve())
    flags = available_flags(src)
    cases = [c for c in all_cases(src) if not args.k or any(k in f"{c.kind} {c.name}" for k in args.k)]
    skipped = [c for c in cases if c.new_flag and c.new_flag not in flags]
    cases = [c for c in cases if c not in skipped]
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        shared = [c for c in cases if not c.dev_full]
        done = dict(
            zip(map(id, shared), pool.map(lambda c: run_case(c, src, args.timeout), shared), strict=True)
        )
    done |= {id(c): run_case(c, src, args.timeout) for c in cases if c.dev_full}  # alone
    results = [done[id(c)] for c in cases]
    # a hang under parallel load may only be a slow start: rerun each alone before calling it a hang
    by_name = {(c.kind, c.name): c for c in cases}
    results = [
        r if r.outcome != HANG else run_case(by_name[r.kind, r.name], src, args.timeout) for r in results
    ]
    total = time.monotonic() - t0
    counts = Counter(r.outcome for r in results)
    findings = [r for r in results if r.finding]
    if args.json:
        print(
            json.dumps(
                {
                    "src": src,
                    "cases": len(results),
                    "skipped": [f"{c.kind} {c.name} (needs {c.new_flag})" for c in skipped],
                    "counts": {o: counts.get(o, 0) for o in OUTCOMES},
                    "findings": len(findings),
                    "seconds": round(total, 1),
                    "results": [r.__dict__ for r in results],
                },
                indent=1,
            )
        )
        return 0
    print(f"src: {src}")
    print(f"{'case':32} {'kind':10} {'outcome':16} {'ok?':7} {'rc':>4} {'s':>5}  first line of stderr")
    for r in results:
        msg = r.message if len(r.message) <= 90 else r.message[:87] + "..."
        more = "..." if len(r.written) > 2 else ""
        extra = f"  [wrote {', '.join(r.written[:2])}{more}]" if r.written else ""
        if r.changed:
            extra += f"  [changed {', '.join(r.changed[:2])}]"
        rc = "-" if r.rc is None else str(r.rc)
        verdict = "FINDING" if r.finding else "ok"
        print(f"{r.name:32} {r.kind:10} {r.outcome:16} {verdict:7} {rc:>4} {r.seconds:5.1f}  {msg}{extra}")
    print()
    print(f"inputs tried: {len(results)}" + (f" ({len(skipped)} skipped: flag absent)" if skipped else ""))
    for o in OUTCOMES:
        print(f"  {o:16} {counts.get(o, 0)}")
    print(f"findings (outcome not fine for the case): {len(findings)}; {total:.0f} s")
    for c in skipped:
        print(f"  skipped: {c.kind} {c.name} (needs {c.new_flag})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
