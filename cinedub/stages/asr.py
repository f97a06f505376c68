"""ASR stage: faster-whisper (CTranslate2 Whisper) with word timestamps, restricted language identification and
hallucination guards.

Flow of :meth:`AsrStage.process`: decode the 16 kHz mono FLAC once -> language identification restricted to
``cfg.languages`` (Whisper's language-token probabilities, averaged over up to :data:`LID_MAX_WINDOWS` 30 s windows of
VAD speech) -> ``transcribe(word_timestamps=True, condition_on_previous_text=False)`` -> guards drop looped or
silent segments (reasons kept in ``Transcript.dropped``) -> integer-ms words, monotonic and clamped to the audio,
Chinese in the configured script -> ``Transcript`` JSON written atomically.

The guard helpers (:func:`segment_guard_reason`, :func:`find_hallucinations`, :func:`choose_language`,
:func:`clean_words`, :func:`monotonic_words`) are pure and testable without a model; faster-whisper is imported
in :meth:`AsrStage.setup`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cinedub.config import AsrConfig, Config
from cinedub.errors import MediaError, ModelNotFoundError
from cinedub.media import ASR_SAMPLE_RATE_HZ, load_audio
from cinedub.models import resolve_model_dir
from cinedub.stages.base import Resources, Stage
from cinedub.text import max_ngram_repeats, normalize_for_scoring, normalize_script, scoring_units
from cinedub.timebase import sample_to_ms, seconds_to_ms
from cinedub.types import AsrSegment, Transcript, Word

logger = logging.getLogger("cinedub.asr")

WINDOW_S = 30  # Whisper's input window (s)
LID_MAX_WINDOWS = 3  # language id looks at up to 3 x 30 s of speech: one window is easily fooled by a jingle
LID_SCAN_S = 300  # ... found in the first 5 min (bounds the extra VAD pass on long episodes)
MAX_NGRAM = 10  # longest phrase (words, or CJK characters) the repetition guard looks for


# ---------------------------------------------------------------------------------------------------- pure helpers


def choose_language(probs: Mapping[str, float], allowed: Sequence[str]) -> tuple[str, float]:
    """Most probable language among ``allowed``, with its probability renormalised over the allowed ones.

    Args:
        probs: language code -> probability (Whisper's language-token softmax, all languages).
        allowed: permitted codes in preference order; empty means any language. The first one is the fallback when
            none of them has any probability mass.

    Returns:
        ``(language, probability)``; probability is 0.0 for the fallback.
    """
    if not allowed:
        if not probs:
            raise ValueError("no language probabilities and no allowed languages")
        best = max(probs, key=probs.__getitem__)
        return best, float(probs[best])
    mass = {lang: float(probs.get(lang, 0.0)) for lang in allowed}
    total = sum(mass.values())
    if total <= 0.0:
        return allowed[0], 0.0
    best = max(allowed, key=mass.__getitem__)  # ties keep the configured order
    return best, mass[best] / total


def segment_guard_reason(segment: AsrSegment, asr: AsrConfig) -> str | None:
    """Why ``segment`` looks hallucinated, or None when it passes.

    Rules (thresholds from ``asr``):

    - ``compression_ratio > max_compression_ratio``: gzip-compressible text is repetitive (OpenAI Whisper's
      ``transcribe`` uses 2.4 to trigger a temperature fallback; here a segment still over it afterwards is dropped).
    - ``no_speech_prob > no_speech_threshold`` **and** ``avg_logprob < logprob_threshold``: Whisper's rule for
      "this window is silence" (OpenAI Whisper 0.6 / -1.0).
    - the same n-gram (n <= :data:`MAX_NGRAM` words, or CJK characters) repeated back to back more than
      ``max_repeats`` times: a decoding loop.
    - no text at all after removing punctuation.
    """
    if segment.compression_ratio > asr.max_compression_ratio:
        return f"compression ratio {segment.compression_ratio:.2f} > {asr.max_compression_ratio}"
    if segment.no_speech_prob > asr.no_speech_threshold and segment.avg_logprob < asr.logprob_threshold:
        return (
            f"no speech (no_speech_prob {segment.no_speech_prob:.2f} > {asr.no_speech_threshold}, "
            f"avg_logprob {segment.avg_logprob:.2f} < {asr.logprob_threshold})"
        )
    units = scoring_units(segment.text)
    if not units:
        return "empty text"
    repeats, n = max_ngram_repeats(units, MAX_NGRAM)
    if repeats > asr.max_repeats:
        return f"repetition loop ({n}-gram repeated {repeats} times > {asr.max_repeats})"
    return None


def find_hallucinations(segments: Sequence[AsrSegment], asr: AsrConfig) -> list[str | None]:
    """One reason (or None) per segment: :func:`segment_guard_reason`, plus runs of more than ``max_repeats``
    consecutive segments with the same text (Whisper's "Thank you." loop over music spreads over many segments)."""
    reasons = [segment_guard_reason(s, asr) for s in segments]
    keys = [normalize_for_scoring(s.text) for s in segments]
    i = 0
    while i < len(segments):
        j = i
        while j + 1 < len(segments) and keys[j + 1] and keys[j + 1] == keys[i]:
            j += 1
        run = j - i + 1
        if keys[i] and run > asr.max_repeats:
            for k in range(i, j + 1):
                reasons[k] = reasons[k] or f"same text in {run} consecutive segments > {asr.max_repeats}"
        i = j + 1
    return reasons


def monotonic_words(words: Sequence[Word], duration_ms: int, *, prev_end_ms: int = 0) -> list[Word]:
    """Clamp word times so that ``prev_end_ms <= start_ms <= end_ms <= duration_ms`` and each word starts no earlier
    than the previous one ends (DTW word times can overlap by a few ms across segment boundaries)."""
    out: list[Word] = []
    floor = max(0, min(prev_end_ms, duration_ms))
    for w in words:
        start = min(max(w.start_ms, floor), duration_ms)
        end = min(max(w.end_ms, start), duration_ms)
        out.append(w if (start, end) == (w.start_ms, w.end_ms) else dataclasses.replace(w, start_ms=start, end_ms=end))
        floor = end
    return out


def clean_words(
    raw: Sequence[tuple[str, float, float, float]],
    duration_ms: int,
    *,
    prev_end_ms: int = 0,
    language: str | None = None,
    zh_script: str = "simplified",
) -> list[Word]:
    """Turn faster-whisper words into :class:`Word` records on integer ms.

    Args:
        raw: ``(text, start_s, end_s, probability)`` per word, in order (faster-whisper's ``Word`` fields).
        duration_ms: audio length; every time is clamped to ``[0, duration_ms]``.
        prev_end_ms: end of the previous kept word (times never go back before it).
        language / zh_script: Chinese text is written in ``zh_script`` (OpenCC).

    Returns:
        Words with stripped, non-empty text, clamped by :func:`monotonic_words`.
    """
    words = []
    for text, start_s, end_s, prob in raw:
        text = normalize_script(text.strip(), language, zh_script)  # type: ignore[arg-type]
        if text:
            start_ms, end_ms = seconds_to_ms(start_s), seconds_to_ms(end_s)
            words.append(Word(text=text, start_ms=start_ms, end_ms=end_ms, probability=float(prob)))
    return monotonic_words(words, duration_ms, prev_end_ms=prev_end_ms)


def _note(start_ms: int, end_ms: int, reason: str, text: str) -> str:
    text = text.strip()
    return f"{start_ms}-{end_ms} ms: {reason}: {text[:80]!r}{'...' if len(text) > 80 else ''}"


def resolve_compute_type(compute_type: str, device: str) -> str:
    """CTranslate2 compute type: ``auto`` -> int8 on CPU (fast, about 1 % WER cost), float16 on CUDA."""
    if compute_type != "auto":
        return compute_type
    return "float16" if device.startswith("cuda") else "int8"


def _cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))  # honours container CPU sets, unlike os.cpu_count()
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------------------------------- the stage


