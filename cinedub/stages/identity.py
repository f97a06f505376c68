"""Face identity stage: a dlib descriptor per face track, tracks clustered into identities across shots.

Thin wrapper over :func:`cinedub.vision.identity.identify_faces`; writes ``identity.json``
(:class:`~cinedub.vision.records.FaceIdentityResult`) and ``identity.npy`` (the tracks' descriptors) in its work folder.
"""

from __future__ import annotations

from pathlib import Path

from cinedub.config import Config
from cinedub.ops.av_config import AvConfig
from cinedub.stages.base import Resources, Stage
from cinedub.vision.identity import FaceDescriber, identify_faces, locate_dlib_models
from cinedub.vision.records import FaceIdentityResult, FaceTrackList


def av_config(cfg: Config) -> AvConfig:
    """The ``av`` section of ``cfg`` once it is part of :class:`Config`, else the defaults."""
    section = getattr(cfg, "av", None)
    if section is None:
        return AvConfig()
    return section if isinstance(section, AvConfig) else AvConfig.model_validate(section)


class IdentityStage(Stage):
    """Face identities of one source's tracks (``setup`` loads dlib's two models once, about 3 s)."""

    name = "face_identity"
    version = "1"
    config_sections = ("av",) if "av" in Config.model_fields else ()
    resources = Resources(cpus=1.0)  # dlib-bin runs one descriptor at a time on one core

    def __init__(self, cfg: Config, av: AvConfig | None = None):
        """``av`` overrides ``cfg.av`` (until the section is part of :class:`Config`, its defaults)."""
        super().__init__(cfg)
        self.acfg = av or av_config(cfg)

    def setup(self) -> None:
        """Raises ModelNotFoundError when neither ``<models_dir>/dlib`` nor the face-recognition-models wheel has
        the files."""
        self.paths = locate_dlib_models(self.cfg.models_dir, self.acfg.identity_model_dir_name)
        self.describer = FaceDescriber(*self.paths)

    def provenance(self) -> dict:
        return {**super().provenance(), "model": "dlib:dlib_face_recognition_resnet_model_v1"}

    def process(self, faces: FaceTrackList, work_dir: str | Path) -> FaceIdentityResult:
        """Describe and cluster the tracks of ``faces``; writes ``<work_dir>/identity.json`` and ``identity.npy``."""
        self.ensure_setup()
        work_dir = Path(work_dir)
        work_dir.mkdir(parents=True, exist_ok=True)
        result = identify_faces(faces, self.describer, self.acfg, embeddings_npy=work_dir / "identity.npy")
        result.to_json(work_dir / "identity.json")
        return result
