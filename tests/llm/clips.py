"""Pick fixture clips by their properties and build edits from their own words.

The fixture's text comes from Whisper on real footage, so its exact words, casing and clip boundaries may differ
between machines, library builds and segmentation versions. Tests therefore never look a clip up by its text nor
assert a token the model wrote: they pick clips by what they need (the English clip with the most words, the
Chinese clip) and derive expected results from the clip's own words.
"""

from __future__ import annotations

import re
from typing import Any

_CORE = re.compile(r"^(\W*)(.*?)(\W*)$", re.S)


def by_words(rows: list[dict[str, Any]] | dict[str, dict[str, Any]], language: str) -> list[dict[str, Any]]:
    """Clips of ``language`` with words, most words first (ties by clip id, so the order is stable)."""
    values = list(rows.values()) if isinstance(rows, dict) else list(rows)
    out = [r for r in values if r.get("language") == language and r.get("words")]
    return sorted(out, key=lambda r: (-len(r["words"]), r["clip_id"]))


def richest(rows: Any, language: str = "en", min_words: int = 8) -> dict[str, Any]:
    """The clip of ``language`` with the most words (at least ``min_words``, else the fixture is too thin)."""
    clips = by_words(rows, language)
    assert clips and len(clips[0]["words"]) >= min_words, f"no {language} clip with {min_words}+ words in the fixture"
    return clips[0]


def core(word: str) -> tuple[str, str, str]:
    """``"dreams,"`` -> ``("", "dreams", ",")``: leading punctuation, the word, trailing punctuation."""
    m = _CORE.match(word)
    assert m
    return m.group(1), m.group(2), m.group(3)


def long_word(words: list[dict[str, Any]], start: int = 0, min_len: int = 5) -> int:
    """Index of the first word at or after ``start`` whose letters number at least ``min_len``."""
    for i in range(start, len(words)):
        if sum(c.isalpha() for c in words[i]["text"]) >= min_len:
            return i
    raise AssertionError(f"no word of {min_len}+ letters after index {start}")


def altered(word: str) -> str:
    """A similar but different word (a plausible ASR fix): its letters with the last one changed, e.g.
    "dreams," -> "dreamz,". Normalised similarity to the word stays >= 0.5 for words of 3+ letters."""
    lead, body, trail = core(word)
    last = body[-1]
    repl = "z" if last.lower() != "z" else "s"
    return lead + body[:-1] + (repl.upper() if last.isupper() else repl) + trail


def other_char(ch: str) -> str:
    """A CJK character different from ``ch`` (for Chinese edits built from the clip's own characters)."""
    return "球" if ch != "球" else "星"


def source_speakers(rows: Any, source_id: str) -> list[str]:
    """Every speaker id of a source (words and turns), sorted."""
    values = list(rows.values()) if isinstance(rows, dict) else list(rows)
    out: set[str] = set()
    for r in values:
        if r["source_id"] == source_id:
            out |= {w["speaker_id"] for w in r.get("words") or [] if w.get("speaker_id")}
            out |= {t["speaker_id"] for t in r.get("turns") or [] if t.get("speaker_id")}
    return sorted(out)
