"""Audio speaker diarization stage: 16 kHz vocals -> :class:`DiarizationResult` JSON (+ RTTM).

The back-end is chosen by ``DiarizationConfig.method``: "offline" (Silero VAD + GE2E d-vectors + clustering; its
weights ship in the offline model pack) or "pyannote" (pyannote.audio 4.x from a local
``speaker-diarization-community-1``-style folder). The vocals are decoded once here and handed to the back-end as an
array (pyannote gets ``{"waveform", "sample_rate"}``), never re-read from disk by the library.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cinedub.config import Config
from cinedub.diarization.config import DiarizationConfig
from cinedub.diarization.records import DiarizationResult, SpeakerEmbedding
from cinedub.diarization.rttm import write_rttm
from cinedub.errors import MediaError, ModelNotFoundError
from cinedub.media import load_audio
from cinedub.stages.base import Resources, Stage

SAMPLE_RATE_HZ = 16_000


def diarization_config(cfg: Config) -> DiarizationConfig:
    """The ``diarization`` section of ``cfg`` (defaults until it is hooked into :class:`Config`)."""
    section = getattr(cfg, "diarization", None)
    if section is None:
        return DiarizationConfig()
    return section if isinstance(section, DiarizationConfig) else DiarizationConfig.model_validate(section)


class DiarizationStage(Stage):
    """Who speaks when, from the separated vocals.

    ``process(vocals_16k_path, out_json)`` writes ``out_json`` (the result), ``<out_json stem>.rttm`` (turns, for
    scoring and tools) and, with ``embeddings_npy``, ``<out_json stem>.embeddings.npy``.
    """

    name: ClassVar[str] = "diarization"
    version: ClassVar[str] = "2"  # v2: ids "<source_id>-S<nn>" from the pipeline (v1 got a double dash)
    config_sections: ClassVar[tuple[str, ...]] = ("diarization",)
    resources: ClassVar[Resources] = Resources(cpus=1.0)

    def __init__(self, cfg: Config, dcfg: DiarizationConfig | None = None):
        super().__init__(cfg)
        self.dcfg = dcfg or diarization_config(cfg)
        self.backend: Any = None
        self.last_wall_s: float | None = None  # seconds the last process() spent diarizing (benchmark rows)

    def cache_token(self) -> str:
        """``name/version/hash`` of the diarization config (works before the section is part of :class:`Config`)."""
        digest = hashlib.sha256(self.dcfg.model_dump_json().encode()).hexdigest()[:12]
        return f"{self.name}/v{self.version}/{digest}"

    def setup(self) -> None:
        """Load the chosen back-end's models once.

        Raises:
            ModelNotFoundError: GE2E ``pretrained.pt`` or the pyannote folder is missing (message says how to get it).
        """
        models = Path(self.cfg.models_dir)
        if self.dcfg.method == "pyannote":
            from cinedub.diarization.pyannote_backend import PyannoteDiarizer

            folder = models / self.dcfg.pyannote.model_dir_name
            self.backend = PyannoteDiarizer(folder, self.dcfg, device=self.cfg.resolved_device())
        else:
            from cinedub.diarization.offline import OfflineDiarizer

            weights = models / self.dcfg.embedding.model_dir_name / "pretrained.pt"
            if not weights.is_file():
                raise ModelNotFoundError(
                    f"speaker embedding weights not found: {weights}. Get resemblyzer/pretrained.pt from PyPI "
                    "Resemblyzer==0.1.4, or set models_dir (CINEDUB_MODELS_DIR) to a folder that has it."
                )
            self.backend = OfflineDiarizer(weights, self.dcfg, device="cpu")

    def provenance(self) -> dict[str, Any]:
        out = super().provenance()
        out["method"] = getattr(self.backend, "method", self.dcfg.method)
        return out

    def diarize_array(self, wav: np.ndarray, sample_rate_hz: int, *, speaker_prefix: str = "") -> DiarizationResult:
        """Diarize samples already in memory (``(n,)`` or ``(n, channels)`` float32; channels are averaged)."""
        self.ensure_setup()
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim == 2:
            wav = wav.mean(axis=1)
        return self.backend.diarize(wav, sample_rate_hz, speaker_prefix=speaker_prefix)

    def process(
        self, vocals_16k_path: str | Path, out_json: str | Path, *, speaker_prefix: str = "", uri: str | None = None
    ) -> DiarizationResult:
        """Diarize ``vocals_16k_path`` and write the result.

        Args:
            vocals_16k_path: mono 16 kHz FLAC/WAV (``AudioTracks.vocals_16k``).
            out_json: result path; the RTTM goes next to it (``.rttm``).
            speaker_prefix: speaker ids become ``"<prefix>-S00"`` (pass the source id for episode-wide ids).
            uri: recording id written in the RTTM (default: ``speaker_prefix`` or the audio file's stem).

        Raises:
            MediaError: unreadable audio, or not 16 kHz for the offline back-end.
            ModelNotFoundError: see :meth:`setup`.
        """
        self.ensure_setup()
        path, out_json = Path(vocals_16k_path), Path(out_json)
        try:
            wav, sr = load_audio(path)
        except Exception as e:  # soundfile raises its own error types
            raise MediaError(path, f"cannot read audio ({e})") from None
        if self.dcfg.method == "offline" and sr != SAMPLE_RATE_HZ:
            raise MediaError(path, f"diarization expects 16 kHz vocals, got {sr} Hz (use AudioTracks.vocals_16k)")
        t0 = time.perf_counter()
        result = self.diarize_array(wav, sr, speaker_prefix=speaker_prefix)
        self.last_wall_s = time.perf_counter() - t0
        if self.dcfg.embeddings_npy and result.embeddings:
            result = _embeddings_to_npy(result, out_json)
        result.to_json(out_json)
        write_rttm(out_json.with_suffix(".rttm"), result.turns, uri or speaker_prefix or path.stem)
        return result


def _embeddings_to_npy(result: DiarizationResult, out_json: Path) -> DiarizationResult:
    """Move inline embeddings to ``<stem>.embeddings.npy`` (rows in ``speaker_ids`` order), keep a relative path."""
    from dataclasses import replace

    from cinedub.diarization.records import save_npy_atomic

    matrix = result.embedding_matrix()
    npy = out_json.with_name(out_json.stem + ".embeddings.npy")
    save_npy_atomic(npy, matrix)
    embs = tuple(
        SpeakerEmbedding(e.speaker_id, e.model, e.dim, e.speech_ms, (), npy.name, i)
        for i, e in enumerate(result.embeddings)
    )
    return replace(result, embeddings=embs)
