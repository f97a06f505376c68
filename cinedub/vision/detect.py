"""Face detection on decoded frames: InsightFace SCRFD (ONNX, batched) with mediapipe BlazeFace as the fallback.

Detectors take a list of BGR frames and return, per frame, a float32 array of shape ``(n_faces, 15)``:
``x1, y1, x2, y2, score, then five (x, y) points`` in pixels of the given frame (see
:class:`cinedub.vision.records.FaceDetection` for the point order).

SCRFD: Guo et al., "Sample and Computation Redistribution for Efficient Face Detection", ICLR 2022; the model is
loaded through ``insightface.model_zoo.get_model`` (which reads its strides, anchors and normalisation) and, when
the graph allows it, run on whole batches by a second ONNX Runtime session whose input has a dynamic batch and
size (the released ``scrfd_500m_bnkps.onnx`` declares ``1x3x640x640``; its reshapes keep the batch outermost,
so a batch's outputs split cleanly per image). Pre/post-processing follows ``insightface.model_zoo.scrfd.SCRFD``:
letterbox into ``det_size``, ``(x - 127.5) / 128`` RGB, distance-to-box decoding, NMS.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from cinedub.errors import ModelNotFoundError
from cinedub.vision.records import FaceDetection

log = logging.getLogger(__name__)

N_COLS = 15  # x1 y1 x2 y2 score + 5 points


class FaceDetector(Protocol):
    """What the faces pipeline needs from a detector."""

    name: str
    batch_size: int
    variable_size: bool  # detect() honours its det_size (a smaller canvas per call)

    def detect(self, images: list[np.ndarray], det_size: int | None = None) -> list[np.ndarray]:
        """Faces of each BGR image as ``(n, 15)`` float32 arrays (see the module docstring); ``det_size``: the
        input side (px) for this call where the detector has one (None: its own; a smaller side is cheaper and
        misses small faces)."""
        ...


def onnx_providers(device: str) -> list:
    """ONNX Runtime providers for ``device`` ("cpu", "cuda", "cuda:N"): CUDA first when this build has it."""
    import onnxruntime as ort

    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        dev = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": dev}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class ScrfdDetector:
    """SCRFD face detector with five landmarks (InsightFace ``scrfd_*_bnkps.onnx``).

    Args:
        onnx_path: the ``.onnx`` file.
        det_size: side (px) of the square letterboxed input (multiple of 32).
        threshold: minimum face score; nms_threshold: NMS IoU (InsightFace defaults 0.5 / 0.4).
        batch_size: frames per ONNX run when the graph accepts batches (else 1).
        min_face_px: drop faces smaller than this (longer box side, px of the frame).
        device: "cpu" or "cuda[:N]" (CUDA used when ONNX Runtime has the CUDA provider).

    Raises:
        ModelNotFoundError: the file is missing or is not an SCRFD model.
    """

    name = "scrfd"

    def __init__(
        self,
        onnx_path: str | Path,
        *,
        det_size: int = 640,
        threshold: float = 0.5,
        nms_threshold: float = 0.4,
        batch_size: int = 8,
        min_face_px: float = 0,
        device: str = "cpu",
    ):
        onnx_path = Path(onnx_path)
        if not onnx_path.is_file():
            raise ModelNotFoundError(f"SCRFD model not found: {onnx_path}")
        from insightface.model_zoo import get_model
        from insightface.model_zoo.scrfd import SCRFD

        providers = onnx_providers(device)
        model = get_model(str(onnx_path), providers=providers)
        if not isinstance(model, SCRFD):
            raise ModelNotFoundError(f"{onnx_path} is not an SCRFD detector (insightface loads it as {type(model).__name__})")
        model.nms_thresh = nms_threshold
        self.model = model
        self.model_file = onnx_path.name
        self.threshold = threshold
        self.min_face_px = min_face_px
        self.det_size = int(det_size) // 32 * 32
        self.session, self.batched = self._dynamic_session(onnx_path, providers)
        if not self.batched:
            fixed = model.input_size
            if fixed and fixed[0] and self.det_size != fixed[0]:
                log.warning("SCRFD graph has a fixed %s input; det_size %d ignored", fixed, self.det_size)
                self.det_size = int(fixed[0])
        self.batch_size = batch_size if self.batched else 1
        self.variable_size = self.batched  # the fixed graph has one input size
        self._centers: dict[tuple[int, int, int], np.ndarray] = {}
        self._blob: np.ndarray | None = None  # the input batch, reused from call to call
        self._resized: np.ndarray | None = None  # one letterboxed frame (uint8), reused

    @staticmethod
    def _dynamic_session(onnx_path: Path, providers: list):
        """A session whose input is ``N x 3 x H x W`` (dynamic), or the fixed one when the graph resists."""
        import onnx
        import onnxruntime as ort

        try:
            proto = onnx.load(str(onnx_path))
            dims = proto.graph.input[0].type.tensor_type.shape.dim
            for d, name in zip(dims, ("N", "C", "H", "W")):
                if name != "C":
                    d.dim_param = name
            for out in proto.graph.output:  # declared 1xKxC output shapes would only raise warnings
                out.type.tensor_type.ClearField("shape")
            del proto.graph.value_info[:]
            _resize_by_scales(proto)
            opts = ort.SessionOptions()
            opts.log_severity_level = 3
            # ONNX Runtime's pool threads spin after each run by default; in the faces stage they would spin on the
            # cores that the crop thread (lip landmarks, warps, JPEG) needs between detection batches. Measured with the
            # faces stage on the 4 benchmark sources (2 cores, farm-bench, 5 pairs): 0.89x the CPU, 0.92x the wall.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return ort.InferenceSession(proto.SerializeToString(), opts, providers=providers), True
        except Exception as e:  # an unusual export: fall back to InsightFace's own session, one frame at a time
            log.warning("SCRFD %s: batched session unavailable (%s); detecting frame by frame", onnx_path.name, e)
            return None, False

    def detect(self, images: list[np.ndarray], det_size: int | None = None) -> list[np.ndarray]:
        """Faces of each BGR image, ``(n, 15)`` float32 (frame px, score, five points), best first.

        Args:
            images: ``(h, w, 3)`` uint8 BGR frames.
            det_size: the canvas side (px, rounded down to 32) for this call; None = the detector's ``det_size``.
                Only the dynamic-size session takes another side (the fixed graph keeps its own).
        """
        size = self.det_size if det_size is None or not self.batched else max(32, int(det_size) // 32 * 32)
        out: list[np.ndarray] = []
        for i in range(0, len(images), self.batch_size):
            out.extend(self._detect_batch(images[i : i + self.batch_size], min(size, self.det_size)))
        return out

    def _detect_batch(self, images: list[np.ndarray], size: int) -> list[np.ndarray]:
        """Letterbox each image into ``size`` (longer side) and run one batch. With the dynamic-size session the
        canvas is cut to the batch's content rounded up to the coarsest stride (32): a 16:9 frame runs on 640x384
        instead of 640x640, 40 % less compute for the same pixels (the cut rows were padding)."""
        m = self.model
        scales, dims = [], []
        for img in images:
            h, w = img.shape[:2]
            scale = min(size / h, size / w)
            dims.append((max(1, int(h * scale)), max(1, int(w * scale))))
            scales.append(dims[-1][0] / h)
        if self.batched:
            ch = min(size, -(-max(d[0] for d in dims) // 32) * 32)
            cw = min(size, -(-max(d[1] for d in dims) // 32) * 32)
        else:
            ch = cw = size
        # (x - mean) / std in RGB, NCHW: what cv2.dnn.blobFromImages(swapRB=True) computes, on the content only
        pad = (0.0 - m.input_mean) / m.input_std  # the letterbox's black, normalised
        n_values = len(images) * 3 * ch * cw
        if self._blob is None or self._blob.size < n_values:
            # one buffer for every batch size and canvas, reused: a fresh 40 MB array costs its page faults (the
            # kernel zeroes each new huge page), and the batch and canvas change from window to window
            self._blob = np.empty(max(n_values, self.batch_size * 3 * self.det_size**2), np.float32)
            self._resized = np.empty(self.det_size**2 * 3, np.uint8)
        blob = self._blob[:n_values].reshape(len(images), 3, ch, cw)
        for b, (img, (nh, nw)) in enumerate(zip(images, dims)):
            blob[b, :, nh:, :] = pad
            blob[b, :, :nh, nw:] = pad
            dst = blob[b, :, :nh, :nw]
            small = self._resized[: nh * nw * 3].reshape(nh, nw, 3)
            cv2.resize(img, (nw, nh), dst=small)
            dst[...] = small.transpose(2, 0, 1)[::-1]
            dst -= m.input_mean
            dst *= 1.0 / m.input_std
        if self.batched:
            outs = self.session.run(None, {m.input_name: blob})
        else:
            outs = m.session.run(m.output_names, {m.input_name: blob})
        n = len(images)
        outs = [o.reshape(n, -1, o.shape[-1]) for o in outs]
        return [self._decode([o[b] for o in outs], scales[b], images[b].shape, (ch, cw)) for b in range(n)]

    def _decode(self, outs: list[np.ndarray], scale: float, shape: tuple, canvas: tuple[int, int]) -> np.ndarray:
        from insightface.model_zoo.scrfd import distance2bbox, distance2kps

        m, fmc = self.model, self.model.fmc
        scores_l, boxes_l, kps_l = [], [], []
        for idx, stride in enumerate(m._feat_stride_fpn):
            scores = outs[idx][:, 0]
            keep = np.where(scores >= self.threshold)[0]
            if keep.size == 0:
                continue
            centers = self._anchor_centers(canvas[0] // stride, canvas[1] // stride, stride)[keep]
            boxes_l.append(distance2bbox(centers, outs[idx + fmc][keep] * stride))
            kps_l.append(distance2kps(centers, outs[idx + 2 * fmc][keep] * stride).reshape(-1, 10) if m.use_kps
                         else np.zeros((keep.size, 10), np.float32))
            scores_l.append(scores[keep])
        if not scores_l:
            return np.zeros((0, N_COLS), np.float32)
        boxes = np.vstack(boxes_l) / scale
        kps = np.vstack(kps_l) / scale
        scores = np.concatenate(scores_l)
        order = scores.argsort()[::-1]
        dets = np.hstack([boxes, scores[:, None]]).astype(np.float32)[order]
        keep = m.nms(dets)
        res = np.hstack([dets[keep], kps[order][keep]]).astype(np.float32)
        return _clip_and_filter(res, shape, self.min_face_px)

    def _anchor_centers(self, h: int, w: int, stride: int) -> np.ndarray:
        key = (h, w, stride)
        if key not in self._centers:
            c = (np.stack(np.mgrid[:h, :w][::-1], axis=-1).astype(np.float32) * stride).reshape(-1, 2)
            na = self.model._num_anchors
            self._centers[key] = np.stack([c] * na, axis=1).reshape(-1, 2) if na > 1 else c
        return self._centers[key]


class MediapipeDetector:
    """mediapipe BlazeFace (``mp.solutions.face_detection``, 0.10.21) as a fallback detector.

    Args:
        threshold: ``min_detection_confidence``.
        model_selection: 1 = full-range model (faces up to about 5 m), 0 = short-range (within 2 m).
        min_face_px: drop faces smaller than this (px).

    Points: right eye and left eye of the person (image left, image right), nose tip and the mouth centre
    (repeated for both mouth corners).
    """

    name = "mediapipe"
    batch_size = 1
    variable_size = False

    def __init__(self, *, threshold: float = 0.5, model_selection: int = 1, min_face_px: float = 0):
        import mediapipe as mp

        self._fd = mp.solutions.face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=threshold
        )
        self.min_face_px = min_face_px
        self.model_file = "blazeface-full-range" if model_selection == 1 else "blazeface-short-range"

    def detect(self, images: list[np.ndarray], det_size: int | None = None) -> list[np.ndarray]:  # noqa: ARG002
        """Faces of each BGR image, ``(n, 15)`` float32; ``det_size`` is ignored (BlazeFace has a fixed input)."""
        out = []
        for img in images:
            h, w = img.shape[:2]
            res = self._fd.process(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
            rows = []
            for d in res.detections or []:
                bb = d.location_data.relative_bounding_box
                kp = [(p.x * w, p.y * h) for p in d.location_data.relative_keypoints]
                pts = [kp[0], kp[1], kp[2], kp[3], kp[3]] if len(kp) >= 4 else [(0.0, 0.0)] * 5
                x1, y1 = bb.xmin * w, bb.ymin * h
                rows.append([x1, y1, x1 + bb.width * w, y1 + bb.height * h, d.score[0], *np.ravel(pts)])
            arr = np.asarray(rows, np.float32).reshape(-1, N_COLS)
            out.append(_clip_and_filter(arr, img.shape, self.min_face_px))
        return out

    def close(self) -> None:
        self._fd.close()


def _resize_by_scales(proto) -> None:
    """Turn the FPN's fixed-size nearest ``Resize`` nodes (``sizes = [1, C, h, w]``) into x2 ``scales``.

    The released graph upsamples to sizes baked in for one 640x640 image: a batch would be resized to batch 1
    and broadcast (every image would get the first one's top-down features) and other input sizes fail.
    Only ``sizes`` of exactly twice the input's resolution can be rewritten; anything else raises.
    """
    import onnx

    inits = {i.name: i for i in proto.graph.initializer}
    scale_name = "cinedub_resize_x2"
    added = False
    for node in proto.graph.node:
        if node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]:
            continue
        sizes = onnx.numpy_helper.to_array(inits[node.input[3]])
        mode = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}.get("mode", b"nearest")
        if len(sizes) != 4 or sizes[0] != 1 or mode != b"nearest":
            raise ValueError(f"unexpected Resize node {node.name}: sizes {sizes}, mode {mode}")
        if not added:
            proto.graph.initializer.append(
                onnx.numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), scale_name)
            )
            added = True
        node.input[2] = scale_name  # FPN top-down path: nearest x2 (sizes were 2x the coarser level)
        del node.input[3]


def _clip_and_filter(dets: np.ndarray, shape: tuple, min_face_px: float) -> np.ndarray:
    h, w = shape[:2]
    dets = dets.copy()
    dets[:, [0, 2]] = dets[:, [0, 2]].clip(0, w)
    dets[:, [1, 3]] = dets[:, [1, 3]].clip(0, h)
    side = np.maximum(dets[:, 2] - dets[:, 0], dets[:, 3] - dets[:, 1])
    return dets[side >= max(min_face_px, 1)]


def to_detections(dets: np.ndarray, frame_index: int, pts_ms: int, detector: str) -> list[FaceDetection]:
    """Rows of a detector array as :class:`FaceDetection` records."""
    return [
        FaceDetection(
            frame_index=frame_index,
            pts_ms=pts_ms,
            box_xyxy=tuple(float(v) for v in r[:4]),  # type: ignore[arg-type]
            score=float(r[4]),
            kps=tuple((float(r[5 + 2 * i]), float(r[6 + 2 * i])) for i in range(5)),
            detector=detector,
        )
        for r in dets
    ]


def build_detector(vcfg, models_dir: str | Path, device: str = "cpu") -> FaceDetector:
    """The detector ``vcfg`` (a :class:`cinedub.vision.config.VisionConfig`) asks for.

    SCRFD is looked up as the first ``*.onnx`` in ``<models_dir>/<vcfg.scrfd_dir_name>``; when it is missing or
    fails to load and ``vcfg.fallback_to_mediapipe`` is set, mediapipe BlazeFace is used (logged).

    Raises:
        ModelNotFoundError: SCRFD is missing and the fallback is off.
    """
    if vcfg.detector == "scrfd":
        folder = Path(models_dir) / vcfg.scrfd_dir_name
        onnx_files = sorted(folder.glob("*.onnx")) if folder.is_dir() else []
        try:
            if not onnx_files:
                raise ModelNotFoundError(
                    f"SCRFD not found: {folder} has no .onnx file. Copy the detector of insightface's buffalo_s pack "
                    "(scrfd_500m_bnkps.onnx) there, or set vision.detector='mediapipe'."
                )
            return ScrfdDetector(
                onnx_files[0],
                det_size=vcfg.det_size,
                threshold=vcfg.det_threshold,
                nms_threshold=vcfg.nms_threshold,
                batch_size=vcfg.det_batch_size,
                min_face_px=vcfg.min_face_px,
                device=device,
            )
        except Exception as e:
            if not vcfg.fallback_to_mediapipe:
                raise
            log.warning("SCRFD unavailable (%s): falling back to mediapipe face detection", e)
    return MediapipeDetector(threshold=vcfg.det_threshold, min_face_px=vcfg.min_face_px)
