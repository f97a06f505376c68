"""Fusion stage: the audio diarization of a source joined with its faces and active speakers (pure logic).

Wraps :func:`cinedub.ops.fusion.fuse`; the fused turns are also written as RTTM to the step's artifacts folder.
"""

from __future__ import annotations

from cinedub.config import Config
from cinedub.diarization.records import DiarizationResult
from cinedub.diarization.rttm import write_rttm
from cinedub.ops.fusion import fuse
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.types import IngestResult
from cinedub.vision.records import AsdResult, FaceTrackList


class FuseStage(Stage):
    """Speaker turns with on-screen flags and face tracks, speaker ids merged/split by the faces."""

    name = "fuse"
    version = "2"  # v2: speaker ids "<source_id>-S<nn>" (v1 wrote "<source_id>--S<nn>")
    inputs = ("ingest", "diarization", "faces", "asd")
    optional = frozenset({"faces", "asd"})
    output = "timeline"
    record = DiarizationResult
    resources = Resources(cpus=1)

    @classmethod
    def enabled(cls, cfg: Config) -> bool:
        return cfg.run_diarization

    def process(
        self,
        ctx: StageContext,
        ingest: IngestResult,
        diarization: DiarizationResult,
        faces: FaceTrackList | None,
        asd: AsdResult | None,
    ) -> DiarizationResult:
        fused = fuse(diarization, asd.turns if asd else None, faces.tracks if faces else (),
                     speaker_prefix=ctx.source_id)
        write_rttm(ctx.artifacts_dir / "timeline.rttm", fused.turns, ingest.source.episode)
        return fused
