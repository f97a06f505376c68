"""Lip landmarks (mediapipe FaceMesh), aligned face crops, mouth crops and their encoding.

Geometry of the face crop follows the Light-ASD / TalkNet demo (``crop_video`` in Light-ASD's
``Columbia_test.py``): a square of side ``(1 + crop_scale) * s`` around the (median-smoothed) face box, where ``s``
is the box's longer side, shifted down by ``crop_scale * s / 2`` to keep the chin, padded with grey 110, resized to
``face_crop_size``. Light-ASD scores the central half of that crop in grey at 112x112, so crops made here feed
it as in training. Here the crop can also be rotated to level the eyes (``align_roll``).

Lips: FaceMesh (468 points, Kartynnik et al., "Real-time Facial Surface Geometry from Monocular Video on Mobile
GPUs", 2019) runs on the face crop, one tracking FaceMesh instance per face track; the 40 lip contour points of
``mp.solutions.face_mesh.FACEMESH_LIPS`` are mapped back to frame pixels.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# FaceMesh lip contour, ordered around the mouth from the left corner (61 / 78): outer contour, then inner
# contour. The union equals the vertex set of mediapipe's FACEMESH_LIPS (checked in the tests).
LIP_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIP_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
LIP_INDICES = LIP_OUTER + LIP_INNER

PAD_GREY = 110  # TalkNet/Light-ASD pad value around frames before cropping


def roll_from_eyes(kps: np.ndarray) -> float:
    """Roll (degrees) of the line from the image-left eye to the image-right eye, in image axes (y down).

    Positive when that line slopes down to the right (the head leans clockwise as seen). ``kps`` is ``(10,)``
    or ``(5, 2)`` in SCRFD order.
    """
    k = np.asarray(kps, np.float64).reshape(-1, 2)
    return math.degrees(math.atan2(k[1, 1] - k[0, 1], k[1, 0] - k[0, 0]))


def _similarity(center: tuple[float, float], roll_deg: float, scale: float, target: tuple[float, float]) -> np.ndarray:
    m = cv2.getRotationMatrix2D((float(center[0]), float(center[1])), float(roll_deg), float(scale))
    m[:, 2] += np.asarray(target, np.float64) - np.asarray(center, np.float64)
    return m


def face_affine(
    box_center: tuple[float, float], size_px: float, roll_deg: float, *, crop_scale: float, out_size: int
) -> np.ndarray:
    """``(2, 3)`` affine mapping frame px to face-crop px (Light-ASD crop geometry, rotated by ``roll_deg``).

    ``size_px`` is the face box's longer side; the crop covers ``(1 + crop_scale) * size_px`` and its centre
    sits ``crop_scale * size_px / 2`` below the box centre along the face's vertical axis.
    """
    scale = out_size / max(size_px * (1 + crop_scale), 1e-3)
    half = out_size / 2
    return _similarity(box_center, roll_deg, scale, (half, half - scale * size_px * crop_scale / 2))


def mouth_affine(mouth_center: tuple[float, float], side_px: float, roll_deg: float, *, out_size: int) -> np.ndarray:
    """``(2, 3)`` affine mapping frame px to a square mouth crop of side ``side_px`` centred on the mouth."""
    return _similarity(mouth_center, roll_deg, out_size / max(side_px, 1e-3), (out_size / 2, out_size / 2))


def warp(image: np.ndarray, affine: np.ndarray, out_size: int) -> np.ndarray:
    """Crop ``image`` (BGR) through ``affine`` into an ``out_size`` square (bilinear, grey 110 outside)."""
    return cv2.warpAffine(
        image, affine, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
        borderValue=(PAD_GREY, PAD_GREY, PAD_GREY),
    )


def invert_points(affine: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map crop px points ``(n, 2)`` back to frame px through the inverse of ``affine``."""
    inv = cv2.invertAffineTransform(affine)
    pts = np.asarray(pts, np.float64).reshape(-1, 2)
    return pts @ inv[:, :2].T + inv[:, 2]


def encode_image(image: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode a BGR (or grey) uint8 image as JPEG or WebP bytes.

    Raises:
        ValueError: unknown format or OpenCV failed to encode.
    """
    if fmt == "jpeg":
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif fmt == "webp":
        ok, buf = cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, int(quality)])
    else:
        raise ValueError(f"unknown image format {fmt!r} (jpeg or webp)")
    if not ok:
        raise ValueError(f"could not encode a {image.shape} image as {fmt}")
    return buf.tobytes()


def decode_image(data: bytes, grey: bool = False) -> np.ndarray:
    """Decode JPEG/WebP/PNG bytes to a BGR ``(h, w, 3)`` (or grey ``(h, w)``) uint8 array.

    Raises:
        ValueError: the bytes are not an image (also when empty or None: a crop that was never made).
    """
    if not data:
        raise ValueError("no image bytes")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError("not a decodable image")
    return img


class LipLandmarker:
    """FaceMesh on the face crops of one track (tracking mode: consecutive calls must be consecutive frames).

    Args:
        min_confidence: FaceMesh's detection and tracking confidence (mediapipe default 0.5).
    """

    def __init__(self, min_confidence: float = 0.5):
        import mediapipe as mp

        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False,
            max_num_faces=1,
            refine_landmarks=False,
            min_detection_confidence=min_confidence,
            min_tracking_confidence=min_confidence,
        )

    def lips(self, face_crop: np.ndarray, affine: np.ndarray) -> np.ndarray | None:
        """The 40 lip points (:data:`LIP_INDICES`) in frame px ``(40, 2)``, or None when FaceMesh finds no face.

        Args:
            face_crop: BGR crop made with ``affine`` (frame px -> crop px).
        """
        res = self._mesh.process(cv2.cvtColor(face_crop, cv2.COLOR_BGR2RGB))
        if not res.multi_face_landmarks:
            return None
        lm = res.multi_face_landmarks[0].landmark
        h, w = face_crop.shape[:2]
        pts = np.array([(lm[i].x * w, lm[i].y * h) for i in LIP_INDICES], np.float64)
        return invert_points(affine, pts)

    def reset(self) -> None:
        """Forget the tracked face (a new graph run), so the next call may be another track's first frame; the
        points are then those of a new landmarker (checked on real crops), for about half its start-up cost."""
        self._mesh.reset()

    def close(self) -> None:
        self._mesh.close()
