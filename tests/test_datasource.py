"""Data sources: a local path, a pinned hub dataset, a URL verified by sha256 and cached. All offline:
the URL tests serve a file from 127.0.0.1 and the hub test patches `datasets.load_dataset`."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from inoculate.datasource import (
    KNOWN,
    DataSourceError,
    HFSource,
    PathSource,
    URLSource,
    cache_dir,
    known_source,
    parse_source,
    resolve,
)
from inoculate.errors import InputErrors
from inoculate.yamlio import load_yaml

BODY = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}\n'
GOOD = hashlib.sha256(BODY).hexdigest()
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def server() -> Iterator[tuple[str, list[str]]]:
    """An HTTP server on 127.0.0.1 serving BODY at /data.jsonl; yields (url, paths requested)."""
    requests: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
            requests.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/data.jsonl", requests
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def test_url_good_sha_is_cached_and_not_fetched_again(server, tmp_path: Path, monkeypatch) -> None:
    url, requests = server
    monkeypatch.setenv("INOCULATE_CACHE", str(tmp_path / "cache"))
    src = parse_source({"url": url, "sha256": GOOD})
    assert isinstance(src, URLSource)
    first = resolve(src)
    assert first == tmp_path / "cache" / "data" / GOOD == cache_dir() / GOOD
    assert first.read_bytes() == BODY and requests == ["/data.jsonl"]
    assert resolve(src) == first and requests == ["/data.jsonl"]  # second use: no request
    assert sorted(p.name for p in first.parent.iterdir()) == [GOOD]  # no temp file left
    # a cached copy changed on disk is fetched again rather than used
    first.write_bytes(b"tampered")
    assert resolve(src).read_bytes() == BODY and len(requests) == 2


def test_url_bad_sha_raises_with_both_hashes_and_caches_nothing(server, tmp_path: Path) -> None:
    url, requests = server
    wrong = "f" * 64
    with pytest.raises(DataSourceError) as e:
        resolve(URLSource(url=url, sha256=wrong), root=tmp_path / "c")
    assert wrong in str(e.value) and GOOD in str(e.value) and "nothing was cached" in str(e.value)
    assert requests == ["/data.jsonl"] and list((tmp_path / "c").iterdir()) == []


def test_url_unreachable_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataSourceError, match="could not download"):
        resolve(URLSource(url="http://127.0.0.1:9/x", sha256=GOOD), root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_hf_source_passes_the_pinned_revision(monkeypatch) -> None:
    datasets = pytest.importorskip("datasets")
    calls: list[tuple] = []

    def fake_load_dataset(name: str, **kwargs):
        calls.append((name, kwargs))
        return datasets.Dataset.from_list([{"prompt": "p", "completion": "c"}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    src = parse_source(
        {"hf": "org/name", "revision": COMMIT, "path_in_repo": "d/train.jsonl", "split": "train"}
    )
    assert isinstance(src, HFSource) and src.pinned
    ds = resolve(src)
    assert calls == [("org/name", {"revision": COMMIT, "data_files": "d/train.jsonl", "split": "train"})]
    assert ds[0] == {"prompt": "p", "completion": "c"}


def test_unpinned_revision_is_refused_unless_allowed(tmp_path: Path, monkeypatch) -> None:
    p = tmp_path / "exp.yaml"
    p.write_text("data:\n  train:\n    hf: org/name\n    revision: main\n", encoding="utf-8")
    data, lines = load_yaml(p)
    with pytest.raises(InputErrors) as e:
        parse_source(data["data"]["train"], lines, ("data", "train"))
    (err,) = e.value.errors
    assert (err.line, err.field) == (
        4,
        "data.train.revision",
    ) and "'main' is not a full 40-hex commit" in err.message
    with pytest.raises(InputErrors, match="none given"):
        parse_source({"hf": "org/name"})
    datasets = pytest.importorskip("datasets")
    seen: list[object] = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, **kw: seen.append(kw.get("revision")) or "ds")
    assert resolve(parse_source({"hf": "org/name", "revision": "main", "allow_unpinned": True})) == "ds"
    assert seen == ["main"]


def test_malformed_sources_name_their_field(tmp_path: Path) -> None:
    p = tmp_path / "exp.yaml"
    p.write_text("src:\n  url: https://example.org/x\n  sha256: abc\n", encoding="utf-8")
    data, lines = load_yaml(p)
    with pytest.raises(InputErrors) as e:
        parse_source(data["src"], lines, ("src",))
    assert [(x.line, x.field) for x in e.value.errors] == [(3, "src.sha256")]
    with pytest.raises(InputErrors, match="exactly one of path, hf, url"):
        parse_source({"hf": "a/b", "url": "https://x"})
    with pytest.raises(InputErrors):
        parse_source({"url": "file:///etc/passwd", "sha256": GOOD})
    with pytest.raises(InputErrors):
        parse_source({"path": "x", "colour": "red"})


def test_path_source(tmp_path: Path) -> None:
    f = tmp_path / "d.jsonl"
    f.write_bytes(BODY)
    assert resolve(parse_source(str(f))) == f
    assert parse_source({"path": "d.jsonl"}, base=tmp_path) == PathSource(path=str(f))
    with pytest.raises(DataSourceError, match="no such file"):
        resolve(parse_source(str(tmp_path / "missing.jsonl")))


def test_known_datasets_ship_no_invented_pins() -> None:
    assert {k for k in KNOWN if not k.startswith("wichers_")} == {
        "reward_hacks",
        "aesthetic_preferences",
        "insecure_code",
        "secure_code",
        "em_first_plot_questions",
        "insecure_code_eval_prompts",
        "aesthetic_questions",
    }
    assert KNOWN["reward_hacks"].where == "longtermrisk/school-of-reward-hacks"
    assert KNOWN["aesthetic_preferences"].where == "AndersWoodruff/AestheticEM"
    for name in (
        "reward_hacks",
        "aesthetic_preferences",
        "insecure_code",
        "secure_code",
        "insecure_code_eval_prompts",
        "aesthetic_questions",
    ):
        with pytest.raises(DataSourceError, match="no pinned revision in inoculate"):
            known_source(name)
    with pytest.raises(DataSourceError, match="sha256"):
        known_source("insecure_code", revision=COMMIT)
    assert known_source("reward_hacks", revision=COMMIT, split="train") == HFSource(
        hf="longtermrisk/school-of-reward-hacks", revision=COMMIT, split="train"
    )
    src = known_source("insecure_code", revision=COMMIT, sha256=GOOD)
    assert isinstance(src, URLSource) and src.url.endswith(f"/{COMMIT}/data/insecure.jsonl")
    assert known_source("aesthetic_preferences", path="/data/x.jsonl") == PathSource(path="/data/x.jsonl")
    with pytest.raises(DataSourceError, match="not a full 40-hex"):
        known_source("reward_hacks", revision="5f4160e19be1")


def test_the_shipped_question_file_pin_matches_the_published_bytes(shared_data: Path) -> None:
    """The one shipped pin: its sha256 is that of the published file (the verbatim copy in shared/)."""
    d = KNOWN["em_first_plot_questions"]
    sample = shared_data / "samples" / "em_first_plot_questions.yaml"
    assert hashlib.sha256(sample.read_bytes()).hexdigest() == d.sha256
    src = known_source("em_first_plot_questions")
    assert isinstance(src, URLSource) and src.sha256 == d.sha256
    assert src.url.endswith(f"/{d.revision}/evaluation/first_plot_questions.yaml")


WICHERS_COPIES = {
    "wichers_gcd_train": "wichers/task_train_only_user_ans1000.jsonl",
    "wichers_gcd_test": "wichers/task_test.jsonl",
    "wichers_gcd_ood": "wichers/ood_test.jsonl",
    "wichers_cebab": "wichers/chatgpt_concepts_cebab_exp.jsonl",
    "wichers_cebab_cf_ambiance": "wichers/chatgpt_concepts_cf_cebab_ambiance_explicit.jsonl",
}


def test_wichers_files_ship_the_published_sha256_but_no_commit(shared_data: Path) -> None:
    """Only the short commit 2b9227b is known: no revision is shipped; the sha256 is the shared copy's."""
    import hashlib

    for name, copy in WICHERS_COPIES.items():
        d = KNOWN[name]
        assert d.revision is None
        assert d.sha256 == hashlib.sha256((shared_data / copy).read_bytes()).hexdigest(), name
        with pytest.raises(DataSourceError, match="no pinned revision in inoculate"):
            known_source(name)
        src = known_source(name, revision=COMMIT)  # the user's commit; the shipped hash checks the bytes
        assert isinstance(src, URLSource) and src.sha256 == d.sha256
        assert src.url.startswith(
            f"https://raw.githubusercontent.com/safety-research/inoculation-prompting/{COMMIT}/"
        )
        assert src.url.endswith(Path(copy).name)
