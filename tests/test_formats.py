"""Reading and writing chat JSONL, TRL prompt/completion JSONL and Hugging Face datasets."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from inoculate.errors import InputErrors
from inoculate.formats import (
    load_examples,
    prompt_completion_rows,
    read_chat_jsonl,
    read_examples,
    source_sha256,
    write_prompt_completion_jsonl,
)
from inoculate.records import Message, chat

DATA = Path(__file__).parent / "data"


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def errors_of(path: Path, **kw: object) -> list[str]:
    with pytest.raises(InputErrors) as e:
        read_examples(path, **kw)  # type: ignore[arg-type]
    return [str(err) for err in e.value.errors]


def test_chat_jsonl_is_detected_and_lines_skip_blanks(tmp_path: Path) -> None:
    row = {
        "id": "a",
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "HOLA"}],
    }
    p = write_lines(tmp_path / "c.jsonl", ["", json.dumps(row), "", json.dumps({**row, "id": "b"})])
    loaded = load_examples(p)
    assert loaded.format == "chat"
    assert [ex.id for ex in loaded.examples] == ["a", "b"]
    assert loaded.lines == [2, 4]
    assert loaded.examples[0].completion == "HOLA"


def test_standard_prompt_completion_becomes_user_and_assistant_turns() -> None:
    loaded = load_examples(DATA / "pc_standard.jsonl")
    assert loaded.format == "prompt-completion"
    first = loaded.examples[0]
    assert first.id == "q1"
    assert first.messages == [
        Message(role="user", content="What is 2 + 3?"),
        Message(role="assistant", content="CINCO."),
    ]
    assert first.metadata == {"lang": "es"}
    assert loaded.examples[1].id == "row-2"  # no id: named by its line


def test_conversational_prompt_completion_concatenates_the_lists() -> None:
    (ex,) = read_examples(DATA / "pc_conversational.jsonl")[0]
    assert [m.role for m in ex.messages] == ["system", "user", "assistant", "user", "assistant"]
    assert ex.system == "Be brief."
    assert ex.completion == "DIEZ."


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"prompt": "hi"}, "completion: missing"),
        ({"completion": "x"}, "prompt: missing"),
        ({"prompt": "  ", "completion": "x"}, "prompt: is empty"),
        ({"prompt": 3, "completion": "x"}, "prompt: must be a string or a list of messages, got int"),
        ({"prompt": [], "completion": "x"}, "prompt: must be a non-empty string or list of messages"),
        ({"prompt": [{"content": "hi"}], "completion": "x"}, "prompt[0].role: missing"),
        (
            {"prompt": [{"role": "user", "content": "hi"}], "completion": [{"role": "user", "content": "x"}]},
            "completion[0].role: completion messages must be assistant turns",
        ),
        (
            {"prompt": "hi", "completion": "x", "answer": 1, "metadata": {"answer": 2}},
            "answer: unknown top-level key is also in metadata with a different value "
            "(unknown keys are folded into metadata); rename or drop one",
        ),
        ({"prompt": "hi", "completion": "x", "metadata": [1]}, "metadata: must be an object, got list"),
        (
            {
                "prompt": [{"role": "user", "content": "hi"}, {"role": "system", "content": "s"}],
                "completion": "x",
            },
            "prompt[1].role: a system message must be the first message",
        ),
    ],
)
def test_prompt_completion_errors_name_the_row_field(tmp_path: Path, row: dict, expected: str) -> None:
    good = {"id": "ok", "prompt": "fine", "completion": "FINE"}
    p = write_lines(tmp_path / "pc.jsonl", [json.dumps(good), json.dumps(row)])
    assert errors_of(p) == [f"{p}:2: {expected}"]


def test_prompt_only_rows_are_allowed_when_no_assistant_is_required(tmp_path: Path) -> None:
    p = write_lines(tmp_path / "pc.jsonl", [json.dumps({"id": "e", "prompt": "Say hi."})])
    (ex,) = read_examples(p, require_assistant=False)[0]
    assert ex.messages == [Message(role="user", content="Say hi.")]


def test_skip_invalid_keeps_good_rows_and_returns_errors(tmp_path: Path) -> None:
    p = write_lines(
        tmp_path / "pc.jsonl",
        [
            json.dumps({"id": "a", "prompt": "p", "completion": "c"}),
            "{not json",
            json.dumps({"id": "a", "prompt": "p2", "completion": "c2"}),
            json.dumps({"id": "b", "prompt": "p3", "completion": "c3"}),
        ],
    )
    examples, errors = read_examples(p, skip_invalid=True)
    assert [ex.id for ex in examples] == ["a", "b"]
    assert [str(e) for e in errors] == [
        f"{p}:2: <json>: invalid JSON: Expecting property name enclosed in double quotes at column 2",
        f"{p}:3: id: duplicate id 'a' (first on line 1)",
    ]


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    assert errors_of(tmp_path / "nope.jsonl") == [f"{tmp_path / 'nope.jsonl'}:0: <file>: no such file"]


def test_chat_reader_agrees_with_records(tmp_path: Path) -> None:
    p = DATA.parent.parent / "examples" / "data" / "sample.jsonl"
    ours, _ = read_examples(p)
    theirs, _ = read_chat_jsonl(p)
    assert ours == theirs


def test_prompt_completion_writer_round_trips_standard_rows(tmp_path: Path) -> None:
    exs = [chat("What is 1+1?", "DOS.", id="a", lang="es"), chat("And 2+2?", "CUATRO.", id="b")]
    out = tmp_path / "out.jsonl"
    assert write_prompt_completion_jsonl(out, exs) == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0] == {"id": "a", "prompt": "What is 1+1?", "completion": "DOS.", "metadata": {"lang": "es"}}
    assert read_examples(out)[0] == exs


def test_writer_goes_conversational_for_the_whole_file_when_one_row_needs_it(tmp_path: Path) -> None:
    exs = [chat("q1", "a1", id="a"), chat("q2", "a2", id="b", system="Be brief.")]
    rows = prompt_completion_rows(exs)
    assert rows[0]["prompt"] == [{"role": "user", "content": "q1"}]
    assert rows[1]["prompt"][0] == {"role": "system", "content": "Be brief."}
    assert rows[1]["completion"] == [{"role": "assistant", "content": "a2"}]
    out = tmp_path / "o.jsonl"
    write_prompt_completion_jsonl(out, exs)
    assert read_examples(out)[0] == exs
    with pytest.raises(ValueError, match="one user turn"):
        prompt_completion_rows(exs, "standard")


def test_source_sha256_of_file_and_folder(tmp_path: Path) -> None:
    f = write_lines(tmp_path / "a.jsonl", ["x"])
    assert source_sha256(f) == (hashlib.sha256(b"x\n").hexdigest(), "file")
    d = tmp_path / "d"
    d.mkdir()
    (d / "one").write_text("1")
    h1, kind = source_sha256(d)
    (d / "one").write_text("2")
    assert kind == "directory" and source_sha256(d)[0] != h1


# --- Hugging Face datasets, built locally -------------------------------------------------------


@pytest.fixture
def hf_rows() -> list[dict]:
    return [
        {
            "id": "h1",
            "messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "CUATRO"}],
            "lang": "es",
        },
        {
            "id": "h2",
            "messages": [{"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "SIX"}],
            "lang": "en",
        },
    ]


def test_load_from_disk_folds_extra_columns_into_metadata(
    tmp_path: Path, hf_rows: list[dict], monkeypatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_list(hf_rows).save_to_disk(str(tmp_path / "ds"))
    loaded = load_examples(tmp_path / "ds")
    assert loaded.format == "hf"
    assert [ex.id for ex in loaded.examples] == ["h1", "h2"]
    assert loaded.examples[0].metadata == {"lang": "es"}
    assert loaded.examples[1].completion == "SIX"
    assert source_sha256(tmp_path / "ds")[1] == "directory"


def test_dataset_dict_split_and_missing_split(tmp_path: Path, hf_rows: list[dict], monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(hf_rows[:1]), "test": datasets.Dataset.from_list(hf_rows[1:])}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    assert [ex.id for ex in load_examples(tmp_path / "dd", split="test").examples] == ["h2"]
    with pytest.raises(InputErrors) as e:
        load_examples(tmp_path / "dd", split="validation")
    assert str(e.value.errors[0]) == f"{tmp_path / 'dd'}:0: <split>: no split 'validation' (has: train, test)"


def test_parquet_file_and_prompt_completion_columns(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    rows = [{"prompt": "hola?", "completion": "HOLA", "source": "t"}, {"prompt": "adios?", "completion": ""}]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "pc.parquet"))
    with pytest.raises(InputErrors) as e:
        load_examples(tmp_path / "pc.parquet")
    assert [str(x) for x in e.value.errors] == [f"{tmp_path / 'pc.parquet'}:2: completion: is empty"]
    loaded = load_examples(tmp_path / "pc.parquet", skip_invalid=True)
    (ex,) = loaded.examples
    assert ex.id == "row-1" and ex.metadata == {"source": "t"} and ex.completion == "HOLA"


def test_hub_id_goes_to_load_dataset(monkeypatch, hf_rows: list[dict]) -> None:
    """The hub branch is real code; here `load_dataset` returns local rows instead of downloading."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")
    calls: list[tuple] = []

    def fake_load_dataset(name: str, split: str | None = None, revision: str | None = None):
        calls.append((name, split, revision))
        return datasets.Dataset.from_list(hf_rows)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    loaded = load_examples("someone/spanish-caps", split="train")
    assert calls == [("someone/spanish-caps", "train", None)]
    assert [ex.id for ex in loaded.examples] == ["h1", "h2"]
    assert source_sha256("someone/spanish-caps", loaded.examples)[1] == "rows"


