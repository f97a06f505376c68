"""Pure helpers of the ASR stage (no model): hallucination guards, word clean-up.

Thresholds come from :class:`cinedub.config.AsrConfig` (OpenAI Whisper's ``transcribe`` defaults: compression ratio
2.4, no-speech 0.6 with average log-probability -1.0).
"""

from __future__ import annotations

import bisect
import dataclasses
import logging
from collections.abc import Sequence

from cinedub.config import AsrConfig
from cinedub.text import max_ngram_repeats, normalize_for_scoring, normalize_script, scoring_units
from cinedub.timebase import seconds_to_ms
from cinedub.types import AsrSegment, Word

logger = logging.getLogger("cinedub.asr")

MAX_NGRAM = 10  # longest phrase (words, or CJK characters) the repetition guard looks for
# Evidence that a repeated phrase is really spoken ("yeah, yeah, yeah, ...", "no no no no no") rather than a decoding
# loop. Not fitted on data: a loop's words are placed where no voice is (silence, music: Silero VAD finds no speech)
# or squeezed into a few ms each, while spoken repeats each sit on their own burst of speech. So a repeated segment
# is kept when Whisper's no-speech probability is under ``asr.no_speech_threshold``, at least
# REPEAT_SPEECH_WORD_SHARE of its words have half their span or more inside detected speech, and its median word
# lasts at least REPEAT_MIN_WORD_MS (English words last about 250 ms on average; a syllable about 100-200 ms).
REPEAT_SPEECH_WORD_SHARE = 0.8
REPEAT_MIN_WORD_MS = 100


def repetition_is_speech(segment: AsrSegment, speech_ms: Sequence[tuple[int, int]] | None, asr: AsrConfig) -> bool:
    """Whether a segment that looks like a repetition loop is real repeated speech (see the constants above).

    Args:
        segment: the ASR segment (words in source ms).
        speech_ms: sorted, disjoint ``(start_ms, end_ms)`` spans of detected speech (Silero VAD on the same audio);
            None or empty: no evidence, the segment is treated as a loop.
        asr: ``no_speech_threshold``.
    """
    words = segment.words
    if not speech_ms or not words or segment.no_speech_prob > asr.no_speech_threshold:
        return False
    durations = sorted(w.end_ms - w.start_ms for w in words)
    if durations[len(durations) // 2] < REPEAT_MIN_WORD_MS:
        return False
    starts = [s for s, _ in speech_ms]
    voiced = 0
    for w in words:
        i = max(0, bisect.bisect_right(starts, w.start_ms) - 1)
        inside = sum(max(0, min(e, w.end_ms) - max(s, w.start_ms)) for s, e in speech_ms[i : i + 4])
        voiced += inside * 2 >= max(1, w.end_ms - w.start_ms)
    return voiced >= REPEAT_SPEECH_WORD_SHARE * len(words)


def segment_guard_reason(
    segment: AsrSegment, asr: AsrConfig, speech_ms: Sequence[tuple[int, int]] | None = None
) -> str | None:
    """Why ``segment`` looks hallucinated, or None when it passes.

    Rules (thresholds from ``asr``):

    - ``compression_ratio > max_compression_ratio``: gzip-compressible text is repetitive (OpenAI Whisper's
      ``transcribe`` uses 2.4 to trigger a temperature fallback; here a segment still over it afterwards is dropped).
    - ``no_speech_prob > no_speech_threshold`` **and** ``avg_logprob < logprob_threshold``: Whisper's rule for
      "this window is silence" (OpenAI Whisper 0.6 / -1.0).
    - the same n-gram (n <= :data:`MAX_NGRAM` words, or CJK characters) repeated back to back more than
      ``max_repeats`` times: a decoding loop.
    - no text at all after removing punctuation.

    The two repetition rules (compression ratio, repeated n-gram) do not drop a segment whose words are really
    spoken (:func:`repetition_is_speech` on ``speech_ms``, the detected speech of the same audio).
    """
    if segment.no_speech_prob > asr.no_speech_threshold and segment.avg_logprob < asr.logprob_threshold:
        return (
            f"no speech (no_speech_prob {segment.no_speech_prob:.2f} > {asr.no_speech_threshold}, "
            f"avg_logprob {segment.avg_logprob:.2f} < {asr.logprob_threshold})"
        )
    units = scoring_units(segment.text)
    if not units:
        return "empty text"
    reason = None
    if segment.compression_ratio > asr.max_compression_ratio:
        reason = f"compression ratio {segment.compression_ratio:.2f} > {asr.max_compression_ratio}"
    else:
        repeats, n = max_ngram_repeats(units, MAX_NGRAM)
        if repeats > asr.max_repeats:
            reason = f"repetition loop ({n}-gram repeated {repeats} times > {asr.max_repeats})"
    if reason is not None and repetition_is_speech(segment, speech_ms, asr):
        logger.debug("kept repeated words over detected speech (%s): %r", reason, segment.text[:80])
        return None
    return reason


def find_hallucinations(
    segments: Sequence[AsrSegment], asr: AsrConfig, speech_ms: Sequence[tuple[int, int]] | None = None
) -> list[str | None]:
    """One reason (or None) per segment: :func:`segment_guard_reason`, plus runs of more than ``max_repeats``
    consecutive segments with the same text (Whisper's "Thank you." loop over music spreads over many segments),
    unless the words of such a segment are really spoken (:func:`repetition_is_speech`)."""
    reasons = [segment_guard_reason(s, asr, speech_ms) for s in segments]
    keys = [normalize_for_scoring(s.text) for s in segments]
    i = 0
    while i < len(segments):
        j = i
        while j + 1 < len(segments) and keys[j + 1] and keys[j + 1] == keys[i]:
            j += 1
        run = j - i + 1
        if keys[i] and run > asr.max_repeats:
            for k in range(i, j + 1):
                if not repetition_is_speech(segments[k], speech_ms, asr):
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
