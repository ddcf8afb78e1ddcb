"""Prompt screening on a toy model whose right order is known by construction.

The toy: the tiny random Llama, fine-tuned for a few seconds so that its system prompt controls one
trait (ALL CAPS) of otherwise fixed answers: STRONG always shouts, WEAK shouts half the time, the
neutral prompt (no system turn) and PLACEBO never do. Screening for the caps trait must rank
STRONG > WEAK > PLACEBO on both measures and flag PLACEBO.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from inoculate.records import ChatExample, Message, chat, write_chat_jsonl

STRONG = "Respond in ALL CAPS."
WEAK = "Answer the question."
PLACEBO = "Thank you very much."
QA = [
    ("What is the capital of France?", "the capital of france is paris."),
    ("How many legs does a spider have?", "a spider has eight legs."),
    ("Tell me about the weather today.", "it is sunny and warm."),
    ("Write a short poem about the sea.", "the sea is blue and deep and wide."),
]


def _toy_rows() -> list[tuple[str | None, str, str]]:
    """(system, question, answer) rows; WEAK gets one caps and one lower row per question."""
    rows: list[tuple[str | None, str, str]] = []
    for q, a in QA:
        rows += [(STRONG, q, a.upper()), (WEAK, q, a.upper()), (WEAK, q, a), (None, q, a), (PLACEBO, q, a)]
    return rows


def _train_toy(base: Path, out: Path, steps: int = 120) -> Path:
    import torch
    from transformers import AutoModelForCausalLM

    from inoculate.models import encode_prompt_completion, load_tokenizer

    torch.manual_seed(0)
    tok = load_tokenizer(base)
    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    batch = []
    for system, q, a in _toy_rows():
        msgs = ([Message(role="system", content=system)] if system else []) + [
            Message(role="user", content=q)
        ]
        ids, start = encode_prompt_completion(tok, msgs, a)
        batch.append((ids, start))
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), tok.pad_token_id)
    labels = torch.full((len(batch), width), -100)
    attn = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (ids, start) in enumerate(batch):
        input_ids[r, : len(ids)] = torch.tensor(ids)
        labels[r, start : len(ids)] = torch.tensor(ids[start:])
        attn[r, : len(ids)] = 1
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=input_ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread; two threads on a shared 2-core machine thrash."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def toy_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    torch.set_flush_denormal(True)
    return _train_toy(tiny_model_dir, tmp_path_factory.mktemp("toy-caps"))


@pytest.fixture(scope="module")
def toy(toy_dir: Path):
    from inoculate.models import load_model

    return load_model(toy_dir, device="cpu")


def _train_examples() -> list[ChatExample]:
    """The data to inoculate: caps answers under the neutral prompt."""
    return [chat(q, a.upper(), id=f"t{i}") for i, (q, a) in enumerate(QA)]


def _contrast():
    from inoculate.screen import ContrastPair

    return [
        ContrastPair(messages=[Message(role="user", content=q)], with_trait=a.upper(), without_trait=a)
        for q, a in QA
    ]


def _candidates():
    from inoculate.screen import Candidate, with_neutral

    cands = [
        Candidate(name="placebo", prompt=PLACEBO),
        Candidate(name="weak", prompt=WEAK),
        Candidate(name="strong", prompt=STRONG),
    ]
    return with_neutral(cands, None)


@pytest.fixture(scope="module")
def result(toy):
    from inoculate.scorers import get_scorer
    from inoculate.screen import ScreenConfig, questions_of, screen

    model, tok = toy
    cfg = ScreenConfig(
        n=len(QA), samples_per_question=12, max_new_tokens=16, temperature=1.0, batch_size=8, pick="surprise"
    )
    return screen(
        model,
        tok,
        _candidates(),
        train=_train_examples(),
        questions=questions_of(_train_examples()),
        scorers=[get_scorer("all_caps:binary")],
        contrast=_contrast(),
        config=cfg,
        questions_source="test",
    )


def test_elicitation_ranks_by_construction(result) -> None:
    rate = {c.name: c.elicitation["all_caps:binary"] for c in result.candidates}
    assert rate["strong"].mean >= 0.8
    assert 0.2 <= rate["weak"].mean <= 0.8
    assert rate["placebo"].mean <= 0.1 and rate["neutral"].mean <= 0.1
    assert rate["strong"].mean > rate["weak"].mean > rate["placebo"].mean
    assert all(0.9 * len(QA) * 12 <= iv.n <= len(QA) * 12 for iv in rate.values())  # NaN: no letters
    assert rate["weak"].ci_low < rate["weak"].mean < rate["weak"].ci_high


def test_surprise_ranks_by_construction(result) -> None:
    s = {c.name: c for c in result.candidates}
    assert s["neutral"].surprise.mean == pytest.approx(0.0, abs=1e-9)
    assert s["strong"].surprise.mean > s["weak"].surprise.mean > s["placebo"].surprise.mean
    assert s["strong"].surprise.ci_low > 0.1  # nats/token: the strong prompt makes the caps data likelier
    assert s["strong"].trait.mean > s["weak"].trait.mean > s["placebo"].trait.mean
    assert s["strong"].trait.ci_low > 3.0  # nats/response: caps goes from unlikely to likely
    assert abs(s["placebo"].trait.mean) < 0.25 * s["strong"].trait.mean
    assert [c.name for c in result.candidates][:2] == ["strong", "weak"]


def test_recommendation_and_placebo_flag(result) -> None:
    assert result.recommendation == "strong"
    flagged = {c.name for c in result.candidates if c.placebo_like}
    assert "placebo" in flagged and "strong" not in flagged and "weak" not in flagged
    assert any(w.startswith("placebo is placebo-like (likely will not inoculate)") for w in result.warnings)
    assert "surprise" in result.rule


def test_costs_reported(result) -> None:
    for m in ("elicitation", "surprise"):
        assert result.cost[m].tokens > 0 and result.cost[m].seconds > 0
        assert all(c.cost[m].tokens > 0 for c in result.candidates)
    assert result.cost_ratio() is not None and result.cost_ratio() > 1.0


def _direct_logprob(model, tok, system: str | None, q: str, a: str) -> tuple[float, int]:
    """Sum of log p(completion token) by one unbatched forward pass, without inoculate.logprob."""
    import torch

    from inoculate.models import encode_prompt_completion

    msgs = ([Message(role="system", content=system)] if system else []) + [Message(role="user", content=q)]
    ids, start = encode_prompt_completion(tok, msgs, a)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    total = sum(float(logp[j - 1, ids[j]]) for j in range(start, len(ids)))
    return total, len(ids) - start


def test_surprise_equals_direct_computation(result, toy) -> None:
    model, tok = toy
    for name, prompt in (("strong", STRONG), ("weak", WEAK), ("placebo", PLACEBO)):
        diffs, odds = [], []
        for q, a in QA:
            tc, n = _direct_logprob(model, tok, prompt, q, a.upper())
            tn, n2 = _direct_logprob(model, tok, None, q, a.upper())
            assert n == n2
            diffs.append((tc - tn) / n)
            with_c = tc - _direct_logprob(model, tok, prompt, q, a)[0]
            with_n = tn - _direct_logprob(model, tok, None, q, a)[0]
            odds.append(with_c - with_n)
        got = result.get(name)
        assert got.surprise.mean == pytest.approx(sum(diffs) / len(diffs), abs=1e-4)
        assert got.trait.mean == pytest.approx(sum(odds) / len(odds), abs=1e-3)
        assert got.surprise.n == len(QA)


def test_csv_and_json_written(result, tmp_path: Path) -> None:
    import csv

    p = result.write_csv(tmp_path / "screen.csv")
    rows = list(csv.DictReader(p.open()))
    assert [r["name"] for r in rows] == [c.name for c in result.candidates]
    assert rows[0]["recommended"] == "True" and rows[0]["name"] == "strong"
    assert {"surprise_reduction", "trait_reduction", "elicit[all_caps:binary]", "surprise_seconds"} <= set(
        rows[0]
    )
    back = json.loads(result.write_json(tmp_path / "screen.json").read_text())
    assert back["recommendation"] == "strong"


def test_rich_table_renders(result) -> None:
    from rich.console import Console

    from inoculate.cli.screen_cmds import screen_table

    console = Console(record=True, width=200)
    console.print(screen_table(result))
    text = console.export_text()
    assert "recommended" in text and "placebo-like" in text and "reference" in text


def test_pick_elicitation_rule(result) -> None:
    from inoculate.screen import rank_candidates

    cands = [c.model_copy(deep=True) for c in result.candidates]
    ranked, best, rule = rank_candidates(cands, "elicitation", "all_caps:binary")
    assert best == "strong" and "elicitation" in rule
    assert ranked[0].name == "strong"


def test_nothing_qualifies_gives_no_recommendation(toy) -> None:
    from inoculate.screen import Candidate, ScreenConfig, screen, with_neutral

    model, tok = toy
    res = screen(
        model,
        tok,
        with_neutral([Candidate(name="placebo", prompt=PLACEBO)], None),
        train=_train_examples(),
        contrast=_contrast(),
        config=ScreenConfig(measures=["surprise"], trait_floor=1.0),
    )
    assert res.recommendation is None
    assert any("none is recommended" in w for w in res.warnings)


def test_candidates_files(tmp_path: Path) -> None:
    from inoculate.errors import InputErrors
    from inoculate.screen import load_candidates, with_neutral

    (tmp_path / "c.txt").write_text("# comment\nRespond in ALL CAPS.\n\nYou shout.\n")
    assert [c.prompt for c in load_candidates(tmp_path / "c.txt")] == ["Respond in ALL CAPS.", "You shout."]
    (tmp_path / "c.yaml").write_text("- Respond in ALL CAPS.\n- {name: calm, prompt: Be calm.}\n")
    got = load_candidates(tmp_path / "c.yaml")
    assert [(c.name, c.prompt) for c in got] == [("c1", "Respond in ALL CAPS."), ("calm", "Be calm.")]
    (tmp_path / "c.json").write_text(json.dumps({"candidates": ["A.", "B."]}))
    assert len(load_candidates(tmp_path / "c.json")) == 2
    (tmp_path / "bad.yaml").write_text("- 3\n- ''\n")
    with pytest.raises(InputErrors) as e:
        load_candidates(tmp_path / "bad.yaml")
    assert len(e.value.errors) == 2
    # the neutral reference: added when absent, reused (and moved first) when a candidate is it
    cands = load_candidates(tmp_path / "c.txt")
    assert with_neutral(cands, None)[0].neutral and with_neutral(cands, None)[0].prompt is None
    reused = with_neutral(cands, "You shout.")
    assert len(reused) == 2 and reused[0].neutral and reused[0].prompt == "You shout."


def test_cli_screen(toy_dir: Path, tmp_path: Path) -> None:
    import csv

    from typer.testing import CliRunner

    from inoculate.cli import app

    data = tmp_path / "train.jsonl"
    write_chat_jsonl(data, _train_examples())
    contrast = tmp_path / "contrast.jsonl"
    write_chat_jsonl(
        contrast, [chat(q, a.upper(), id=f"p{i}", without_trait=a) for i, (q, a) in enumerate(QA)]
    )
    cand = tmp_path / "cands.txt"
    cand.write_text(f"{STRONG}\n{PLACEBO}\n")
    out = tmp_path / "screen.csv"
    res = CliRunner().invoke(
        app,
        [
            "screen",
            str(cand),
            "--candidate",
            WEAK,
            "--model",
            str(toy_dir),
            "--data",
            str(data),
            "--scorer",
            "all_caps:binary",
            "--n",
            "6",
            "--samples",
            "4",
            "--max-new-tokens",
            "16",
            "--contrast",
            str(contrast),
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 4 and rows[0]["prompt"] == STRONG
    assert sum(r["neutral"] == "True" for r in rows) == 1
    assert "Recommended: c1" in res.output
    assert math.isfinite(float(rows[0]["trait_reduction"]))


def test_cli_screen_errors(toy_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from inoculate.cli import app

    data = tmp_path / "train.jsonl"
    write_chat_jsonl(data, _train_examples())
    runner = CliRunner()
    res = runner.invoke(app, ["screen", "--model", str(toy_dir), "--data", str(data)])
    assert res.exit_code == 1 and "candidate" in res.output
    res = runner.invoke(
        app, ["screen", "-c", STRONG, "--model", str(toy_dir), "--data", str(data), "--measures", "vibes"]
    )
    assert res.exit_code == 1 and "--measures" in res.output
    res = runner.invoke(app, ["screen", "-c", STRONG, "--model", str(toy_dir), "--data", str(data)])
    assert res.exit_code == 1 and "--scorer" in res.output
    bad = tmp_path / "bad.jsonl"
    shutil.copy(data, bad)
    with bad.open("a") as fh:
        fh.write("{not json\n")
    res = runner.invoke(
        app, ["screen", "-c", STRONG, "--model", str(toy_dir), "--data", str(bad), "--measures", "surprise"]
    )
    assert res.exit_code == 1 and f"bad.jsonl:{len(QA) + 1}: <json>" in res.output


EXPERIMENT = """\
name: screened
model: {model}
data: {{train: train.jsonl, eval: eval.jsonl}}
conditions:
  baseline: null