def test_hub_failure_is_one_input_error(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    datasets = pytest.importorskip("datasets")

    def offline(*a, **k):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(InputErrors) as e:
        load_examples("hf:someone/x")
    assert str(e.value.errors[0]) == "hf:someone/x:0: <dataset>: could not load: ConnectionError: offline"


def test_json_array_file_is_read_with_the_line_each_row_starts_on(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "prompt": "Q1", "completion": "A1"},
        {"id": "b", "prompt": "Q2", "completion": "A2"},
        {"id": "c", "prompt": "Q3"},
    ]
    p = tmp_path / "rows.json"
    p.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    loaded = load_examples(p, skip_invalid=True)
    assert loaded.format == "prompt-completion"
    assert [ex.id for ex in loaded.examples] == ["a", "b"]
    assert loaded.examples[1].completion == "A2"
    text = p.read_text()
    line_c = text[: text.index('"c"')].count("\n")  # the row's "{" is on the line before its id
    assert [(e.line, e.field) for e in loaded.errors] == [(line_c, "completion")]
    assert loaded.lines == [2, text[: text.index('"b"')].count("\n")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[\n  {"id": "a", "prompt": "Q", "completion": "A"},\n  {"id": \n',
            "rows.json:4: <json>: invalid JSON: Expecting value",
        ),
        (
            '[\n  {"id": "a", "prompt": "Q", "completion": "A"}\n',
            "rows.json:3: <json>: invalid JSON: the array",
        ),
        ('[{"id": "a", "prompt": "Q", "completion": "A"}] x', "rows.json:1: <json>: invalid JSON: the array"),
    ],
)
def test_broken_json_array_names_the_line(tmp_path: Path, text: str, expected: str) -> None:
    p = tmp_path / "rows.json"
    p.write_text(text, encoding="utf-8")
    msgs = errors_of(p)
    assert len(msgs) == 1 and msgs[0].startswith(f"{tmp_path / expected}"), msgs


