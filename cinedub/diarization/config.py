"""Configuration of the audio side of speaker diarization (to be hooked into :class:`cinedub.config.Config`).

Two back-ends produce the same :class:`~cinedub.diarization.records.DiarizationResult`:

- ``"offline"`` (default where no pyannote weights exist): Silero VAD (shipped with faster-whisper) + GE2E d-vectors
  (Resemblyzer's ``pretrained.pt``) on sliding windows + agglomerative clustering with a distance threshold (or
  NME-SC spectral clustering) + a heuristic overlap detector.
- ``"pyannote"`` (production default where its weights are present): pyannote.audio 4.x ``SpeakerDiarization`` loaded
  from a local folder laid out like ``pyannote/speaker-diarization-community-1``.

Every default below says where it comes from and what it was checked on. The offline path's thresholds were chosen on
the short recordings of ``../shared/media`` (two with a speaker reference: ``en_2spk_audio``, 30 s telephone,
2 speakers; ``dialogue_5shots``, 30.8 s, 5 speakers), so they are starting points, not values tuned on a corpus.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class VadConfig(BaseModel):
    """Silero VAD (faster-whisper's ``VadOptions``) used by the offline path.

    Attributes:
        threshold: speech probability threshold (Silero's default 0.5).
        min_speech_ms: speech chunks shorter than this are dropped (Silero's default 250 ms).
        min_silence_ms: a pause must last this long to split speech (faster-whisper's 2000 ms is meant for ASR
            chunking; diarization needs short pauses, so 100 ms, the silero-vad package default).
        speech_pad_ms: padding added each side of a chunk (30 ms, silero-vad's default; faster-whisper's 400 ms would
            count padding as speech and raise the false-alarm part of DER).
    """

    threshold: float = Field(0.5, ge=0.0, le=1.0)
    min_speech_ms: int = Field(250, ge=0)
    min_silence_ms: int = Field(100, ge=0)
    speech_pad_ms: int = Field(30, ge=0)


class EmbeddingConfig(BaseModel):
    """GE2E d-vectors on sliding windows inside VAD speech.

    Attributes:
        model_dir_name: folder under ``models_dir`` holding Resemblyzer's ``pretrained.pt``.
        window_ms: window length. 1600 ms = 160 mel frames, the partial-utterance length GE2E was trained and is
            applied on (Resemblyzer ``partials_n_frames``; Wan et al., ICASSP 2018, use 140-180 frames).
        hop_ms: window hop (400 ms = 75 % overlap; a 30 s file embeds in well under a second on one core).
            FunCineForge and NeMo's base scale use 1.5 s / 0.75 s; here 300-750 ms gave DER 9-11 % on en_2spk_audio
            but 300 split a narrator in two and 500 merged zh_tvdrama's two speakers (the window count feeds the
            stability and minimum-cluster rules), so 400 is the value that kept every count right.
        assign_window_ms / assign_hop_ms: optional second, shorter window scale used only to score frames (turn
            boundaries) after clustering; off by default because 0.6-1.2 s windows raised DER on en_2spk_audio
            (13.7-22.5 % vs 10.9 %).
        min_window_ms: speech regions shorter than this get no window of their own and inherit the labels of
            their neighbours (GE2E is unreliable on < 0.5 s).
    """

    model_dir_name: str = "resemblyzer-ge2e"
    window_ms: int = Field(1600, ge=200)
    hop_ms: int = Field(400, ge=10)
    min_window_ms: int = Field(500, ge=100)
    assign_window_ms: int | None = Field(None, ge=200)
    assign_hop_ms: int = Field(100, ge=10)


class ClusterConfig(BaseModel):
    """Clustering of window d-vectors into speakers (see :mod:`cinedub.diarization.cluster` for the methods).

    Attributes:
        method: "ahc" (average-linkage agglomerative clustering cut at ``ahc_threshold``) or "spectral" (NME-SC,
            Park et al., IEEE SPL 2019: eigengap count on a p-neighbour binarised affinity).
        ahc_threshold: cosine distance at which AHC stops merging; also the single-speaker test of "spectral".
            0.29: the middle of the range (0.27-0.31) that counted the speakers of six recordings of
            ``../shared/media`` right (numbers and margins in :mod:`cinedub.diarization.cluster`).
        min_cluster_windows: AHC clusters with fewer windows are re-assigned to the closest large cluster
            (pyannote's ``min_cluster_size`` rule); 2 windows = about 2 s of speech at the default window/hop.
        unstable_fraction / unstable_similarity: windows whose cosine similarity to an overlapping neighbour is
            below both this quantile of all windows' and this absolute value (likely straddling a speaker change)
            are left out of clustering and only assigned afterwards. On en_2spk_audio, single-speaker windows had
            neighbour similarity 0.89-0.97 (two at 0.81) and windows spanning two speakers 0.84-0.88 (a few 0.91-0.95).
        min_speakers / max_speakers: bounds on the count (faces will give a lower bound later).
    """

    method: Literal["ahc", "spectral"] = "ahc"
    ahc_threshold: float = Field(0.29, gt=0.0, lt=2.0)
    min_cluster_windows: int = Field(2, ge=1)
    unstable_fraction: float = Field(0.3, ge=0.0, lt=1.0)
    unstable_similarity: float = Field(0.9, ge=0.0, le=1.0)
    min_speakers: int = Field(1, ge=1)
    max_speakers: int = Field(8, ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> "ClusterConfig":
        if self.min_speakers > self.max_speakers:
            raise ValueError("diarization.cluster: min_speakers > max_speakers")
        return self


class OverlapConfig(BaseModel):
    """Heuristic overlap detection of the offline path (see :mod:`cinedub.diarization.overlap`).

    Attributes:
        enabled: mark overlap at all.
        second_score_ratio: a frame is overlapped when the second speaker's smoothed similarity is at least this
            fraction of the first's (near a hand-over this almost always holds: the rule is mostly positional).
        max_distance_ms: only near a change of the dominant speaker (within this distance) is overlap marked:
            crosstalk in conversation clusters around turn changes. 250 ms was chosen on en_2spk_audio, the only
            recording here with labelled overlap (400 ms: DER 12.9 %, 250 ms: 10.9 %, off: 11.9 %).
        min_overlap_ms: shorter overlap runs are dropped.
    """

    enabled: bool = True
    second_score_ratio: float = Field(0.9, gt=0.0, le=1.0)
    max_distance_ms: int = Field(250, ge=0)
    min_overlap_ms: int = Field(100, ge=0)


class PyannoteConfig(BaseModel):
    """pyannote.audio 4.x pipeline loaded from a local folder.

    Attributes:
        model_dir_name: folder under ``models_dir`` laid out like ``pyannote/speaker-diarization-community-1``
            (``config.yaml``, ``segmentation/pytorch_model.bin``, ``embedding/pytorch_model.bin``,
            ``plda/{xvec_transform.npz,plda.npz}``).
        segmentation_batch_size / embedding_batch_size: None keeps the folder's ``config.yaml`` values.
    """

    model_dir_name: str = "speaker-diarization-community-1"
    segmentation_batch_size: int | None = None
    embedding_batch_size: int | None = None


class DiarizationConfig(BaseModel):
    """Audio speaker diarization.

    Attributes:
        method: "offline" (VAD + GE2E + clustering, real weights available here) or "pyannote".
        frame_ms: resolution of the offline path's frame labels (10 ms = the mel hop).
        min_turn_ms: offline speaker runs shorter than this inside speech go to the longer neighbouring speaker
            (pyannote's ``min_duration_on`` analogue); pauses are kept as VAD found them (community-1 uses
            ``min_duration_off = 0`` too).
        embeddings_npy: write per-speaker embeddings to ``<out>.embeddings.npy`` instead of inlining them in JSON.
        num_speakers / min_speakers / max_speakers: known count or bounds (override the clustering's own bounds).
        num_threads: torch intra-op threads while embedding (None leaves torch's setting; 1 is much faster than 2
            on a machine whose cores are busy with other work, where OpenMP threads wait on each other).
    """

    method: Literal["offline", "pyannote"] = "offline"
    frame_ms: int = Field(10, ge=1)
    min_turn_ms: int = Field(200, ge=0)
    embeddings_npy: bool = False
    num_speakers: int | None = Field(None, ge=1)
    min_speakers: int | None = Field(None, ge=1)
    max_speakers: int | None = Field(None, ge=1)
    num_threads: int | None = Field(None, ge=1)
    vad: VadConfig = Field(default_factory=VadConfig)
    embedding: EmbeddingConfig = Field(default_factory=EmbeddingConfig)
    cluster: ClusterConfig = Field(default_factory=ClusterConfig)
    overlap: OverlapConfig = Field(default_factory=OverlapConfig)
    pyannote: PyannoteConfig = Field(default_factory=PyannoteConfig)

    @model_validator(mode="after")
    def _bounds(self) -> "DiarizationConfig":
        lo, hi = self.min_speakers, self.max_speakers
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("diarization: min_speakers > max_speakers")
        return self

    def speaker_bounds(self) -> tuple[int, int]:
        """(min, max) speaker count: ``num_speakers`` pins both; else the explicit bounds, else the clustering's."""
        if self.num_speakers is not None:
            return self.num_speakers, self.num_speakers
        lo = self.min_speakers if self.min_speakers is not None else self.cluster.min_speakers
        hi = self.max_speakers if self.max_speakers is not None else self.cluster.max_speakers
        return lo, max(lo, hi)
