"""Clip edges against the detected speech (issue 11, point 4): does any clip edge cut through the voice of its
words, and how much detected speech is in clips or reported (``scripts/eval_clip_edges.py`` prints it per shared
source; ``tests/stages/test_clip_edges.py`` asserts it)."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from cinedub.types import Clip, ClipList

TOLERANCE_MS = 60  # Silero VAD's 32 ms frame plus its 30 ms padding: edges closer than this to speech are on it


@dataclass(frozen=True)
class EdgeCut:
    """A clip edge inside detected speech that goes on past it (voice of the clip's words left outside).

    Attributes:
        clip_index / side ("start" | "end") / edge_ms: which edge.
        outside_ms: how much of that speech lies beyond the edge.
    """

    clip_index: int
    side: str
    edge_ms: int
    outside_ms: int


def edge_cuts(clips: Sequence[Clip], speech_ms: Sequence[tuple[int, int]], max_extension_ms: int) -> list[EdgeCut]:
    """Clip edges that cut a stretch of detected speech, other than where the clip meets its neighbour (one stretch
    of speech split between two clips) or where the voice runs on for more than ``max_extension_ms`` past the
    clip's words (a stretch without words, reported by the coverage instead)."""
    spans = sorted(speech_ms)
    starts = [a for a, _ in spans]
    out = []
    for k, c in enumerate(clips):
        prev_end = clips[k - 1].end_ms if k else None
        next_start = clips[k + 1].start_ms if k + 1 < len(clips) else None
        i = bisect.bisect_right(starts, c.end_ms) - 1
        if i >= 0 and spans[i][0] < c.end_ms - TOLERANCE_MS and spans[i][1] > c.end_ms + TOLERANCE_MS:
            last_word = max((w.end_ms for w in c.words), default=c.end_ms)
            if next_start != c.end_ms and spans[i][1] - last_word <= max_extension_ms:
                out.append(EdgeCut(c.index, "end", c.end_ms, spans[i][1] - c.end_ms))
        i = bisect.bisect_right(starts, c.start_ms) - 1
        if i >= 0 and spans[i][0] < c.start_ms - TOLERANCE_MS and spans[i][1] > c.start_ms + TOLERANCE_MS:
            first_word = min((w.start_ms for w in c.words), default=c.start_ms)
            if prev_end != c.start_ms and first_word - spans[i][0] <= max_extension_ms:
                out.append(EdgeCut(c.index, "start", c.start_ms, c.start_ms - spans[i][0]))
    return out


def coverage_row(name: str, clips: ClipList, speech_ms: Sequence[tuple[int, int]], max_extension_ms: int) -> dict:
    """One row of the table: shares of detected speech in clips / in clips or reported, reasons, edge cuts."""
    rep = clips.speech_report()
    reasons: dict[str, int] = {}
    for u in clips.uncovered:
        reasons[u.reason] = reasons.get(u.reason, 0) + (u.end_ms - u.start_ms)
    return {
        "source": name, "clips": len(clips.clips), "speech_s": round(clips.speech_ms / 1000, 2),
        "in_clips": rep["in_clips"], "in_clips_or_reported": rep["in_clips_or_reported"],
        "reported_ms_by_reason": reasons,
        "edge_cuts": [e.__dict__ for e in edge_cuts(clips.clips, speech_ms, max_extension_ms)],
    }