class AsrStage(Stage):
    """faster-whisper ASR with word timestamps on the 16 kHz mono mix or vocals of one source.

    Loads ``<models_dir>/<cfg.asr.model>`` once (or ``cfg.asr.hub_id`` when that folder is missing and
    ``cfg.allow_hub``). Runs on CUDA when ``cfg.resolved_device()`` says so, else on CPU with int8 weights.
    """

    name = "asr"
    version = "1"
    config_sections = ("asr", "languages", "zh_script")
    resources = Resources(cpus=2, gpus=1)

    def __init__(self, cfg: Config):
        super().__init__(cfg)
        self.model: Any = None
        self.pipeline: Any = None
        self.model_name = cfg.asr.model
        self.compute_type = resolve_compute_type(cfg.asr.compute_type, self.device)
        self.languages: list[str] = list(cfg.languages)
        self._batched_lock = threading.Lock()  # BatchedInferencePipeline keeps per-call state (last_speech_timestamp)

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
            cpu_threads=_cpu_threads(),
            local_files_only=not self.cfg.allow_hub,
        )
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

    def provenance(self) -> dict[str, Any]:
        """Stage version plus the model folder (or hub id) and compute type (int8 vs float16 changes the text)."""
        return {**super().provenance(), "model": self.model_name, "compute_type": self.compute_type}

    # -------------------------------------------------------------------------------------------------- language

    def detect_language(self, audio: np.ndarray) -> tuple[str, float, dict[str, float]]:
        """Language of ``audio`` (float32 mono 16 kHz), restricted to the configured languages.

        Whisper's language-token probabilities (``WhisperModel.detect_language``, all 99 languages) are averaged,
        weighted by length, over up to :data:`LID_MAX_WINDOWS` 30 s windows of speech (Silero VAD when
        ``asr.vad_filter``) from the first :data:`LID_SCAN_S` seconds; then :func:`choose_language`.

        Returns:
            ``(language, probability among the allowed, all averaged probabilities)``; without any speech the first
            configured language with probability 0.0.
        """
        scan = audio[: LID_SCAN_S * ASR_SAMPLE_RATE_HZ]
        if self.cfg.asr.vad_filter:
            from faster_whisper.vad import VadOptions, get_speech_timestamps

            chunks = get_speech_timestamps(scan, VadOptions())
            speech = np.concatenate([scan[c["start"] : c["end"]] for c in chunks]) if chunks else scan[:0]
        else:
            speech = scan
        n = WINDOW_S * ASR_SAMPLE_RATE_HZ
        windows = [speech[i : i + n] for i in range(0, len(speech), n)][:LID_MAX_WINDOWS]
        if not windows:
            return (self.languages[0] if self.languages else "en"), 0.0, {}
        totals: dict[str, float] = {}
        for window in windows:
            _, _, probs = self.model.detect_language(audio=window)
            for lang, p in probs:
                totals[lang] = totals.get(lang, 0.0) + p * len(window)
        weight = float(sum(len(w) for w in windows))
        averaged = {lang: v / weight for lang, v in totals.items()}
        lang, prob = choose_language(averaged, self.languages)
        return lang, prob, averaged

    # -------------------------------------------------------------------------------------------------- process

    def _transcribe(self, audio: np.ndarray, language: str) -> list[Any]:
        asr = self.cfg.asr
        kwargs: dict[str, Any] = dict(
            language=language,
            task="transcribe",
            beam_size=asr.beam_size,
            word_timestamps=True,
            vad_filter=asr.vad_filter,
            condition_on_previous_text=False,  # a hallucination cannot feed the next window
            compression_ratio_threshold=asr.max_compression_ratio,
            log_prob_threshold=asr.logprob_threshold,
            no_speech_threshold=asr.no_speech_threshold,
        )
        if self.pipeline is None:
            segments, _ = self.model.transcribe(audio, **kwargs)
        else:
            if not asr.vad_filter and len(audio) >= WINDOW_S * ASR_SAMPLE_RATE_HZ:
                # the batched pipeline needs clips; without VAD cut plain 30 s windows (in seconds)
                dur_s = len(audio) / ASR_SAMPLE_RATE_HZ
                kwargs["clip_timestamps"] = [
                    {"start": float(s), "end": float(min(s + WINDOW_S, dur_s))} for s in range(0, int(dur_s), WINDOW_S)
                ]
            with self._batched_lock:
                segments, _ = self.pipeline.transcribe(audio, batch_size=asr.batch_size, **kwargs)
                return list(segments)
        return list(segments)  # the generator does the decoding

    def process(self, audio_path: Path, out_json: Path, *, language: str | None = None) -> Transcript:
        """Transcribe one 16 kHz mono FLAC and write its :class:`Transcript` JSON.

        Args:
            audio_path: 16 kHz mono FLAC (``AudioTracks.vocals_16k`` or ``mix_16k``); source timeline.
            out_json: where the transcript JSON goes (written atomically).
            language: force this ISO 639-1 code (skips language identification; probability 1.0).

        Returns:
            The transcript: segments in time order with words in integer ms, ``start_ms <= end_ms``, monotonic,
            within ``[0, duration]``; Chinese in ``cfg.zh_script``; dropped segments described in ``dropped``.

        Raises:
            MediaError: the audio cannot be read or is not 16 kHz.
        """
        self.ensure_setup()
        audio_path, out_json = Path(audio_path), Path(out_json)
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
            lang, lang_prob = language, 1.0
        else:
            lang, lang_prob, _ = self.detect_language(audio)
        t_lid = time.perf_counter()
        raw_segments = self._transcribe(audio, lang) if len(audio) else []

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
                )
            )

        kept: list[AsrSegment] = []
        dropped: list[str] = []
        prev_end = 0
        for seg, reason in zip(candidates, find_hallucinations(candidates, self.cfg.asr)):
            if reason is None and not seg.words:
                reason = "no word timestamps"
            if reason is not None:
                dropped.append(_note(seg.start_ms, seg.end_ms, reason, seg.text))
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
                )
            )

        transcript = Transcript(
            language=lang,
            language_probability=float(lang_prob),
            segments=tuple(kept),
            model=self.model_name,
            dropped=tuple(dropped),
        )
        transcript.to_json(out_json)
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
            " (forced)" if language is not None else f" among {self.languages}",
            len(kept),
            sum(len(s.words) for s in kept),
            len(dropped),
        )
        for note in dropped:
            logger.debug("dropped %s", note)
        return transcript
