"""Which keyframes the faces stage trusts to the reduced detector canvas (``cinedub.vision.extract._ReducedCanvas``):
the decision an anchor keyframe takes from its two canvases' detections, and how a reduced keyframe's faces get the full
canvas's geometry.
Real footage runs of the same path are in ``tests/vision/test_footage.py``."""

from __future__ import annotations

import numpy as np

from cinedub.vision.config import VisionConfig
from cinedub.vision.extract import MIN_REDUCED_FACE_PX, _ReducedCanvas


def _dets(*boxes: tuple[float, float, float, float]) -> np.ndarray:
    out = np.zeros((len(boxes), 15), np.float32)
    if boxes:
        out[:, :4] = boxes
    out[:, 4] = 0.9
    return out


class _Sized:  # what the rule reads of a detector: whether it takes a canvas size per call
    def __init__(self, variable_size: bool):
        self.variable_size = variable_size


_SIZED = _Sized(True)


def test_reduced_canvas_follows_the_config_and_the_frame_size():
    c = _ReducedCanvas.for_source(VisionConfig(track_det_size=320), 1920, 1080, _SIZED)
    assert c.size == 320 and abs(c.scale - 320 / 1920) < 1e-9 and not c.trusted
    assert _ReducedCanvas.for_source(VisionConfig(), 1920, 1080, _SIZED).size == 0  # off by default
    not_smaller = VisionConfig(det_size=320, track_det_size=320)
    assert _ReducedCanvas.for_source(not_smaller, 1920, 1080, _SIZED).size == 0
    fixed = _Sized(False)  # BlazeFace, a fixed-size SCRFD graph
    assert _ReducedCanvas.for_source(VisionConfig(track_det_size=320), 1920, 1080, fixed).size == 0


def test_anchor_trusts_the_reduced_canvas_only_when_it_finds_the_same_large_faces():
    c = _ReducedCanvas.for_source(VisionConfig(track_det_size=320), 640, 640, _SIZED)  # scale 0.5
    big = _dets((100, 100, 300, 320), (400, 100, 560, 300))
    moved = big.copy()
    moved[:, :4] += 4  # the other canvas's boxes: a few px apart
    got = c.anchor(big, moved)
    assert got is big and c.trusted  # the anchor keeps its full-canvas boxes; the run goes on the reduced canvas
    assert c.anchor(big, moved[:1]) is big and not c.trusted  # a face missing there
    far = moved.copy()
    far[1, :4] = (0, 400, 150, 600)
    assert c.anchor(big, far) is big and not c.trusted  # a different face
    side = 2 * MIN_REDUCED_FACE_PX - 2  # just too small on the reduced canvas (scale 0.5)
    small = _dets((10, 10, 10 + side, 10 + side))
    assert c.anchor(small, small.copy()) is small and not c.trusted
    empty = _dets()
    assert c.anchor(empty, _dets()) is empty and c.trusted  # no face: the reduced canvas looks for newcomers
    assert c.anchor(big, _dets()) is big and not c.trusted


def _with_points(dets: np.ndarray) -> np.ndarray:
    out = dets.copy()  # five points inside each box: eyes, nose, mouth corners
    for d in out:
        x0, y0, x1, y1 = d[:4]
        w, h = x1 - x0, y1 - y0
        d[5:15] = [x0 + .3 * w, y0 + .4 * h, x0 + .7 * w, y0 + .4 * h, x0 + .5 * w, y0 + .6 * h,
                   x0 + .35 * w, y0 + .8 * h, x0 + .65 * w, y0 + .8 * h]
    return out


def test_reduced_keyframes_get_the_full_canvas_geometry_of_their_face():
    """A reduced keyframe's boxes and points move by the offset its face had between the canvases at the anchor
    (each face its own), so a face that moves keeps the full canvas's box size and centre shift."""
    c = _ReducedCanvas.for_source(VisionConfig(track_det_size=320), 640, 640, _SIZED)
    full = _with_points(_dets((100, 100, 300, 320), (400, 100, 560, 300)))
    small = _with_points(_dets((104, 102, 296, 314), (398, 100, 562, 302)))  # 4 % smaller / 2.5 % larger
    c.anchor(full, small)
    step = np.array([20, 10, 20, 10], np.float32)  # both faces moved 20 px right, 10 down (200 ms later)
    later = _with_points(_dets(*(tuple(b) for b in small[:, :4] + step)))
    got = c.run.follow(later[::-1].copy())  # detection order does not matter
    assert got is not None
    got = got[np.argsort(got[:, 0])]
    np.testing.assert_allclose(got[:, :4], full[:, :4] + step, atol=1e-3)
    np.testing.assert_allclose(got[:, 5:15], _with_points(got)[:, 5:15], atol=1e-3)  # the points move with it
    np.testing.assert_array_equal(got[:, 4], later[:, 4])  # scores untouched


def test_reduced_keyframe_with_other_faces_than_the_run_is_not_followed():
    c = _ReducedCanvas.for_source(VisionConfig(track_det_size=320), 640, 640, _SIZED)
    full = _dets((100, 100, 300, 320), (400, 100, 560, 300))
    c.anchor(full, full.copy())
    assert c.run.follow(full[:1].copy()) is None  # one lost
    assert c.run.follow(np.vstack([full, _dets((20, 400, 120, 500))])) is None  # one new
    assert c.run.follow(_dets((100, 100, 300, 320), (120, 110, 310, 330))) is None  # two on one face
    assert c.run.follow(full.copy()) is not None
    c.anchor(_dets(), _dets())
    assert c.run.follow(_dets()) is not None and len(c.run.follow(_dets())) == 0
    assert c.run.follow(full[:1].copy()) is None  # a newcomer after a faceless anchor: detected at full size


def test_offsets_are_averaged_over_the_anchors_of_a_face():
    c = _ReducedCanvas.for_source(VisionConfig(track_det_size=320), 640, 640, _SIZED)
    full = _dets((100, 100, 300, 300))
    for k, d in enumerate([4.0, 0.0]):  # the small canvas's box is d px narrower on each side
        small = _dets((100 + d, 100, 300 - d, 300))
        c.anchor(full, small, continues=k > 0)
    widths = c.run.follow(_dets((100, 100, 300, 300)))[0, 2] - c.run.follow(_dets((100, 100, 300, 300)))[0, 0]
    expect = 200 * np.mean([200 / 192, 1.0])  # the two anchors' width ratios, averaged (in log)
    assert abs(widths - expect) < 0.5
    c.anchor(full, _dets((100, 100, 300, 300)))  # a new run of frames (shot start, gap) starts afresh
    np.testing.assert_allclose(c.run.follow(_dets((100, 100, 300, 300)))[0, :4], full[0, :4], atol=1e-3)
