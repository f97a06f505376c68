"""Faces stage: decode -> detect -> track within shots -> lip landmarks and crops, for one source.

Thin wrapper over :func:`cinedub.vision.extract.extract_faces`; writes ``faces.parquet`` (per-frame rows with
encoded crops) and ``faces.json`` (:class:`~cinedub.vision.records.FaceTrackList`) in the source's work folder
and returns the small record.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cinedub.config import Config
from cinedub.errors import MediaError
from cinedub.stages.base import Resources, Stage
from cinedub.types import ShotList, Source
from cinedub.vision.config import VisionConfig
from cinedub.vision.detect import build_detector
from cinedub.vision.extract import extract_faces
from cinedub.vision.records import FaceTrackList


def vision_config(cfg: Config) -> VisionConfig:
    """The ``vision`` section of ``cfg`` once it is part of :class:`Config`, else the defaults."""
    v = getattr(cfg, "vision", None)
    return v if isinstance(v, VisionConfig) else VisionConfig()


class FacesStage(Stage):
    """Face tracks with lips and crops inside the speech of one source.

    ``setup`` loads the detector once (SCRFD on ONNX Runtime, CUDA when present; mediapipe as the fallback).
    """

    name = "faces"
    version = "1"
    config_sections = ("vision",) if "vision" in Config.model_fields else ()
    resources = Resources(cpus=2.0, gpus=0.25, gpu_memory_gb=1.0)

    def __init__(self, cfg: Config, vision: VisionConfig | None = None):
        """``vision`` overrides ``cfg.vision`` (until the section is part of :class:`Config`, its defaults)."""
        super().__init__(cfg)
        self.vcfg = vision or vision_config(cfg)

    def setup(self) -> None:
        self.detector = build_detector(self.vcfg, self.cfg.models_dir, self.device)
        self.detector_name = f"{self.detector.name}:{getattr(self.detector, 'model_file', '')}"

    def provenance(self) -> dict:
        return {**super().provenance(), "detector": self.detector_name, "landmarks": "mediapipe-facemesh-0.10.21"}

    def process(
        self,
        source: Source,
        shots: ShotList | None,
        speech_spans_ms: Sequence[tuple[int, int]] | None,
        work_dir: str | Path,
    ) -> FaceTrackList:
        """Track faces of ``source`` within ``shots`` during ``speech_spans_ms`` (None = the whole video).

        Writes ``<work_dir>/faces.parquet`` and ``<work_dir>/faces.json``.

        Raises:
            MediaError: the source has no video or cannot be decoded.
        """
        if not source.has_video:
            raise MediaError(source.path, "no video stream (the faces stage needs one)")
        work_dir = Path(work_dir)
        result, _ = extract_faces(
            source.path,
            work_dir / "faces.parquet",
            source_id=source.source_id,
            speech_spans_ms=speech_spans_ms,
            shots=shots,
            vcfg=self.vcfg,
            detector=self.detector,
            detector_name=self.detector_name,
        )
        result.to_json(work_dir / "faces.json")
        return result
