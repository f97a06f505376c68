"""Active speaker detection stage: Light-ASD scores per face-track frame and the speaking track of each turn.

Reads the faces stage's Parquet (face crops) and the 16 kHz mono audio; writes ``asd_scores.parquet`` (one row
per track frame) and ``asd.json`` (:class:`~cinedub.vision.records.AsdResult`) and returns the small record.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import pyarrow.parquet as pq

from cinedub.config import Config
from cinedub.errors import ModelNotFoundError
from cinedub.stages.base import Resources, Stage
from cinedub.stages.faces import vision_config
from cinedub.types import Turn
from cinedub.vision.asd import assign_turns, score_tracks, scores_table
from cinedub.vision.config import VisionConfig
from cinedub.vision.light_asd import load_light_asd
from cinedub.vision.records import AsdResult, FaceTrackList, TurnSpeaker
from cinedub.vision.syncnet import load_syncnet

log = logging.getLogger("cinedub.asd")


class AsdStage(Stage):
    """Light-ASD on every face track (speaking runs checked by SyncNet when its weights are present), then per
    turn the speaking face track or none."""

    name = "asd"
    version = "2"  # v2: SyncNet veto of speaking runs; in_sync column
    config_sections = ("vision",) if "vision" in Config.model_fields else ()
    resources = Resources(cpus=1.0, gpus=0.25, gpu_memory_gb=1.0)

    def __init__(self, cfg: Config, vision: VisionConfig | None = None):
        """``vision`` overrides ``cfg.vision`` (until the section is part of :class:`Config`, its defaults)."""
        super().__init__(cfg)
        self.vcfg = vision or vision_config(cfg)

    def setup(self) -> None:
        path = Path(self.cfg.models_dir) / self.vcfg.asd_dir_name / self.vcfg.asd_model
        if not path.is_file():
            raise ModelNotFoundError(
                f"Light-ASD weights not found: {path}. Get weight/{self.vcfg.asd_model} from GitHub "
                "Junhua-Liao/Light-ASD into that folder, or set models_dir (CINEDUB_MODELS_DIR)."
            )
        self.net = load_light_asd(path, self.device)
        self.sync_net = None
        if self.uses_sync:
            self.sync_net = load_syncnet(self.sync_path, self.device)
        elif self.vcfg.sync_check == "on":
            raise ModelNotFoundError(
                f"SyncNet weights not found: {self.sync_path}. Get syncnet_v2.model (joonson/syncnet_python, "
                "download_model.sh) into that folder, or set vision.sync_check to auto/off."
            )
        elif self.vcfg.sync_check == "auto":
            log.info("no SyncNet weights at %s: speaking runs are not checked for audio-visual sync", self.sync_path)

    @property
    def sync_path(self) -> Path:
        """Where the SyncNet weights are looked for: ``<models_dir>/<sync_dir_name>/<sync_model>``."""
        return Path(self.cfg.models_dir) / self.vcfg.sync_dir_name / self.vcfg.sync_model

    @property
    def uses_sync(self) -> bool:
        """The SyncNet check runs: ``sync_check`` is not "off" and the weights are there ("on" without them
        fails in :meth:`setup`)."""
        return self.vcfg.sync_check != "off" and self.sync_path.is_file()

    @property
    def model_name(self) -> str:
        """``light-asd:<checkpoint>``, plus ``+syncnet:<checkpoint>`` when the sync check runs."""
        name = f"light-asd:{self.vcfg.asd_model}"
        return name + (f"+syncnet:{self.vcfg.sync_model}" if self.uses_sync else "")

    def cache_token(self) -> str:
        # in "auto" mode the output depends on whether the SyncNet weights are present, not only on the config
        return super().cache_token() + ("+sync" if self.uses_sync else "")

    def provenance(self) -> dict:
        return {**super().provenance(), "model": self.model_name}

    def process(
        self, faces: FaceTrackList, audio_16k: str | Path, turns: Sequence[Turn], work_dir: str | Path
    ) -> AsdResult:
        """Score ``faces`` against ``audio_16k`` (mono 16 kHz FLAC/WAV, source timeline) and assign ``turns``.

        Writes ``<work_dir>/asd_scores.parquet`` and ``<work_dir>/asd.json``.
        """
        work_dir = Path(work_dir)
        v = self.vcfg
        statuses, scores = score_tracks(
            self.net, faces.frames_path, faces.tracks, audio_16k, fps=faces.fps, vcfg=v, device=self.device,
            sync_net=self.sync_net,
        ) if faces.tracks else ([], [])
        out = work_dir / "asd_scores.parquet"
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        pq.write_table(scores_table(scores, v.asd_threshold), str(tmp), compression="zstd")
        os.replace(tmp, out)
        speakers = assign_turns(
            turns, faces.tracks, statuses, scores, fps=faces.fps, threshold=v.asd_threshold,
            min_speaking_fraction=v.turn_min_speaking_fraction,
        )
        result = AsdResult(
            source_id=faces.source_id,
            model=self.model_name,
            threshold=v.asd_threshold,
            scores_path=str(out),
            tracks=tuple(statuses),
            turns=tuple(speakers),
        )
        result.to_json(work_dir / "asd.json")
        return result


def apply_to_turns(turns: Sequence[Turn], speakers: Sequence[TurnSpeaker]) -> list[Turn]:
    """``turns`` with ``on_screen`` and ``face_track_id`` filled from :meth:`AsdStage.process`'s assignments
    (matched by ``(start_ms, end_ms)``; turns without an assignment are returned unchanged)."""
    by_span = {(s.start_ms, s.end_ms): s for s in speakers}
    out = []
    for t in turns:
        s = by_span.get((t.start_ms, t.end_ms))
        out.append(t if s is None else dataclasses.replace(t, on_screen=s.on_screen, face_track_id=s.face_track_id))
    return out
