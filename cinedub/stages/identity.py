"""Face identity stage: a dlib descriptor per face track, tracks clustered into identities across shots.

Thin wrapper over :func:`cinedub.vision.identity.identify_faces`; the tracks' descriptors go to ``identity.npy``
in the step's artifacts folder; the stage returns the :class:`~cinedub.vision.records.FaceIdentityResult`.
"""

from __future__ import annotations

from pathlib import Path

from cinedub.config import Config
from cinedub.models import DLIB_RECOGNITION, DLIB_SHAPE, model_path
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.vision.identity import FaceDescriber, identify_faces
from cinedub.vision.records import FaceIdentityResult, FaceTrackList


class IdentityStage(Stage):
    """Face identities of one source's tracks (``setup`` loads dlib's two models once, about 3 s)."""

    name = "face_identity"
    version = "1"
    inputs = ("faces",)
    output = "identities"
    record = FaceIdentityResult
    config_sections = ("av",)
    models = ("face-identity",)
    resources = Resources(cpus=1.0)  # dlib-bin runs one descriptor at a time on one core

    @classmethod
    def enabled(cls, cfg: Config) -> bool:
        return cfg.run_visual

    def setup(self) -> None:
        """Raises ModelNotFoundError when neither ``<models_dir>/dlib`` nor the face-recognition-models wheel has
        the files."""
        folder = model_path(self.cfg, "face-identity")
        self.describer = FaceDescriber(folder / DLIB_RECOGNITION, folder / DLIB_SHAPE)

    def process(self, ctx: StageContext, faces: FaceTrackList) -> FaceIdentityResult:
        return self.identify(faces, ctx.artifacts_dir)

    def identify(self, faces: FaceTrackList, work_dir: str | Path) -> FaceIdentityResult:
        """Describe and cluster the tracks of ``faces``; the descriptors go to ``<work_dir>/identity.npy``."""
        self.ensure_setup()
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        return identify_faces(faces, self.describer, self.cfg.av, embeddings_npy=work_dir / "identity.npy")