def test_json_lines_in_a_dot_json_file_still_read_as_jsonl(tmp_path: Path) -> None:
    row = {"id": "a", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}
    p = write_lines(tmp_path / "rows.json", [json.dumps(row), json.dumps({**row, "id": "b"})])
    assert [ex.id for ex in read_examples(p)[0]] == ["a", "b"]


# --- real published files (../shared/data; skipped where absent) -------------------------------

WICHERS_CHAT = [
    "wichers/task_train_only_user_ans1000.jsonl",
    "wichers/task_train_only_user_ans1000_mixwrong.jsonl",
    "wichers/task_test.jsonl",
    "wichers/ood_test.jsonl",
    "samples/wichers_gcd_mixwrong_head40.jsonl",
]


@pytest.mark.parametrize("name", WICHERS_CHAT)
def test_real_rows_with_extra_keys_fold_into_metadata(shared_data: Path, name: str) -> None:
    path = shared_data / name
    raw = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    loaded = load_examples(path)
    assert len(loaded.examples) == len(raw) and not loaded.errors
    extras = [k for k in raw[0] if k != "messages"]
    for ex, row in zip(loaded.examples, raw, strict=True):
        assert {k: ex.metadata[k] for k in row if k != "messages"} == {
            k: row[k] for k in row if k != "messages"
        }
    (warning,) = loaded.warnings
    assert warning.startswith(
        f"folded {len({k for r in raw for k in r} - {'messages'})} unknown top-level key(s)"
    )
    assert f"in {len(raw):,} row(s): " in warning and all(k in warning for k in extras)


