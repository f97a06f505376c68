"""Segmentation stage: a source's words (with their speakers) cut into 2-30 s clips at good boundaries.

Wraps :func:`cinedub.ops.segment.segment_source` (pure logic). Words get their speakers from the fused timeline's
exclusive turns first, and each clip carries the timeline's turns cut to it; clip edges follow the detected speech
around the words (``Transcript.speech_ms``). Speech no clip can hold is kept in ``ClipList.dropped`` with the
reason, and the share of detected speech in clips, with every stretch outside them and its reason, in
``ClipList.uncovered`` (:mod:`cinedub.ops.coverage`); the run report shows both per source.
"""

from __future__ import annotations

import dataclasses

from cinedub.diarization.records import DiarizationResult
from cinedub.ops.coverage import speech_coverage
from cinedub.ops.segment import clip_turns, segment_source
from cinedub.ops.words_to_speakers import assign_word_speakers
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.types import ClipList, IngestResult, ShotList, SkippedSpeech, Transcript


class SegmentStage(Stage):
    """Clips of one source, in time order, never cutting a word, preferring sentence ends, pauses, speaker
    changes and shot boundaries."""

    name = "segment"
    version = "4"  # v4: edges from detected speech, frame spans from decoded times, speech coverage
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
        seg = segment_source(ingest.source, words, shots, cfg, speech_ms=transcript.speech_ms)
        clips = list(seg.clips)
        if timeline is not None:
            clips = [dataclasses.replace(c, turns=tuple(clip_turns(c.start_ms, c.end_ms, timeline.turns)))
                     for c in clips]
        if seg.dropped:
            ctx.log.info("%s: %d speech spans dropped (%d words; no %g-%g s clip can hold them)", ctx.source_id,
                         len(seg.dropped), sum(len(d.words) for d in seg.dropped), cfg.min_clip_s, cfg.max_clip_s)
        dropped = tuple(SkippedSpeech(d.start_ms, d.end_ms, len(d.words), d.reason) for d in seg.dropped)
        cov = speech_coverage(transcript.speech_ms, clips, dropped, transcript.guarded_ms,
                              [(w.start_ms, w.end_ms) for w in words])
        if cov.speech_ms:
            ctx.log.info("%s: %.1f %% of %.1f s of detected speech in clips, %.1f %% outside with a reason",
                         ctx.source_id, 100 * cov.in_clips_share, cov.speech_ms / 1000,
                         100 * (cov.accounted_share - cov.in_clips_share))
        return ClipList(source_id=ctx.source_id, clips=tuple(clips), dropped=dropped, speech_ms=cov.speech_ms,
                        speech_in_clips_ms=cov.in_clips_ms, speech_reported_ms=cov.reported_ms,
                        uncovered=cov.uncovered)
