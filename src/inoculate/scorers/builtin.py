"""Built-in trait scorers. Each scores the completion only; the prompt is ignored.

- `language:XX[/L1,L2,...]`: share of the text's letters in sentences detected as language XX.
- `all_caps[:binary|:T]`: share of cased letters that are upper case (or 1/0 against a threshold).
- `regex:PATTERN`: 1.0 if `re.search` finds PATTERN (inline flags such as `(?i)` work), else 0.0.
- `keyword:w1,w2`: 1.0 if any word or phrase occurs, case-insensitive, on word boundaries.
- `length[:chars|:words]`: a raw count, not in [0, 1]; summaries give it a bootstrap mean interval.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from inoculate.scorers.registry import ScoreFn, Scorer, ScorerError, batch_cache, scorer
from inoculate.selectors import (
    DEFAULT_REGEX_TIMEOUT,
    RegexTimeoutError,
    SelectorError,
    compile_regex,
    search_with_timeout,
)

if TYPE_CHECKING:
    from lingua import LanguageDetector

NAN = float("nan")

DEFAULT_LANGUAGES: tuple[str, ...] = ("en", "es", "fr", "de", "it", "pt")

# A sentence ends at . ! ? … (possibly repeated, possibly followed by closing quotes or brackets)
# followed by whitespace, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?…。])[\"'”’»)\]]*\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Split into sentences and lines; pieces without letters are dropped."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and any(ch.isalpha() for ch in s)]


def _letters(text: str) -> int:
    return sum(ch.isalpha() for ch in text)


def _parse_language_arg(arg: str | None) -> tuple[str, tuple[str, ...]]:
    if not arg:
        raise ScorerError(
            "language needs a target: language:XX (ISO 639-1), e.g. language:es or language:es/en,es"
        )
    target, _, pool = arg.partition("/")
    target = target.strip().lower()
    codes = tuple(c.strip().lower() for c in pool.split(",") if c.strip()) if pool else DEFAULT_LANGUAGES
    if target not in codes:
        codes = (*codes, target)
    return target, tuple(sorted(set(codes)))


@functools.lru_cache(maxsize=16)
def language_detector(codes: tuple[str, ...]) -> LanguageDetector:
    """Build (once per language set) a lingua detector restricted to these ISO 639-1 codes.

    Models load lazily on first use and are the slow part; caching the detector keeps them loaded.
    """
    try:
        from lingua import IsoCode639_1, LanguageDetectorBuilder
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ScorerError("the language scorer needs lingua: pip install 'inoculate[langid]'") from e
    isos = []
    for code in codes:
        iso = getattr(IsoCode639_1, code.upper(), None)
        if iso is None or len(code) != 2:
            raise ScorerError(f"unknown ISO 639-1 language code {code!r} in the language scorer")
        isos.append(iso)
    if len(isos) < 2:
        raise ScorerError("the language scorer needs at least two candidate languages")
    return LanguageDetectorBuilder.from_iso_codes_639_1(*isos).build()


def detect_letters(detector: LanguageDetector, texts: Sequence[str], parallel: bool) -> list[dict[str, int]]:
    """Per text, the letters in sentences detected as each language: {ISO 639-1 code: letters}.

    Text is lowercased first: lingua's n-gram models are trained on mostly lower-case text and
    ALL CAPS input otherwise drifts to the wrong language. Sentence-level detection is used
    rather than `detect_multiple_languages_of`, which measured less accurate on short sentences.
    Sentences with no detectable language count for none (an empty dict: nothing detectable).
    """
    pieces: list[list[str]] = [split_sentences(t.lower()) for t in texts]
    flat = [s for ps in pieces for s in ps]
    if parallel and len(flat) > 1:
        langs = detector.detect_languages_in_parallel_of(flat)
    else:
        langs = [detector.detect_language_of(s) for s in flat]
    out: list[dict[str, int]] = []
    i = 0
    for ps in pieces:
        counts: dict[str, int] = {}
        for s in ps:
            lang = langs[i]
            i += 1
            if lang is not None:
                code = lang.iso_code_639_1.name.lower()
                counts[code] = counts.get(code, 0) + _letters(s)
        out.append(counts)
    return out


def _share(counts: dict[str, int], target: str) -> float:
    total = sum(counts.values())
    return counts.get(target, 0) / total if total else NAN


def _language_shares(
    detector: LanguageDetector, codes: tuple[str, ...], target: str, texts: Sequence[str], parallel: bool
) -> list[float]:
    """Letter-weighted share of sentences detected as `target`, per text (NaN if nothing detectable).

    Inside `shared_batch` (as `score_texts` runs every batch) detection results are kept in the
    batch cache under ("language", codes), keyed by text: every `language:XX` spec with the same
    candidate pool (e.g. language:es and language:fr, both on the default pool) reuses one
    detection pass per text, and repeated texts are detected once. A different pool needs its own
    pass, since the pool changes what is detected. The cache goes when the batch ends.
    """
    cache = batch_cache()
    if cache is None:
        return [_share(c, target) for c in detect_letters(detector, texts, parallel)]
    table: dict[str, dict[str, int]] = cache.setdefault(("language", codes), {})
    missing = list(dict.fromkeys(t for t in texts if t not in table))
    if missing:
        table.update(zip(missing, detect_letters(detector, missing, parallel), strict=True))
    return [_share(table[t], target) for t in texts]


@scorer(
    "language",
    description="share of the text (letters, by sentence) in language XX: language:XX[/L1,L2,..]",
)
def language(arg: str | None = None) -> Scorer:
    target, codes = _parse_language_arg(arg)
    detector = language_detector(codes)

    def one(prompt: str, completion: str) -> float:
        return _language_shares(detector, codes, target, [completion], parallel=False)[0]

    def batch(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
        return _language_shares(detector, codes, target, list(completions), parallel=True)

    return Scorer(fn=one, batch_fn=batch)


def caps_share(text: str) -> float:
    """Upper-case letters over cased letters (upper + lower); NaN when the text has none."""
    upper = sum(ch.isupper() for ch in text)
    lower = sum(ch.islower() for ch in text)
    return upper / (upper + lower) if upper + lower else NAN


@scorer(
    "all_caps",
    description="share of cased letters in upper case; all_caps:binary (>= 0.5) or all_caps:T",
)
def all_caps(arg: str | None = None) -> ScoreFn:
    if arg is None or arg == "":
        return lambda prompt, completion: caps_share(completion)
    if arg == "binary":
        threshold = 0.5
    else:
        try:
            threshold = float(arg)
        except ValueError:
            raise ScorerError(f"all_caps takes 'binary' or a threshold in (0, 1]; got {arg!r}") from None
        if not 0.0 < threshold <= 1.0:
            raise ScorerError(f"all_caps threshold must be in (0, 1]; got {arg!r}")

    def binary(prompt: str, completion: str) -> float:
        share = caps_share(completion)
        return share if math.isnan(share) else float(share >= threshold)

    return binary


def regex_timeout() -> float:
    """Seconds one `regex:` search may take on one completion: `INOCULATE_REGEX_TIMEOUT`, default 1."""
    import os

    raw = os.environ.get("INOCULATE_REGEX_TIMEOUT")
    if raw is None or not raw.strip():
        return DEFAULT_REGEX_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not value > 0 or math.isinf(value):
        raise ScorerError(f"INOCULATE_REGEX_TIMEOUT must be a positive number of seconds, got {raw!r}")
    return value


@scorer("regex", description="1 if the completion matches PATTERN (re.search; inline flags like (?i) work)")
def regex(arg: str | None = None) -> ScoreFn:
    if not arg:
        raise ScorerError("regex needs a pattern: regex:PATTERN")
    try:
        pattern = compile_regex(arg)
    except SelectorError as e:
        raise ScorerError(f"regex: invalid pattern {arg!r}: {e.message} at position {e.column - 1}") from None
    limit = regex_timeout()

    def score(prompt: str, completion: str) -> float:
        try:
            return float(search_with_timeout(pattern, completion, limit))
        except RegexTimeoutError as e:
            where = f"a completion of {len(completion):,} characters"
            raise RegexTimeoutError(arg, limit, where, "INOCULATE_REGEX_TIMEOUT") from e

    return score


@scorer("keyword", description="1 if any of the comma-separated words occurs (case-insensitive, whole words)")
def keyword(arg: str | None = None) -> ScoreFn:
    words = [w.strip() for w in (arg or "").split(",") if w.strip()]
    if not words:
        raise ScorerError("keyword needs words: keyword:w1,w2")
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)
    return lambda prompt, completion: float(pattern.search(completion) is not None)


@scorer(
    "length",
    description="raw length of the completion in characters (length, length:chars) or words (length:words)",
    bounded=False,
)
def length(arg: str | None = None) -> ScoreFn:
    unit = (arg or "chars").strip().lower()
    if unit in ("chars", "characters"):
        return lambda prompt, completion: float(len(completion))
    if unit == "words":
        return lambda prompt, completion: float(len(completion.split()))
    raise ScorerError(f"length takes 'chars' or 'words'; got {arg!r}")
