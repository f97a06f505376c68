"""dialogue_5shots end to end: faces in every shot, no track across a cut, Light-ASD speakers per shot.

Truth: ``dialogue_5shots.truth.json`` (shot spans; turns with ``on_screen``). Speech regions there are *derived*
from silence detection and include pauses of up to ~0.45 s (e.g. 0.88-1.32 s is at -40 dBFS); the ASD
accuracy is measured on the truth's speech frames whose 40 ms of audio is above -35 dBFS (both numbers printed).
"""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pyarrow.parquet as pq
import pytest

from cinedub.media import extract_audio, load_audio
from cinedub.types import Turn
from cinedub_testing import build_random_syncnet
from cinedub.vision.asd import assign_turns, score_tracks, scores_table, speaking_runs
from cinedub.vision.config import VisionConfig
from cinedub.vision.syncnet import load_syncnet
from cinedub.vision.extract import extract_faces
from cinedub.vision.landmarks import decode_image

FPS = Fraction(25)


@pytest.fixture(scope="module")
def d5(media_dir, vcfg, detector, landmarker, asd_net, tmp_path_factory, shot_tools):
    video = media_dir / "dialogue_5shots" / "dialogue_5shots.mp4"
    truth = json.loads((media_dir / "dialogue_5shots" / "dialogue_5shots.truth.json").read_text())
    work = tmp_path_factory.mktemp("d5")
    audio = extract_audio(video, work / "mix16k.flac")
    shots = shot_tools[1](video)
    turns = [Turn(int(round(t["start"] * 1000)), int(round(t["end"] * 1000)), t["speaker"]) for t in truth["turns"]]
    faces, stats = extract_faces(
        video, work / "faces.parquet", source_id="d5", speech_spans_ms=[(t.start_ms, t.end_ms) for t in turns],
        shots=shots, vcfg=vcfg, detector=detector, landmarker=landmarker)
    statuses, scores = score_tracks(asd_net, faces.frames_path, faces.tracks, audio, fps=FPS, vcfg=vcfg)
    rows = pq.read_table(faces.frames_path).to_pylist()
    samples, sr = load_audio(audio)
    print(f"\nfaces: {stats.n_frames} frames in {stats.total_s:.1f}s = {stats.fps:.0f} fps, "
          f"at most {stats.max_buffered_frames} frames held")
    # frames held: 10 (gap) + 6 (half smoothing window) + one detector batch + a few; never a whole shot
    assert stats.max_buffered_frames <= 10 + 6 + vcfg.det_batch_size + 4
    return dict(truth=truth, shots=shots, turns=turns, faces=faces, statuses=statuses, scores=scores, rows=rows,
                samples=samples, sr=sr, audio=audio)


