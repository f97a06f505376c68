"""Segmentation invariants on seeded random word sequences, and the shot/sentence/pause preferences."""

from __future__ import annotations

import math
import random
from collections import Counter
from fractions import Fraction

import pytest

from cinedub.config import SegmentationConfig
from cinedub.ops.segment import (
    HARD_GAP_MS,
    clip_id_for,
    is_sentence_end,
    segment_clips,
    segment_source,
)
from cinedub.vision.cuts import shots_from_cuts
from cinedub.timebase import frame_span, frame_to_ms
from cinedub.types import ShotList, Source, Word

FPS = Fraction(24000, 1001)


def _source(duration_ms: int, fps: Fraction | None = FPS) -> Source:
    return Source("s" * 16, "x.mp4", "f" * 64, "x", duration_ms, fps is not None, True, fps=fps,
                  n_frames=int(duration_ms * fps / 1000) if fps else None)


def _words(seed: int, n: int = 400, overlaps: bool = False) -> list[Word]:
    """Random speech: word lengths 80-900 ms, mostly short gaps, some pauses and long silences, some punctuation;
    with ``overlaps``, some words start before the previous one ends (as after a bad alignment)."""
    rng = random.Random(seed)
    t, out = rng.randint(0, 2000), []
    for i in range(n):
        dur = rng.randint(80, 900)
        text = f"w{i}" + (rng.choice([".", "?", "!", ",", "。"]) if rng.random() < 0.15 else "")
        out.append(Word(text, t, t + dur, 0.9, speaker_id=rng.choice(["A", "B", None])))
        step = dur + rng.choice([0, 20, 60, 150, 350, 800, 1500, 6000] if rng.random() < 0.3 else [0, 30, 80])
        if overlaps and rng.random() < 0.05:
            step = rng.randint(dur // 3, dur)  # overlaps the next word
        t += step
    return out


def _shots(duration_ms: int, seed: int, n_cuts: int = 25, fps: Fraction = FPS) -> ShotList:
    rng = random.Random(seed)
    n_frames = int(duration_ms * fps / 1000)
    cuts = sorted(rng.sample(range(20, n_frames - 20), n_cuts))
    return ShotList(fps=fps, n_frames=n_frames, shots=tuple(shots_from_cuts(cuts, n_frames, fps)))


def _check_invariants(src: Source, words: list[Word], shots: ShotList | None, cfg: SegmentationConfig):
    seg = segment_source(src, words, shots, cfg)
    clips = seg.clips
    cuts_ms = shots.cut_ms if shots else []
    placed = []
    for i, c in enumerate(clips):
        assert c.index == i
        assert cfg.min_clip_s * 1000 <= c.duration_ms <= cfg.max_clip_s * 1000, c.duration_ms
        assert 0 <= c.start_ms < c.end_ms <= src.duration_ms
        for w in c.words:  # no word cut
            assert c.start_ms <= w.start_ms and w.end_ms <= c.end_ms, (c.start_ms, c.end_ms, w)
        assert list(c.shot_boundaries_ms) == [b for b in cuts_ms if c.start_ms < b < c.end_ms]
        # padding: pad_ms of context unless a neighbouring word (gap midpoint), the source's edges or a shot
        # boundary (snapped within shot_snap_ms, or never crossed) are closer
        first, last = c.words[0].start_ms, max(w.end_ms for w in c.words)
        prev_end = max([w.end_ms for w in words if w.end_ms <= first and w not in c.words], default=None)
        next_start = min([w.start_ms for w in words if w.start_ms >= last and w not in c.words], default=None)
        free_before = (first if prev_end is None else (first - prev_end) // 2) >= cfg.pad_ms
        free_after = (src.duration_ms - last if next_start is None else (next_start - last) // 2) >= cfg.pad_ms
        shot_before = any(first - max(cfg.pad_ms, cfg.shot_snap_ms) <= b <= first for b in cuts_ms)
        shot_after = any(last <= b <= last + max(cfg.pad_ms, cfg.shot_snap_ms) for b in cuts_ms)
        reach = max(cfg.pad_ms, cfg.shot_snap_ms)
        assert c.start_ms >= first - reach and c.end_ms <= last + reach
        if free_before and not shot_before:
            assert c.start_ms == first - cfg.pad_ms
        if free_after and not shot_after:
            assert c.end_ms == last + cfg.pad_ms
        assert c.clip_id == clip_id_for(src.sha256, c.start_ms, c.end_ms)
        if src.fps:
            # frames of [start_ms, end_ms) with half a millisecond of rounding allowance at each edge
            n_frames = (shots.n_frames if shots else None) or src.n_frames
            assert c.start_frame == math.floor(Fraction(2 * c.start_ms + 1, 2000) * src.fps)
            assert c.end_frame == min(n_frames, math.ceil(Fraction(2 * c.end_ms - 1, 2000) * src.fps))
            assert abs(c.start_frame - c.start_ms * src.fps / 1000) < 1 and c.start_frame < c.end_frame
        else:
            assert c.start_frame is None and c.end_frame is None
        placed += c.words
    for a, b in zip(clips, clips[1:]):
        assert a.end_ms <= b.start_ms  # no overlap
    # every word exactly once: in one clip or in one dropped span
    dropped = [w for d in seg.dropped for w in d.words]
    assert Counter(placed + dropped) == Counter(words)
    # a dropped word never lies inside a kept clip
    for w in dropped:
        assert not any(c.start_ms < w.end_ms and w.start_ms < c.end_ms for c in clips), w
    return seg


@pytest.mark.parametrize("seed", range(10))
def test_invariants_random_words(seed):
    words = _words(seed, overlaps=seed % 2 == 1)
    duration = words[-1].end_ms + 3000
    src, shots, cfg = _source(duration), _shots(duration, seed), SegmentationConfig()
    seg = _check_invariants(src, words, shots, cfg)
    placed = sum(len(c.words) for c in seg.clips)
    assert placed >= 0.9 * len(words)  # only short isolated runs are dropped
    assert all(d.reason in {"short", "long"} for d in seg.dropped)
    for d in seg.dropped:  # a short span is dropped only where no merge is possible: between long silences
        before = [w.end_ms for w in words if w.end_ms <= d.start_ms]
        after = [w.start_ms for w in words if w.start_ms >= d.end_ms]
        assert not before or d.start_ms - max(before) >= HARD_GAP_MS, d
        assert not after or min(after) - d.end_ms >= HARD_GAP_MS, d
    again = segment_source(src, list(reversed(words)), shots, cfg)  # order of input does not matter
    assert again == seg
    assert [c.clip_id for c in again.clips] == [c.clip_id for c in seg.clips]


@pytest.mark.parametrize("seed", range(6))
def test_invariants_tight_bounds_and_other_configs(seed):
    rng = random.Random(100 + seed)
    cfg = SegmentationConfig(min_clip_s=rng.choice([1.0, 2.0, 4.0]), max_clip_s=rng.choice([5.0, 8.0, 30.0]),
                             pad_ms=rng.choice([0, 150, 400]), min_pause_ms=rng.choice([200, 300, 600]),
                             shot_snap_ms=rng.choice([0, 400, 1000]))
    words = _words(200 + seed, n=300, overlaps=True)
    duration = words[-1].end_ms + rng.choice([0, 50, 2000])
    fps = rng.choice([FPS, Fraction(25), Fraction(30000, 1001)])
    src = _source(duration, fps)
    _check_invariants(src, words, _shots(duration, seed, n_cuts=40, fps=fps), cfg)
    _check_invariants(_source(duration, None), words, None, cfg)  # audio-only


@pytest.mark.parametrize("seed", range(10))
def test_cut_lands_on_shot_boundary_in_gap(seed):
    """Where a clip boundary falls in a gap holding a shot boundary, the clip edge is on the cut (within snap) and
    never crosses it; and the segmentation cuts at such gaps whenever the length bounds allow."""
    rng = random.Random(seed)
    words, t, shot_ms = [], 500, []
    for s in range(12):  # sentences of 3-8 s, separated by 100-900 ms gaps, every other one with a shot cut in it
        n = rng.randint(10, 20)  # >= 2.5 s: a cut at every shot gap always leaves clips >= min_clip_s
        for k in range(n):
            d = rng.randint(250, 400)
            words.append(Word(f"s{s}w{k}", t, t + d, 0.9))
            t += d + rng.choice([0, 20, 40])
        gap = rng.randint(100, 900)
        if s % 2 == 0:
            shot_ms.append(t + rng.randint(0, gap))
        t += gap
    fps = Fraction(25)
    n_frames = int((t + 1000) * fps / 1000)
    frames = sorted({round(ms * fps / 1000) for ms in shot_ms})
    shots = ShotList(fps=fps, n_frames=n_frames, shots=tuple(shots_from_cuts(frames, n_frames, fps)))
    cfg = SegmentationConfig()
    src = _source(t + 1000, fps)
    seg = _check_invariants(src, words, shots, cfg)
    clips = seg.clips
    assert not seg.dropped
    for cut in shots.cut_ms:
        left = [w for w in words if w.end_ms <= cut]
        right = [w for w in words if w.start_ms >= cut]
        if not left or not right or any(w.start_ms < cut < w.end_ms for w in words):
            continue
        e, s = left[-1].end_ms, right[0].start_ms
        # a clip boundary falls in this gap (the cut is never inside a clip holding words on both sides)
        assert not [c for c in clips if c.start_ms < cut < c.end_ms], (cut, [(c.start_ms, c.end_ms) for c in clips])
        a = next(c for c in clips if c.words[-1].end_ms == e)
        b = next(c for c in clips if c.words[0].start_ms == s)
        assert a.end_ms <= cut <= b.start_ms
        if cut - e <= cfg.shot_snap_ms:
            assert a.end_ms == cut
        if s - cut <= cfg.shot_snap_ms:
            assert b.start_ms == cut
        assert "shot" in a.cut_reason.split("+")


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
    assert clips[-1].cut_reason == "end"
    # the second clip starts on the cut: its first frame is the cut frame, not the last frame of the previous shot
    assert clips[1].start_frame == cut_frame and clips[0].end_frame == cut_frame


def test_long_sentence_is_split_at_its_best_pause_and_short_run_dropped():
    # 50 s without punctuation: 20 ms gaps except a 350 ms pause after w42 and a 900 ms one after w44; cutting at
    # both would leave a 1 s clip, so one is chosen: the longer
    words, t = [], 0
    for i in range(100):
        words.append(Word(f"w{i}", t, t + 480, 0.9))
        t += 480 + (350 if i == 42 else 900 if i == 44 else 20)
    words.append(Word("lone.", t + 20_000, t + 20_400, 0.9))  # 0.4 s alone after a 20 s silence
    seg = segment_source(_source(t + 30_000), words, None, SegmentationConfig())
    clips = seg.clips
    assert len(clips) == 2 and all(2000 <= c.duration_ms <= 30000 for c in clips)
    assert clips[0].words[-1].text == "w44" and clips[0].cut_reason == "pause"
    assert clips[1].words[-1].text == "w99" and clips[1].cut_reason == "silence"
    assert [d.reason for d in seg.dropped] == ["short"] and seg.dropped[0].words[0].text == "lone."
    assert clips[0].start_frame == 0


def test_sentence_end_detection():
    for text in ["orientation.", "up?", "Yes!", "好。", "吗？", 'said."', "end…", "wait;", "「走！」"]:
        assert is_sentence_end(text), text
    for text in ["D.C.", ".C.", "U.S.", "Mr.", "Dr.", "J.", "district,", "word", "e.g."]:
        assert not is_sentence_end(text), text


def test_no_crash_on_degenerate_words():
    cfg = SegmentationConfig()
    src = _source(120_000)
    words = [Word("a", 1000, 1300, 0.9), Word("hallucination", 2000, 60_000, 0.1)]  # a 58 s "word"
    words += [Word(f"w{i}", 61_000 + i * 300, 61_000 + i * 300 + 250, 0.9) for i in range(20)]
    words += [Word("late", 125_000, 125_300, 0.9)]  # after the end of the audio
    words += [Word("neg", 90_000, 89_000, 0.9)]  # end before start
    seg = segment_source(src, words, None, cfg)
    assert {d.reason for d in seg.dropped} >= {"long", "after_end"}
    assert any(w.text == "hallucination" for d in seg.dropped for w in d.words)
    assert len(seg.clips) == 1 and seg.clips[0].words[0].text == "w0"
    assert segment_source(src, [], None, cfg).clips == ()
    # one block of chained overlapping words (several voices at once) longer than max_clip_s cannot be cut: dropped
    # with the reason "overlap", not a 40 s clip
    chain = [Word(f"c{i}", i * 400, i * 400 + 900, 0.9) for i in range(100)]
    seg = segment_source(src, chain, None, cfg)
    assert seg.clips == () and [d.reason for d in seg.dropped] == ["overlap"]


def test_clips_end_with_the_vocal_track():
    words = [Word(f"w{i}", 1000 + i * 300, 1000 + i * 300 + 250, 0.9) for i in range(20)]  # 1.0-6.95 s
    src = _source(20_000)
    assert segment_clips(src, words, None, SegmentationConfig())[-1].end_ms == words[-1].end_ms + 150
    clips = segment_clips(src, words, None, SegmentationConfig(), vocal_duration_ms=7000)
    assert clips[-1].end_ms == 7000
    seg = segment_source(src, words, None, SegmentationConfig(), vocal_duration_ms=5000)
    assert seg.clips[-1].end_ms <= 5000 and seg.dropped[0].reason == "after_end"


@pytest.mark.parametrize("fps", [Fraction(24000, 1001), Fraction(30000, 1001), Fraction(25), Fraction(60000, 1001)])
def test_frame_span_of_shot_times_is_exact(fps):
    # a clip spanning shots [f, g) in integer ms covers exactly frames [f, g), for every frame of an hour
    for f in range(0, int(3600 * fps), 7):
        g = f + 1 + f % 50
        assert frame_span(round(frame_to_ms(f, fps)), round(frame_to_ms(g, fps)), fps) == (f, g)
    assert frame_span(10, 50, Fraction(25)) == (0, 2)  # frames at 0 and 40 ms are on screen


def test_edges_follow_the_detected_speech():
    """With voice activity, an edge keeps the speech its word ends or starts in (a tail Whisper's word end misses),
    the speech running to the end of the file, and falls on a cut only where nobody speaks."""
    cfg = SegmentationConfig()  # edge margin 50 ms, extension up to 800 ms, snap 400 ms
    src = _source(20_000)
    words = [Word("fantasy.", 1000, 3000, 0.9), Word("Next", 6000, 6400, 0.9), Word("one", 6500, 9000, 0.9),
             Word("last", 15_000, 19_500, 0.9)]
    speech = [(950, 3300), (5980, 9020), (14_990, 20_000)]
    seg = segment_source(src, words, None, cfg, speech_ms=speech)
    a, b, c = seg.clips
    assert (a.start_ms, a.end_ms) == (900, 3350)  # the 300 ms tail after "fantasy" is in, plus the margin
    assert (b.start_ms, b.end_ms) == (5930, 9070)
    assert c.end_ms == 20_000  # speech up to the end of the file
    # without voice activity: the fixed pad (150 ms) around the words
    a0 = segment_source(src, words, None, cfg).clips[0]
    assert (a0.start_ms, a0.end_ms) == (850, 3150)
    # a cut 200 ms after the speech where nobody speaks takes the edge; speech across a cut keeps the edge on speech
    shots = ShotList(fps=FPS, n_frames=479, shots=tuple(shots_from_cuts([84, 215], 479, FPS)))  # cuts 3504, 8967 ms
    a, b, _ = segment_source(src, words, shots, cfg, speech_ms=speech).clips
    assert a.end_ms == shots.cut_ms[0] and b.end_ms == 9070 and shots.cut_ms[1] in b.shot_boundaries_ms
    # a tail longer than max_edge_extension_ms is not followed (voice without words is reported, not clipped)
    long_tail = segment_source(src, words[:1], None, cfg, speech_ms=[(950, 5000)]).clips[0]
    assert long_tail.end_ms == 3000 + 800 + 50
