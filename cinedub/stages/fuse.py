"""Fusion stage: the audio diarization of a source joined with its faces, active speakers, lip synchrony and
face identities (pure logic over the records: :func:`cinedub.ops.fusion.fuse_av`).

The fused timeline is the stage's record; the evidence behind every decision (per-piece cues, voice-identity
links, merges and splits) goes to ``fusion.json`` and the turns to ``timeline.rttm`` in the artifacts folder.
"""

from __future__ import annotations

from cinedub.config import Config
from cinedub.diarization.records import DiarizationResult
from cinedub.diarization.rttm import write_rttm
from cinedub.ops.fusion import fuse_av
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.types import AudioTracks, IngestResult, ShotList
from cinedub.vision.records import AsdResult, FaceIdentityResult, FaceTrackList


class FuseStage(Stage):
    """Speaker turns with on-screen flags, face tracks and identities, decided from evidence with confidences."""

    name = "fuse"
    version = "3"  # v3: scored decisions (ASD, margin, lip sync, identity), voice-identity links, turn hygiene
    inputs = ("ingest", "tracks", "shots", "diarization", "faces", "asd", "identities")
    optional = frozenset({"faces", "asd", "identities"})
    output = "timeline"
    record = DiarizationResult
    config_sections = ("av",)
    resources = Resources(cpus=1)

    @classmethod
    def enabled(cls, cfg: Config) -> bool:
        return cfg.run_diarization

    def setup(self) -> None:
        # what a worker loads once: the assignment solver and the Parquet reader of the per-frame evidence
        import pyarrow.dataset  # noqa: F401
        import scipy.optimize  # noqa: F401
        import scipy.signal  # noqa: F401

    def process(
        self,
        ctx: StageContext,
        ingest: IngestResult,
        tracks: AudioTracks,
        shots: ShotList,
        diarization: DiarizationResult,
        faces: FaceTrackList | None,
        asd: AsdResult | None,
        identities: FaceIdentityResult | None,
    ) -> DiarizationResult:
        fused = fuse_av(diarization, faces, asd, shots, identities, tracks.analysis_audio if faces else None,
                        speaker_prefix=ctx.source_id, cfg=self.cfg.av)
        fused.to_json(ctx.artifacts_dir / "fusion.json")
        write_rttm(ctx.artifacts_dir / "timeline.rttm", fused.timeline.turns, ingest.source.episode)
        return fused.timeline