def _speech_frames(d5, shot: int, audible_only: bool) -> list[tuple[int, int]]:
    """(frame_index, pts_ms) of the truth's speech frames of ``shot``, a frame away from its cuts."""
    a, b = (int(round(x * 1000)) for x in d5["truth"]["shots_s"][shot])
    out = []
    for f in range(int(np.ceil(a / 40)) + 1, int(b // 40) - 1):
        ms = f * 40
        if not any(t.start_ms <= ms < t.end_ms for t in d5["turns"]):
            continue
        if audible_only:
            x = d5["samples"][int(ms * 16):int((ms + 40) * 16)]
            if 10 * np.log10(np.mean(x**2) + 1e-12) < -35:
                continue
        out.append((f, ms))
    return out


def test_shots_and_no_track_spans_a_cut(d5):
    truth_cuts_ms = [int(round(s * 1000)) for s, _ in d5["truth"]["shots_s"][1:]]
    assert len(d5["shots"].shots) == 5
    for got, want in zip(d5["shots"].cut_ms, truth_cuts_ms):
        assert abs(got - want) <= 40
    for t in d5["faces"].tracks:
        for cut in truth_cuts_ms:  # a track lies wholly before or after each cut (one frame of tolerance)
            assert t.end_ms <= cut + 40 or t.start_ms >= cut - 40, (t, cut)


@pytest.mark.parametrize("shot", [0, 1, 2, 3])
def test_face_found_in_speech_frames(d5, shot):
    with_face = {r["frame_index"] for r in d5["rows"]}
    frames = _speech_frames(d5, shot, audible_only=False)
    rate = np.mean([f in with_face for f, _ in frames])
    print(f"shot {shot + 1}: face in {rate:.1%} of {len(frames)} speech frames")
    assert rate >= 0.95


def _speaking(d5, shot: int, audible_only: bool) -> tuple[float, int]:
    a, b = (x * 1000 for x in d5["truth"]["shots_s"][shot])
    by_frame: dict[int, bool] = {}
    for s in d5["scores"]:
        for f, p, sp in zip(s.frame_index, s.pts_ms, s.speaking(0.5)):
            if a <= p < b:
                by_frame[int(f)] = by_frame.get(int(f), False) or bool(sp)
    frames = _speech_frames(d5, shot, audible_only)
    return float(np.mean([by_frame.get(f, False) for f, _ in frames])), len(frames)


@pytest.mark.parametrize("shot", [0, 1, 2, 3])
def test_visible_face_is_the_active_speaker(d5, shot):
    rate, n = _speaking(d5, shot, audible_only=True)
    raw, n_raw = _speaking(d5, shot, audible_only=False)
    print(f"shot {shot + 1}: speaking in {rate:.1%} of {n} audible speech frames ({raw:.1%} of {n_raw} truth frames)")
    assert rate >= 0.90


@pytest.mark.xfail(
    strict=True,
    reason="Blocked (issue 3): the released Light-ASD weights are not sensitive to audio-visual sync. With the AVA "
    "weights the woman scores speaking in 100% of the man's speech frames; the TalkSet weights score every frame of "
    "every track speaking. Offset tests with Light-ASD itself and lip/visual-head vs audio-energy correlations "
    "(scripts/asd_sync_probe.py) do not separate shot 5 from shots 1-4 reliably. Needs sync-trained weights "
    "(SyncNet/TalkNet) or face attribute/recognition weights, none of which are available offline here.",
)
def test_offscreen_speaker_is_not_the_visible_woman(d5):
    rate, n = _speaking(d5, 4, audible_only=True)
    print(f"shot 5: the woman scored speaking in {rate:.1%} of {n} audible speech frames")
    assert 1 - rate >= 0.90


def test_every_track_scored_and_turns_assigned(d5):
    assert all(s.status == "scored" for s in d5["statuses"])
    speakers = assign_turns(d5["turns"], d5["faces"].tracks, d5["statuses"], d5["scores"], fps=FPS,
                            threshold=0.5, min_speaking_fraction=0.5)
    shots = d5["truth"]["shots_s"]
    for turn, sp in zip(d5["turns"], speakers):
        shot = next(i for i, (a, b) in enumerate(shots) if a * 1000 <= turn.start_ms < b * 1000)
        if shot < 4 and turn.end_ms - turn.start_ms >= 1000:
            track = next(t for t in d5["faces"].tracks if t.track_id == sp.face_track_id)
            assert sp.on_screen is True and track.shot_index == shot, (turn, sp)


def test_rows_timestamps_crops_and_lips(d5, vcfg):
    rows = d5["rows"]
    assert len(rows) == sum(t.n_frames for t in d5["faces"].tracks)
    for r in rows[::7]:
        assert r["pts_ms"] == r["frame_index"] * 40
        assert decode_image(r["face_crop"]).shape == (vcfg.face_crop_size, vcfg.face_crop_size, 3)
        assert decode_image(r["mouth_crop"]).shape == (vcfg.mouth_crop_size, vcfg.mouth_crop_size, 3)
    for broken in (b"", None, rows[0]["face_crop"][:40]):  # no crop, or a cut one: one error type for callers
        with pytest.raises(ValueError):
            decode_image(broken)
    with_lips = [r for r in rows if r["landmarks_ok"]]
    assert len(with_lips) >= 0.95 * len(rows)
    for r in with_lips:
        x1, y1, x2, y2 = r["box_xyxy"]
        lips = np.asarray(r["lip_xy"]).reshape(-1, 2)
        assert lips.shape == (40, 2)
        assert (lips[:, 0] >= x1).all() and (lips[:, 0] <= x2).all()
        assert (lips[:, 1] >= (y1 + y2) / 2).all() and (lips[:, 1] <= y2).all()  # lower half of the face box


def test_sync_veto_on_real_footage(d5, asd_net, tmp_path):
    """Shot 1 of dialogue_5shots (KH speaks to camera), scored with a random SyncNet: thresholds nothing can fail
    leave Light-ASD's decision alone; thresholds nothing can pass veto every speaking run and the turn goes
    off-screen. Which runs a real checkpoint vetoes is not testable without its weights."""
    faces, audio, turns = d5["faces"], d5["audio"], d5["turns"]
    tracks = [t for t in faces.tracks if t.shot_index == 0]
    assert len(tracks) == 1
    net = load_syncnet(build_random_syncnet(tmp_path / "syncnet_v2.model"))
    lenient = VisionConfig(det_size=320, sync_min_confidence=0.0, sync_max_offset_frames=15)
    strict = VisionConfig(det_size=320, sync_min_confidence=1e9)
    plain_st, plain = score_tracks(asd_net, faces.frames_path, tracks, audio, fps=Fraction(25), vcfg=lenient)
    st_l, sc_l = score_tracks(asd_net, faces.frames_path, tracks, audio, fps=Fraction(25), vcfg=lenient,
                              sync_net=net)
    st_s, sc_s = score_tracks(asd_net, faces.frames_path, tracks, audio, fps=Fraction(25), vcfg=strict,
                              sync_net=net)
    assert plain[0].in_sync is None and plain_st[0].sync_vetoed_fraction is None
    # lenient: the same frames speak, every check is recorded and none vetoed
    assert sc_l[0].sync and not any(c.vetoed for c in sc_l[0].sync)
    np.testing.assert_array_equal(sc_l[0].speaking(0.5), plain[0].speaking(0.5))
    for c in sc_l[0].sync:
        assert c.end_ms - c.start_ms >= lenient.sync_min_run_ms and abs(c.offset_frames) <= lenient.sync_vshift
    # strict: every checked run is vetoed; its frames keep their Light-ASD score but do not speak
    assert sc_s[0].sync and all(c.vetoed for c in sc_s[0].sync)
    for c in sc_s[0].sync:
        inside = (sc_s[0].pts_ms >= c.start_ms) & (sc_s[0].pts_ms < c.end_ms)
        assert not sc_s[0].speaking(0.5)[inside].any()
        np.testing.assert_array_equal(sc_s[0].score[inside], plain[0].score[inside])
    # what still speaks lies in runs too short to check (under sync_min_run_ms = 25 frames at 25 fps)
    assert all(b - a < 25 for a, b in speaking_runs(sc_s[0].speaking(0.5), 1))
    assert st_s[0].speaking_fraction < plain_st[0].speaking_fraction / 4
    assert st_s[0].sync_vetoed_fraction > 0.5
    table = scores_table(sc_s, 0.5).to_pylist()  # the work file records why frames were vetoed
    assert sum(not r["in_sync"] for r in table) == int((~sc_s[0].in_sync).sum()) > 0
    assert all(r["sync_confidence"] is not None for r in table if not r["in_sync"])
    assert all(r["sync_confidence"] is None for r in scores_table(plain, 0.5).to_pylist())
    kw = dict(fps=Fraction(25), threshold=0.5, min_speaking_fraction=0.5)
    long_turns = [t for t in turns if t.end_ms <= tracks[0].end_ms and t.end_ms - t.start_ms >= 2000]
    assert long_turns
    assert all(s.on_screen for s in assign_turns(long_turns, tracks, plain_st, plain, **kw))
    assert all(s.on_screen is False and s.reason == "not_speaking"
               for s in assign_turns(long_turns, tracks, st_s, sc_s, **kw))


def test_offscreen_speaker_with_real_syncnet(request, asd_net, models_dir, vcfg):
    """Issue 3's shot-5 requirement through the SyncNet veto; runs only where real ``syncnet_v2.model`` weights are
    in the model directory (none on the development and CI machines)."""
    path = models_dir / vcfg.sync_dir_name / vcfg.sync_model
    if not path.is_file():
        pytest.skip(f"no real SyncNet weights at {path}")
    d5 = request.getfixturevalue("d5")  # only now: building it costs about 20 s
    statuses, scores = score_tracks(asd_net, d5["faces"].frames_path, d5["faces"].tracks, d5["audio"], fps=FPS,
                                    vcfg=vcfg, sync_net=load_syncnet(path))
    synced = dict(d5, statuses=statuses, scores=scores)
    for shot in range(4):
        assert _speaking(synced, shot, audible_only=True)[0] >= 0.90, shot
    rate, n = _speaking(synced, 4, audible_only=True)
    print(f"shot 5 with SyncNet: the woman scored speaking in {rate:.1%} of {n} audible speech frames")
    assert 1 - rate >= 0.90
