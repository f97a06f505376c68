"""Lip landmarks (FaceMesh's landmark network), aligned face crops, mouth crops and their encoding.

Geometry of the face crop follows the Light-ASD / TalkNet demo (``crop_video`` in Light-ASD's
``Columbia_test.py``): a square of side ``(1 + crop_scale) * s`` around the (median-smoothed) face box, where ``s``
is the box's longer side, shifted down by ``crop_scale * s / 2`` to keep the chin, padded with grey 110, resized to
``face_crop_size``. Light-ASD scores the central half of that crop in grey at 112x112, so crops made here feed
it as in training. Here the crop can also be rotated to level the eyes (``align_roll``).

Lips: the face landmark network of mediapipe's FaceMesh (468 points, Kartynnik et al., "Real-time Facial Surface
Geometry from Monocular Video on Mobile GPUs", 2019; ``face_landmark.tflite`` as shipped in the mediapipe 0.10.21
wheel) runs on LiteRT, on a 192 px square around the tracked, smoothed face box (:func:`landmark_affine`). The
FaceMesh graph instead re-centres that square on the previous frame's points (tracking mode), which ties a graph
to one face track and costs about 2 ms more per frame in graph overhead; here every frame is independent. The 40
lip contour points of ``mp.solutions.face_mesh.FACEMESH_LIPS`` are mapped back to frame pixels.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

# FaceMesh lip contour, ordered around the mouth from the left corner (61 / 78): outer contour, then inner
# contour. The union equals the vertex set of mediapipe's FACEMESH_LIPS (checked in the tests).
LIP_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIP_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
LIP_INDICES = LIP_OUTER + LIP_INNER

PAD_GREY = 110  # TalkNet/Light-ASD pad value around frames before cropping

# Input side of FaceMesh's landmark network (``face_landmark.tflite``: 1 x 192 x 192 x 3 float RGB in [0, 1]).
LANDMARK_INPUT_PX = 192
# The network's input square around a face box of longer side ``s`` (SCRFD's box, smoothed): side
# ``LANDMARK_ROI_SCALE * s``, centred ``LANDMARK_ROI_SHIFT * s`` below the box centre along the face's vertical axis.
# FaceMesh's own square is 1.5x the box of its previous points, centred on it; SCRFD's box is larger than those points
# (it takes in the forehead). Set on dialogue_5shots, grp_0a and twoshot_dev (whole files): these values put the lips
# a median 1.2-1.6 % of the mouth's width (90th percentile 2.0-3.4 %) from the FaceMesh graph's tracked output; the
# minimum is broad (scale 1.2-1.5, shift 0.02-0.08: medians within 2.5 %), while a square 0.2 s lower misses the
# lips by 25-40 % (the network expects the face centred).
LANDMARK_ROI_SCALE = 1.35
LANDMARK_ROI_SHIFT = 0.05


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
    return _box_square(box_center, size_px, roll_deg, 1 + crop_scale, crop_scale / 2, out_size)


def _box_square(box_center: tuple[float, float], size_px: float, roll_deg: float, side: float, shift: float,
                out_size: int) -> np.ndarray:
    """Frame px -> an ``out_size`` square of side ``side * size_px`` centred ``shift * size_px`` below the box centre
    along the face's vertical axis (rotated by ``roll_deg``): the face crop's and the landmark input's geometry."""
    scale = out_size / max(size_px * side, 1e-3)
    half = out_size / 2
    return _similarity(box_center, roll_deg, scale, (half, half - scale * size_px * shift))


def landmark_affine(box_center: tuple[float, float], size_px: float, roll_deg: float) -> np.ndarray:
    """``(2, 3)`` affine mapping frame px to the landmark network's 192 px input (:data:`LANDMARK_ROI_SCALE`,
    :data:`LANDMARK_ROI_SHIFT`), rotated by ``roll_deg`` like the face crop. ``size_px`` is the face box's longer
    side."""
    return _box_square(box_center, size_px, roll_deg, LANDMARK_ROI_SCALE, LANDMARK_ROI_SHIFT, LANDMARK_INPUT_PX)


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
    """FaceMesh's landmark network on LiteRT, one frame at a time (no state carried between calls).

    Not thread-safe: one instance per thread (the faces stage has one crop thread). ``invoke`` releases the GIL.

    Args:
        model_path: ``face_landmark.tflite`` (model registry key ``facemesh``).
        min_confidence: the face-presence score (sigmoid of the network's second output) below which a frame has no
            lips; FaceMesh's ``min_tracking_confidence`` default 0.5.

    Raises:
        ValueError: the file is not a LiteRT model with FaceMesh's outputs (1404 point values and a presence score).
    """

    def __init__(self, model_path: str | Path, min_confidence: float = 0.5):
        from ai_edge_litert.interpreter import Interpreter

        try:
            self._net = Interpreter(model_path=str(model_path), num_threads=1)
            self._net.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"{model_path}: not a loadable LiteRT model ({e})") from None
        inp = self._net.get_input_details()[0]
        outs = {int(np.prod(d["shape"])): d["index"] for d in self._net.get_output_details()}
        if tuple(inp["shape"]) != (1, LANDMARK_INPUT_PX, LANDMARK_INPUT_PX, 3) or 1404 not in outs or 1 not in outs:
            raise ValueError(f"{model_path}: not FaceMesh's landmark network (input {tuple(inp['shape'])})")
        self._input, self._points, self._presence = inp["index"], outs[1404], outs[1]
        self._min_logit = math.log(min_confidence / (1 - min_confidence))

    def lips(self, image: np.ndarray, affine: np.ndarray) -> np.ndarray | None:
        """The 40 lip points (:data:`LIP_INDICES`) in frame px ``(40, 2)`` float64, or None when the network's
        face-presence score is below ``min_confidence``.

        Args:
            image: the BGR uint8 frame.
            affine: frame px -> input px (:func:`landmark_affine`); pixels outside the frame repeat its border, as
                mediapipe's ImageToTensorCalculator does.
        """
        roi = cv2.warpAffine(image, affine, (LANDMARK_INPUT_PX, LANDMARK_INPUT_PX), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)
        x = cv2.cvtColor(roi, cv2.COLOR_BGR2RGB).astype(np.float32) * (1 / 255)
        self._net.set_tensor(self._input, x[None])
        self._net.invoke()
        if float(self._net.get_tensor(self._presence).ravel()[0]) < self._min_logit:
            return None
        pts = self._net.get_tensor(self._points).reshape(468, 3)[list(LIP_INDICES), :2]
        return invert_points(affine, pts)
