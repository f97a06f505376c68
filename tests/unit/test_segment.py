"""Segmentation invariants on seeded random word sequences, and the shot/sentence preferences."""

from __future__ import annotations

import random
from fractions import Fraction

import pytest

from cinedub.config import SegmentationConfig
from cinedub.ops.segment import HARD_GAP_MS, clip_id_for, segment_clips
from cinedub.stages.shots import shots_from_cuts
from cinedub.types import ShotList, Source, Word

FPS = Fraction(24000, 1001)


def _source(duration_ms: int) -> Source:
    return Source("s" * 16, "x.mp4", "f" * 64, "x", duration_ms, True, True, fps=FPS,
                  n_frames=int(duration_ms * FPS / 1000))


def _words(seed: int, n: int = 400) -> list[Word]:
    rng = random.Random(seed)
    t, out = rng.randint(0, 2000), []
    for i in range(n):
        dur = rng.randint(80, 900)
        text = f"w{i}" + (rng.choice([".", "?", "!"]) if rng.random() < 0.12 else "")
        out.append(Word(text, t, t + dur, 0.9))
        t += dur + rng.choice([0, 20, 60, 150, 350, 800, 1500, 6000] if rng.random() < 0.3 else [0, 30, 80])
    return out


def _shots(duration_ms: int, seed: int) -> ShotList:
    rng = random.Random(seed)
    n_frames = int(duration_ms * FPS / 1000)
    cuts = sorted(rng.sample(range(20, n_frames - 20), 25))
    return ShotList(fps=FPS, n_frames=n_frames, shots=tuple(shots_from_cuts(cuts, n_frames, FPS)))


@pytest.mark.parametrize("seed", range(8))
def test_invariants(seed):
    words = _words(seed)
    duration = words[-1].end_ms + 3000
    src, shots, cfg = _source(duration), _shots(duration, seed), SegmentationConfig()
    clips = segment_clips(src, words, shots, cfg)
    assert clips
    seen = []
    for i, c in enumerate(clips):
        assert c.index == i
        assert cfg.min_clip_s * 1000 <= c.duration_ms <= cfg.max_clip_s * 1000, c.duration_ms
        assert 0 <= c.start_ms < c.end_ms <= duration
        for w in c.words:  # no word cut
            assert c.start_ms <= w.start_ms and w.end_ms <= c.end_ms
        assert all(c.start_ms < b < c.end_ms for b in c.shot_boundaries_ms)
        assert list(c.shot_boundaries_ms) == [b for b in shots.cut_ms if c.start_ms < b < c.end_ms]
        assert c.clip_id == clip_id_for(src.sha256, c.start_ms, c.end_ms)
        assert c.start_frame <= (c.start_ms + 0.5) * FPS / 1000 < c.start_frame + 1
        seen += c.words
    for a, b in zip(clips, clips[1:]):
        assert a.end_ms <= b.start_ms
        gap_words = [w for w in words if a.words[-1].end_ms <= w.start_ms and w.end_ms <= b.words[0].start_ms
                     and w not in a.words and w not in b.words]
        # words between two clips only disappear with a dropped short run
        assert not gap_words or b.words[0].start_ms - a.words[-1].end_ms >= HARD_GAP_MS
    assert len(seen) == len(set(seen))
    # nearly every word is kept: only short isolated runs are dropped
    assert len(seen) >= 0.9 * len(words)
    assert segment_clips(src, words, shots, cfg) == clips  # deterministic


def test_prefers_sentence_and_shot_boundaries():
    # 3 sentences of ~4 s; a shot cut in the pause after the first one; mid-sentence gaps have no pause
    words, t = [], 0
    for s in range(3):
        for k in range(10):
            words.append(Word(f"s{s}w{k}" + ("." if k == 9 else ""), t, t + 380, 0.9))
            t += 400
        t += 500
    cut_ms = words[9].end_ms + 250
    n_frames = int((t + 1000) * FPS / 1000)
    cut_frame = int(cut_ms * FPS / 1000) + 1
    shots = ShotList(fps=FPS, n_frames=n_frames, shots=tuple(shots_from_cuts([cut_frame], n_frames, FPS)))
    cfg = SegmentationConfig(min_clip_s=2, max_clip_s=10)
    clips = segment_clips(_source(t + 1000), words, shots, cfg)
    assert [c.words[-1].text[-1] for c in clips] == ["."] * len(clips)
    assert clips[0].end_ms == shots.cut_ms[0] == clips[1].start_ms
    assert clips[0].shot_boundaries_ms == () and clips[1].shot_boundaries_ms == ()
    assert clips[0].cut_reason == "sentence+pause+shot"
    # the second clip starts on the cut: its first frame is the cut frame, not the last frame of the previous shot
    assert clips[1].start_frame == cut_frame and clips[0].end_frame == cut_frame


def test_long_sentence_is_split_and_short_run_dropped():
    words = [Word(f"w{i}", i * 500, i * 500 + 450, 0.9) for i in range(100)]  # 50 s, no punctuation, no pause
    words.append(Word("lone.", 70_000, 70_400, 0.9))  # 0.4 s alone after a 20 s silence
    clips = segment_clips(_source(80_000), words, None, SegmentationConfig())
    assert len(clips) == 2 and all(2000 <= c.duration_ms <= 30000 for c in clips)
    assert sum(len(c.words) for c in clips) == 100
    assert clips[0].start_frame is not None