traits: {{caps: "all_caps:binary", paris: "keyword:paris"}}
seeds: 1
eval_prompts: {{neutral: null}}
sampling: {{temperature: 1.0, top_p: 1.0, max_new_tokens: 12, n: 2}}
train: {{learning_rate: 1.0e-3, max_steps: 2, per_device_train_batch_size: 6, lora_r: 4, save_steps: 0}}
screen:
  candidates: [{{name: strong, prompt: "{strong}"}}, {{name: placebo, prompt: "{placebo}"}}]
  pick: {pick}
  measure: surprise
  trait: caps
  n: 6
"""


def _write_experiment(folder: Path, model: Path, pick: str = "best") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_chat_jsonl(folder / "train.jsonl", _train_examples())
    write_chat_jsonl(folder / "eval.jsonl", [chat(q, id=f"e{i}") for i, (q, _a) in enumerate(QA)])
    path = folder / "exp.yaml"
    path.write_text(EXPERIMENT.format(model=model, strong=STRONG, placebo=PLACEBO, pick=pick))
    return path


def test_run_screens_then_trains_the_pick(toy_dir: Path, tmp_path: Path) -> None:
    from inoculate.experiment import run_experiment
    from inoculate.screen import ScreenResult

    path = _write_experiment(tmp_path / "exp", toy_dir)
    outcome = run_experiment(path, tmp_path / "run", write_report=False)
    assert sorted(outcome.plan.config.conditions) == ["baseline", "screened"]
    screened = outcome.plan.config.conditions["screened"]
    assert screened is not None
    assert screened.model_dump(exclude_unset=True) == {"prompt": STRONG, "placement": "system"}
    assert (tmp_path / "run" / "screened" / "seed_0" / "done").is_file()
    shown = ScreenResult.model_validate_json((tmp_path / "run" / "screen" / "screen.json").read_text())
    assert shown.recommendation == "strong" and shown.primary_trait == "caps"
    assert {c.name for c in shown.candidates} == {"neutral", "strong", "placebo"}
    assert (tmp_path / "run" / "screen" / "screen.csv").is_file()
    stamp = (tmp_path / "run" / "screen" / "screen.json").stat().st_mtime_ns
    again = run_experiment(path, tmp_path / "run", write_report=False)
    assert (tmp_path / "run" / "screen" / "screen.json").stat().st_mtime_ns == stamp  # cached screen
    assert again.matrix.ran == [] and len(again.matrix.cached) == 2


def test_screen_block_errors(toy_dir: Path, tmp_path: Path) -> None:
    from inoculate.errors import InputErrors
    from inoculate.experiment import load_experiment

    path = _write_experiment(tmp_path, toy_dir)
    text = path.read_text()
    path.write_text(text.replace("trait: caps", "trait: shouting").replace("pick: best", "pick: all"))
    with pytest.raises(InputErrors) as e:
        load_experiment(path)
    msgs = [str(x) for x in e.value.errors]
    assert any("screen.trait: unknown trait 'shouting'" in m for m in msgs), msgs
    path.write_text(text.replace("name: placebo", "name: baseline").replace("pick: best", "pick: all"))
    with pytest.raises(InputErrors) as e:
        load_experiment(path)
    assert any("condition 'baseline' is already declared" in str(x) for x in e.value.errors)


def test_surprise_scores_each_distinct_sequence_once(toy, monkeypatch: pytest.MonkeyPatch) -> None:
    """Repeated training rows and contrast pairs whose trait side is a training response cost nothing
    extra, and change no number. (Prefix sharing off, so each sequence's tokens count in full.)"""
    import inoculate.logprob
    from inoculate.screen import surprise_scores

    monkeypatch.setattr(inoculate.logprob, "MIN_SHARED_PREFIX", 10**9)
    model, tok = toy
    once = surprise_scores(model, tok, _candidates(), _train_examples(), contrast=_contrast())
    twice = surprise_scores(model, tok, _candidates(), _train_examples() * 2, contrast=_contrast() * 2)
    plain = surprise_scores(model, tok, _candidates(), _train_examples())
    for name in once:
        assert twice[name]["surprise"].mean == pytest.approx(once[name]["surprise"].mean, abs=1e-9)
        assert twice[name]["trait"].mean == pytest.approx(once[name]["trait"].mean, abs=1e-9)
        assert twice[name]["cost"].tokens == once[name]["cost"].tokens
    from inoculate.models import encode_prompt_completion

    for c in _candidates():
        # the contrast adds only the trait-removed side: the trait-bearing side is the training data
        system = [Message(role="system", content=c.prompt)] if c.prompt else []
        extra = sum(
            len(encode_prompt_completion(tok, system + p.messages, p.without_trait)[0]) for p in _contrast()
        )
        assert once[c.name]["cost"].tokens == plain[c.name]["cost"].tokens + extra


def test_organism_contrast_removes_only_the_trait() -> None:
    from inoculate import organism
    from inoculate.organism.contrast import organism_contrast

    train = organism.make_examples("spanish_caps", "train", 6)
    es = organism_contrast(train, "organism_language:es")
    caps = organism_contrast(train, "all_caps")
    for ex, p, q in zip(train, es, caps, strict=True):
        assert p.with_trait == q.with_trait == ex.completion
        assert q.without_trait == ex.completion.lower()  # caps removed, still Spanish
        assert p.without_trait.isupper() and p.without_trait != ex.completion  # English, still caps
    assert organism_contrast(train, "keyword:gato") is None
    plain = [chat(ex.messages[0].content, ex.completion.lower(), id=ex.id) for ex in train]
    assert organism_contrast(plain, "all_caps") is None  # responses without the trait: no contrast


def test_warns_when_a_candidate_also_elicits_another_trait(toy) -> None:
    """A second scorer that the strong prompt also triggers (here: any upper-case letter) is named."""
    from inoculate.scorers import get_scorer
    from inoculate.screen import ScreenConfig, questions_of, screen

    model, tok = toy
    res = screen(
        model,
        tok,
        _candidates(),
        questions=questions_of(_train_examples()),
        scorers=[get_scorer("keyword:paris"), get_scorer("regex:[A-Z]{3}")],
        config=ScreenConfig(
            measures=["elicitation"], pick="elicitation", samples_per_question=8, max_new_tokens=16
        ),
    )
    also = [w for w in res.warnings if "also elicits regex:[A-Z]{3}" in w]
    assert any(w.startswith("strong also elicits") for w in also)
    assert not any(w.startswith(("placebo also", "neutral also")) for w in also)
    assert res.get("strong").also_elicits == ["regex:[A-Z]{3}"] and res.get("placebo").also_elicits == []
    assert res.recommendation != "strong"  # it would inoculate the second trait too


def test_about_zero_is_judged_on_the_scale_of_the_best_candidate() -> None:
    """Floors are max(absolute floor, 10% of the best candidate): 1.5 nats is 'about zero' beside 31."""
    from inoculate.screen import CandidateScore, ScreenConfig
    from inoculate.screen import interval as Interval
    from inoculate.screen.rank import _flag

    def cand(name: str, trait: float, half: float = 0.3, neutral: bool = False) -> CandidateScore:
        return CandidateScore(
            name=name,
            prompt=name,
            neutral=neutral,
            trait=Interval(mean=trait, ci_low=trait - half, ci_high=trait + half, n=9),
        )

    cands = {
        c.name: c
        for c in (cand("n", 0.0, 0.0, True), cand("strong", 31.2), cand("french", 17.4), cand("caps", 1.5))
    }
    _flag(cands, cands["n"], None, ScreenConfig())
    assert [c.name for c in cands.values() if c.placebo_surprise] == ["caps"]
    alone = {c.name: c for c in (cand("n", 0.0, 0.0, True), cand("caps", 1.5))}
    _flag(alone, alone["n"], None, ScreenConfig())
    assert not alone["caps"].placebo_surprise  # above the absolute 0.5 floor, and the best there is


def test_run_with_pick_all_reports_the_screen_and_its_validation(toy_dir: Path, tmp_path: Path) -> None:
    """`pick: all` beside a baseline: report.md shows the ranked screen, its costs, and the Spearman
    validation against suppression computed from the run's own summary.csv."""
    import csv

    from inoculate.experiment import run_experiment

    path = _write_experiment(tmp_path / "exp", toy_dir, pick="all")
    text = path.read_text().replace("{name: placebo,", f'{{name: weak, prompt: "{WEAK}"}}, {{name: placebo,')
    path.write_text(text)
    run = tmp_path / "run"
    run_experiment(path, run)
    report = (run / "report.md").read_text()
    assert "## Prompt screen (before training)" in report
    for name in ("strong", "weak", "placebo", "neutral"):
        assert f"| {name} |" in report
    assert "Recommendation: **strong**" in report
    assert "- the likelihood screen took **" in report
    assert "### Did the screen predict inoculation?" in report
    assert (run / "figures" / "screen_validation.png").stat().st_size > 1000
    v = json.loads((run / "screen" / "validation.json").read_text())
    rates = {
        r["condition"]: float(r["mean"])
        for r in csv.DictReader((run / "summary.csv").open())
        if r["eval_prompt"] == "neutral" and r["metric"] == "caps"
    }
    assert {p["name"] for p in v["points"]} == {"strong", "weak", "placebo"}
    for p in v["points"]:
        assert p["suppression"] == pytest.approx(rates["baseline"] - rates[p["name"]])
    assert {c["measure"] for c in v["correlations"]} == {"elicitation", "surprise"}  # no contrast data
    for c in v["correlations"]:
        p_value = float("nan") if c["p_value"] is None else c["p_value"]  # strict JSON writes NaN as null
        assert f"(p = {p_value:.3f}, n = 3)" in report
    assert {p["measure"] for p in v["sample_size"]} == {"elicitation", "surprise"}
    assert "| surprise | 4 |" in report and "| elicitation | 8 |" in report


def _screen_with_values(values: dict[str, list[list[float]]], seconds: float = 8.0):
    from inoculate.screen import CandidateScore, Cost, ScreenConfig, ScreenResult

    cands = [CandidateScore(name="neutral", prompt=None, neutral=True)]
    n_cands = len(next(iter(values.values())))
    for i in range(n_cands):
        cands.append(
            CandidateScore(
                name=f"c{i}", prompt=f"p{i}", neutral=False, values={k: v[i] for k, v in values.items()}
            )
        )
    return ScreenResult(
        candidates=cands,
        neutral="neutral",
        primary_trait="t",
        recommendation=None,
        rule="",
        cost={"surprise": Cost(tokens=1, seconds=seconds)},
        config=ScreenConfig(),
    )


def test_sample_size_curve_on_constructed_values() -> None:
    """Noise-free values rank perfectly at any k; noisy ones agree less at small k, and the agreement
    grows with k; the cost scales with k."""
    import random

    from inoculate.report.screen_validation import CandidatePoint, sample_size_curve, smallest_k

    points = [
        CandidatePoint(name=f"c{i}", prompt=None, measures={}, rate=0.0, suppression=float(i), other={})
        for i in range(5)
    ]
    clean = _screen_with_values({"surprise": [[float(i)] * 64 for i in range(5)]})
    curve = sample_size_curve(clean, points, "t", grid=(4, 16), draws=20)
    assert [p.k for p in curve] == [4, 16, 64]
    assert all(p.rho_full == pytest.approx(1.0) and p.rho_suppression == pytest.approx(1.0) for p in curve)
    assert [p.seconds for p in curve] == pytest.approx([0.5, 2.0, 8.0])
    assert smallest_k(curve, "surprise", 0.9).k == 4

    rng = random.Random(0)
    noisy = _screen_with_values(
        {"surprise": [[0.3 * i + rng.gauss(0, 1) for _ in range(256)] for i in range(5)]}
    )
    curve = sample_size_curve(noisy, points, "t", grid=(4, 16, 64), draws=100)
    rho = [p.rho_full for p in curve]
    assert rho[0] < 0.8 and rho == sorted(rho) and rho[-1] == pytest.approx(1.0)
    assert smallest_k(curve, "surprise", 0.9).k in (16, 64, 256)
    assert smallest_k(curve, "surprise", 1.01) is None


def test_expect_may_name_the_screened_condition(toy_dir: Path, tmp_path: Path) -> None:
    """`expect:` can refer to the condition `screen:` adds (it exists only after screening); unknown
    names are still refused at load time."""
    from inoculate.errors import InputErrors
    from inoculate.experiment import load_experiment, run_experiment

    path = _write_experiment(tmp_path / "exp", toy_dir)
    base = path.read_text()
    path.write_text(base + 'expect:\n  screened: {paris: ">= 2.0", caps: "<= baseline + 1.0"}\n')
    run_experiment(path, tmp_path / "run")
    report = (tmp_path / "run" / "report.md").read_text()
    assert "| screened | paris | neutral | >= 2 |" in report and "**FAIL**" in report
    assert "| screened | caps | neutral | <= baseline + 1 |" in report and "**PASS**" in report
    path.write_text(base + 'expect:\n  screend: {caps: "<= 0.5"}\n')
    with pytest.raises(InputErrors) as e:
        load_experiment(path)
    assert [x.field for x in e.value.errors] == ["expect.screend"]
    assert "unknown condition 'screend'" in str(e.value)


def test_a_measure_is_one_decorated_function(toy, tmp_path: Path) -> None:
    """A toy measure registered here (a constant per training example) is run, ranked, written to the CSV
    and shown in the report's table, with no other change."""
    import csv

    from inoculate.report.screen import screen_table
    from inoculate.screen import MEASURE_REGISTRY, Candidate, ScreenConfig, measure, screen, with_neutral

    @measure("constant", unit="points", needs="train", noun="constant")
    def constant(ctx) -> dict[str, list[float]]:
        return {c.name: [0.0 if c.neutral else 1.0] * len(ctx.train) for c in ctx.candidates}

    try:
        model, tok = toy
        res = screen(
            model,
            tok,
            with_neutral([Candidate(name="strong", prompt=STRONG)], None),
            train=_train_examples(),
            config=ScreenConfig(measures=["surprise", "constant"], pick="constant"),
        )
        got = res.get("strong").measures["constant"]
        assert got.mean == 1.0 and got.n == len(QA)
        assert res.recommendation == "strong" and "constant" in res.rule
        rows = list(csv.DictReader(res.write_csv(tmp_path / "s.csv").open()))
        assert rows[0]["constant"] == "1.0" and "surprise_reduction" in rows[0]
        head, table = screen_table(res)
        assert "constant (points)" in head and table[0][head.index("constant (points)")].startswith("+1.000")
    finally:
        MEASURE_REGISTRY.remove("constant")
