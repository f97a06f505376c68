"""Shot detection on real footage against hand-made or reference shot lists."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from cinedub.media import probe
from cinedub.stages.base import get_stage
from cinedub.stages.shots import ShotStage
from cinedub.timebase import frame_to_ms
from cinedub.types import ShotList


@pytest.fixture(scope="module")
def stage(cfg):
    return get_stage(ShotStage, cfg)


def _detect(stage, path, tmp_path, **probe_kw):
    src = probe(path, **probe_kw)
    shots = stage.process(path, src, tmp_path / "shots.json")
    assert ShotList.from_json(tmp_path / "shots.json") == shots
    return src, shots


def test_titanic_cuts_exact_and_no_false_cut(stage, media_dir, tmp_path):
    path = media_dir / "en_film_titanic/test1.mp4"
    truth = [int(line.split()[0]) for line in (media_dir / "en_film_titanic/test1.shots.txt").read_text().splitlines()]
    src, shots = _detect(stage, path, tmp_path)
    assert src.fps == Fraction(24000, 1001)
    assert len(shots.cut_frames) == len(truth) - 1 == 2, shots.cut_frames
    for found, expected in zip(shots.cut_frames, truth[1:]):
        assert abs(found - expected) <= 1
    assert shots.shots[-1].end_frame == 482
    for s in shots.shots:  # ms from the exact 23.976 rate, not 24 or 25
        assert abs(s.start_ms - s.start_frame * 1001 / 24) <= 1
        assert s.start_ms == round(frame_to_ms(s.start_frame, src.fps))


def test_dialogue_cuts_match_truth(stage, media_dir, tmp_path):
    truth = json.loads((media_dir / "dialogue_5shots/dialogue_5shots.truth.json").read_text())
    expected = [round(start * 25) for start, _ in truth["shots_s"][1:]]
    _, shots = _detect(stage, media_dir / "dialogue_5shots/dialogue_5shots.mp4", tmp_path)
    assert len(shots.cut_frames) == len(expected)
    for found, exp in zip(shots.cut_frames, expected):
        assert abs(found - exp) <= 2, (shots.cut_frames, expected)


def test_nature_footage_hard_cuts(stage, media_dir, tmp_path):
    golden = json.loads((media_dir / "shots/testvideo.ContentDetector.golden.json").read_text())["cuts"]
    _, shots = _detect(stage, media_dir / "shots/testvideo.mp4", tmp_path, require_audio=False)
    for hard_cut in golden[:2]:  # 30 and 180; 394 is a fade (PySceneDetect's ContentDetector output, not labels)
        assert any(abs(c - hard_cut) <= 1 for c in shots.cut_frames), shots.cut_frames
