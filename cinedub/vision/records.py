"""Records of the visual stages: face detections, tracked face frames, face tracks and ASD scores.

Frozen dataclasses on integer frame indices (0-based, in decode order of the video stream) and integer ms of the
source timeline (``pts_ms``: the frame's real presentation timestamp, so VFR sources stay exact). Boxes and
points are in pixels of the **upright** frame (after the container's display rotation), ``(x, y)`` with the
origin at the top-left corner; boxes are ``(x1, y1, x2, y2)``.

Per-frame data with images (crops) lives in Parquet files written by the stages; these records stay small.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Literal

from cinedub.types import Record, ShotList

Box = tuple[float, float, float, float]
Point = tuple[float, float]


@dataclass(frozen=True)
class FaceDetection(Record):
    """One face found by the detector in one frame.

    Attributes:
        frame_index / pts_ms: the frame.
        box_xyxy: face box (px).
        score: detector confidence in [0, 1].
        kps: five points (px) in SCRFD order: eye on the image's left, eye on the image's right, nose tip, mouth
            corner on the left, mouth corner on the right. mediapipe has no mouth corners: its mouth centre is
            repeated. Empty when unknown.
        detector: "scrfd" or "mediapipe".
    """

    frame_index: int
    pts_ms: int
    box_xyxy: Box
    score: float
    kps: tuple[Point, ...] = ()
    detector: str = ""

    @property
    def size_px(self) -> float:
        """Longer side of the box (px)."""
        return max(self.box_xyxy[2] - self.box_xyxy[0], self.box_xyxy[3] - self.box_xyxy[1])


@dataclass(frozen=True)
class FaceFrame(Record):
    """One frame of a face track (one row of ``faces.parquet``, without its images).

    Attributes:
        track_id: the :class:`FaceTrack`.
        frame_index / pts_ms: the frame.
        box_xyxy: detected box, or linearly interpolated over a detection gap (``interpolated``).
        det_score: detector score, None on interpolated frames.
        roll_deg: in-plane head roll used to level the crops (degrees): angle of the line from the image-left eye
            to the image-right eye in image axes (y down), positive when it slopes down to the right; the crops
            are turned by it so the eyes are level (median-smoothed; 0 with ``align_roll`` off).
        lip_xy: 40 lip contour points (px, FaceMesh indices :data:`cinedub.vision.landmarks.LIP_INDICES`: 20
            outer then 20 inner), empty when FaceMesh found no face.
        landmarks_ok: FaceMesh found the face in this frame.
    """

    track_id: str
    frame_index: int
    pts_ms: int
    box_xyxy: Box
    det_score: float | None
    interpolated: bool
    roll_deg: float = 0.0
    lip_xy: tuple[Point, ...] = ()
    landmarks_ok: bool = False


@dataclass(frozen=True)
class FaceTrack(Record):
    """A face followed through consecutive frames of one shot (never across a cut).

    Attributes:
        track_id: ``<source_id>-T<nnnn>``, numbered by start frame (deterministic for the same input and config).
        shot_index: the :class:`cinedub.types.Shot` holding every frame of the track.
        start_frame / end_frame: ``[start_frame, end_frame)`` decode-order frame indices.
        start_ms / end_ms: pts of the first frame and pts of the last frame plus one frame duration.
        n_frames: frames with a box (detected or interpolated); n_detected: frames with a detection.
        median_face_px: median longer box side (px).
        mean_det_score: mean detector score over detected frames.
    """

    track_id: str
    shot_index: int
    start_frame: int
    end_frame: int
    start_ms: int
    end_ms: int
    n_frames: int
    n_detected: int
    median_face_px: float
    mean_det_score: float


@dataclass(frozen=True)
class FaceTrackList(Record):
    """Output of the faces stage for one source (small: per-frame rows and crops are in ``frames_path``).

    Attributes:
        fps: the source's average frame rate (frame indices are decode-order; ``pts_ms`` are exact either way).
        frames_path: Parquet file with one row per (track, frame): :class:`FaceFrame` fields plus ``face_crop``
            and ``mouth_crop`` (encoded image bytes) and the affine matrices mapping frame px to crop px.
        n_frames_decoded: frames decoded (inside the padded speech spans); n_frames_with_face: of those, frames
            with at least one kept track.
        detector: "scrfd:<file>" or "mediapipe:blazeface-full-range".
        shots: the source's shots, found in the same decoding pass (None when the shots were given instead).
        bad_packets: corrupt video packets skipped while decoding (the frames they carried are missing).
    """

    source_id: str
    fps: Fraction
    frames_path: str
    tracks: tuple[FaceTrack, ...]
    n_frames_decoded: int
    n_frames_with_face: int
    detector: str
    image_format: str
    face_crop_size: int
    mouth_crop_size: int
    variable_frame_rate: bool = False
    shots: ShotList | None = None
    bad_packets: int = 0

    _nested: ClassVar[dict[str, type]] = {"tracks": FaceTrack, "shots": ShotList}


AsdStatus = Literal["scored", "too_short", "no_face", "no_audio"]


@dataclass(frozen=True)
class AsdScore(Record):
    """Active-speaker score of one track in one source frame.

    Attributes:
        score: Light-ASD probability that the face speaks, ``softmax(logits)[1]`` averaged over windows and
            smoothed (0..1).
        speaking: ``score >= asd_threshold``.
    """

    track_id: str
    frame_index: int
    pts_ms: int
    score: float
    speaking: bool


@dataclass(frozen=True)
class AsdTrack(Record):
    """How one face track was scored.

    Attributes:
        status: "scored", or why not: "too_short" (under ``asd_min_track_ms``), "no_face" (no decodable crop),
            "no_audio" (the track lies outside the audio).
        n_scored: source frames with a score; mean_score: their mean; speaking_fraction: share speaking.
        sync_vetoed_fraction: share of the frames in speaking runs that the SyncNet check vetoed (None: no check).
    """

    track_id: str
    status: AsdStatus
    n_scored: int = 0
    mean_score: float | None = None
    speaking_fraction: float | None = None
    sync_vetoed_fraction: float | None = None


@dataclass(frozen=True)
class TurnSpeaker(Record):
    """Which face track (if any) speaks one turn.

    Attributes:
        start_ms / end_ms / speaker_id: the turn (speaker_id may be empty for anonymous speech spans).
        face_track_id: the speaking track, or None.
        on_screen: True when a track speaks it; False when faces were scored and none speaks (off-screen
            speaker, face turned away, narration) or when no face is visible; None when visible faces could not
            be scored (nothing is guessed).
        score: mean ASD score of the chosen track (or of the best track when none speaks) over the turn.
        speaking_fraction: share of the turn's frames in which the chosen/best track is present and speaking.
        reason: "speaking", "not_speaking", "no_face" or "unscored".
    """

    start_ms: int
    end_ms: int
    speaker_id: str
    face_track_id: str | None
    on_screen: bool | None
    score: float | None
    speaking_fraction: float
    reason: str


@dataclass(frozen=True)
class AsdResult(Record):
    """Output of the ASD stage for one source (small: per-frame scores are in ``scores_path``)."""

    source_id: str
    model: str
    threshold: float
    scores_path: str
    tracks: tuple[AsdTrack, ...]
    turns: tuple[TurnSpeaker, ...]

    _nested: ClassVar[dict[str, type]] = {"tracks": AsdTrack, "turns": TurnSpeaker}


@dataclass(frozen=True)
class TrackIdentity(Record):
    """The face identity of one track.

    Attributes:
        track_id: the :class:`FaceTrack`.
        identity_id: ``<source_id>-F<nn>`` (numbered by first appearance, stable for one source and config), or None
            when the track could not be described (``reason``).
        n_embedded: frames whose dlib descriptor was computed (their mean is row ``row`` of the embeddings file).
        row: row of the track's descriptor in :attr:`FaceIdentityResult.embeddings_path`, None without one.
        reason: "embedded"; "alone" (every other track of the source is on screen at the same time, so none can be
            the same person: the track is its own identity and no descriptor is needed); "no_usable_frame" (no frame
            with a detection and lip landmarks: nothing is guessed).
    """

    track_id: str
    identity_id: str | None
    n_embedded: int = 0
    row: int | None = None
    reason: str = "embedded"


@dataclass(frozen=True)
class FaceIdentityResult(Record):
    """Face identities of one source: which tracks show the same person, across shots.

    Attributes:
        model: "dlib:dlib_face_recognition_resnet_model_v1" (128-d descriptor).
        threshold: Euclidean descriptor distance under which two tracks may be one person (average linkage).
        identity_ids: in order of first appearance.
        tracks: one per face track of the source.
        embeddings_path: ``(n, 128)`` float32 ``.npy`` of the tracks' mean descriptors (rows ``TrackIdentity.row``);
            relative paths are relative to the JSON file's folder. None when no track needed one.
        n_descriptors: descriptors computed (the cost: about 0.14 s each on one core).
        wall_s: seconds spent (decode + landmarks + descriptors + clustering).
    """

    source_id: str
    model: str
    threshold: float
    identity_ids: tuple[str, ...]
    tracks: tuple[TrackIdentity, ...]
    embeddings_path: str | None = None
    n_descriptors: int = 0
    wall_s: float | None = None

    _nested: ClassVar[dict[str, type]] = {"tracks": TrackIdentity}

    def identity_of(self) -> dict[str, str | None]:
        """``track_id -> identity_id``."""
        return {t.track_id: t.identity_id for t in self.tracks}
