"""Build a random-weight pyannote pipeline folder in the exact layout of ``pyannote/speaker-diarization-community-1``.

The real weights are gated on the Hugging Face hub and absent here; this folder proves the production loading path
(``Pipeline.from_pretrained(<folder>)``, no network) end to end, never quality. Layout and formats, read from
pyannote.audio 4.0.7 (``core/pipeline.py``, ``core/model.py``, ``core/plda.py``, ``utils/vbx.py``)::

    config.yaml                    pipeline class + params; "$model/<sub>" entries resolve to <folder>/<sub>
    segmentation/pytorch_model.bin lightning checkpoint of PyanNet (powerset: 3 speakers, <= 2 at once, 10 s chunks)
    embedding/pytorch_model.bin    lightning checkpoint of WeSpeakerResNet34 (256-d, the community-1 embedding class)
    plda/xvec_transform.npz        mean1 (256,), mean2 (128,), lda (256, 128): x-vector centring/whitening/LDA
    plda/plda.npz                  mu (128,), tr (128, 128), psi (128,): PLDA for VBx clustering

A model checkpoint is what ``Model.from_pretrained`` loads through ``lightning``'s ``load_from_checkpoint``:
``state_dict``, ``hyper_parameters`` (constructor arguments) and ``pyannote.audio`` (versions, architecture
module/class, task ``specifications``), as ``Model.on_save_checkpoint`` writes it.

``config.yaml`` mirrors community-1's (VBxClustering, ``embedding_exclude_overlap: true``, clustering threshold 0.6,
Fa 0.07, Fb 0.8, ``min_duration_off`` 0.0).
"""

from __future__ import annotations

import os

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # pyannote telemetry is on by default

from pathlib import Path

import numpy as np
import yaml

COMMUNITY1_CONFIG: dict = {
    "dependencies": {"pyannote.audio": "4.0.0"},
    "pipeline": {
        "name": "pyannote.audio.pipelines.SpeakerDiarization",
        "params": {
            "clustering": "VBxClustering",
            "segmentation": "$model/segmentation",
            "segmentation_batch_size": 32,
            "embedding": "$model/embedding",
            "embedding_batch_size": 32,
            "embedding_exclude_overlap": True,
            "plda": "$model/plda",
        },
    },
    "params": {
        "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8},
        "segmentation": {"min_duration_off": 0.0},
    },
}

# segmentation-3.0's PyanNet sizes (sincnet stride 10, 4 bi-LSTM layers of 128, 2 linear layers of 128)
SEGMENTATION_HPARAMS = {
    "sincnet": {"stride": 10},
    "lstm": {"hidden_size": 128, "num_layers": 4, "bidirectional": True, "monolithic": True, "dropout": 0.0},
    "linear": {"hidden_size": 128, "num_layers": 2},
}


def _save_model_checkpoint(model, path: Path) -> None:
    """Write ``model`` the way ``Model.on_save_checkpoint`` + lightning would (what ``Model.from_pretrained`` reads)."""
    import lightning
    import torch
    from pyannote.audio import __version__ as pa_version

    ckpt = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": lightning.__version__,
        "pyannote.audio": {
            "versions": {"pyannote.audio": pa_version},
            "architecture": {"module": type(model).__module__, "class": type(model).__name__},
            "specifications": model.specifications,
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, path)


def _random_segmentation(seed: int):
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.segmentation import PyanNet

    torch.manual_seed(seed)
    model = PyanNet(**SEGMENTATION_HPARAMS)
    model.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION,
        resolution=Resolution.FRAME,
        duration=10.0,
        min_duration=10.0,
        warm_up=(0.0, 0.0),
        classes=["speaker#1", "speaker#2", "speaker#3"],
        powerset_max_classes=2,
        permutation_invariant=True,
    )
    model.setup()  # adds the task-dependent classifier (7 powerset classes) and activation
    return model.eval()


def _random_embedding(seed: int):
    import torch
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34

    torch.manual_seed(seed)
    model = WeSpeakerResNet34()
    model.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=10.0)
    return model.eval()


def _random_plda(folder: Path, dim: int, lda_dim: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    q_lda, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    np.savez(
        folder / "xvec_transform.npz",
        mean1=(0.01 * rng.standard_normal(dim)).astype(np.float64),
        mean2=(0.01 * rng.standard_normal(lda_dim)).astype(np.float64),
        lda=q_lda[:, :lda_dim].astype(np.float64),
    )
    q_tr, _ = np.linalg.qr(rng.standard_normal((lda_dim, lda_dim)))
    np.savez(
        folder / "plda.npz",
        mu=np.zeros(lda_dim),
        tr=q_tr,  # orthonormal: within-class covariance = identity, as VBx assumes
        psi=np.sort(rng.uniform(0.5, 5.0, lda_dim))[::-1].copy(),  # positive between-class variances
    )


def build_random_community1(folder: str | Path, seed: int = 0) -> Path:
    """Write a random-weight pipeline folder laid out like ``pyannote/speaker-diarization-community-1``.

    Args:
        folder: created if missing; existing files are overwritten.
        seed: torch / numpy seed (same seed, same bytes of weights).

    Returns:
        The folder, ready for ``Pipeline.from_pretrained(folder)`` (about 30 MB, a few seconds to build).
    """
    folder = Path(folder)
    (folder / "plda").mkdir(parents=True, exist_ok=True)
    _save_model_checkpoint(_random_segmentation(seed), folder / "segmentation" / "pytorch_model.bin")
    emb = _random_embedding(seed + 1)
    _save_model_checkpoint(emb, folder / "embedding" / "pytorch_model.bin")
    _random_plda(folder / "plda", dim=int(emb.dimension), lda_dim=128, seed=seed + 2)
    (folder / "config.yaml").write_text(yaml.safe_dump(COMMUNITY1_CONFIG, sort_keys=False), encoding="utf-8")
    return folder


__all__ = ["COMMUNITY1_CONFIG", "build_random_community1"]
