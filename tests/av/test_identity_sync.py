"""Face identity (dlib descriptors, clustering) and lip/audio synchrony on the real records of the shared cases."""

from __future__ import annotations

import importlib.metadata
import json
import shutil

import numpy as np
import pytest

from cinedub.errors import ModelNotFoundError
from cinedub.ops.av_config import AvConfig
from cinedub.vision.av_sync import Envelope, lip_motion, track_sync, window_sync
from cinedub.vision.identity import (RECOGNITION_FILE, SHAPE_FILE, _describe_chosen, _rows,
                                     needs_descriptor, select_frames)

pytestmark = pytest.mark.slow


def _descriptors(rec, describer, per_track=3):
    """``track_id -> (k, 128)`` descriptors of ``per_track`` spread frames of every track."""
    ids = [t.track_id for t in rec.faces.tracks]
    rows = _rows(rec.faces.frames_path, ids)
    chosen = {t: select_frames(rows[t], per_track) for t in ids}
    described = _describe_chosen(rec.faces.frames_path, chosen, describer)
    assert set(described) == {(t, r["frame_index"]) for t, picks in chosen.items() for r in picks}  # all decode
    return {t: np.stack([described[(t, r["frame_index"])] for r in picks]) for t, picks in chosen.items()}


def test_same_person_close_different_far(av_case, describer):
    """ENVIRONMENT.md: same person <= 0.50, different >= 0.64 on dialogue_5shots; dlib's threshold 0.6 between."""
    rec = av_case("dialogue_5shots")[0]
    d = _descriptors(rec, describer)
    same = [np.linalg.norm(v[i] - v[j]) for v in d.values() for i in range(len(v)) for j in range(i + 1, len(v))]
    tids = sorted(d)
    diff = [np.linalg.norm(a - b) for i, s in enumerate(tids) for t in tids[i + 1:] for a in d[s] for b in d[t]]
    print(f"\nsame person max {max(same):.3f} ({len(same)} pairs), different min {min(diff):.3f} ({len(diff)} pairs)")
    assert max(same) <= 0.55 and min(diff) >= 0.6


def test_identity_carries_across_shots(av_case):
    rec, fused, ident, cost = av_case("twoshot_dev")
    by = {t.track_id: t for t in rec.faces.tracks}
    groups = {}
    for t in ident.tracks:
        groups.setdefault(t.identity_id, set()).add(by[t.track_id].shot_index)
    print(f"\ntwoshot_dev identities -> shots: {groups}")
    # shot 1: both people side by side; shot 2: the right one alone; shot 3: the left one alone
    assert sorted(map(sorted, groups.values())) == [[0, 1], [0, 2]]
    d5 = av_case("dialogue_5shots")[2]
    assert len(d5.identity_ids) == 5 and all(t.reason == "embedded" for t in d5.tracks)


def test_group_shot_needs_no_descriptor(av_case):
    rec, fused, ident, cost = av_case("grp_1e")
    assert not needs_descriptor(rec.faces.tracks) and ident.n_descriptors == 0
    assert len(set(ident.identity_of().values())) == len(rec.faces.tracks)  # faces seen together: all different


def test_models_found_in_folder_or_wheel(tmp_path, monkeypatch):
    from cinedub.config import Config
    from cinedub.models import model_path

    cfg = Config.load(models_dir=tmp_path)
    wheel = model_path(cfg, "face-identity")  # empty models folder: the installed wheel's files
    rec, shape = wheel / RECOGNITION_FILE, wheel / SHAPE_FILE
    assert rec.is_file() and shape.is_file() and "face_recognition_models" in str(wheel)
    (tmp_path / "dlib").mkdir()
    for f in (rec, shape):
        (tmp_path / "dlib" / f.name).symlink_to(f)
    assert model_path(cfg, "face-identity") == tmp_path / "dlib"  # the models folder comes first
    shutil.rmtree(tmp_path / "dlib")

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(ModelNotFoundError, match="face-recognition-models"):
        model_path(cfg, "face-identity")


def test_heard_face_is_more_in_sync_than_the_other_talking_face(av_case, media_dir):
    """twoshot_dev shot 1: both faces talk, one is heard at a time (Light-ASD scores both speaking)."""
    rec = av_case("twoshot_dev")[0]
    truth = json.loads((media_dir / "av_speakers/twoshot_dev.truth.json").read_text())
    shot1 = sorted((t for t in rec.faces.tracks if t.shot_index == 0), key=lambda t: t.track_id)
    boxes = {}
    import pyarrow.parquet as pq

    for r in pq.read_table(rec.faces.frames_path, columns=["track_id", "box_xyxy"]).to_pylist():
        boxes.setdefault(r["track_id"], r["box_xyxy"][0])
    left, right = sorted(shot1, key=lambda t: boxes[t.track_id])
    spans = {"left": (int(truth["turns"][0]["start"] * 1000), int(truth["turns"][0]["end"] * 1000)),
             "right": (int(truth["turns"][2]["start"] * 1000), int(truth["turns"][2]["end"] * 1000))}
    windows = {t.track_id: list(spans.values()) for t in (left, right)}
    sync = track_sync(rec.faces.frames_path, rec.audio_16k, windows, fps=float(rec.faces.fps), cfg=AvConfig())
    for pos, (heard, other) in {"left": (left, right), "right": (right, left)}.items():
        a, b = sync[(heard.track_id, *spans[pos])], sync[(other.track_id, *spans[pos])]
        print(f"\n{pos} heard: z {a.z:.2f} (r {a.r:.2f}, lag {a.lag_ms} ms) vs other face z {b.z:.2f}")
        assert a.z > b.z


def test_window_sync_finds_the_lag():
    """A lip signal whose audio envelope follows it 80 ms later: best lag +80 ms, far above the null."""
    rng = np.random.default_rng(0)
    fps, n = 25.0, 150
    pts = np.arange(n) * 40.0
    motion = np.convolve(rng.random(n + 10), np.ones(3) / 3, mode="same")[:n]
    env_t = np.arange(-2000, 8000, 10.0)
    env_db = np.interp(env_t - 20 - 80, pts, motion, left=0, right=0) * 30
    s = window_sync(motion, pts.astype(np.int64), 1000 / fps, Envelope(env_t, env_db), 0, 6000, AvConfig())
    assert s.lag_ms == 80 and s.r > 0.95 and s.z > 3


def test_lip_motion_ignores_head_motion_and_scale():
    base = np.random.default_rng(1).random((40, 2)) * 20
    base[0], base[10] = (0, 10), (20, 10)  # mouth corners
    frames = np.stack([base * (1 + 0.5 * i) + (7 * i, 3 * i) for i in range(5)])  # moves and grows, same shape
    assert np.allclose(lip_motion(frames, np.arange(5) * 40), 0, atol=1e-9)


def test_identity_stage_writes_its_records(av_case, cfg, tmp_path):
    from cinedub.stages.base import get_stage
    from cinedub.stages.identity import IdentityStage
    from cinedub.vision.records import FaceIdentityResult

    rec = av_case("zh_tvdrama")[0]
    result = get_stage(IdentityStage, cfg).identify(rec.faces, tmp_path)
    back = FaceIdentityResult.from_json(result.to_json(tmp_path / "identity.json"))
    assert back == result and np.load(tmp_path / "identity.npy").shape == (2, 128)
    # the same actor in both shots (the debug render shows one face for both voices)
    assert len({t.identity_id for t in back.tracks}) == 1 and back.model.startswith("dlib:")
