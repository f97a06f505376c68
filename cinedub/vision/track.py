"""Face tracking by IoU of motion-predicted boxes, with gap tolerance, never across a shot boundary.

Pure numpy/scipy (no model). An online tracker in the spirit of SORT (Bewley et al., ICIP 2016) without the
Kalman filter: each track predicts its box at the new frame from a constant per-frame velocity, detections are
assigned to predictions by the Hungarian algorithm on IoU (``scipy.optimize.linear_sum_assignment``), pairs below
``iou_threshold`` are refused. A track missing for more than ``max_gap_frames`` frames ends, and every track ends
when the shot changes. Missed frames between two detections of a track are filled by linear interpolation of the
box and the five points (as the TalkNet/Light-ASD demo trackers do with ``interp1d``).

Frames are the **decoded** frames passed to :meth:`FaceTracker.update`; frames never decoded (outside the speech
spans) count towards the gap but are never part of a track.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import linear_sum_assignment


@dataclass
class RawTrack:
    """A track being built or finished (internal to the faces pipeline; not a record).

    Attributes:
        track_no: creation number (deterministic order: frame, then detection order).
        shot_index: the shot of every frame.
        frames: decode-order frame indices, ascending.
        boxes: ``(n, 4)`` xyxy px; kps: ``(n, 10)`` five (x, y) points px; scores: ``(n,)`` detector score,
            NaN where interpolated.
        pending: decoded frames after the last detection (joined if the face is found again within the gap).
    """

    track_no: int
    shot_index: int
    frames: list[int] = field(default_factory=list)
    boxes: list[np.ndarray] = field(default_factory=list)
    kps: list[np.ndarray] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(4, np.float32))

    @property
    def last_frame(self) -> int:
        return self.frames[-1]

    @property
    def n_detected(self) -> int:
        return int(np.sum(~np.isnan(self.scores)))

    def box_array(self) -> np.ndarray:
        return np.asarray(self.boxes, np.float32).reshape(-1, 4)

    def kps_array(self) -> np.ndarray:
        return np.asarray(self.kps, np.float32).reshape(-1, 10)

    def median_size_px(self) -> float:
        b = self.box_array()
        return float(np.median(np.maximum(b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]))) if len(b) else 0.0

    def predict(self, frame_index: int) -> np.ndarray:
        """Box expected at ``frame_index`` under constant per-frame velocity."""
        return self.boxes[-1] + self.velocity * (frame_index - self.last_frame)

    def add(self, frame_index: int, det: np.ndarray) -> None:
        """Append a detection (row ``x1 y1 x2 y2 score 10*kps``), interpolating the pending frames before it."""
        box, kps = det[:4].astype(np.float32), det[5:15].astype(np.float32)
        if self.frames:
            f0, b0, k0 = self.last_frame, self.boxes[-1], self.kps[-1]
            span = frame_index - f0
            for f in self.pending:
                if f0 < f < frame_index:
                    a = (f - f0) / span
                    self.frames.append(f)
                    self.boxes.append(b0 + a * (box - b0))
                    self.kps.append(k0 + a * (kps - k0))
                    self.scores.append(float("nan"))
            # smoothed per-frame velocity (half new, half old): steadier than the last difference alone
            self.velocity = 0.5 * self.velocity + 0.5 * (box - b0) / max(span, 1)
        self.pending = []
        self.frames.append(frame_index)
        self.boxes.append(box)
        self.kps.append(kps)
        self.scores.append(float(det[4]))


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box of ``a`` ``(n, 4)`` with every box of ``b`` ``(m, 4)`` (xyxy), shape ``(n, m)``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), np.float32)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-6)


class FaceTracker:
    """Online IoU tracker over decoded frames.

    Args:
        iou_threshold: minimum IoU between a predicted box and a detection.
        max_gap_frames: frames a track may go undetected before it ends.

    Call :meth:`update` for every decoded frame in order (with an empty array when no face was found), then
    :meth:`flush`. Both return the tracks that ended, unfiltered (see :func:`keep_track`).
    """

    def __init__(self, *, iou_threshold: float = 0.3, max_gap_frames: int = 10):
        self.iou_threshold = iou_threshold
        self.max_gap_frames = max_gap_frames
        self.active: list[RawTrack] = []
        self._next_no = 0
        self._shot: int | None = None
        self._last_frame = -1

    def update(self, frame_index: int, shot_index: int, dets: np.ndarray) -> list[RawTrack]:
        """Add one decoded frame's detections ``(n, 15)``; return the tracks that ended before or at it.

        Raises:
            ValueError: frames not in increasing order.
        """
        if frame_index <= self._last_frame:
            raise ValueError(f"frames must increase: {frame_index} after {self._last_frame}")
        self._last_frame = frame_index
        ended: list[RawTrack] = []
        if self._shot is not None and shot_index != self._shot:
            ended, self.active = self.active, []  # a cut ends every track
        self._shot = shot_index
        # tracks whose gap would exceed the tolerance even if matched now
        alive = []
        for t in self.active:
            (ended if frame_index - t.last_frame > self.max_gap_frames + 1 else alive).append(t)
        self.active = alive

        dets = np.asarray(dets, np.float32).reshape(-1, 15)
        matched_t: set[int] = set()
        matched_d: set[int] = set()
        if self.active and len(dets):
            pred = np.stack([t.predict(frame_index) for t in self.active])
            iou = iou_matrix(pred, dets[:, :4])
            rows, cols = linear_sum_assignment(-iou)
            for r, c in zip(rows, cols):
                if iou[r, c] >= self.iou_threshold:
                    self.active[r].add(frame_index, dets[c])
                    matched_t.add(r)
                    matched_d.add(c)
        for i, t in enumerate(self.active):
            if i not in matched_t:
                t.pending.append(frame_index)
        for c in range(len(dets)):
            if c not in matched_d:
                t = RawTrack(track_no=self._next_no, shot_index=shot_index)
                self._next_no += 1
                t.add(frame_index, dets[c])
                self.active.append(t)
        return ended

    def flush(self) -> list[RawTrack]:
        """End every active track (end of the stream)."""
        ended, self.active = self.active, []
        return ended


def keep_track(track: RawTrack, *, min_frames: int, min_face_px: float) -> bool:
    """Whether a finished track is long and large enough (TalkNet's ``minTrack`` / ``minFaceSize`` filters)."""
    return len(track.frames) >= max(min_frames, 1) and track.median_size_px() >= min_face_px
