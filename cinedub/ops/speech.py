"""Where someone speaks in a source: the spans the visual stages decode (pure logic)."""

from __future__ import annotations

from cinedub.diarization.records import DiarizationResult
from cinedub.timebase import merge_spans
from cinedub.types import Transcript

SPEECH_GAP_MS = 500  # a shorter pause keeps one span: fewer seeks, and face tracks are not cut by it


def speech_spans(transcript: Transcript, diar: DiarizationResult | None) -> list[tuple[int, int]]:
    """Merged ``(start_ms, end_ms)`` spans where someone speaks: ASR words and diarization turns together."""
    spans = [(w.start_ms, w.end_ms) for w in transcript.words]
    spans += [(t.start_ms, t.end_ms) for t in diar.turns] if diar is not None else []
    return merge_spans(spans, gap_ms=SPEECH_GAP_MS)
