"""Faces stage: decode -> shot cuts -> detect -> track within shots -> lip landmarks and crops, for one source.

Thin wrapper over :func:`cinedub.vision.extract.extract_faces`: every frame is decoded once and feeds both the shot
detector (:class:`cinedub.vision.cuts.CutFinder`) and, inside the speech, the face pipeline. The per-frame rows
with encoded crops go to ``faces.parquet`` in the step's artifacts folder; the stage returns the small
:class:`~cinedub.vision.records.FaceTrackList`, whose ``shots`` the shots stage then passes on without decoding
again.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from cinedub.config import Config
from cinedub.diarization.records import DiarizationResult
from cinedub.errors import MediaError
from cinedub.models import model_name, model_path
from cinedub.ops.speech import speech_spans
from cinedub.progress import Reporter, no_report
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.types import IngestResult, ShotList, Source, Transcript
from cinedub.vision.detect import build_detector
from cinedub.vision.extract import extract_faces
from cinedub.vision.landmarks import LipLandmarker
from cinedub.vision.records import FaceTrackList


class FacesStage(Stage):
    """Face tracks with lips and crops inside the speech of one source.

    ``setup`` loads the detector once (SCRFD on ONNX Runtime, CUDA when present; mediapipe as the fallback) and
    FaceMesh's landmark network (LiteRT, one thread: it runs on the crop thread beside decoding and detection).
    """

    name = "faces"
    version = "6"  # v2: detection every 200 ms, tracked between; v3: shots found in the same decode, frame
    # indices in decode order (corrupt packets skipped), tracks end in the source; v4: keyframes on the reduced
    # canvas while a run's faces are large (opt-in); v5: reduced keyframes on the full canvas's geometry; v6: lips
    # from FaceMesh's landmark network on the smoothed face box of every frame (not the graph's tracking)
    inputs = ("ingest", "transcript", "diarization")
    optional = frozenset({"diarization"})
    output = "faces"
    record = FaceTrackList
    config_sections = ("vision", "shots")
    models = ("scrfd", "facemesh")
    resources = Resources(cpus=2.0, gpus=0.25, gpu_memory_gb=1.0)

    @classmethod
    def enabled(cls, cfg: Config) -> bool:
        return cfg.run_visual

    @classmethod
    def model_names(cls, cfg: Config) -> list[str]:
        names = [f"{cfg.vision.detector}:{cfg.vision.scrfd_dir_name}"]
        return names + [model_name(cfg, "facemesh")] if cfg.vision.landmarks else names

    def setup(self) -> None:
        self.detector = build_detector(self.cfg.vision, self.cfg.models_dir, self.device)
        self.landmarker = LipLandmarker(model_path(self.cfg, "facemesh")) if self.cfg.vision.landmarks else None
        # once per worker too, not in the first source's time (about 0.5 s on 2 cores): PySceneDetect (the cut
        # finder; it runs ffmpeg when imported) and pandas (pyarrow imports it on the first Table.from_pylist)
        import pandas  # noqa: F401
        import scenedetect.detectors  # noqa: F401
        import scenedetect.scene_manager  # noqa: F401
        self.detector_name = f"{self.detector.name}:{getattr(self.detector, 'model_file', '')}"

    def process(
        self,
        ctx: StageContext,
        ingest: IngestResult,
        transcript: Transcript,
        diarization: DiarizationResult | None,
    ) -> FaceTrackList:
        """Faces of the source's speech (ASR words and diarization turns) and the source's shots."""
        return self.extract(ingest.source, None, speech_spans(transcript, diarization), ctx.artifacts_dir,
                            progress=ctx.progress)

    def extract(
        self,
        source: Source,
        shots: ShotList | None,
        speech_spans_ms: Sequence[tuple[int, int]] | None,
        work_dir: str | Path,
        progress: Reporter = no_report,
    ) -> FaceTrackList:
        """Track faces of ``source`` within ``shots`` during ``speech_spans_ms`` (None = the whole video); the
        frames go to ``<work_dir>/faces.parquet``. ``shots`` None: the shots are found in the same decoding pass
        (``shots`` configuration) and returned in the record.

        Raises:
            MediaError: the source has no video or cannot be decoded.
        """
        if not source.has_video:
            raise MediaError(source.path, "no video stream (the faces stage needs one)")
        result, _ = extract_faces(
            source.path,
            Path(work_dir) / "faces.parquet",
            source_id=source.source_id,
            speech_spans_ms=speech_spans_ms,
            shots=shots,
            vcfg=self.cfg.vision,
            detector=self.detector,
            detector_name=self.detector_name,
            shot_cfg=self.cfg.shots if shots is None else None,
            progress=progress,
            end_limit_ms=source.duration_ms,
            declared_frames=source.n_frames,
            landmarker=self.landmarker,
        )
        return result
