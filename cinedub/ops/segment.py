"""Shot-aware segmentation of a source's words into clips (pure logic: no model, no Prefect).

Method:

1. Words are grouped into *runs* separated by silences of at least :data:`HARD_GAP_MS`: a clip never spans one.
2. Inside a run, every gap between two words is a candidate cut, scored by what makes a good clip boundary for
   dubbing data: a sentence end (``. ? ! 。 ？ ！ …``), a pause (``>= min_pause_ms``, more for longer pauses) and a
   shot boundary in or near the gap (``shot_snap_ms``). A cut costs :data:`CUT_COST` minus its score, so weak gaps
   (mid-phrase, no pause) are cut only when the length bounds force it.
3. Dynamic programming picks, per run, the set of cuts with the lowest total cost such that every clip lasts
   ``min_clip_s``..``max_clip_s``. This is exact for the additive cost (unlike a greedy scan, it can give up a good
   cut early to avoid a forced mid-phrase cut later), and linear in words times words-per-clip.
4. Clip edges sit in the gaps: ``pad_ms`` of context each side, never past the midpoint of the gap (so neighbours
   never overlap and no word is cut); when a shot boundary lies in the gap within ``shot_snap_ms`` of the word, the
   edge is placed exactly on it, so the clip starts or ends on the cut.

A run shorter than ``min_clip_s`` (isolated words between long silences) cannot make a clip and is dropped; the
count is logged. A run where no segmentation fits (a single word longer than ``max_clip_s``, which the ASR guards
prevent) is cut greedily at ``max_clip_s`` and those clips are marked ``cut_reason="max_length"``.
"""

from __future__ import annotations

import logging
import math
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from cinedub.config import SegmentationConfig
from cinedub.timebase import ms_to_frame
from cinedub.types import Clip, ShotList, Source, Word

logger = logging.getLogger("cinedub.segment")

HARD_GAP_MS = 5000  # a silence this long always ends a clip (no dubbing example spans 5 s of nothing)
CUT_COST = 1.0  # cost of any cut; a gap's score is subtracted from it
SENTENCE_SCORE = 2.0
SHOT_SCORE = 1.5
PAUSE_SCORE = 1.0  # at min_pause_ms; grows to PAUSE_SCORE * 1.5 for a 1 s pause
SPEAKER_SCORE = 1.0  # the speaker changes between the two words (diarization)
SENTENCE_END = tuple(".?!。？！…;；")


@dataclass(frozen=True)
class _Gap:
    """The gap after word ``i``: where the left clip may end and the right one may start."""

    score: float
    reason: str
    left_end_ms: int
    right_start_ms: int


def _shot_in(cuts_ms: Sequence[int], lo: int, hi: int) -> int | None:
    for c in cuts_ms:
        if lo <= c <= hi:
            return c
    return None


def _gap(w: Word, nxt: Word, cuts_ms: Sequence[int], cfg: SegmentationConfig) -> _Gap:
    e, s = w.end_ms, nxt.start_ms
    pause = s - e
    score, reasons = 0.0, []
    if w.text.rstrip().endswith(SENTENCE_END):
        score += SENTENCE_SCORE
        reasons.append("sentence")
    if pause >= cfg.min_pause_ms:
        score += PAUSE_SCORE * (1.0 + 0.5 * min(1.0, (pause - cfg.min_pause_ms) / 700))
        reasons.append("pause")
    if w.speaker_id and nxt.speaker_id and w.speaker_id != nxt.speaker_id:
        score += SPEAKER_SCORE
        reasons.append("speaker")
    mid = (e + s) // 2
    left_end = min(e + cfg.pad_ms, mid)
    right_start = max(s - cfg.pad_ms, mid)
    in_gap = _shot_in(cuts_ms, e, s)
    if in_gap is not None:
        score += SHOT_SCORE
        reasons.append("shot")
        if in_gap - e <= cfg.shot_snap_ms:
            left_end = in_gap
        if s - in_gap <= cfg.shot_snap_ms:
            right_start = in_gap
        if left_end == in_gap or right_start == in_gap:  # one side on the cut: the other may not cross it
            left_end, right_start = min(left_end, in_gap), max(right_start, in_gap)
    elif _shot_in(cuts_ms, e - cfg.shot_snap_ms, s + cfg.shot_snap_ms) is not None:
        score += SHOT_SCORE / 2  # the cut is inside a word next to the gap: close, but the clip keeps a sliver
        reasons.append("near-shot")
    return _Gap(score, "+".join(reasons) or "word", left_end, right_start)