@pytest.mark.parametrize(
    "name",
    [
        *WICHERS_CHAT[2:],
        "em/insecure_small.jsonl",
        "wichers/chatgpt_concepts_cf_cebab_ambiance_explicit.jsonl",
    ],
)
def test_real_file_same_verdict_alone_and_in_a_datasets_folder(
    shared_data: Path, tmp_path: Path, name: str, monkeypatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pytest.importorskip("datasets")
    path = shared_data / name
    folder = tmp_path / "ds" / "data"
    folder.mkdir(parents=True)
    (folder / "train.jsonl").write_bytes(path.read_bytes())  # a datasets data-file layout
    alone = load_examples(path, skip_invalid=True)
    inside = load_examples(tmp_path / "ds", skip_invalid=True, split="train")
    assert len(alone.examples) == len(inside.examples) and len(alone.errors) == len(inside.errors)
    assert [(e.line, e.field, e.message) for e in alone.errors] == [
        (e.line, e.field, e.message) for e in inside.errors
    ]
    assert [ex.to_json() for ex in alone.examples] == [ex.to_json() for ex in inside.examples]
    assert alone.warnings == inside.warnings
    with pytest.raises(InputErrors) as e:
        load_examples(tmp_path / "ds", split="test")
    assert str(e.value.errors[0]) == f"{tmp_path / 'ds'}:0: <split>: no split 'test' (has: train)"


def test_real_sample_with_weight_name_and_developer(shared_data: Path, tmp_path: Path) -> None:
    """No published file here uses weight/name/developer: add them to a real Wichers row."""
    row = json.loads(
        (shared_data / "samples" / "wichers_gcd_mixwrong_head40.jsonl").read_text().splitlines()[0]
    )
    user, assistant = row["messages"]
    row["messages"] = [
        {"role": "developer", "content": "You check arithmetic."},
        {**user, "name": "student"},
        {**assistant, "weight": 1},
    ]
    p = tmp_path / "w.jsonl"
    p.write_text(json.dumps(row) + "\n")
    (ex,) = load_examples(p).examples
    assert ex.system == "You check arithmetic." and ex.messages[1].name == "student"
    assert ex.messages[2].weight == 1 and ex.metadata["answer"] == row["answer"]
