"""Shot-aware segmentation of a source's words into clips (pure logic: no model, no Prefect).

Method:

1. Words are sorted and grouped into *blocks*: a word that starts before the previous ones end (overlapping ASR
   times) joins their block, because no clip edge can separate them without cutting one. Clip edges only lie in
   the gaps between blocks, so no word is ever cut.
2. Blocks are grouped into *runs* separated by silences of at least :data:`HARD_GAP_MS`; a clip never spans one.
3. Every gap between blocks is a candidate cut, scored by what makes a good clip boundary for dubbing data: a
   sentence end (``. ? ! ; 。 ？ ！ ； …``, abbreviations such as "D.C." or "Mr." excluded), a pause
   (``>= min_pause_ms``, more for longer pauses), a speaker change (once diarization has set ``speaker_id``) and
   a shot boundary in the gap (or, for less, within ``shot_snap_ms`` of it). A cut costs :data:`CUT_COST` minus
   its score, so weak gaps (mid-phrase, no pause) are cut only when the length bounds force it.
4. Dynamic programming picks, per run, the segmentation with the lowest total cost such that every kept clip lasts
   ``min_clip_s``..``max_clip_s`` *including its padding*. A segment that cannot be a clip (shorter than
   ``min_clip_s``, or one block longer than ``max_clip_s``) may be *dropped* at a cost of :data:`DROP_COST` plus
   :data:`DROP_COST_PER_S` per second of speech, far above any cut cost, so speech is dropped only when no
   segmentation can keep it. DP rather than a greedy scan because the cost is additive and the optimum is exact:
   a greedy cut at the first good gap can force a mid-phrase cut (or a drop) 30 s later, which DP avoids by
   trading one good cut for another. It costs O(blocks x blocks-per-clip), about 1 s for 40 000 words.
5. Clip edges sit in the gaps: ``pad_ms`` of context each side, never past the midpoint of the gap (so neighbours
   never overlap); when a shot boundary lies in the gap within ``shot_snap_ms`` of the word, the edge is placed
   exactly on it (the clip starts or ends on the cut) and never crosses it otherwise. Edges are clamped to
   ``[0, duration]``, where duration is the source's or, if shorter, the vocal track's. A clip's video frames
   ``[start_frame, end_frame)`` are the decoded frames on screen during its ms edges: from the frames' own times
   when the shot stage recorded them (``ShotList.frame_pts_ms``: variable frame rate, lost frames;
   :func:`frame_span_pts`), else from the exact rate with half a millisecond of rounding allowance
   (:func:`frame_span`: a clip starting on a cut starts on the cut frame), clamped to the shot list's frame count.

Policies: clips are never shorter than ``min_clip_s`` nor longer than ``max_clip_s``; speech that cannot make such
a clip is dropped (isolated short runs, a block of overlapping words longer than ``max_clip_s``, words longer than
``max_clip_s``, which only a hallucination produces, and words starting after the audio ends). Dropped spans are
returned by :func:`segment_source` and counted in the log. The last clip ends with the audio even when the ASR's
last word runs a few ms past it (rounding): edges never leave ``[0, duration]``.
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
import math
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from cinedub.config import SegmentationConfig
from cinedub.timebase import frame_span, frame_span_pts
from cinedub.types import Clip, ShotList, Source, Turn, Word

logger = logging.getLogger("cinedub.segment")

HARD_GAP_MS = 5000  # a silence this long always ends a clip (no dubbing example spans 5 s of nothing)
CUT_COST = 1.0  # cost of any cut; a gap's score is subtracted from it
CLIP_COST = 0.01  # per clip: between otherwise equal segmentations, prefer fewer, longer clips
DROP_COST = 20.0  # dropping a segment of speech, plus DROP_COST_PER_S per second of it
DROP_COST_PER_S = 10.0
SENTENCE_SCORE = 2.0
SHOT_SCORE = 1.5  # a shot boundary in the gap; half of it within shot_snap_ms of the gap
PAUSE_SCORE = 1.0  # at min_pause_ms; grows to PAUSE_SCORE * 1.5 for a pause 700 ms longer
SPEAKER_SCORE = 1.0  # the speaker changes between the two words (diarization)
SPEECH_TOUCH_MS = 60  # a detected-speech span within this of a word time contains it (Silero: 32 ms frames + 30 ms pad)
SENTENCE_END = tuple(".?!。？！…;；")
_CLOSERS = "\"'”’」』)）]】》"
# "D.C.", "U.S.", ".C." (Whisper splits "D.C." into "D" + ".C."), initials "J."
_ABBREVIATION = re.compile(r"^(?:\w?\.)?(?:\w\.)+$")
_TITLES = frozenset({"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "jr.", "sr.", "vs.", "etc.", "e.g.", "i.e.", "no."})


@dataclass(frozen=True)
class DroppedSpan:
    """Words left out of every clip, and why.

    Attributes:
        start_ms / end_ms: first word start and last word end (source timeline, ms).
        words: the words dropped.
        reason: "short" (could not reach ``min_clip_s``), "long" (a block of overlapping words or a single word
            longer than ``max_clip_s``) or "after_end" (the word starts after the audio ends).
    """

    start_ms: int
    end_ms: int
    words: tuple[Word, ...]
    reason: str


@dataclass(frozen=True)
class Segmentation:
    """The output of :func:`segment_source`: clips in time order and the spans of words left out."""

    clips: tuple[Clip, ...]
    dropped: tuple[DroppedSpan, ...]


@dataclass(frozen=True)
class _Gap:
    """The gap after a block: how good a cut it is and where the left clip may end and the right one start."""

    score: float
    reason: str
    left_end_ms: int
    right_start_ms: int


@dataclass
class _Block:
    words: list[Word]
    start_ms: int
    end_ms: int  # max of the words' ends


def is_sentence_end(text: str) -> bool:
    """True when ``text`` (one ASR word) ends a sentence: terminal punctuation, not an abbreviation."""
    t = text.strip().rstrip(_CLOSERS)
    if not t.endswith(SENTENCE_END):
        return False
    low = t.lower()
    return not (low in _TITLES or _ABBREVIATION.match(low))


def clip_id_for(source_sha256: str, start_ms: int, end_ms: int) -> str:
    """Deterministic clip id: ``uuid5(NAMESPACE_URL, "<sha256>:<start_ms>:<end_ms>")``."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{source_sha256}:{start_ms}:{end_ms}"))


