"""Audio speaker diarization stage: 16 kHz vocals -> :class:`DiarizationResult` (+ RTTM).

The back-end is chosen by ``DiarizationConfig.method``: "offline" (Silero VAD + GE2E d-vectors + clustering; its
weights ship in the offline model pack) or "pyannote" (pyannote.audio 4.x from a local
``speaker-diarization-community-1``-style folder). The vocals are decoded once here and handed to the back-end as an
array (pyannote gets ``{"waveform", "sample_rate"}``), never re-read from disk by the library.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from cinedub.config import Config
from cinedub.diarization.config import DiarizationConfig
from cinedub.diarization.records import DiarizationResult, SpeakerEmbedding
from cinedub.diarization.rttm import write_rttm
from cinedub.errors import MediaError
from cinedub.media import load_audio
from cinedub.models import model_name, model_path
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.types import AudioTracks, IngestResult, Record

SAMPLE_RATE_HZ = 16_000


class DiarizationStage(Stage):
    """Who speaks when, from the separated vocals: :meth:`diarize` on a file, :meth:`diarize_array` on samples.

    In the pipeline the RTTM of the turns (for scoring and tools) and, with ``embeddings_npy``, the speaker
    embeddings go to the step's artifacts folder.
    """

    name: ClassVar[str] = "diarization"
    version: ClassVar[str] = "2"  # v2: ids "<source_id>-S<nn>" from the pipeline (v1 got a double dash)
    inputs: ClassVar[tuple[str, ...]] = ("ingest", "tracks")
    output: ClassVar[str] = "diarization"
    record: ClassVar[type[Record]] = DiarizationResult
    config_sections: ClassVar[tuple[str, ...]] = ("diarization",)
    resources: ClassVar[Resources] = Resources(cpus=1.0, gpus=0.5, gpu_memory_gb=2.0)

    def __init__(self, cfg: Config, dcfg: DiarizationConfig | None = None):
        super().__init__(cfg)
        self.dcfg = dcfg or cfg.diarization
        self.backend: Any = None
        self.last_wall_s: float | None = None  # seconds the last diarize() spent diarizing (benchmark rows)

    @classmethod
    def enabled(cls, cfg: Config) -> bool:
        return cfg.run_diarization

    @classmethod
    def model_names(cls, cfg: Config) -> list[str]:
        key = "pyannote" if cfg.diarization.method == "pyannote" else "speaker-embedding"
        return [f"{cfg.diarization.method}:{model_name(cfg, key)}"]

    def process(self, ctx: StageContext, ingest: IngestResult, tracks: AudioTracks) -> DiarizationResult:
        """Diarize the source's 16 kHz vocals; speaker ids ``<source_id>-S<nn>``; the RTTM goes to the artifacts."""
        result = self.diarize(tracks.analysis_audio, speaker_prefix=ctx.source_id, embeddings_dir=ctx.artifacts_dir)
        write_rttm(ctx.artifacts_dir / "diarization.rttm", result.turns, ingest.source.episode)
        return result

    def setup(self) -> None:
        """Load the chosen back-end's models once.

        Raises:
            ModelNotFoundError: GE2E ``pretrained.pt`` or the pyannote folder is missing (message says how to get it).
        """
        if self.dcfg.method == "pyannote":
            from cinedub.diarization.pyannote_backend import PyannoteDiarizer

            self.backend = PyannoteDiarizer(model_path(self.cfg, "pyannote"), self.dcfg, device=self.device)
        else:
            from cinedub.diarization.offline import OfflineDiarizer

            self.backend = OfflineDiarizer(model_path(self.cfg, "speaker-embedding"), self.dcfg, device=self.device)

    def diarize_array(self, wav: np.ndarray, sample_rate_hz: int, *, speaker_prefix: str = "") -> DiarizationResult:
        """Diarize samples already in memory (``(n,)`` or ``(n, channels)`` float32; channels are averaged)."""
        self.ensure_setup()
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim == 2:
            wav = wav.mean(axis=1)
        return self.backend.diarize(wav, sample_rate_hz, speaker_prefix=speaker_prefix)

    def diarize(
        self, audio_16k_path: str | Path, *, speaker_prefix: str = "", embeddings_dir: str | Path | None = None
    ) -> DiarizationResult:
        """Diarize ``audio_16k_path``.

        Args:
            audio_16k_path: mono 16 kHz FLAC/WAV (``AudioTracks.analysis_audio``).
            speaker_prefix: speaker ids become ``"<prefix>-S00"`` (pass the source id for episode-wide ids).
            embeddings_dir: with ``embeddings_npy`` set, the speaker embeddings go to
                ``<embeddings_dir>/diarization.embeddings.npy`` instead of inline.

        Raises:
            MediaError: unreadable audio, or not 16 kHz for the offline back-end.
            ModelNotFoundError: see :meth:`setup`.
        """
        self.ensure_setup()
        path = Path(audio_16k_path)
        try:
            wav, sr = load_audio(path)
        except Exception as e:  # soundfile raises its own error types
            raise MediaError(path, f"cannot read audio ({e})") from None
        if self.dcfg.method == "offline" and sr != SAMPLE_RATE_HZ:
            raise MediaError(path, f"diarization expects 16 kHz vocals, got {sr} Hz (use AudioTracks.analysis_audio)")
        t0 = time.perf_counter()
        result = self.diarize_array(wav, sr, speaker_prefix=speaker_prefix)
        self.last_wall_s = time.perf_counter() - t0
        if self.dcfg.embeddings_npy and result.embeddings and embeddings_dir is not None:
            result = _embeddings_to_npy(result, Path(embeddings_dir) / "diarization.embeddings.npy")
        return result


def _embeddings_to_npy(result: DiarizationResult, npy: Path) -> DiarizationResult:
    """Move inline embeddings to ``npy`` (rows in ``speaker_ids`` order), keep its path."""
    from dataclasses import replace

    from cinedub.diarization.records import save_npy_atomic

    matrix = result.embedding_matrix()
    save_npy_atomic(npy, matrix)
    embs = tuple(
        SpeakerEmbedding(e.speaker_id, e.model, e.dim, e.speech_ms, (), str(npy), i)
        for i, e in enumerate(result.embeddings)
    )
    return replace(result, embeddings=embs)
