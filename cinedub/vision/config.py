"""Configuration of the visual stages (faces, lips, active speaker detection).

Every threshold names its source. Durations are in ms (``*_ms``) and converted to frames with the source's
exact fps (:mod:`cinedub.timebase`), so the same config behaves alike at 23.976, 25, 29.97 and 60 fps.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator


class VisionConfig(BaseModel):
    """Face detection, tracking, lip landmarks, crops and active speaker detection (ASD).

    Attributes:
        detector: "scrfd" (InsightFace SCRFD-500M ONNX from ``<models_dir>/scrfd-500m``) or "mediapipe"
            (BlazeFace full-range shipped in mediapipe 0.10.21). With "scrfd", mediapipe is the fallback when the
            ONNX file is missing or cannot be loaded (``fallback_to_mediapipe``).
        det_size: side (px) of the square letterboxed SCRFD input; InsightFace's default is 640. Smaller is faster
            and still finds faces wider than about ``det_size / 20`` px of the letterboxed image.
        det_threshold: minimum face score (InsightFace ``det_thresh`` default 0.5; mediapipe's
            ``min_detection_confidence`` default 0.5).
        nms_threshold: IoU of SCRFD's non-maximum suppression (InsightFace default 0.4).
        det_batch_size: frames per detector call (one ONNX run on a batch; helps most on GPU).
        detect_every_ms: the detector runs on one frame every this many ms of a shot (and always on the first
            decoded frame of a shot or after a gap in decoding); the tracker joins the detections and interpolates
            the boxes of the frames between them, and the lip landmarks still run on every tracked frame, so lips stay
            frame-level. 200 ms is 5 Hz, the rate FunCineForge detects at; 0 detects on every frame. A face that
            enters or leaves mid-shot is tracked from / until the nearest detection (at most this late / early).
        track_det_size: canvas side (px) of most keyframes while the faces of a run are large. An anchor keyframe
            (a run's first, then every ``full_detect_every_ms``) is detected at ``det_size`` and at this side; when
            both find the same faces and each is at least :data:`cinedub.vision.extract.MIN_REDUCED_FACE_PX` px on
            the small canvas, the keyframes up to the next anchor run on the small canvas only, and one that does
            not find the run's faces (one lost or new) is detected again at full size. The small canvas's boxes and
            points are moved onto the full canvas's geometry, face by face, by the offset between the two canvases
            at the anchors (SCRFD places a box 2-4 % of the side apart on the two; 1-1.5 % remains), so the face
            crops move by that much rather than 2-4 %. 0 (the default) = every keyframe at ``det_size``; 320 is
            half of SCRFD's 640, a quarter of the compute. Off by default: on 2 cores it saved 8 % of the faces
            stage's CPU and 180 MB of its peak, and 0.97x its wall time (within the noise of 3 pairs), while the
            audio-visual tests' attribution confidences came out 0.001-0.024 lower (same decisions, same DER).
        full_detect_every_ms: the anchor period: a face too small for the reduced canvas that enters mid-run is
            found at most this late.
        min_face_px: detections whose box is smaller than this on its longer side (source px) are ignored.
        speech_pad_ms: speech spans are widened by this much before decoding (faces are tracked slightly around
            the speech, so a track's start is not cut by the VAD).
        track_iou_threshold: minimum IoU between a track's motion-predicted box and a detection to extend it
            (TalkNet/Light-ASD demo trackers use 0.5 on unpredicted boxes; 0.3 with constant-velocity prediction).
        max_gap_ms: a track survives this long without a detection; the gap is filled by linear interpolation
            (TalkNet ``numFailedDet`` = 10 frames at 25 fps = 400 ms).
        min_track_ms: shorter tracks are dropped (TalkNet ``minTrack`` = 10 frames at 25 fps = 400 ms).
        min_track_face_px: tracks whose median box side is smaller are dropped (too tiny for lips).
        smooth_ms: median-filter window of the crop geometry (TalkNet/Light-ASD use 13 frames at 25 fps = 520 ms).
        crop_scale: context around the face in the face crop: the crop side is ``1 + crop_scale`` times the box
            side, shifted down by ``crop_scale / 2`` of it to keep the chin (Light-ASD/TalkNet ``cropScale``). They
            use 0.40 on S3FD boxes; with SCRFD boxes 0.50 frames faces closer to what Light-ASD was trained on: on
            dialogue_5shots the speaking frames of the weakest speaker (VR1) scored speaking rise from 75% to 100%.
        align_roll: rotate crops so the eyes are level (roll from the detector's eye points, median-smoothed).
        face_crop_size: side (px) of the encoded face crop (Light-ASD crops are 224, scored on their central 112).
        mouth_crop_size: side (px) of the encoded mouth crop (96 as in LRS3 lip-reading pipelines).
        mouth_crop_scale: mouth crop side as a fraction of the face box side.
        landmarks: run FaceMesh's landmark network for the lip contour (else lips are empty and the mouth crop is
            placed from the detector's mouth points); its file ``face_landmark.tflite`` is read from
            ``<models_dir>/<facemesh_dir_name>``, else from the installed mediapipe wheel.
        image_format / image_quality: encoding of the crops ("jpeg" or "webp", quality 1-100).
        asd_model: checkpoint file in ``<models_dir>/light-asd`` ("pretrain_AVA_CVPR.model" or
            "finetuning_TalkSet.model").
        asd_windows_s: Light-ASD scores each track in windows of these lengths and averages them (its Columbia
            demo uses {1, 2, 3, 4, 5, 6} s).
        asd_threshold: a frame is "speaking" when its probability ``softmax(logits)[1]`` is at least this
            (0.5 = the network's decision boundary).
        asd_smooth_frames: moving-average window over 25 fps scores (Light-ASD demo: 5 frames).
        asd_min_track_ms: tracks shorter than this are not scored (status "too_short").
        turn_min_speaking_fraction: a face track is a turn's speaker when at least this fraction of the turn's
            frames are covered by it and scored speaking; otherwise the turn has no on-screen speaker.
        sync_check: SyncNet veto of speaking runs (:mod:`cinedub.vision.syncnet`): "auto" runs it when
            ``<models_dir>/<sync_dir_name>/<sync_model>`` exists, "on" requires it, "off" never runs it.
        sync_min_confidence: a run is vetoed when SyncNet's confidence (median - min distance, "LSE-C") is
            below this. 3.0 sits between synced talking heads (about 6-8 in Wav2Lip's tables) and unsynced
            pairs (about 0-2); not measured here (no SyncNet weights on the development machines).
        sync_max_offset_frames: a run is vetoed when its best audio offset is further than this (25 fps frames;
            7 = 280 ms, beyond any broadcast lip-sync tolerance, ITU-R BT.1359).
        sync_min_run_ms: speaking runs shorter than this are not checked (too few windows to judge).
        sync_vshift: largest offset searched, in frames (SyncNet's reference: 15).
    """

    detector: Literal["scrfd", "mediapipe"] = "scrfd"
    fallback_to_mediapipe: bool = True
    scrfd_dir_name: str = "scrfd-500m"
    facemesh_dir_name: str = "mediapipe-facemesh"
    det_size: int = Field(640, ge=128, le=1920)
    det_threshold: float = Field(0.5, gt=0, lt=1)
    nms_threshold: float = Field(0.4, gt=0, lt=1)
    det_batch_size: int = Field(8, ge=1)
    detect_every_ms: int = Field(200, ge=0)
    track_det_size: int = Field(0, ge=0, le=1920)
    full_detect_every_ms: int = Field(1000, ge=0)
    min_face_px: int = Field(24, ge=1)
    speech_pad_ms: int = Field(200, ge=0)
    track_iou_threshold: float = Field(0.3, gt=0, lt=1)
    max_gap_ms: int = Field(400, ge=0)
    min_track_ms: int = Field(400, ge=0)
    min_track_face_px: int = Field(40, ge=1)
    smooth_ms: int = Field(520, ge=0)
    crop_scale: float = Field(0.50, ge=0)
    align_roll: bool = True
    face_crop_size: int = Field(224, ge=32)
    mouth_crop_size: int = Field(96, ge=16)
    mouth_crop_scale: float = Field(0.55, gt=0)
    landmarks: bool = True
    image_format: Literal["jpeg", "webp"] = "jpeg"
    image_quality: int = Field(90, ge=1, le=100)
    asd_model: str = "pretrain_AVA_CVPR.model"
    asd_dir_name: str = "light-asd"
    asd_windows_s: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    asd_threshold: float = Field(0.5, gt=0, lt=1)
    asd_smooth_frames: int = Field(5, ge=1)
    asd_min_track_ms: int = Field(400, ge=40)
    turn_min_speaking_fraction: float = Field(0.5, gt=0, le=1)
    sync_check: Literal["auto", "on", "off"] = "auto"
    sync_dir_name: str = "syncnet"
    sync_model: str = "syncnet_v2.model"
    sync_min_confidence: float = Field(3.0, ge=0)
    sync_max_offset_frames: int = Field(7, ge=0)
    sync_min_run_ms: int = Field(1000, ge=280)
    sync_vshift: int = Field(15, ge=1, le=50)

    @model_validator(mode="after")
    def _check(self) -> "VisionConfig":
        if not self.asd_windows_s or min(self.asd_windows_s) < 1:
            raise ValueError("vision: asd_windows_s needs at least one window of >= 1 s")
        if self.detect_every_ms >= self.max_gap_ms > 0:
            raise ValueError("vision: detect_every_ms must be below max_gap_ms (a track would end between two "
                             "detections)")
        if 0 < self.track_det_size < 32:
            raise ValueError("vision: track_det_size must be 0 (off) or at least 32 px (SCRFD's coarsest stride)")
        return self
