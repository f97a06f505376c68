"""The faces and ASD stages on the first two shots of dialogue_5shots: files written, records round-trip,
turns get their speaking face track; unscorable tracks are reported, never guessed."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pyarrow.parquet as pq
import pytest

from cinedub.errors import MediaError
from cinedub.media import extract_audio, probe
from cinedub.stages.asd import AsdStage
from cinedub.stages.base import get_stage
from cinedub.stages.faces import FacesStage
from cinedub.types import Turn
from cinedub.vision.asd import TrackScores, assign_turns, read_asd_scores
from cinedub.vision.extract import iter_face_frames
from cinedub.vision.records import AsdResult, AsdTrack, FaceTrack, FaceTrackList


def _vision(cfg, **kw):
    return cfg.model_copy(update={"vision": cfg.vision.model_copy(update=kw)})


@pytest.fixture(scope="module")
def run(cfg, media_dir, tmp_path_factory, shot_tools):
    video = media_dir / "dialogue_5shots" / "dialogue_5shots.mp4"
    truth = json.loads((media_dir / "dialogue_5shots" / "dialogue_5shots.truth.json").read_text())
    work = tmp_path_factory.mktemp("stage")
    source = probe(video, require_video=True)
    shots = shot_tools[0]([(0, 200), (200, 325), (325, 451), (451, 604), (604, 769)], Fraction(25), 769)
    turns = [Turn(int(t["start"] * 1000), int(t["end"] * 1000), t["speaker"]) for t in truth["turns"][:5]]
    faces_stage = get_stage(FacesStage, _vision(cfg, det_size=320))  # 320 px: 3x faster, same faces here
    faces = faces_stage.extract(source, shots, [(t.start_ms, t.end_ms) for t in turns], work)
    faces.to_json(work / "faces.json")
    audio = extract_audio(video, work / "mix16k.flac")
    asd_stage = get_stage(AsdStage, cfg)
    result = asd_stage.score(faces, audio, turns, work)
    result.to_json(work / "asd.json")
    return dict(work=work, source=source, faces=faces, result=result, turns=turns, audio=audio, cfg=cfg)


def test_faces_stage_outputs(run):
    faces, work = run["faces"], run["work"]
    assert FaceTrackList.from_json(work / "faces.json") == faces
    assert faces.fps == Fraction(25) and faces.detector.startswith("scrfd:")
    assert [t.shot_index for t in faces.tracks] == [0, 1]  # one face per shot, the cut at 8 s splits them
    assert faces.tracks[0].end_frame <= 200 <= faces.tracks[1].start_frame
    n_rows = pq.ParquetFile(faces.frames_path).metadata.num_rows
    assert n_rows == sum(t.n_frames for t in faces.tracks) == faces.n_frames_with_face
    frames = list(iter_face_frames(faces.frames_path, faces.tracks[1].track_id))
    assert len(frames) == faces.tracks[1].n_frames and frames[0].frame_index == faces.tracks[1].start_frame
    assert all(len(f.lip_xy) == 40 for f in frames if f.landmarks_ok)


def test_asd_stage_outputs_and_turns(run):
    result, work, faces = run["result"], run["work"], run["faces"]
    assert AsdResult.from_json(work / "asd.json") == result
    assert [t.status for t in result.tracks] == ["scored", "scored"]
    rows = read_asd_scores(result.scores_path)
    assert len(rows) == sum(t.n_frames for t in faces.tracks)
    assert all(0.0 <= r.score <= 1.0 and r.speaking == (r.score >= 0.5) for r in rows)
    by_shot = {t.track_id: t.shot_index for t in faces.tracks}
    for turn, sp in zip(run["turns"], result.turns):
        if turn.end_ms - turn.start_ms >= 1000:
            shot = 0 if turn.start_ms < 8000 else 1
            assert sp.reason == "speaking" and by_shot[sp.face_track_id] == shot, sp
    assert all(sp.on_screen is True and sp.face_track_id for sp, t in zip(result.turns, run["turns"])
               if t.end_ms - t.start_ms >= 1000)


def test_tracks_too_short_are_reported_not_guessed(run):
    stage = get_stage(AsdStage, _vision(run["cfg"], asd_min_track_ms=60_000))
    work = run["work"] / "short"
    work.mkdir()
    result = stage.score(run["faces"], run["audio"], run["turns"], work)
    assert {t.status for t in result.tracks} == {"too_short"}
    assert all(t.on_screen is None and t.face_track_id is None and t.reason == "unscored" for t in result.turns)
    assert pq.read_table(result.scores_path).num_rows == 0


def test_faces_stage_needs_video(cfg, media_dir, tmp_path):
    audio_only = probe(media_dir / "asr" / "jfk.flac")
    with pytest.raises(MediaError):
        get_stage(FacesStage, cfg).extract(audio_only, None, None, tmp_path)


def test_assign_turns_reasons():
    fps = Fraction(25)
    tr = [FaceTrack("a", 0, 0, 50, 0, 2000, 50, 50, 100.0, 0.9), FaceTrack("b", 1, 50, 100, 2000, 4000, 50, 50, 100.0, 0.9)]
    pts = np.arange(0, 2000, 40)
    scores = [TrackScores("a", np.arange(50), pts, np.full(50, 0.9, np.float32), np.full(50, 2.2, np.float32)),
              TrackScores("b", np.arange(50, 100), pts + 2000, np.full(50, 0.1, np.float32), np.full(50, -2.2, np.float32))]
    statuses = [AsdTrack("a", "scored"), AsdTrack("b", "scored")]
    turns = [Turn(0, 1900, "S0"), Turn(2100, 3900, "S1"), Turn(5000, 6000, "S2")]
    got = assign_turns(turns, tr, statuses, scores, fps=fps, threshold=0.5, min_speaking_fraction=0.5)
    assert [(g.face_track_id, g.on_screen, g.reason) for g in got] == [
        ("a", True, "speaking"), (None, False, "not_speaking"), (None, False, "no_face")]