def _runs(words: Sequence[Word]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i, w in enumerate(words):
        if runs and w.start_ms - words[runs[-1][-1]].end_ms < HARD_GAP_MS:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


def _best_cuts(
    idx: list[int], words: Sequence[Word], gaps: dict[int, _Gap], start_ms: int, end_ms: int, cfg: SegmentationConfig
) -> list[tuple[int, int]] | None:
    """Lowest-cost split of the run ``idx`` into [a, b) word ranges whose clips respect the length bounds."""
    n = len(idx)
    lo, hi = cfg.min_clip_s * 1000, cfg.max_clip_s * 1000

    def clip_start(k: int) -> int:  # clip start when the clip's first word is idx[k]
        return start_ms if k == 0 else gaps[idx[k - 1]].right_start_ms

    def clip_end(k: int) -> int:  # clip end when its last word is idx[k - 1]
        return end_ms if k == n else gaps[idx[k - 1]].left_end_ms

    best = [math.inf] * (n + 1)
    back = [-1] * (n + 1)
    best[0] = 0.0
    for b in range(1, n + 1):
        e = clip_end(b)
        cost_b = 0.0 if b == n else CUT_COST - gaps[idx[b - 1]].score
        for a in range(b - 1, -1, -1):
            dur = e - clip_start(a)
            if dur > hi:
                break
            if dur >= lo and best[a] + cost_b < best[b]:
                best[b] = best[a] + cost_b
                back[b] = a
    if math.isinf(best[n]):
        return None
    spans, b = [], n
    while b > 0:
        spans.append((back[b], b))
        b = back[b]
    return spans[::-1]


def _greedy(idx: list[int], words: Sequence[Word], max_ms: float) -> list[tuple[int, int]]:
    spans, a = [], 0
    for k in range(1, len(idx) + 1):
        if k == len(idx) or words[idx[k]].end_ms - words[idx[a]].start_ms > max_ms:
            spans.append((a, k))
            a = k
    return spans


def frame_span(start_ms: int, end_ms: int, source: Source) -> tuple[int | None, int | None]:
    """Video frames ``[first, end)`` shown during ``[start_ms, end_ms)``; (None, None) without video.

    Shot and clip times are integer ms rounded from exact frame times, so a clip that starts on a cut at 23.976 fps
    (frame 58 = 2419.08 ms, stored as 2419) must not start one frame early: half a millisecond of rounding is allowed.
    """
    if not source.fps:
        return None, None
    first = ms_to_frame(start_ms + 0.5, source.fps)
    end = math.ceil((end_ms - 0.5) * source.fps / 1000)
    return first, min(source.n_frames or 10**12, max(first, end))


def clip_id_for(source_sha256: str, start_ms: int, end_ms: int) -> str:
    """Deterministic clip id: ``uuid5(NAMESPACE_URL, "<sha256>:<start_ms>:<end_ms>")``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{source_sha256}:{start_ms}:{end_ms}"))


def segment_clips(
    source: Source, words: Sequence[Word], shots: ShotList | None, cfg: SegmentationConfig
) -> list[Clip]:
    """Cut ``words`` (source timeline, sorted) into clips; see the module docstring for the method.

    Args:
        source: gives the duration (clamp), fps (frame spans) and sha256 (clip ids).
        words: ASR words in time order, ``start_ms <= end_ms``.
        shots: the source's shots, or None for audio-only sources.
        cfg: length bounds (s), padding, pause and shot-snap distances (ms).

    Returns:
        Clips in time order with ``index`` 0..n-1; every word lies wholly inside exactly one clip or in a dropped run.
    """
    words = sorted(words, key=lambda w: (w.start_ms, w.end_ms))
    cuts_ms = shots.cut_ms if shots is not None else []
    gaps = {i: _gap(words[i], words[i + 1], cuts_ms, cfg) for i in range(len(words) - 1)}
    clips: list[Clip] = []
    dropped = 0
    for run in _runs(words):
        first, last = words[run[0]], words[run[-1]]
        start_ms = max(0, first.start_ms - cfg.pad_ms)
        end_ms = min(source.duration_ms, last.end_ms + cfg.pad_ms) if source.duration_ms else last.end_ms + cfg.pad_ms
        end_ms = max(end_ms, last.end_ms)
        if end_ms - start_ms < cfg.min_clip_s * 1000:
            dropped += 1
            continue
        spans = _best_cuts(run, words, gaps, start_ms, end_ms, cfg)
        forced = spans is None
        if forced:
            spans = _greedy(run, words, cfg.max_clip_s * 1000)
        for a, b in spans:
            c_start = start_ms if a == 0 else gaps[run[a - 1]].right_start_ms
            c_end = end_ms if b == len(run) else gaps[run[b - 1]].left_end_ms
            inside = tuple(words[k] for k in run[a:b])
            reason = "max_length" if forced else ("silence" if b == len(run) else gaps[run[b - 1]].reason)
            clips.append(
                Clip(
                    clip_id=clip_id_for(source.sha256, c_start, c_end),
                    source_id=source.source_id,
                    index=len(clips),
                    start_ms=c_start,
                    end_ms=c_end,
                    words=inside,
                    shot_boundaries_ms=tuple(c for c in cuts_ms if c_start < c < c_end),
                    start_frame=frame_span(c_start, c_end, source)[0],
                    end_frame=frame_span(c_start, c_end, source)[1],
                    cut_reason=reason,
                )
            )
    if dropped:
        logger.info("%s: %d word runs shorter than %.1f s dropped", source.source_id, dropped, cfg.min_clip_s)
    return clips
