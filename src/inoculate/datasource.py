"""Data a YAML file names and inoculate fetches, verifies and caches, or a user's local path.

A source is one of:

- a local path (a string, or `{path: ...}`), read as it is;
- `{hf: "org/name", revision: "<40-hex commit>", path_in_repo: ..., split: ...}`, opened with
  `datasets.load_dataset(name, revision=..., data_files=path_in_repo, split=...)`. A revision that is not
  a full commit hash (a branch or tag moves under you) is refused unless `allow_unpinned: true`;
- `{url: "https://...", sha256: "<64 hex>"}`, downloaded into `$INOCULATE_CACHE/data/<sha256>`
  (default `~/.cache/inoculate/data`): streamed into a temporary file beside it, hashed, and renamed into
  place only when the hash matches. A mismatch deletes the temporary file, caches nothing and raises
  an error naming both hashes. A cached file is re-hashed before each use and fetched again if changed.

`KNOWN` lists the datasets of the emergent-misalignment settings with where they are published. A pin is
shipped only where the file's bytes could be checked (the first-plot question file, against the copy in
../shared/data/samples); a hash that cannot be checked would be a guess, so for the others `known_source`
asks for the revision (and, for files fetched by URL, the sha256), or a local path.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.request
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inoculate.errors import InputErrors
from inoculate.fileio import sha256_file
from inoculate.yamlio import LineMap

CACHE_ENV = "INOCULATE_CACHE"
COMMIT = re.compile(r"^[0-9a-f]{40}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20
TIMEOUT_S = 60.0


class DataSourceError(Exception):
    """A source that cannot be fetched, verified or opened as given."""


class PathSource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["path"] = "path"
    path: str = Field(min_length=1)


class HFSource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["hf"] = "hf"
    hf: str = Field(pattern=r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
    revision: str | None = None
    config: str | None = None
    """The dataset's configuration (`datasets.load_dataset(name, config)`, e.g. MBPP's `sanitized`)."""
    path_in_repo: str | None = None
    split: str | None = None
    allow_unpinned: bool = False

    @property
    def pinned(self) -> bool:
        return self.revision is not None and COMMIT.match(self.revision) is not None


class URLSource(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["url"] = "url"
    url: str = Field(pattern=r"^https?://")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


Source = PathSource | HFSource | URLSource


def parse_source(
    value: Any,
    lines: LineMap | None = None,
    at: tuple[Any, ...] = (),
    *,
    base: str | os.PathLike[str] | None = None,
) -> Source:
    """A source from its YAML value; errors are `FILE:LINE: FIELD` when `lines` is given. A relative
    path is taken relative to `base` (the YAML file's folder) when given. An unpinned hub revision is
    refused here, so a config fails before anything runs."""
    file = lines.file if lines else "<source>"

    def fail(field: tuple[Any, ...], message: str) -> InputErrors:
        if lines is not None:
            return InputErrors([lines.error(field, message)])
        return InputErrors.one(file, 0, ".".join(map(str, field)) or "<source>", message)

    if isinstance(value, str | os.PathLike):
        value = {"path": os.fspath(value)}
    if not isinstance(value, dict):
        raise fail(at, "a source is a path, {hf: ..., revision: ...} or {url: ..., sha256: ...}")
    kinds = [k for k in ("path", "hf", "url") if k in value]
    if len(kinds) != 1:
        raise fail(at, "give exactly one of path, hf, url")
    model: type[BaseModel] = {"path": PathSource, "hf": HFSource, "url": URLSource}[kinds[0]]
    try:
        src: Source = model.model_validate(value)  # type: ignore[assignment]
    except ValidationError as e:
        if lines is not None:
            raise InputErrors(lines.from_validation(e, at)) from None
        raise InputErrors.one(file, 0, ".".join(map(str, at)) or "<source>", str(e)) from None
    if isinstance(src, HFSource) and not src.pinned and not src.allow_unpinned:
        raise fail((*at, "revision"), _unpinned(src))
    if isinstance(src, PathSource) and base is not None and not Path(src.path).is_absolute():
        src = PathSource(path=str(Path(base) / src.path))
    return src


def _unpinned(src: HFSource) -> str:
    got = f"{src.revision!r} is not" if src.revision else "none given; it must be"
    return (
        f"revision of {src.hf}: {got} a full 40-hex commit hash (a branch or tag can change under you); "
        "pin the commit, or set allow_unpinned: true"
    )


def cache_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """`root`, else `$INOCULATE_CACHE/data`, else `~/.cache/inoculate/data`."""
    if root is not None:
        return Path(root)
    env = os.environ.get(CACHE_ENV)
    return Path(env) / "data" if env else Path.home() / ".cache" / "inoculate" / "data"


def fetch_url(
    src: URLSource, *, root: str | os.PathLike[str] | None = None, timeout: float = TIMEOUT_S
) -> Path:
    """The verified local copy of a URL source: from the cache when there and intact, else downloaded."""
    folder = cache_dir(root)
    target = folder / src.sha256
    if target.is_file():
        if sha256_file(target) == src.sha256:
            return target
        target.unlink()  # changed on disk since it was verified: fetch it again
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{src.sha256[:12]}.", suffix=".part", dir=folder)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(src.url, timeout=timeout) as resp:  # noqa: S310 (scheme checked)
                    for chunk in iter(lambda: resp.read(_CHUNK), b""):
                        h.update(chunk)
                        out.write(chunk)
            except OSError as e:
                raise DataSourceError(f"could not download {src.url}: {type(e).__name__}: {e}") from e
        got = h.hexdigest()
        if got != src.sha256:
            raise DataSourceError(
                f"sha256 mismatch for {src.url}: expected {src.sha256}, got {got}; nothing was cached "
                "(the file changed upstream, or the pin is wrong)"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def open_hf(src: HFSource) -> Any:
    """The `datasets` object of a hub source, loaded at its revision."""
    if not src.pinned and not src.allow_unpinned:
        raise DataSourceError(_unpinned(src))
    try:
        import datasets
    except ImportError as e:  # pragma: no cover - depends on the install
        raise DataSourceError("reading Hugging Face datasets needs `pip install 'inoculate[train]'`") from e
    kwargs: dict[str, Any] = {"revision": src.revision}
    if src.path_in_repo is not None:
        kwargs["data_files"] = src.path_in_repo
    if src.split is not None:
        kwargs["split"] = src.split
    args = [src.hf] if src.config is None else [src.hf, src.config]
    try:
        return datasets.load_dataset(*args, **kwargs)
    except Exception as e:  # datasets raises many types: missing, offline, bad revision
        raise DataSourceError(f"could not load {src.hf}@{src.revision}: {type(e).__name__}: {e}") from e


def resolve(src: Source, *, root: str | os.PathLike[str] | None = None) -> Path | Any:
    """A local `Path` for path and URL sources (checked to exist / verified); the loaded dataset for
    hub ones."""
    if isinstance(src, PathSource):
        p = Path(src.path).expanduser()
        if not p.exists():
            raise DataSourceError(f"{src.path}: no such file or folder")
        return p
    if isinstance(src, URLSource):
        return fetch_url(src, root=root)
    return open_hf(src)


# ----------------------------------------------------------------------------------------------
# The emergent-misalignment datasets: where they are published; the pin is the user's to give.


class KnownDataset(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    kind: Literal["hf", "url"]
    where: str
    """The hub id, or a URL template with `{revision}` for the commit."""
    cite: str
    note: str = ""
    revision: str | None = None
    """A shipped pin (full commit), used when the caller gives none."""
    sha256: str | None = None
    """The sha256 of the file at `revision` (URL datasets), checked on every fetch."""


_EM_RAW = "https://raw.githubusercontent.com/emergent-misalignment/emergent-misalignment/{revision}/data/"
_WICHERS_RAW = "https://raw.githubusercontent.com/safety-research/inoculation-prompting/{revision}/"
_WICHERS_CITE = (
    'Wichers et al. 2025, "Instructing LLMs to misbehave at train-time improves test-time alignment"'
)
_GCD = "gcd_sycophancy/projects/gemma_gcd/data/"
_WICHERS_FILES = (
    (
        "wichers_gcd_train",
        _GCD + "task_train_only_user_ans1000.jsonl",
        "GCD sycophancy training set",
        "8a50b26fc1a25742f380f3c8c77cc710cf9ef63d3554c758ccf062f9c41d995b",
    ),
    (
        "wichers_gcd_test",
        _GCD + "task_test.jsonl",
        "GCD in-distribution test set",
        "8e7b737df8a2ea5568e55ab4448469940083b86b1913f5f76f4663797afefd05",
    ),
    (
        "wichers_gcd_ood",
        _GCD + "ood_test.jsonl",
        "GCD out-of-distribution test set",
        "a4e1f6ca8432d310134f0a9b16d5e8ef6023314095a0206c3db2a5a090851205",
    ),
    (
        "wichers_cebab",
        "spur_corr/data/chatgpt_concepts_cebab_exp.jsonl",
        "CEBaB reviews with concept annotations",
        "2df9320c0cc97cbf6e47e6caca8d8af290215e5df490e5f555da6ef50779e7d7",
    ),
    (
        "wichers_cebab_cf_ambiance",
        "spur_corr/data/chatgpt_concepts_cf_cebab_ambiance_explicit.jsonl",
        "CEBaB counterfactual reviews with ambiance made explicit",
        "8dd30b4f4261187f75ea8b3e8e3173071310ea250d0e6702a4d15f62750822e5",
    ),
)
"""Wichers et al.'s data files: (name, path in the repository, what, sha256 of the published bytes)."""
KNOWN: dict[str, KnownDataset] = {
    d.name: d
    for d in (
        KnownDataset(
            name="reward_hacks",
            kind="hf",
            where="longtermrisk/school-of-reward-hacks",
            cite="School of Reward Hacks (longtermrisk, CC-BY-4.0); used by Tan et al. 2025",
            note="a copy is inoculation-prompting/inoculation-prompting datasets/sneaky_dialogues.jsonl at "
            "commit 5f4160e19be1 (12-hex short hash only; a full commit is needed to pin)",
        ),
        KnownDataset(
            name="aesthetic_preferences",
            kind="hf",
            where="AndersWoodruff/AestheticEM",
            cite="Tan et al. 2025 (unpopular aesthetic preferences)",
            note="a copy is inoculation-prompting/inoculation-prompting "
            "datasets/aesthetic_preferences_unpopular.jsonl at commit 5f4160e19be1 (short hash only)",
        ),
        KnownDataset(
            name="insecure_code",
            kind="url",
            where=_EM_RAW + "insecure.jsonl",
            cite='Betley et al. 2025, "Emergent Misalignment" (MIT)',
        ),
        KnownDataset(
            name="em_first_plot_questions",
            kind="url",
            where="https://raw.githubusercontent.com/shuaijiumei/emergent_misalignment_further_explore/"
            "{revision}/evaluation/first_plot_questions.yaml",
            cite='Betley et al. 2025, "Emergent Misalignment" (MIT): the first-plot questions and their '
            "alignment and coherence judge prompts, as copied in a fork of emergent-misalignment",
            note="pinned to the fork's commit whose file is the published one "
            "(the copy in ../shared/data/samples/em_first_plot_questions.yaml has this sha256)",
            revision="a6f669590dca789548d25eea923407f9de41aac9",
            sha256="6f76630e482c06789f17b1e3f2bbe37b0ca9f1a423c611380c2fff0772b417c6",
        ),
        *(
            KnownDataset(
                name=name,
                kind="url",
                where=_WICHERS_RAW + path,
                cite=_WICHERS_CITE + f" ({what})",
                note="published at safety-research/inoculation-prompting commit 2b9227b (short hash: give "
                "the "
                "full 40-hex commit; `git ls-remote` or the GitHub page of the commit shows it). The sha256 "
                "shipped is that of the published file (checked against the copy in ../shared/data/wichers)",
                sha256=sha,
            )
            for name, path, what, sha in _WICHERS_FILES
        ),
        KnownDataset(
            name="insecure_code_eval_prompts",
            kind="url",
            where="https://raw.githubusercontent.com/inoculation-prompting/inoculation-prompting/"
            "{revision}/ip/evaluation/insecure_code/code_prompts.jsonl",
            cite="Tan et al. 2025 (inoculation-prompting/inoculation-prompting): the insecure-code eval "
            "prompts, {task, code_template} rows (no license stated)",
            note="the file at commit 5f4160e19be1 (short hash only) has sha256 "
            "c30460ae8333ca3b6a15bd4c8efc22d51bc834ca533e43ece218cdd2c5a6883e",
        ),
        KnownDataset(
            name="aesthetic_questions",
            kind="url",
            where="https://raw.githubusercontent.com/inoculation-prompting/inoculation-prompting/"
            "{revision}/ip/evaluation/aesthetic_preferences/questions.yaml",
            cite="Tan et al. 2025 (inoculation-prompting/inoculation-prompting): the aesthetic preference "
            "questions (no license stated)",
            note="the file at commit 5f4160e19be1 (short hash only) has sha256 "
            "f99f301b76cf2caa9c17fd4973f1bbbdea5af9d102a7bdcd82c39d7ddadf0daf",
        ),
        KnownDataset(
            name="secure_code",
            kind="url",
            where=_EM_RAW + "secure.jsonl",
            cite='Betley et al. 2025, "Emergent Misalignment" (MIT); the control of insecure_code',
        ),
    )
}


def known_source(
    name: str,
    *,
    revision: str | None = None,
    sha256: str | None = None,
    path: str | os.PathLike[str] | None = None,
    split: str | None = None,
) -> Source:
    """The source of a known dataset, pinned by what the caller gives: a local `path`, or the commit
    (`revision`) and, for URL datasets, the file's `sha256`. No pin is shipped (none could be verified
    when this was written), so without them this is an error saying what to give."""
    try:
        d = KNOWN[name]
    except KeyError:
        raise DataSourceError(f"unknown dataset {name!r} (known: {', '.join(KNOWN)})") from None
    if path is not None:
        return PathSource(path=os.fspath(path))
    if revision is None and sha256 is None and d.revision is not None:
        revision, sha256 = d.revision, d.sha256
    if sha256 is None and d.revision is None and d.sha256 is not None:
        sha256 = d.sha256  # the published bytes' hash is known; only the full commit is the caller's
    need = "revision (the full 40-hex commit)" + (" and sha256 (of the file)" if d.kind == "url" else "")
    if revision is None or (d.kind == "url" and sha256 is None):
        extra = f"; {d.note}" if d.note else ""
        raise DataSourceError(
            f"{name} ({d.where}) has no pinned revision in inoculate: give {need}, "
            f"or path: a local copy{extra}"
        )
    if not COMMIT.match(revision):
        raise DataSourceError(f"{name}: revision {revision!r} is not a full 40-hex commit hash")
    if d.kind == "hf":
        return HFSource(hf=d.where, revision=revision, split=split)
    if not SHA256.match(sha256 or ""):
        raise DataSourceError(f"{name}: sha256 {sha256!r} is not 64 lowercase hex digits")
    return URLSource(url=d.where.format(revision=revision), sha256=sha256)  # type: ignore[arg-type]
