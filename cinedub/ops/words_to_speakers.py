"""Assign ASR words to speakers from exclusive (overlap-free) diarization turns (pure Python).

Each word gets the speaker of the exclusive turn it overlaps most (ties: the earlier turn), as WhisperX's
``assign_word_speakers`` does with intersections; pyannote's community-1 model card recommends its exclusive output
for exactly this. A word that touches no turn (VAD and ASR disagree near pauses) takes the nearest turn's speaker when
that turn is within ``max_gap_ms``, else stays unassigned (``speaker_id=None``).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import replace

from cinedub.types import Turn, Word


def assign_word_speakers(words: Sequence[Word], exclusive_turns: Sequence[Turn], *, max_gap_ms: int = 500) -> list[Word]:
    """Copy of ``words`` with ``speaker_id`` set from ``exclusive_turns``.

    Args:
        words: ASR words (source timeline, ms); their order is kept.
        exclusive_turns: non-overlapping turns (ms), any order.
        max_gap_ms: a word with no overlapping turn takes the nearest turn's speaker if it is at most this far
            (0 disables the fallback).

    Returns:
        New :class:`Word` records; words already carrying a speaker are re-assigned too.
    """
    turns = sorted((t for t in exclusive_turns if t.end_ms > t.start_ms), key=lambda t: (t.start_ms, t.end_ms))
    starts = [t.start_ms for t in turns]
    out: list[Word] = []
    for w in words:
        out.append(replace(w, speaker_id=_speaker_for(w, turns, starts, max_gap_ms)))
    return out


def _speaker_for(w: Word, turns: list[Turn], starts: list[int], max_gap_ms: int) -> str | None:
    if not turns:
        return None
    a, b = w.start_ms, max(w.end_ms, w.start_ms)
    hi = bisect.bisect_right(starts, b)
    best, best_ov = None, 0
    # disjoint turns sorted by start are also sorted by end: walk back from the last turn starting before the
    # word's end until turns end before the word starts
    i = hi - 1
    while i >= 0 and turns[i].end_ms > a:
        t = turns[i]
        ov = min(b, t.end_ms) - max(a, t.start_ms)
        if b == a and t.start_ms <= a < t.end_ms:
            ov = 1  # a zero-length word inside a turn
        if ov >= best_ov and ov > 0:
            best, best_ov = t, ov  # ">=" while walking back keeps the earlier turn on ties
        i -= 1
    if best is not None:
        return best.speaker_id
    if max_gap_ms <= 0:
        return None
    cands = turns[max(0, hi - 1) : hi + 1]
    dist = [(max(t.start_ms - b, a - t.end_ms, 0), t.start_ms, t) for t in cands]
    d, _, t = min(dist, key=lambda x: (x[0], x[1]))
    return t.speaker_id if d <= max_gap_ms else None