def _shots_in(cuts_ms: Sequence[int], lo: int, hi: int) -> list[int]:
    """Shot boundaries in ``[lo, hi]``; ``cuts_ms`` sorted."""
    return list(cuts_ms[bisect.bisect_left(cuts_ms, lo) : bisect.bisect_right(cuts_ms, hi)])


class _Speech:
    """Where the voice is, around word times: detected speech spans (Silero VAD on the transcribed audio), or, when
    none are given, the words themselves with ``pad_ms`` of margin (the behaviour before voice activity was used).

    ``end_after(e)`` is where the speech that contains a word ending at ``e`` stops (at most ``max_edge_extension_ms``
    later); ``start_before(s)`` where the speech containing a word starting at ``s`` starts. A word time and a VAD
    edge may disagree by Silero's 32 ms frame plus its 30 ms padding, so a span touching the word within
    :data:`SPEECH_TOUCH_MS` counts as containing it.
    """

    def __init__(self, speech_ms: Sequence[tuple[int, int]] | None, cfg: SegmentationConfig):
        self.spans = sorted((int(a), int(b)) for a, b in speech_ms or () if b > a)
        self.starts = [a for a, _ in self.spans]
        self.known = bool(self.spans)
        self.margin = cfg.edge_margin_ms if self.known else cfg.pad_ms
        self.max_ext = cfg.max_edge_extension_ms

    def _around(self, t: int) -> list[tuple[int, int]]:
        i = bisect.bisect_right(self.starts, t + SPEECH_TOUCH_MS)
        return [sp for sp in self.spans[max(0, i - 2) : i] if sp[1] >= t - SPEECH_TOUCH_MS]

    def end_after(self, e: int) -> int:
        ends = [b for a, b in self._around(e)]
        return min(max([e, *ends]), e + self.max_ext)

    def start_before(self, s: int) -> int:
        starts = [a for a, b in self._around(s)]
        return max(min([s, *starts]), s - self.max_ext)

    def speaking_at(self, t: int) -> bool:
        i = bisect.bisect_right(self.starts, t) - 1
        return i >= 0 and self.spans[i][0] <= t < self.spans[i][1]


