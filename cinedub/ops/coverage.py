"""How much of a source's detected speech ends up in clips, and why the rest does not (pure logic).

Detected speech is ``Transcript.speech_ms`` (Silero VAD on the transcribed audio). Every stretch of it outside all
clips gets the reason of what left it out, the first that applies:

- the reason of a segmentation drop covering it (:class:`cinedub.ops.segment.DroppedSpan`): "short" (no clip of
  ``min_clip_s`` could hold it), "long" (a word longer than ``max_clip_s``), "overlap" (a block of overlapping words,
  several voices at once, longer than ``max_clip_s``), "after_end";
- "guard": a segment the ASR hallucination guards dropped (``Transcript.guarded_ms``);
- "no_words": voice without ASR words (speech Whisper skipped, laughter, singing, or VAD false alarms on effects).

Stretches shorter than :data:`MIN_REPORTED_MS` are not listed (slivers at clip edges); their time counts as neither
in clips nor reported, so ``(in_clips_ms + reported_ms) / speech_ms`` is the share of speech accounted for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cinedub.types import Clip, SkippedSpeech

MIN_REPORTED_MS = 100  # shorter uncovered stretches are edge slivers, not worth a report line


@dataclass(frozen=True)
class SpeechCoverage:
    """Detected speech of one source against its clips (ms).

    Attributes:
        speech_ms: total detected speech; in_clips_ms: of it, inside a clip; reported_ms: outside every clip and
            listed in ``uncovered`` with a reason.
        uncovered: the listed stretches, in time order (``n_words``: ASR words inside).
    """

    speech_ms: int
    in_clips_ms: int
    reported_ms: int
    uncovered: tuple[SkippedSpeech, ...]

    @property
    def in_clips_share(self) -> float:
        return self.in_clips_ms / self.speech_ms if self.speech_ms else 1.0

    @property
    def accounted_share(self) -> float:
        """Share of detected speech in clips or reported with a reason."""
        return (self.in_clips_ms + self.reported_ms) / self.speech_ms if self.speech_ms else 1.0


def _subtract(span: tuple[int, int], cover: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """``span`` minus the sorted, disjoint ``cover`` spans."""
    out, cur = [], span[0]
    for a, b in cover:
        if b <= cur or a >= span[1]:
            continue
        if a > cur:
            out.append((cur, a))
        cur = max(cur, b)
    if cur < span[1]:
        out.append((cur, span[1]))
    return out


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return min(a[1], b[1]) > max(a[0], b[0])


def speech_coverage(
    speech_ms: Sequence[tuple[int, int]],
    clips: Sequence[Clip],
    dropped: Sequence[SkippedSpeech] = (),
    guarded_ms: Sequence[tuple[int, int]] = (),
    words_ms: Sequence[tuple[int, int]] = (),
) -> SpeechCoverage:
    """Share of ``speech_ms`` inside ``clips`` and the reasons for the rest (see the module docstring).

    Args:
        speech_ms: detected speech spans (ms, any order; overlaps merged).
        clips: the source's clips.
        dropped: the segmentation's dropped word spans with their reasons.
        guarded_ms: spans of ASR segments dropped by the hallucination guards.
        words_ms: every ASR word's span (counts the words in each uncovered stretch).
    """
    merged: list[list[int]] = []
    for a, b in sorted((int(a), int(b)) for a, b in speech_ms if b > a):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    cover = sorted((c.start_ms, c.end_ms) for c in clips)
    total = sum(b - a for a, b in merged)
    uncovered: list[SkippedSpeech] = []
    outside = 0
    for a, b in merged:
        for piece in _subtract((a, b), cover):
            outside += piece[1] - piece[0]
            if piece[1] - piece[0] < MIN_REPORTED_MS:
                continue
            reason = next((d.reason for d in dropped if _overlaps(piece, (d.start_ms, max(d.end_ms, d.start_ms + 1)))),
                          None)
            if reason is None:
                reason = "guard" if any(_overlaps(piece, g) for g in guarded_ms) else "no_words"
            n_words = sum(1 for w in words_ms if _overlaps(piece, (w[0], max(w[1], w[0] + 1))))
            uncovered.append(SkippedSpeech(piece[0], piece[1], n_words, reason))
    reported = sum(u.end_ms - u.start_ms for u in uncovered)
    return SpeechCoverage(total, total - outside, reported, tuple(uncovered))
