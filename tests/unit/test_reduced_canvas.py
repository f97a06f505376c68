"""Which keyframes the faces stage trusts to the reduced detector canvas (``cinedub.vision.extract._ReducedCanvas``):
the decision an anchor keyframe takes from its two canvases' detections, and the merge of a full-size re-detection.
Real footage runs of the same path are in ``tests/vision/test_footage.py``."""

from __future__ import annotations

import numpy as np

from cinedub.vision.config import VisionConfig
from cinedub.vision.extract import MIN_REDUCED_FACE_PX, _add_unmatched, _ReducedCanvas


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
    assert got is moved and c.trusted and c.expect == 2  # the run goes on the reduced canvas, its boxes from it
    assert c.anchor(big, moved[:1]) is big and not c.trusted and c.expect == 0  # a face missing there
    far = moved.copy()
    far[1, :4] = (0, 400, 150, 600)
    assert c.anchor(big, far) is big and not c.trusted  # a different face
    side = 2 * MIN_REDUCED_FACE_PX - 2  # just too small on the reduced canvas (scale 0.5)
    small = _dets((10, 10, 10 + side, 10 + side))
    assert c.anchor(small, small.copy()) is small and not c.trusted
    empty = _dets()
    assert c.anchor(_dets(), empty) is empty and c.trusted and c.expect == 0  # no face: large newcomers only
    assert c.anchor(big, _dets()) is big and not c.trusted


def test_full_size_redetection_adds_only_the_faces_the_reduced_canvas_lost():
    small = _dets((100, 100, 300, 320))
    full = _dets((102, 101, 301, 322), (400, 100, 560, 300))
    merged = _add_unmatched(small, full)
    assert len(merged) == 2 and np.array_equal(merged[0], small[0]) and np.array_equal(merged[1], full[1])
    assert _add_unmatched(_dets(), full) is full
    assert _add_unmatched(small, _dets()) is small
