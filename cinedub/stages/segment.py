"""Segmentation stage: a source's words (with their speakers) cut into 2-30 s clips at good boundaries.

Wraps :func:`cinedub.ops.segment.segment_source` (pure logic). Words get their speakers from the fused timeline's
exclusive turns first, and each clip carries the timeline's turns cut to it; speech no clip can hold is kept in
``ClipList.dropped`` with the reason, and logged.
"""

from __future__ import annotations

import dataclasses

from cinedub.diarization.records import DiarizationResult
from cinedub.ops.segment import clip_turns, segment_source
from cinedub.ops.words_to_speakers import assign_word_speakers
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.types import ClipList, IngestResult, ShotList, SkippedSpeech, Transcript


class SegmentStage(Stage):
    """Clips of one source, in time order, never cutting a word, preferring sentence ends, pauses, speaker
    changes and shot boundaries."""

    name = "segment"
    version = "3"  # v3: blocks of overlapping words, abbreviations, no greedy fallback (dropped spans)
    inputs = ("ingest", "transcript", "shots", "timeline")
    optional = frozenset({"timeline"})
    output = "clips"
    record = ClipList
    config_sections = ("segmentation",)
    resources = Resources(cpus=1)

    def process(
        self,
        ctx: StageContext,
        ingest: IngestResult,
        transcript: Transcript,
        shots: ShotList,
        timeline: DiarizationResult | None,
    ) -> ClipList:
        cfg = self.cfg.segmentation
        words = transcript.words
        if timeline is not None:
            words = assign_word_speakers(words, timeline.exclusive_turns)
        seg = segment_source(ingest.source, words, shots, cfg)
        clips = list(seg.clips)
        if timeline is not None:
            clips = [dataclasses.replace(c, turns=tuple(clip_turns(c.start_ms, c.end_ms, timeline.turns)))
                     for c in clips]
        if seg.dropped:
            ctx.log.info("%s: %d speech spans dropped (%d words; no %g-%g s clip can hold them)", ctx.source_id,
                         len(seg.dropped), sum(len(d.words) for d in seg.dropped), cfg.min_clip_s, cfg.max_clip_s)
        dropped = tuple(SkippedSpeech(d.start_ms, d.end_ms, len(d.words), d.reason) for d in seg.dropped)
        return ClipList(source_id=ctx.source_id, clips=tuple(clips), dropped=dropped)
