"""ASR stage on real speech with the real whisper-base model (CTranslate2 int8 on CPU), scored against ground truth.

Each clip is transcribed once per module (the ``transcribe`` fixture caches) and the model loads once.
Run with ``-s`` to see the measured WER/CER and timings.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cinedub.config import AsrConfig, Config
from cinedub.errors import MediaError, ModelNotFoundError
from cinedub.eval.asr import cer, wer
from cinedub.media import extract_audio
from cinedub.ops.language import decide_language
from cinedub.stages.asr import (
    AsrStage,
    clean_words,
    find_hallucinations,
    segment_guard_reason,
)
from cinedub.stages.base import get_stage
from cinedub.text import to_simplified, to_traditional
from cinedub.timebase import sample_to_ms
from cinedub.types import AsrSegment, Transcript, Word

CLIPS = {
    "en_monologue": "en_monologue/englishvideo.mp4",
    "jfk": "asr/jfk.flac",
    "aishell": "asr/aishell-BAC009S0724W0121.wav",
}


def _references(media_dir: Path) -> dict[str, str]:
    with open(media_dir / "asr" / "transcripts.tsv", encoding="utf-8") as fh:
        return {row["file"]: row["transcript"] for row in csv.DictReader(fh, delimiter="\t")}


@pytest.fixture(scope="module")
def audio_16k(media_dir: Path, tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("asr_audio")
    return {key: extract_audio(media_dir / rel, out / f"{key}.flac") for key, rel in CLIPS.items()}


@pytest.fixture(scope="module")
def asr_stage(cfg: Config) -> AsrStage:
    return get_stage(AsrStage, cfg)


@pytest.fixture(scope="module")
def transcribe(asr_stage: AsrStage, audio_16k: dict[str, Path], tmp_path_factory):
    """``transcribe(key) -> (Transcript, json path, seconds taken)``, each clip decoded once per module."""
    out = tmp_path_factory.mktemp("asr_out")
    done: dict[str, tuple[Transcript, Path, float]] = {}

    def run(key: str) -> tuple[Transcript, Path, float]:
        if key not in done:
            t0 = time.perf_counter()
            path = out / f"{key}.transcript.json"
            transcript = asr_stage.transcribe(audio_16k[key])
            transcript.to_json(path)
            done[key] = (transcript, path, time.perf_counter() - t0)
        return done[key]

    return run


# ------------------------------------------------------------------------------------------- real model, real media


@pytest.mark.slow
def test_english_monologue_accented_speaker(transcribe, asr_stage, audio_16k, media_dir):
    transcript, _, took = transcribe("en_monologue")
    reference = (media_dir / "en_monologue" / "englishvideo.reference.txt").read_text(encoding="utf-8")
    score = wer(reference, transcript.text)
    audio, _ = sf.read(audio_16k["en_monologue"], dtype="float32")
    probs = asr_stage.language_probabilities(audio)
    top = sorted(probs.items(), key=lambda kv: -kv[1])[:3]
    print(f"\nen_monologue: WER {score:.3f} in {took:.1f} s; language {transcript.language} "
          f"p={transcript.language_probability:.3f} (unrestricted top 3: {[(k, round(v, 3)) for k, v in top]})")
    print(f"  hyp: {transcript.text!r}")
    assert transcript.language == "en"
    assert score <= 0.15


@pytest.mark.slow
def test_transcription_reuses_language_ids_first_window(transcribe, asr_stage, audio_16k, monkeypatch):
    """Transcription's first 30 s window is language id's (the same features, bit for bit), so its encoder output is
    reused instead of computed again: one encoder pass fewer, and the same transcript as without the reuse."""
    first, _, _ = transcribe("en_monologue")
    passes = []
    encode = asr_stage._whisper_encode
    monkeypatch.setattr(asr_stage, "_whisper_encode", lambda f: passes.append(f.shape) or encode(f))
    again = asr_stage.transcribe(audio_16k["en_monologue"])
    reused = len(passes)
    assert again == first

    class Forgetful:  # keeps no window: every window is encoded
        pair = property(lambda self: None, lambda self, value: None)

    monkeypatch.setattr(asr_stage, "_first_window", Forgetful())
    passes.clear()
    assert asr_stage.transcribe(audio_16k["en_monologue"]) == first
    assert len(passes) == reused + 1  # en_monologue: one window, encoded once instead of twice


@pytest.mark.slow
def test_jfk_wer(transcribe, media_dir):
    transcript, _, took = transcribe("jfk")
    score = wer(_references(media_dir)["jfk.flac"], transcript.text)
    print(f"\njfk: WER {score:.3f} in {took:.1f} s; hyp: {transcript.text!r}")
    assert transcript.language == "en"
    assert score <= 0.05


@pytest.mark.slow
def test_aishell_mandarin_cer_in_simplified(transcribe, media_dir):
    transcript, _, took = transcribe("aishell")
    reference = _references(media_dir)["aishell-BAC009S0724W0121.wav"]
    score = cer(reference, transcript.text, zh_script="simplified")
    print(f"\naishell: CER {score:.3f} in {took:.1f} s; language zh p={transcript.language_probability:.3f}; "
          f"hyp: {transcript.text!r}")
    assert transcript.language == "zh"
    assert score <= 0.20
    # written in Simplified: nothing left for OpenCC t2s to change (whisper-base itself writes Traditional here)
    for text in [transcript.text, *(w.text for w in transcript.words)]:
        assert to_simplified(text) == text


@pytest.mark.slow
@pytest.mark.parametrize("key", list(CLIPS))
def test_word_timestamps_and_json_round_trip(key, transcribe, audio_16k):
    transcript, path, _ = transcribe(key)
    info = sf.info(str(audio_16k[key]))
    duration_ms = sample_to_ms(info.frames, info.samplerate)
    words = transcript.words
    assert len(words) >= 5
    prev_end = 0
    for w in words:
        assert w.text == w.text.strip() and w.text
        assert isinstance(w.start_ms, int) and isinstance(w.end_ms, int)
        assert prev_end <= w.start_ms <= w.end_ms <= duration_ms
        assert 0.0 <= w.probability <= 1.0
        prev_end = w.end_ms
    for seg in transcript.segments:
        assert seg.start_ms == seg.words[0].start_ms and seg.end_ms == seg.words[-1].end_ms
    # speech fills most of these clips: the words span at least half of the audio
    assert words[-1].end_ms - words[0].start_ms >= duration_ms / 2
    assert Transcript.from_json(path) == transcript


@pytest.mark.slow
def test_other_language_is_skipped_or_transcribed_never_translated(cfg, asr_stage, media_dir, tmp_path):
    """A Russian vlog with languages ["zh", "en"]: detected as Russian over all languages; by default the source
    is skipped with the reason, and with other_languages=transcribe it is written in Cyrillic, labelled ru."""
    audio_path = extract_audio(media_dir / "vertical_hevc" / "vlog_ru_vertical.mp4", tmp_path / "ru.flac")
    skipped = asr_stage.transcribe(audio_path)
    assert (skipped.language, skipped.status) == ("ru", "skipped_language") and skipped.language_probability > 0.5
    assert "ru" in skipped.status_reason and not skipped.segments
    assert skipped.outcome() == ("skipped_language", skipped.status_reason)
    own = get_stage(AsrStage, cfg.model_copy(update={"asr": cfg.asr.model_copy(update={"other_languages": "transcribe"})}))
    t = own.transcribe(audio_path)
    assert t.language == "ru" and t.status == "ok" and t.outcome() is None
    letters = [ch for ch in t.text if ch.isalpha()]
    assert letters and sum("\u0400" <= ch <= "\u04ff" for ch in letters) >= 0.9 * len(letters), t.text  # not English


def test_silence_is_no_speech_with_no_language(asr_stage, tmp_path):
    path = tmp_path / "silence.flac"
    sf.write(str(path), np.zeros(16000 * 3, np.float32), 16000)
    short = tmp_path / "short.flac"
    sf.write(str(short), np.zeros(4800, np.float32), 16000)  # 0.3 s
    for p in (path, short):
        t = asr_stage.transcribe(p)
        assert t.language is None and t.status == "no_speech" and t.outcome()[0] == "no_speech"


@pytest.mark.slow
def test_forced_language_and_traditional_script(cfg, audio_16k, tmp_path):
    stage = get_stage(AsrStage, cfg.model_copy(update={"zh_script": "traditional"}))
    transcript = stage.transcribe(audio_16k["aishell"], language="zh")
    assert transcript.language == "zh" and transcript.language_probability == 1.0
    assert transcript.text and to_traditional(transcript.text) == transcript.text
    assert "協會" in transcript.text  # 协会 of the reference, in Traditional


def test_rejects_audio_that_is_not_16k(asr_stage, media_dir, tmp_path):
    with pytest.raises(MediaError, match="16000 Hz"):
        asr_stage.transcribe(media_dir / "asr" / "jfk.flac")  # 44.1 kHz stereo original
    with pytest.raises(MediaError, match="cannot read audio"):
        asr_stage.transcribe(tmp_path / "missing.flac")


def test_missing_model_names_where_to_get_it(tmp_path):
    cfg = Config.load(models_dir=tmp_path, device="cpu")
    with pytest.raises(ModelNotFoundError, match="whisper-base-ct2"):
        AsrStage(cfg).setup()


# ------------------------------------------------------------------------------------------- pure guards and helpers


def _segment(text: str, **quality) -> AsrSegment:
    return AsrSegment(text=text, start_ms=0, end_ms=5000, words=(Word(text, 0, 5000, 0.9),), **quality)


def test_repetition_guard_drops_looped_segment():
    asr = AsrConfig()  # max_repeats 4
    looped = _segment("Thank you. " * 6 + "Bye.", compression_ratio=2.0)  # low enough to pass the gzip test
    assert "repetition loop (2-gram repeated 6 times" in segment_guard_reason(looped, asr)
    assert "1-gram repeated 8" in segment_guard_reason(_segment("哈" * 8), asr)
    assert segment_guard_reason(_segment("No, no, no, I said no."), asr) is None  # 3 in a row is speech
    assert segment_guard_reason(_segment("And so my fellow Americans, ask not what your country can do"), asr) is None
    assert segment_guard_reason(_segment("好好学习，天天向上"), asr) is None


def test_quality_guards_follow_whisper_thresholds():
    asr = AsrConfig()  # OpenAI Whisper's 2.4 / 0.6 / -1.0
    assert "compression ratio 2.90" in segment_guard_reason(_segment("la la", compression_ratio=2.9), asr)
    silent = _segment("you", no_speech_prob=0.9, avg_logprob=-1.5)
    assert "no speech" in segment_guard_reason(silent, asr)
    confident = _segment("you", no_speech_prob=0.9, avg_logprob=-0.2)  # high no-speech but decoded confidently
    assert segment_guard_reason(confident, asr) is None
    assert segment_guard_reason(_segment(" ... "), asr) == "empty text"


def test_repeated_segments_are_dropped_as_a_run():
    asr = AsrConfig()
    segs = [_segment("Hello there.")] + [_segment("Thank you.")] * 5 + [_segment("Goodbye.")]
    reasons = find_hallucinations(segs, asr)
    assert reasons[0] is None and reasons[-1] is None
    assert all("same text in 5 consecutive segments" in r for r in reasons[1:6])
    assert find_hallucinations([_segment("Thank you.")] * 4, asr) == [None] * 4


def test_language_decision():
    probs = {"es": 0.5, "en": 0.3, "zh": 0.1, "ca": 0.1}
    d = decide_language(probs, ["zh", "en"], "skip")
    assert (d.language, d.status, d.transcribe) == ("es", "skipped_language", False) and "es" in d.reason
    assert decide_language(probs, ["zh", "en"], "transcribe").language == "es"
    assert decide_language(probs, [], "skip").status == "ok"
    assert decide_language({"en": 0.6, "zh": 0.4}, ["zh", "en"], "skip").language == "en"
    assert decide_language({}, ["zh"], "skip").status == "no_speech"


def test_clean_words_monotonic_clamped_and_simplified():
    raw = [(" 廣", 0.10, 0.50, 0.9), ("州", 0.45, 0.40, 0.8), (" ", 0.5, 0.6, 0.1), ("市", 0.70, 9.00, 0.7)]
    words = clean_words(raw, duration_ms=1000, prev_end_ms=200, language="zh")
    assert [(w.text, w.start_ms, w.end_ms) for w in words] == [("广", 200, 500), ("州", 500, 500), ("市", 700, 1000)]
