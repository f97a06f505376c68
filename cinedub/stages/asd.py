"""Active speaker detection stage: Light-ASD scores per face-track frame and the speaking track of each turn.

Reads the faces stage's Parquet (face crops) and the 16 kHz mono audio; writes ``asd_scores.parquet`` (one row
per track frame) in the step's artifacts folder and returns the small :class:`~cinedub.vision.records.AsdResult`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from cinedub.atomic import atomic_path
from cinedub.config import Config
from cinedub.diarization.records import DiarizationResult
from cinedub.models import is_present, model_path
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.types import AudioTracks, Turn
from cinedub.vision.asd import assign_turns, score_tracks, scores_table
from cinedub.vision.light_asd import load_light_asd
from cinedub.vision.records import AsdResult, FaceTrackList
from cinedub.vision.syncnet import load_syncnet

log = logging.getLogger("cinedub.asd")


class AsdStage(Stage):
    """Light-ASD on every face track (speaking runs checked by SyncNet when its weights are present), then per
    turn the speaking face track or none."""

    name = "asd"
    version = "3"  # v2: SyncNet veto of speaking runs; in_sync column. v3: compiled visual encoder on CPU
    inputs = ("faces", "tracks", "diarization")
    optional = frozenset({"diarization"})
    output = "asd"
    record = AsdResult
    config_sections = ("vision",)
    models = ("light-asd", "syncnet")
    resources = Resources(cpus=1.0, gpus=0.25, gpu_memory_gb=1.0)

    @classmethod
    def enabled(cls, cfg: Config) -> bool:
        return cfg.run_visual

    @classmethod
    def uses_sync(cls, cfg: Config) -> bool:
        """The SyncNet check runs: ``vision.sync_check`` is not "off" and its weights are present ("on" without
        them fails in :meth:`setup`)."""
        return cfg.vision.sync_check != "off" and is_present(cfg, "syncnet")

    @classmethod
    def model_names(cls, cfg: Config) -> list[str]:
        """Light-ASD's checkpoint, and SyncNet's when the sync check runs (in "auto" mode the output depends on
        whether the weights are present, so the cache key does too)."""
        names = super().model_names(cfg)
        return names if cls.uses_sync(cfg) else names[:1]

    def setup(self) -> None:
        """Load Light-ASD and, when it runs, SyncNet.

        Raises:
            ModelNotFoundError: Light-ASD's checkpoint is missing, or SyncNet's with ``sync_check: on``.
        """
        self.net = load_light_asd(model_path(self.cfg, "light-asd"), self.device, optimize=True)
        self.sync_net = None
        if self.uses_sync(self.cfg):
            self.sync_net = load_syncnet(model_path(self.cfg, "syncnet"), self.device)
        elif self.cfg.vision.sync_check == "on":
            model_path(self.cfg, "syncnet")  # raises, naming where the weights were looked for
        elif self.cfg.vision.sync_check == "auto":
            log.info("no SyncNet weights: speaking runs are not checked for audio-visual sync")

    @property
    def model_name(self) -> str:
        """``light-asd:<checkpoint>``, plus ``+syncnet:<checkpoint>`` when the sync check runs."""
        return "+".join(self.model_names(self.cfg))

    def process(
        self, ctx: StageContext, faces: FaceTrackList, tracks: AudioTracks, diarization: DiarizationResult | None
    ) -> AsdResult:
        """Score the source's face tracks against its 16 kHz vocals and assign the exclusive turns."""
        turns = diarization.exclusive_turns if diarization is not None else ()
        return self.score(faces, tracks.analysis_audio, turns, ctx.artifacts_dir)

    def score(
        self, faces: FaceTrackList, audio_16k: str | Path, turns: Sequence[Turn], work_dir: str | Path
    ) -> AsdResult:
        """Score ``faces`` against ``audio_16k`` (mono 16 kHz FLAC/WAV, source timeline) and assign ``turns``.

        Writes ``<work_dir>/asd_scores.parquet`` (atomically).
        """
        v = self.cfg.vision
        statuses, scores = score_tracks(
            self.net, faces.frames_path, faces.tracks, audio_16k, fps=faces.fps, vcfg=v, device=self.device,
            sync_net=self.sync_net,
        ) if faces.tracks else ([], [])
        out = Path(work_dir) / "asd_scores.parquet"
        with atomic_path(out) as tmp:
            pq.write_table(scores_table(scores, v.asd_threshold), str(tmp), compression="zstd")
        speakers = assign_turns(
            turns, faces.tracks, statuses, scores, fps=faces.fps, threshold=v.asd_threshold,
            min_speaking_fraction=v.turn_min_speaking_fraction,
        )
        return AsdResult(
            source_id=faces.source_id,
            model=self.model_name,
            threshold=v.asd_threshold,
            scores_path=str(out),
            tracks=tuple(statuses),
            turns=tuple(speakers),
        )