def _gap(prev: _Block, nxt: _Block, cuts_ms: Sequence[int], cfg: SegmentationConfig, speech: _Speech) -> _Gap:
    w, nw = prev.words[-1], nxt.words[0]
    e, s = prev.end_ms, nxt.start_ms
    pause = s - e
    score, reasons = 0.0, []
    if is_sentence_end(w.text):
        score += SENTENCE_SCORE
        reasons.append("sentence")
    if pause >= cfg.min_pause_ms:
        score += PAUSE_SCORE * (1.0 + 0.5 * min(1.0, (pause - cfg.min_pause_ms) / 700))
        reasons.append("pause")
    if w.speaker_id and nw.speaker_id and w.speaker_id != nw.speaker_id:
        score += SPEAKER_SCORE
        reasons.append("speaker")
    # the voice around the gap: the left clip keeps the speech its last word ends in, the right one the speech its
    # first word starts in (never into the other's words), each with a margin
    se, ss = min(speech.end_after(e), s), max(speech.start_before(s), e)
    continuous = se >= ss  # the voice fills the gap: no pause to cut in
    left_end, right_start = se + speech.margin, ss - speech.margin
    in_gap = _shots_in(cuts_ms, e, s)
    if in_gap:
        score += SHOT_SCORE
        reasons.append("shot")
        # a cut where nobody speaks: the edge falls on it when it is close to the speech, and never crosses it;
        # a voice running on across a cut after its words is kept whole (the clip then shows a few frames of the
        # other shot); where the voice fills the whole gap, the cut is where the two clips meet
        quiet = [c for c in in_gap if se <= c <= ss]
        if continuous:
            left_end = right_start = in_gap[0]
        elif quiet:
            first, last = quiet[0], quiet[-1]
            left_end = first if first - se <= cfg.shot_snap_ms else min(left_end, first)
            right_start = last if ss - last <= cfg.shot_snap_ms else max(right_start, last)
    elif _shots_in(cuts_ms, e - cfg.shot_snap_ms, s + cfg.shot_snap_ms):
        score += SHOT_SCORE / 2  # the cut is inside a word next to the gap: close, but the clip keeps a sliver
        reasons.append("near_shot")
    if left_end > right_start:  # the margins (or continuous speech) meet: split where the voice pauses, if it does
        lo, hi = (se, ss) if not continuous else (e, s)
        left_end = right_start = (lo + hi) // 2
    return _Gap(score, "+".join(reasons), left_end, right_start)


def _edge_start(s: int, cuts_ms: Sequence[int], cfg: SegmentationConfig, speech: _Speech) -> int:
    """Start of a clip whose first word starts at ``s`` with nothing before it (the source's start)."""
    ss = speech.start_before(s)
    start = max(0, ss - speech.margin)
    before = [c for c in _shots_in(cuts_ms, max(0, ss - max(speech.margin, cfg.shot_snap_ms)), ss)
              if not speech.speaking_at(c)]
    if before and ss - before[-1] <= cfg.shot_snap_ms:
        return before[-1]
    return max([start, *before])


def _edge_end(e: int, limit_ms: int, cuts_ms: Sequence[int], cfg: SegmentationConfig, speech: _Speech) -> int:
    """End of a clip whose last word ends at ``e`` with nothing after it (the end of the audio): the speech it ends
    in is kept up to the end of the file."""
    se = speech.end_after(e)
    end = min(limit_ms, se + speech.margin)
    after = [c for c in _shots_in(cuts_ms, se, min(limit_ms, se + max(speech.margin, cfg.shot_snap_ms)))
             if not speech.speaking_at(c - 1)]
    if after and after[0] - se <= cfg.shot_snap_ms:
        return after[0]
    return min([end, *after])


def _blocks(words: Sequence[Word]) -> list[_Block]:
    blocks: list[_Block] = []
    for w in words:
        if blocks and w.start_ms < blocks[-1].end_ms:
            b = blocks[-1]
            b.words.append(w)
            b.end_ms = max(b.end_ms, w.end_ms)
        else:
            blocks.append(_Block([w], w.start_ms, w.end_ms))
    return blocks


