"""Text helpers shared by ASR and its evaluation: Chinese script normalisation and scoring normalisation.

- :func:`normalize_script` writes Chinese in one script. Whisper models often write Mandarin in Traditional
  characters even for Mainland speech; OpenCC (``opencc-python-reimplemented``, configurations ``t2s`` / ``s2t``)
  converts them character- and phrase-wise.
- :func:`normalize_for_scoring` is the normalisation applied to both sides of a WER/CER comparison
  (:mod:`cinedub.eval.asr`): Unicode NFKC, lower case, punctuation (Latin and CJK) removed, whitespace collapsed.
- :func:`max_ngram_repeats` measures Whisper's repetition loops ("thank you thank you thank you ...").
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import Literal

ZhScript = Literal["simplified", "traditional"]

# Languages written with Chinese characters that OpenCC converts (Cantonese is "yue" in Whisper large-v3).
CHINESE_LANGUAGES = frozenset({"zh", "yue"})

_OPENCC_CONFIG = {"simplified": "t2s", "traditional": "s2t"}
_APOSTROPHES = "'\u2019\u02bc"
_CJK_RANGES = (
    (0x3040, 0x30FF),  # Hiragana, Katakana
    (0x3400, 0x4DBF),  # CJK Extension A
    (0x4E00, 0x9FFF),  # CJK Unified Ideographs
    (0xAC00, 0xD7AF),  # Hangul syllables
    (0xF900, 0xFAFF),  # CJK Compatibility Ideographs
    (0x20000, 0x2FA1F),  # CJK Extensions B-F and supplement
)


@lru_cache(maxsize=4)
def opencc_converter(config: str):
    """The cached ``opencc.OpenCC`` converter for ``config`` ("t2s", "s2t", ...); building one reads dictionaries."""
    from opencc import OpenCC

    return OpenCC(config)


def to_simplified(text: str) -> str:
    """Traditional -> Simplified Chinese (OpenCC ``t2s``); other characters pass unchanged."""
    return opencc_converter("t2s").convert(text)


def to_traditional(text: str) -> str:
    """Simplified -> Traditional Chinese (OpenCC ``s2t``); other characters pass unchanged."""
    return opencc_converter("s2t").convert(text)


def base_language(language: str | None) -> str:
    """ISO 639-1 part of a language tag: "zh-TW" / "zh_Hans" -> "zh"; None -> ""."""
    return re.split(r"[-_]", language or "", maxsplit=1)[0].lower()


def normalize_script(text: str, language: str | None, zh_script: ZhScript = "simplified") -> str:
    """Write Chinese ``text`` in ``zh_script``; text of any other ``language`` is returned unchanged.

    Args:
        text: any text (mixed Latin/CJK is fine: only Chinese characters change).
        language: ISO 639-1 code of the text ("zh", "yue", "en", ...; region suffixes are ignored).
        zh_script: "simplified" (OpenCC ``t2s``) or "traditional" (OpenCC ``s2t``).

    Raises:
        ValueError: unknown ``zh_script``.
    """
    if zh_script not in _OPENCC_CONFIG:
        raise ValueError(f"zh_script must be 'simplified' or 'traditional', not {zh_script!r}")
    if not text or base_language(language) not in CHINESE_LANGUAGES:
        return text
    return opencc_converter(_OPENCC_CONFIG[zh_script]).convert(text)


def is_cjk(ch: str) -> bool:
    """True for a Chinese/Japanese/Korean character (ideographs, kana, hangul), i.e. a script without spaces."""
    code = ord(ch)
    return any(lo <= code <= hi for lo, hi in _CJK_RANGES)


def _is_punctuation(ch: str) -> bool:
    # Unicode categories P* cover ASCII and CJK punctuation alike (。，、「」《》！？：；…).
    return unicodedata.category(ch).startswith("P")


def normalize_for_scoring(text: str, *, split_cjk: bool = False) -> str:
    """Normalise text before WER/CER so that only the words count, not their typography.

    Steps: Unicode NFKC (full-width forms become ASCII), lower case, apostrophes removed ("don't" -> "dont", on both
    sides alike), every other punctuation character (Unicode category P*, including CJK punctuation such as
    "。，、？") replaced by a space, whitespace collapsed and stripped. With ``split_cjk`` each CJK character becomes its
    own token (the usual "mixed error rate" tokenisation for Chinese, which has no spaces).

    This is a deliberately small normaliser (no number or spelling normalisation, unlike OpenAI Whisper's
    ``EnglishTextNormalizer``): references and hypotheses must spell numbers the same way.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    out: list[str] = []
    for ch in text:
        if ch in _APOSTROPHES:
            continue
        if _is_punctuation(ch):
            out.append(" ")
        elif split_cjk and is_cjk(ch):
            out.append(f" {ch} ")
        else:
            out.append(ch)
    return " ".join("".join(out).split())


def remove_cjk_spaces(text: str) -> str:
    """Drop whitespace next to a CJK character (meaningless in Chinese); spaces between Latin words stay."""
    return re.sub(
        r"\s+",
        lambda m: "" if _touches_cjk(text, m.start(), m.end()) else " ",
        text,
    )


def _touches_cjk(text: str, start: int, end: int) -> bool:
    return (start > 0 and is_cjk(text[start - 1])) or (end < len(text) and is_cjk(text[end]))


def scoring_units(text: str) -> list[str]:
    """Tokens of ``text`` for repetition checks: words, with every CJK character a token of its own."""
    return normalize_for_scoring(text, split_cjk=True).split()


def max_ngram_repeats(units: list[str], max_n: int = 10) -> tuple[int, int]:
    """Longest run of back-to-back repeats of one n-gram in ``units``, for n = 1..``max_n``.

    Whisper's repetition loops show up as the same word or phrase repeated many times in a row; a run length is the
    number of consecutive copies (``"a b a b a b"`` has a 2-gram repeated 3 times).

    Returns:
        ``(repeats, n)``: the longest run and the n-gram size it was found at; ``(1, 1)`` for a non-empty list
        without any repeat, ``(0, 0)`` for an empty one.
    """
    if not units:
        return 0, 0
    best, best_n = 1, 1
    size = len(units)
    for n in range(1, min(max_n, size // 2) + 1):
        for i in range(size - 2 * n + 1):
            gram = units[i : i + n]
            k = 1
            while units[i + k * n : i + (k + 1) * n] == gram:
                k += 1
            if k > best:
                best, best_n = k, n
    return best, best_n
