"""ASR stage: faster-whisper (CTranslate2 Whisper) with word timestamps, a language policy that never translates,
a seeded temperature fallback and hallucination guards.

Flow of :meth:`AsrStage.transcribe`: decode the 16 kHz mono FLAC once -> language identification over all of
Whisper's languages (language-token probabilities averaged over up to :data:`LID_MAX_WINDOWS` 30 s windows of VAD
speech) -> :func:`cinedub.ops.language.decide_language` (no speech: ``no_speech``; a language outside
``cfg.languages``: skipped or transcribed in its own language) -> detected speech (Silero VAD, kept in
``Transcript.speech_ms`` for clip edges and coverage) -> ``transcribe(word_timestamps=True,
condition_on_previous_text=False)`` with CTranslate2's sampling seeded -> guards drop looped or silent segments
(reasons kept in ``Transcript.dropped``) -> integer-ms words, monotonic and clamped to the audio, Chinese in the
configured script.

The guard helpers (:func:`segment_guard_reason`, :func:`find_hallucinations`,
:func:`clean_words`, :func:`monotonic_words`) are pure and testable without a model; faster-whisper is imported
in :meth:`AsrStage.setup`.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from cinedub.config import Config
from cinedub.diarization.config import VadConfig
from cinedub.diarization.vad import silero_chunks, speech_regions
from cinedub.errors import MediaError, ModelNotFoundError
from cinedub.media import ASR_SAMPLE_RATE_HZ, load_audio
from cinedub.models import resolve_model_dir
from cinedub.hashing import stable_seed
from cinedub.ops.language import LanguageDecision, decide_language
from cinedub.ops.whisper_features import BlockLogMel
from cinedub.progress import Reporter, no_report
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.text import normalize_script
from cinedub.timebase import sample_to_ms, seconds_to_ms
from cinedub.types import AsrSegment, AudioTracks, DecodingSettings, Transcript

logger = logging.getLogger("cinedub.asr")

WINDOW_S = 30  # Whisper's input window (s)
LID_MAX_WINDOWS = 3  # language id looks at up to 3 x 30 s of speech: one window is easily fooled by a jingle
LID_SCAN_S = 300  # ... found in the first 5 min (bounds the extra VAD pass on long episodes)


from cinedub.ops.asr_guards import (  # noqa: E402,F401  (re-exported for callers and tests)
    MAX_NGRAM,
    _note,
    clean_words,
    find_hallucinations,
    monotonic_words,
    resolve_compute_type,
    segment_guard_reason,
)


# ---------------------------------------------------------------------------------------------------- the stage


class AsrStage(Stage):
    """faster-whisper ASR with word timestamps on the 16 kHz mono mix or vocals of one source.

    Loads ``<models_dir>/<cfg.asr.model>`` once (or ``cfg.asr.hub_id`` when that folder is missing and
    ``cfg.allow_hub``). Runs on CUDA when ``cfg.resolved_device()`` says so, else on CPU with int8 weights.
    """

    name = "asr"
    version = "3"  # v3: detected speech recorded, repetition guard keeps repeats over detected speech
    inputs = ("tracks",)
    output = "transcript"
    record = Transcript
    config_sections = ("asr", "languages", "zh_script")
    models = ("whisper",)
    resources = Resources(cpus=2, gpus=1)

    @classmethod
    def resources_for(cls, cfg: Config) -> Resources:
        return Resources(cpus=2, gpus=1, batch_size=cfg.asr.batch_size, threads=cfg.asr.cpu_threads or None)

    @classmethod
    def model_names(cls, cfg: Config) -> list[str]:
        device = cls.device_for(cfg)
        return [f"{cfg.asr.model}:{resolve_compute_type(cfg.asr.compute_type, device)}"]

    def process(self, ctx: StageContext, tracks: AudioTracks) -> Transcript:
        """Transcribe the source's 16 kHz vocals, sampling the fallback with a seed derived from its hash."""
        seed = self.cfg.asr.seed if self.cfg.asr.seed is not None else stable_seed(ctx.sha256, "asr")
        return self.transcribe(Path(tracks.analysis_audio), seed=seed, progress=ctx.progress)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.model: Any = None
        self.pipeline: Any = None
        self.model_name = cfg.asr.model
        self.compute_type = resolve_compute_type(cfg.asr.compute_type, self.device)
        self.languages: list[str] = list(cfg.languages)
        self._decode_lock = threading.Lock()  # one decode at a time: the fallback seed is process-wide
        # the encoder output of language id's first window, per thread, for transcription's first window when its
        # input is the same array (see :meth:`_encode`)
        self._first_window = threading.local()

    def setup(self) -> None:
        """Load the Whisper model (and the batched pipeline when ``asr.batch_size > 1``).

        Raises:
            ModelNotFoundError: the model folder is missing and the hub is not allowed.
            ValueError: none of ``cfg.languages`` is a language the model knows.
        """
        from faster_whisper import BatchedInferencePipeline, WhisperModel

        asr = self.cfg.asr
        try:
            source = str(resolve_model_dir(self.cfg, "whisper"))
            self.model_name = Path(source).name
        except ModelNotFoundError:
            if not self.cfg.allow_hub:
                raise
            logger.warning("whisper folder %r missing: loading %s from the hub", asr.model, asr.hub_id)
            source = self.model_name = asr.hub_id
        device, _, index = self.device.partition(":")
        t0 = time.perf_counter()
        self.model = WhisperModel(
            source,
            device=device,
            device_index=int(index or 0),
            compute_type=self.compute_type,
            cpu_threads=self.threads_for(self.cfg),
            local_files_only=not self.cfg.allow_hub,
        )
        # the same features in 30 s blocks: faster-whisper's own extractor takes ~0.6 MB per second of audio at once
        self.model.feature_extractor = BlockLogMel(self.model.feature_extractor)
        self._whisper_encode = self.model.encode
        self.model.encode = self._encode
        if asr.batch_size > 1:
            self.pipeline = BatchedInferencePipeline(self.model)
        supported = set(self.model.supported_languages)
        unknown = [lang for lang in self.cfg.languages if lang not in supported]
        if unknown:
            logger.warning("languages %s are unknown to %s and ignored", unknown, self.model_name)
        self.languages = [lang for lang in self.cfg.languages if lang in supported]
        if self.cfg.languages and not self.languages:
            raise ValueError(f"none of the configured languages {self.cfg.languages} is supported by {self.model_name}")
        logger.info(
            "loaded %s on %s (%s) in %.1f s", self.model_name, self.device, self.compute_type, time.perf_counter() - t0
        )

    # -------------------------------------------------------------------------------------------------- language

    def language_probabilities(self, audio: np.ndarray) -> dict[str, float]:
        """Whisper's language-token probabilities of ``audio`` (float32 mono 16 kHz) over all its languages,
        averaged (weighted by length) over up to :data:`LID_MAX_WINDOWS` 30 s windows of speech (Silero VAD when
        ``asr.vad_filter``) from the first :data:`LID_SCAN_S` seconds. Empty when no speech is found.

        The windows are cut from the features of all that speech as faster-whisper's ``transcribe`` cuts its own
        (``features[:, seek:seek + 3000]``, the last frame dropped, padded to 3000): when transcription's input is the
        same speech (audio of at most :data:`LID_SCAN_S` s), its first window is the same array, and its encoder
        output is taken from here instead of computed again (:meth:`_encode`; 1.5-2.4 s a source on 2 cores)."""
        from faster_whisper.audio import pad_or_trim

        scan = audio[: LID_SCAN_S * ASR_SAMPLE_RATE_HZ]
        speech = speech_only(scan)[0] if self.cfg.asr.vad_filter else scan
        if not len(speech):
            return {}
        features = self.model.feature_extractor(speech)
        n_frames = features.shape[-1] - 1  # as faster-whisper's transcribe: the last frame is not content
        step = self.model.feature_extractor.nb_max_frames
        totals: dict[str, float] = {}
        weight = 0.0
        for i in range(0, min(n_frames, LID_MAX_WINDOWS * step), step):
            window = pad_or_trim(features[:, i : min(i + step, n_frames)])
            encoded = self._whisper_encode(window)
            if i == 0:
                self._first_window.pair = (window, encoded)
            frames = min(step, n_frames - i)
            for token, p in self.model.model.detect_language(encoded)[0]:
                lang = token[2:-2]  # "<|en|>" -> "en"
                totals[lang] = totals.get(lang, 0.0) + p * frames
            weight += frames
        return {lang: v / weight for lang, v in totals.items()} if weight else {}

    def _encode(self, features: np.ndarray) -> Any:
        """``WhisperModel.encode``, with language id's first window reused once when ``features`` is that same
        array (bit for bit), so the same encoder output comes without a second pass."""
        pair = getattr(self._first_window, "pair", None)
        if pair is not None:
            self._first_window.pair = None
            if features.shape == pair[0].shape and np.array_equal(features, pair[0]):
                return pair[1]
        return self._whisper_encode(features)

    def detect_language(self, audio: np.ndarray) -> LanguageDecision:
        """The language of ``audio`` and what to do with it (:func:`cinedub.ops.language.decide_language`)."""
        return decide_language(self.language_probabilities(audio), self.languages, self.cfg.asr.other_languages)

    # -------------------------------------------------------------------------------------------------- process

    def _transcribe(self, audio: np.ndarray, language: str, seed: int, progress: Reporter = no_report) -> list[Any]:
        import ctranslate2

        asr = self.cfg.asr
        kwargs: dict[str, Any] = dict(
            language=language,
            task="transcribe",
            beam_size=asr.beam_size,
            temperature=list(asr.temperatures),
            word_timestamps=True,
            vad_filter=asr.vad_filter,
            condition_on_previous_text=False,  # a hallucination cannot feed the next window
            compression_ratio_threshold=asr.max_compression_ratio,
            log_prob_threshold=asr.logprob_threshold,
            no_speech_threshold=asr.no_speech_threshold,
        )
        if self.pipeline is None and asr.vad_filter:
            # faster-whisper's own VAD pass holds about 3.5 copies of the whole audio (a padded copy, Silero's
            # windowed copy, its quadratic concatenation of the speech); the same chunks, found block by block and
            # joined once, hold at most one more, so a long episode does not need several GB
            from faster_whisper.transcribe import restore_speech_timestamps

            speech, chunks = speech_only(audio)
            segments, _ = self.model.transcribe(speech, **{**kwargs, "vad_filter": False})
            if chunks:
                segments = restore_speech_timestamps(segments, chunks, ASR_SAMPLE_RATE_HZ)
        elif self.pipeline is None:
            segments, _ = self.model.transcribe(audio, **kwargs)  # lazy: decoding starts when iterated
        else:
            if not asr.vad_filter and len(audio) >= WINDOW_S * ASR_SAMPLE_RATE_HZ:
                # the batched pipeline needs clips; without VAD cut plain 30 s windows (in seconds)
                dur_s = len(audio) / ASR_SAMPLE_RATE_HZ
                kwargs["clip_timestamps"] = [
                    {"start": float(s), "end": float(min(s + WINDOW_S, dur_s))} for s in range(0, int(dur_s), WINDOW_S)
                ]
            with self._decode_lock:
                ctranslate2.set_random_seed(seed)
                segments, _ = self.pipeline.transcribe(audio, batch_size=asr.batch_size, **kwargs)
                return list(segments)
        total_s = round(len(audio) / ASR_SAMPLE_RATE_HZ, 1)
        out = []
        with self._decode_lock:  # the seed is process-wide: one seeded decode at a time
            ctranslate2.set_random_seed(seed)
            for seg in segments:  # the generator does the decoding
                out.append(seg)
                progress(min(float(seg.end), total_s), total_s, "s")
        progress(total_s, total_s, "s")
        return out

    def transcribe(
        self, audio_path: Path, *, language: str | None = None, seed: int = 0, progress: Reporter = no_report
    ) -> Transcript:
        """Transcribe one 16 kHz mono FLAC.

        Args:
            audio_path: 16 kHz mono FLAC (``AudioTracks.analysis_audio``); source timeline.
            language: force this ISO 639-1 code (skips language identification; probability 1.0).
            seed: seed of the temperature-fallback sampling (the same seed and input give the same text).
            progress: ``progress(done_s, total_s, "s")`` as the decoding advances.

        Returns:
            The transcript: segments in time order with words in integer ms, ``start_ms <= end_ms``, monotonic,
            within ``[0, duration]``; Chinese in ``cfg.zh_script``; dropped segments described in ``dropped``.

        Raises:
            MediaError: the audio cannot be read or is not 16 kHz.
        """
        self.ensure_setup()
        audio_path = Path(audio_path)
        t0 = time.perf_counter()
        try:
            audio, sr = load_audio(audio_path)
        except Exception as e:  # soundfile raises its own error types for missing/corrupt files
            raise MediaError(audio_path, f"cannot read audio ({e})") from None
        if sr != ASR_SAMPLE_RATE_HZ:
            raise MediaError(audio_path, f"ASR needs {ASR_SAMPLE_RATE_HZ} Hz audio, got {sr} Hz (use extract_audio)")
        if audio.ndim == 2:
            audio = audio.mean(axis=1)
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        duration_ms = sample_to_ms(len(audio), sr)

        if language is not None:
            decision = LanguageDecision(language, 1.0, True, "ok")
        else:
            decision = self.detect_language(audio)
        lang, lang_prob = decision.language, decision.probability
        speech_ms = tuple(speech_regions(audio, VadConfig())) if len(audio) else ()
        t_lid = time.perf_counter()
        try:
            raw_segments = self._transcribe(audio, lang, seed, progress) if decision.transcribe and len(audio) else []
        finally:
            self._first_window.pair = None  # used by then, or not this source's

        zh_script = self.cfg.zh_script
        candidates: list[AsrSegment] = []
        for seg in raw_segments:
            words = tuple(
                clean_words(
                    [(w.word, w.start, w.end, w.probability) for w in (seg.words or [])],
                    duration_ms,
                    language=lang,
                    zh_script=zh_script,
                )
            )
            start = words[0].start_ms if words else min(seconds_to_ms(seg.start), duration_ms)
            end = words[-1].end_ms if words else min(max(seconds_to_ms(seg.end), start), duration_ms)
            candidates.append(
                AsrSegment(
                    text=normalize_script(seg.text.strip(), lang, zh_script),
                    start_ms=start,
                    end_ms=end,
                    words=words,
                    avg_logprob=float(seg.avg_logprob),
                    no_speech_prob=float(seg.no_speech_prob),
                    compression_ratio=float(seg.compression_ratio),
                    temperature=float(getattr(seg, "temperature", 0.0) or 0.0),
                )
            )

        kept: list[AsrSegment] = []
        dropped: list[str] = []
        guarded: list[tuple[int, int]] = []
        prev_end = 0
        for seg, reason in zip(candidates, find_hallucinations(candidates, self.cfg.asr, speech_ms)):
            if reason is None and not seg.words:
                reason = "no word timestamps"
            if reason is not None:
                dropped.append(_note(seg.start_ms, seg.end_ms, reason, seg.text))
                guarded.append((seg.start_ms, max(seg.start_ms, seg.end_ms)))
                continue
            # re-clamp across segments so word times never go back (segments may overlap by a few ms)
            words = tuple(monotonic_words(seg.words, duration_ms, prev_end_ms=prev_end))
            prev_end = words[-1].end_ms
            kept.append(
                AsrSegment(
                    text=seg.text,
                    start_ms=words[0].start_ms,
                    end_ms=words[-1].end_ms,
                    words=words,
                    avg_logprob=seg.avg_logprob,
                    no_speech_prob=seg.no_speech_prob,
                    compression_ratio=seg.compression_ratio,
                    temperature=seg.temperature,
                )
            )

        transcript = Transcript(
            language=lang,
            language_probability=float(lang_prob),
            segments=tuple(kept),
            model=self.model_name,
            dropped=tuple(dropped),
            decoding=DecodingSettings(
                beam_size=self.cfg.asr.beam_size,
                temperatures=tuple(self.cfg.asr.temperatures) if self.pipeline is None else tuple(self.cfg.asr.temperatures[:1]),
                seed=seed,
                batch_size=self.cfg.asr.batch_size,
                cpu_threads=self.threads_for(self.cfg),
                compute_type=self.compute_type,
                fallback_segments=sum(1 for c in candidates if c.temperature > 0),
            ),
            status=decision.status,
            status_reason=decision.reason,
            speech_ms=speech_ms,
            guarded_ms=tuple(guarded),
        )
        elapsed = time.perf_counter() - t0
        logger.info(
            "%s: %.1f s audio in %.1f s (RTF %.2f, language id %.1f s); language %s p=%.3f%s; "
            "%d segments, %d words, %d dropped",
            audio_path.name,
            duration_ms / 1000,
            elapsed,
            elapsed / max(duration_ms / 1000, 1e-3),
            t_lid - t0,
            lang,
            lang_prob,
            " (forced)" if language is not None else f" ({decision.status}{': ' + decision.reason if decision.reason else ''})",
            len(kept),
            sum(len(s.words) for s in kept),
            len(dropped),
        )
        for note in dropped:
            logger.debug("dropped %s", note)
        return transcript


def speech_only(audio: np.ndarray) -> tuple[np.ndarray, list[dict[str, int]]]:
    """The speech of ``audio`` (float32 mono 16 kHz) joined end to end, as faster-whisper's ``vad_filter`` keeps it
    (Silero VAD with its default ``VadOptions``, block by block: :func:`cinedub.diarization.vad.silero_chunks`), and
    the chunks it came from (samples), to map times back with ``restore_speech_timestamps``."""
    from faster_whisper.vad import VadOptions

    chunks = silero_chunks(audio, VadOptions())
    speech = np.concatenate([audio[c["start"] : c["end"]] for c in chunks]) if chunks else audio[:0]
    return speech, chunks