def _best_split(
    starts: list[int], ends: list[int], speech_ms: list[int], gaps: list[_Gap], cfg: SegmentationConfig
) -> list[tuple[int, int, bool]]:
    """Lowest-cost split of a run of ``n`` blocks into ``(a, b, keep)`` block ranges (see the module docstring).

    ``starts[a]``: clip start if block ``a`` opens a clip; ``ends[b]``: clip end if block ``b - 1`` closes one;
    ``speech_ms[b]``: cumulative speech of blocks ``< b``; ``gaps[k]``: the gap after block ``k``.
    """
    n = len(starts)
    lo, hi = cfg.min_clip_s * 1000, cfg.max_clip_s * 1000
    best = [math.inf] * (n + 1)
    back: list[tuple[int, bool]] = [(-1, False)] * (n + 1)
    best[0] = 0.0
    for b in range(1, n + 1):
        e = ends[b]
        cut = 0.0 if b == n else CUT_COST - gaps[b - 1].score
        for a in range(b - 1, -1, -1):
            dur = e - starts[a]
            if dur > hi and b - a > 1:
                break  # longer ranges only get longer
            if lo <= dur <= hi:
                cost, keep = best[a] + cut + CLIP_COST, True
            else:
                cost, keep = best[a] + DROP_COST + DROP_COST_PER_S * (speech_ms[b] - speech_ms[a]) / 1000, False
            if cost < best[b]:
                best[b], back[b] = cost, (a, keep)
    spans, b = [], n
    while b > 0:
        a, keep = back[b]
        spans.append((a, b, keep))
        b = a
    return spans[::-1]


