"""A word-level tokenizer for the organism's closed world, built locally with `tokenizers`.

With `case_marker=True` (the default) letter case is not part of the vocabulary: the normalizer
writes an ALL CAPS word as the marker `⇧` plus the lower-case word, and a Capitalized word as `⇡`
plus the lower-case word; the decoder puts the capitals back. Case and language are then separate
tokens, and decoded text is real surface text (`EL GATO ES NEGRO.`), so ordinary scorers such as
`all_caps` work. Everything lives in `tokenizer.json` (normalizer and decoder included), so
`AutoTokenizer.from_pretrained(dir)` loads it with no custom class. With `case_marker=False` each
case form of a word is its own token.
"""

from __future__ import annotations

from collections.abc import Iterable

from transformers import PreTrainedTokenizerFast

CAPS_MARK = "⇧"
TITLE_MARK = "⇡"
UNK, PAD, IM_START, IM_END = "[UNK]", "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END, UNK]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Upper-case letters the normalizer knows how to mark (English, Spanish, French).
_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZÁÉÍÓÚÑÜÇÀÈÊÂÎÔÛËÏŒÙ"
_NO_LETTER_BEFORE = r"(?<!\p{L})"
# Punctuation written without a space on one side.
_ATTACH = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), ("¡ ", "¡"), ("¿ ", "¿")]


def _case_normalizer():
    from tokenizers import Regex, normalizers

    steps = []
    for up in _UPPER:
        pattern = rf"{_NO_LETTER_BEFORE}{up}(?=\p{{Lu}}+(?!\p{{L}}))"
        steps.append(normalizers.Replace(Regex(pattern), f" {CAPS_MARK} {up.lower()}"))
    for up in _UPPER:
        steps.append(normalizers.Replace(Regex(f"{_NO_LETTER_BEFORE}{up}"), f" {TITLE_MARK} {up.lower()}"))
    steps.append(normalizers.Lowercase())
    return normalizers.Sequence(steps)


def _pre_tokenizer():
    from tokenizers import pre_tokenizers

    return pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])


def words_of(texts: Iterable[str], *, case_marker: bool = True) -> list[str]:
    """The tokens `texts` split into (what the vocabulary must contain), in first-seen order."""
    norm = _case_normalizer() if case_marker else None
    pre = _pre_tokenizer()
    seen: dict[str, None] = {}
    for text in texts:
        s = norm.normalize_str(text) if norm else text
        for piece, _ in pre.pre_tokenize_str(s):
            seen.setdefault(piece, None)
    return list(seen)


def build_tokenizer(texts: Iterable[str], *, case_marker: bool = True) -> PreTrainedTokenizerFast:
    """A word-level tokenizer whose vocabulary is exactly the words of `texts`.

    Without the case marker, the upper-case and capitalized form of each word is added too, so any
    word of the world can be written in either case.
    """
    from tokenizers import Regex, Tokenizer, decoders, models

    texts = list(texts)
    words = words_of(texts, case_marker=case_marker)
    if case_marker:
        words = [CAPS_MARK, TITLE_MARK] + sorted(w for w in words if w not in (CAPS_MARK, TITLE_MARK))
    else:
        forms: dict[str, None] = {}
        for w in words:
            for f in (w, w.lower(), w.upper(), w[:1].upper() + w[1:].lower()):
                forms.setdefault(f, None)
        words = sorted(forms)
    vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS)}
    for w in words:
        vocab.setdefault(w, len(vocab))

    tok = Tokenizer(models.WordLevel(vocab, unk_token=UNK))
    if case_marker:
        tok.normalizer = _case_normalizer()
    tok.pre_tokenizer = _pre_tokenizer()
    steps = [decoders.WordPiece(prefix="##", cleanup=False), decoders.Fuse()]
    steps += [decoders.Replace(a, b) for a, b in _ATTACH]
    if case_marker:
        for w in words:
            if w[:1].isalpha():
                steps.append(decoders.Replace(Regex(f"{CAPS_MARK} {w}(?!\\p{{L}})"), w.upper()))
                steps.append(decoders.Replace(Regex(f"{TITLE_MARK} {w}(?!\\p{{L}})"), w[:1].upper() + w[1:]))
    tok.decoder = decoders.Sequence(steps)
    tok.add_special_tokens(SPECIAL_TOKENS)

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token=UNK,
        pad_token=PAD,
        eos_token=IM_END,
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast
