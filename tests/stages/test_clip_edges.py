"""Clip edges from the audio and an honest speech report (issue 11, point 4), on real speech.

- ``asr/jfk.flac`` cut at 10.2 s, inside "... for your country", over a black picture: the voice runs to the end of
  the file. Its clips must keep every stretch of detected speech their words are in (no edge inside the voice), the
  last clip must end with the file, and the detected speech must be in clips or reported with a reason. The same transcript cut with the
  old fixed 150 ms pad around Whisper's word times loses speech at the edges (the check can fail).
- The repetition guard: "And so my fellow Americans", cut from ``asr/jfk.flac`` and said seven times, is real
  repeated speech and kept; the same words placed over Titanic's score (no voice) are a decoding loop and dropped.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cinedub.config import AsrConfig, Config
from cinedub.diarization.vad import speech_regions
from cinedub.eval.clip_edges import edge_cuts
from cinedub.media import extract_audio, load_audio
from cinedub.ops.asr_guards import segment_guard_reason
from cinedub.ops.coverage import speech_coverage
from cinedub.ops.segment import segment_source
from cinedub.pipeline import run_source
from cinedub.stages.asr import AsrStage
from cinedub.stages.base import get_stage
from cinedub.types import AsrSegment, Word

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def monologue(cfg: Config, media_dir: Path, tmp_path_factory):
    d = tmp_path_factory.mktemp("edges")
    cut = d / "jfk_10200ms.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=black:s=160x120:r=25", "-i",
                    str(media_dir / "asr/jfk.flac"), "-t", "10.2", "-c:v", "libx264", "-preset", "ultrafast",
                    "-c:a", "aac", str(cut)], check=True)
    run_cfg = cfg.model_copy(update={"run_visual": False, "run_diarization": False})
    return run_source(cut, d / "out", run_cfg, until="clips")


def test_edges_keep_the_voice_of_their_words(monologue, cfg: Config):
    src, transcript, clips = monologue["ingest"].source, monologue["transcript"], monologue["clips"]
    speech = transcript.speech_ms
    assert speech and clips.clips
    seg_cfg = cfg.segmentation
    assert edge_cuts(clips.clips, speech, seg_cfg.max_edge_extension_ms) == []
    # the voice runs to the end of the file, and so does the last clip
    assert speech[-1][1] >= src.duration_ms - 100
    assert clips.clips[-1].end_ms == src.duration_ms
    # every clip holds its words and the speech around them within the margin, never more than 800 ms past a word
    for c in clips.clips:
        assert c.start_ms <= c.words[0].start_ms and c.words[-1].end_ms <= c.end_ms
        assert c.words[0].start_ms - c.start_ms <= seg_cfg.max_edge_extension_ms + seg_cfg.edge_margin_ms
    # the fixed pad of the old segmentation (no voice activity) cuts through the same speech
    old = segment_source(src, transcript.words, monologue["shots"], seg_cfg)
    old_cuts = edge_cuts(old.clips, speech, seg_cfg.max_edge_extension_ms)
    assert old_cuts and speech_coverage(speech, old.clips).in_clips_share < clips.speech_in_clips_ms / clips.speech_ms


def test_detected_speech_is_in_clips_or_reported(monologue):
    clips = monologue["clips"]
    report = clips.speech_report()
    print("speech report:", report)
    assert report["detected_ms"] == sum(b - a for a, b in monologue["transcript"].speech_ms)
    assert report["in_clips_or_reported"] >= 0.99
    assert report["in_clips"] >= 0.95
    for u in clips.uncovered:
        assert u.reason in {"short", "long", "overlap", "after_end", "guard", "no_words"}
        assert not any(u.start_ms < c.end_ms and c.start_ms < u.end_ms for c in clips.clips)


@pytest.fixture(scope="module")
def repeated_phrase(media_dir: Path, tmp_path_factory) -> Path:
    """ "And so my fellow Americans" (0.25-2.30 s of jfk.flac, VAD speech 0.29-2.27 s) seven times, 0.4 s apart."""
    d = tmp_path_factory.mktemp("repeat")
    jfk = extract_audio(media_dir / "asr/jfk.flac", d / "jfk16.flac")
    audio, sr = load_audio(jfk)
    phrase, gap = audio[int(0.25 * sr) : int(2.30 * sr)], np.zeros(int(0.4 * sr), np.float32)
    out = d / "repeated.flac"
    sf.write(str(out), np.concatenate([gap] + [np.concatenate([phrase, gap]) for _ in range(7)]), sr)
    return out


def test_repeated_words_are_speech_and_a_loop_is_not(cfg: Config, repeated_phrase: Path, media_dir: Path, tmp_path):
    # beam search only: Whisper's temperature fallback would decode this repetitive window five more times (the
    # default schedule keeps it too, measured when written; the guard is what is under test here)
    beam_only = cfg.model_copy(update={"asr": cfg.asr.model_copy(update={"temperatures": (0.0,)})})
    asr = get_stage(AsrStage, beam_only)
    t = asr.transcribe(repeated_phrase, language="en")
    print("heard:", t.text, "| dropped:", t.dropped)
    assert t.dropped == () and t.text.lower().count("fellow americans") >= 4
    # the segment the old rules would drop (Whisper may split the repeats over several segments)
    longest = max(t.segments, key=lambda s: (segment_guard_reason(s, cfg.asr) is not None, len(s.words)))
    # the old rules alone (no evidence of voice) call it a loop (repeated n-gram or gzip ratio); the voice under
    # every word says otherwise
    assert segment_guard_reason(longest, cfg.asr) is not None
    assert segment_guard_reason(longest, cfg.asr, t.speech_ms) is None
    # the same words laid over Titanic's score (6-15 s, no voice): a decoding loop, dropped
    titanic = extract_audio(media_dir / "en_film_titanic/test1.mp4", tmp_path / "titanic16.flac")
    score_speech = speech_regions(load_audio(titanic)[0])
    def at(t: int) -> int:  # the segment's times squeezed into 6.0-14.8 s
        return 6000 + (t - longest.start_ms) * 8800 // max(1, longest.end_ms - longest.start_ms)

    moved = AsrSegment(longest.text, at(longest.start_ms), at(longest.end_ms),
                       tuple(Word(w.text, at(w.start_ms), at(w.end_ms), w.probability) for w in longest.words),
                       avg_logprob=longest.avg_logprob, no_speech_prob=longest.no_speech_prob,
                       compression_ratio=longest.compression_ratio)
    assert moved.end_ms < 15_000 and not any(a < moved.end_ms and moved.start_ms < b for a, b in score_speech)
    assert segment_guard_reason(moved, cfg.asr, score_speech) == segment_guard_reason(longest, cfg.asr)
    # and a window Whisper itself calls silence stays a loop whatever the audio
    doubtful = AsrSegment(longest.text, longest.start_ms, longest.end_ms, longest.words, no_speech_prob=0.9,
                          avg_logprob=-0.5, compression_ratio=longest.compression_ratio)
    assert segment_guard_reason(doubtful, AsrConfig(), t.speech_ms) is not None