def segment_source(
    source: Source,
    words: Sequence[Word],
    shots: ShotList | None,
    cfg: SegmentationConfig,
    *,
    vocal_duration_ms: int | None = None,
    speech_ms: Sequence[tuple[int, int]] | None = None,
) -> Segmentation:
    """Cut ``words`` into clips and report what was left out; see the module docstring for the method.

    Args:
        source: gives the duration (clamp), fps (frame spans) and sha256 (clip ids).
        words: ASR words in the source timeline (ms), any order; ``start_ms <= end_ms`` expected.
        shots: the source's shots, or None (audio-only source, or no shot detection).
        cfg: length bounds (s), padding, pause and shot-snap distances (ms).
        vocal_duration_ms: length of the audio the clips are cut from, when it differs from
            ``source.duration_ms``; clips end at the shorter of the two.
        speech_ms: sorted ``(start_ms, end_ms)`` spans of detected speech (``Transcript.speech_ms``): clip edges
            follow the voice around the words; None or empty: ``pad_ms`` around the words.

    Returns:
        A :class:`Segmentation`: clips in time order with ``index`` 0..n-1, each within ``[min_clip_s,
        max_clip_s]``, none overlapping another; every word lies wholly inside exactly one clip or in one dropped
        span.
    """
    limit_ms = source.duration_ms or 0
    if vocal_duration_ms is not None:
        limit_ms = min(limit_ms, vocal_duration_ms) if limit_ms else vocal_duration_ms
    max_ms = cfg.max_clip_s * 1000
    dropped: list[DroppedSpan] = []
    usable = []
    for w in sorted(words, key=lambda w: (w.start_ms, w.end_ms)):
        if w.end_ms < w.start_ms:
            w = Word(w.text, w.start_ms, w.start_ms, w.probability, w.speaker_id)  # defensive: never negative
        if limit_ms and w.start_ms >= limit_ms:
            dropped.append(DroppedSpan(w.start_ms, w.end_ms, (w,), "after_end"))
        elif w.end_ms - w.start_ms > max_ms:
            dropped.append(DroppedSpan(w.start_ms, w.end_ms, (w,), "long"))
        else:
            usable.append(w)
    voice = _Speech(speech_ms, cfg)
    if not limit_ms and usable:
        limit_ms = voice.end_after(max(w.end_ms for w in usable)) + voice.margin
    cuts_ms = sorted(shots.cut_ms) if shots is not None else []
    blocks = _blocks(usable)
    gaps = [_gap(a, b, cuts_ms, cfg, voice) for a, b in zip(blocks, blocks[1:])]
    n_frames = (shots.n_frames if shots is not None else None) or source.n_frames
    frame_pts = list(shots.frame_pts_ms) if shots is not None and shots.frame_pts_ms else None

    clips: list[Clip] = []
    i = 0
    while i < len(blocks):
        j = i + 1
        while j < len(blocks) and blocks[j].start_ms - blocks[j - 1].end_ms < HARD_GAP_MS:
            j += 1
        run = blocks[i:j]
        starts = [_edge_start(run[0].start_ms, cuts_ms, cfg, voice) if i == 0 else gaps[i - 1].right_start_ms]
        starts += [gaps[i + k - 1].right_start_ms for k in range(1, len(run))]
        ends = [0] + [gaps[i + k - 1].left_end_ms for k in range(1, len(run))]
        ends.append(_edge_end(run[-1].end_ms, limit_ms, cuts_ms, cfg, voice) if j == len(blocks)
                    else gaps[j - 1].left_end_ms)
        speech = [0]
        for blk in run:
            speech.append(speech[-1] + blk.end_ms - blk.start_ms)
        for a, b, keep in _best_split(starts, ends, speech, gaps[i : i + len(run) - 1], cfg):
            inside = tuple(w for blk in run[a:b] for w in blk.words)
            if not keep:
                reason = "short" if ends[b] - starts[a] < cfg.min_clip_s * 1000 else "long"
                if reason == "long" and any(len(blk.words) > 1 for blk in run[a:b]):
                    reason = "overlap"  # a block of overlapping words (several speakers at once) too long to hold
                dropped.append(DroppedSpan(run[a].start_ms, max(blk.end_ms for blk in run[a:b]), inside, reason))
                continue
            start_ms, end_ms = starts[a], ends[b]
            if b < len(run):
                reason = gaps[i + b - 1].reason or "max_length"
            else:
                reason = "end" if j == len(blocks) else "silence"
            frames = None
            if frame_pts:
                frames = frame_span_pts(start_ms, end_ms, frame_pts)
            elif source.fps and source.has_video:
                frames = frame_span(start_ms, end_ms, source.fps, n_frames)
            clips.append(
                Clip(
                    clip_id=clip_id_for(source.sha256, start_ms, end_ms),
                    source_id=source.source_id,
                    index=len(clips),
                    start_ms=start_ms,
                    end_ms=end_ms,
                    words=inside,
                    shot_boundaries_ms=tuple(c for c in _shots_in(cuts_ms, start_ms, end_ms) if start_ms < c < end_ms),
                    start_frame=frames[0] if frames else None,
                    end_frame=frames[1] if frames else None,
                    cut_reason=reason,
                )
            )
        i = j
    if dropped:
        n_words = sum(len(d.words) for d in dropped)
        reasons = sorted({d.reason for d in dropped})
        logger.info(
            "%s: %d spans dropped (%d of %d words; %s)", source.source_id, len(dropped), n_words, len(words),
            ", ".join(reasons),
        )
    dropped.sort(key=lambda d: (d.start_ms, d.end_ms))
    return Segmentation(tuple(clips), tuple(dropped))


def segment_clips(
    source: Source,
    words: Sequence[Word],
    shots: ShotList | None,
    cfg: SegmentationConfig,
    *,
    vocal_duration_ms: int | None = None,
) -> list[Clip]:
    """The clips of :func:`segment_source` (dropped spans only logged)."""
    return list(segment_source(source, words, shots, cfg, vocal_duration_ms=vocal_duration_ms).clips)


def clip_turns(clip_start_ms: int, clip_end_ms: int, turns: Sequence[Turn]) -> list[Turn]:
    """The turns overlapping ``[clip_start_ms, clip_end_ms)``, cut to it (source timeline ms)."""
    out = []
    for t in turns:
        s, e = max(t.start_ms, clip_start_ms), min(t.end_ms, clip_end_ms)
        if e > s:
            out.append(t if (s, e) == (t.start_ms, t.end_ms) else dataclasses.replace(t, start_ms=s, end_ms=e))
    return out
