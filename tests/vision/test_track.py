"""The IoU tracker: gap tolerance with interpolation, a new track at every shot boundary, filters."""

from __future__ import annotations

import numpy as np

from cinedub.vision.track import FaceTracker, iou_matrix, keep_track


def det(x: float, y: float = 100.0, s: float = 80.0, score: float = 0.9) -> np.ndarray:
    kps = [x + 20, y + 30, x + 60, y + 30, x + 40, y + 50, x + 25, y + 65, x + 55, y + 65]
    return np.array([[x, y, x + s, y + s, score, *kps]], np.float32)


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 50 / 150, 0.0]], atol=1e-6)


def test_gap_is_interpolated_and_long_gap_ends_track():
    tr = FaceTracker(iou_threshold=0.3, max_gap_frames=3)
    ended = []
    for f in range(0, 10):
        dets = det(100 + 2 * f) if f not in (4, 5, 6) else np.zeros((0, 15))
        ended += tr.update(f, 0, dets)
    assert not ended and len(tr.active) == 1
    t = tr.active[0]
    assert t.frames == list(range(10))
    assert np.isnan(t.scores[5]) and t.n_detected == 7
    np.testing.assert_allclose(t.boxes[5][0], 110, atol=1e-4)  # linear between frames 3 and 7
    for f in range(10, 15):  # 5 missing frames > 3
        ended += tr.update(f, 0, np.zeros((0, 15)))
    ended += tr.update(15, 0, det(130))
    assert len(ended) == 1 and ended[0].frames[-1] == 9  # the pending tail is not part of the track


def test_shot_boundary_ends_every_track():
    tr = FaceTracker(max_gap_frames=10)
    ended = []
    for f in range(20):
        ended += tr.update(f, 0 if f < 12 else 1, det(100))  # same place across the cut
    ended += tr.flush()
    assert [(t.shot_index, t.frames[0], t.frames[-1]) for t in ended] == [(0, 0, 11), (1, 12, 19)]


def test_two_faces_stay_apart_and_filters():
    tr = FaceTracker()
    for f in range(12):
        both = np.vstack([det(50 + f), det(400 - f, s=30)])
        tr.update(f, 0, both)
    tracks = tr.flush()
    assert len(tracks) == 2 and all(len(t.frames) == 12 for t in tracks)
    big, small = sorted(tracks, key=lambda t: -t.median_size_px())
    assert keep_track(big, min_frames=10, min_face_px=40)
    assert not keep_track(small, min_frames=10, min_face_px=40)  # tiny face
    assert not keep_track(big, min_frames=13, min_face_px=40)  # too short
