"""Segmentation on real footage: faster-whisper words + PySceneDetect shots of dialogue_5shots."""

from __future__ import annotations

import json

import pytest

from cinedub.media import extract_audio, probe
from cinedub.ops.segment import segment_clips
from cinedub.stages.asr import AsrStage
from cinedub.stages.base import get_stage
from cinedub.stages.shots import ShotStage


@pytest.fixture(scope="module")
def dialogue(cfg, media_dir, tmp_path_factory):
    d = tmp_path_factory.mktemp("seg")
    path = media_dir / "dialogue_5shots/dialogue_5shots.mp4"
    src = probe(path)
    audio = extract_audio(path, d / "a16k.flac")
    transcript = get_stage(AsrStage, cfg).process(audio, d / "asr.json")
    shots = get_stage(ShotStage, cfg).process(path, src, d / "shots.json")
    return src, transcript, shots


def test_clips_respect_bounds_words_and_shots(cfg, dialogue, media_dir):
    src, transcript, shots = dialogue
    clips = segment_clips(src, transcript.words, shots, cfg.segmentation)
    assert len(clips) >= 3
    kept = [w for c in clips for w in c.words]
    assert len(kept) >= 0.95 * len(transcript.words)
    for c in clips:
        assert 2000 <= c.duration_ms <= 30000
        assert all(c.start_ms <= w.start_ms <= w.end_ms <= c.end_ms for w in c.words)
    for a, b in zip(clips, clips[1:]):
        assert a.end_ms <= b.start_ms
    # each speaker is alone in a shot, so a clip that crosses a cut mixes two people: the segmentation must cut
    # on every shot boundary that falls in a pause between words
    truth = json.loads((media_dir / "dialogue_5shots/dialogue_5shots.truth.json").read_text())
    checked = []
    for cut in shots.cut_ms:
        before = [w for w in transcript.words if w.end_ms <= cut]
        after = [w for w in transcript.words if w.start_ms >= cut]
        straddling = [w for w in transcript.words if w.start_ms < cut < w.end_ms]
        if not before or not after or straddling:
            continue  # the cut falls inside a word: no clip boundary can be placed on it without cutting the word
        crossing = [c for c in clips if c.start_ms < cut < c.end_ms and c.words[0].end_ms <= cut <= c.words[-1].start_ms]
        assert not crossing, f"clip crosses the cut at {cut} ms with words on both sides"
        checked.append(cut)
    assert len(shots.cut_ms) == len(truth["shots_s"]) - 1
    assert len(checked) >= 2, "the footage has cuts in pauses; the test must check some"
