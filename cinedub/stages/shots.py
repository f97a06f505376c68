"""Shot detection with PySceneDetect 0.7 (``AdaptiveDetector`` by default, ``ContentDetector`` on request).

PySceneDetect's convention is kept: a cut is the **first frame of the new shot** (its ``CutList`` docs: "each
timecode represents the first frame of a new shot"), and a shot is ``[start_frame, end_frame)``.

Frame indices are the 0-based **decode order** of the video stream, counted here while PySceneDetect reads the
frames, not derived from timestamps (``FrameTimecode.frame_num`` is ``round(pts * rate)``, which is off by one or
more on variable-frame-rate files with missing frames). They line up with the indices of
:mod:`cinedub.vision.decode`. Milliseconds are the decoded frames' presentation times: on a constant-rate source they
equal :func:`cinedub.timebase.frame_to_ms` of the exact rate (``Fraction(24000, 1001)`` for 23.976 fps, never an
assumed 25); where they do not (variable frame rate, frames dropped or lost to corrupt packets, which the decoder
skips as ffmpeg does) every frame's time is kept in ``ShotList.frame_pts_ms``, since ``index / fps`` drifts there.
The last shot ends one frame after the last frame, and never after the source.

AdaptiveDetector is the default because it scored F1 91.6 against ContentDetector's 86.7 on BBC footage
(PySceneDetect's published benchmark); both miss or misplace some fades.
"""

from __future__ import annotations

import logging
import time
from fractions import Fraction
from pathlib import Path

from cinedub.errors import MediaError
from cinedub.progress import Reporter, no_report
from cinedub.config import Config
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.timebase import frame_to_ms, seconds_to_ms
from cinedub.types import IngestResult, Shot, ShotList, Source

logger = logging.getLogger("cinedub.shots")

# the OpenCV backend decodes about twice as fast as PyAV on the test footage (0.5 s vs 1.7 s for 482 frames at
# 426x240) and, with frames counted here, gives the same indices
BACKEND = "opencv"


def shots_from_cuts(
    cut_frames: list[int], n_frames: int, fps: Fraction, frame_ms: list[int] | None = None
) -> list[Shot]:
    """Shots ``[start_frame, end_frame)`` between the given cut frames (first frames of new shots).

    Args:
        cut_frames: frame indices where a new shot starts (unsorted is fine; 0 and ``>= n_frames`` are ignored).
        n_frames: frame count of the source (the last shot ends there).
        fps: exact frame rate; ``start_ms``/``end_ms`` are ``round(frame / fps * 1000)``.
        frame_ms: optional presentation time (ms) of every frame index ``0..n_frames`` (``n_frames + 1`` values,
            the last one the end of the stream), used instead of ``fps`` for variable-frame-rate sources.

    Returns:
        At least one shot (a source without a cut is one shot), indexed 0..n-1.
    """
    if n_frames <= 0:
        return []
    bounds = [0] + sorted({c for c in cut_frames if 0 < c < n_frames}) + [n_frames]

    def ms(frame: int) -> int:
        if frame_ms is not None and frame < len(frame_ms):
            return frame_ms[frame]
        return frame_to_ms(frame, fps)

    return [
        Shot(index=i, start_frame=a, end_frame=b, start_ms=ms(a), end_ms=ms(b))
        for i, (a, b) in enumerate(zip(bounds, bounds[1:]))
    ]


def _frame_recorder(progress: Reporter = no_report, total: int | None = None):
    """A pass-through ``SceneDetector`` that records the timecode of every frame the ``SceneManager`` processes
    (and reports the count to ``progress``)."""
    from scenedetect import SceneDetector

    class FrameRecorder(SceneDetector):
        def __init__(self) -> None:
            super().__init__()
            self.positions: list = []

        def process_frame(self, timecode, frame_img):  # noqa: ARG002 - the image is not needed
            self.positions.append(timecode)
            progress(len(self.positions), total, "frames")
            return []

    return FrameRecorder()


def _key(tc) -> tuple[int, Fraction]:
    return (int(tc.pts), Fraction(tc.time_base))


class ShotStage(Stage):
    """Finds the cuts of a video: ``process(video_path, source, out_json) -> ShotList``.

    CPU only; about 0.5-4 s for 10-30 s of 240p-1080p footage on one core (PySceneDetect downscales frames to
    about 256 px wide unless ``shots.downscale`` is set).
    """

    name = "shots"
    version = "3"  # v3: decoded times for every source (frame_pts_ms when uneven), last shot ends in the source
    inputs = ("ingest",)
    output = "shots"
    record = ShotList
    config_sections = ("shots",)
    resources = Resources(cpus=1)

    @classmethod
    def model_names(cls, cfg: Config) -> list[str]:
        return [f"scenedetect:{cfg.shots.detector}"]

    def process(self, ctx: StageContext, ingest: IngestResult) -> ShotList:
        """The shots of the source's video."""
        return self.detect(Path(ingest.source.path), ingest.source, progress=ctx.progress)

    def _detector(self):
        from scenedetect import AdaptiveDetector, ContentDetector

        c = self.cfg.shots
        if c.detector == "content":
            return ContentDetector(threshold=c.content_threshold, min_scene_len=c.min_shot_frames)
        return AdaptiveDetector(
            adaptive_threshold=c.adaptive_threshold,
            min_scene_len=c.min_shot_frames,
            window_width=c.window_width,
            min_content_val=c.min_content_val,
        )

    def detect(
        self, video_path: Path, source: Source, *, show_progress: bool = False, progress: Reporter = no_report
    ) -> ShotList:
        """Detect the shots of ``video_path``.

        Args:
            video_path: the source's media file.
            source: its probed record (``fps`` must be set: the exact frame rate).
            show_progress: draw PySceneDetect's tqdm progress bar on stderr.

        Returns:
            The ShotList: one shot when no cut is found, ``fps`` = ``source.fps``, ``n_frames`` = frames decoded,
            ``frame_pts_ms`` when the frames are not evenly spaced, ``frames_lost`` to corrupt data.

        Raises:
            MediaError: the source has no video stream, or the video cannot be opened or decoded.
        """
        from scenedetect import SceneManager, open_video

        if not source.has_video or source.fps is None:
            raise MediaError(video_path, "no video stream: shot detection needs one")
        t0 = time.perf_counter()
        try:
            video = open_video(str(Path(video_path).absolute()), backend=BACKEND)
        except Exception as e:  # scenedetect raises VideoOpenFailure, OSError, ... for unreadable files
            raise MediaError(video_path, f"cannot open video for shot detection ({e})") from None
        manager = SceneManager()
        recorder = _frame_recorder(progress, source.n_frames)
        manager.add_detector(self._detector())
        manager.add_detector(recorder)
        if self.cfg.shots.downscale:
            manager.auto_downscale = False
            manager.downscale = self.cfg.shots.downscale
        try:
            manager.detect_scenes(video, show_progress=show_progress)
        except Exception as e:  # a decode error raised in PySceneDetect's decode thread
            raise MediaError(video_path, f"video decode failed during shot detection ({e})") from None
        positions = recorder.positions
        n_frames = len(positions)
        if n_frames == 0:
            raise MediaError(video_path, "no video frame could be decoded")
        index = {_key(tc): i for i, tc in enumerate(positions)}
        cuts = []
        for start, _ in manager.get_scene_list(start_in_scene=True)[1:]:
            i = index.get(_key(start))
            if i is None:  # not a frame we saw (never observed): fall back to PySceneDetect's estimate
                logger.warning("%s: cut at %s is not a decoded frame; using its frame number", video_path, start)
                i = start.frame_num
            cuts.append(i)
        times = [seconds_to_ms(tc.seconds) for tc in positions]
        uneven = any(abs(t - frame_to_ms(i, source.fps)) > 1 for i, t in enumerate(times))
        end_ms = times[-1] + frame_to_ms(n_frames, source.fps) - frame_to_ms(n_frames - 1, source.fps)
        if source.duration_ms:
            end_ms = min(end_ms, source.duration_ms)
        frame_ms = times + [max(end_ms, times[-1])]
        lost = max(0, source.n_frames - n_frames) if source.n_frames else 0
        if lost:
            logger.warning("%s: %d of the %d frames the container declares could not be decoded", video_path,
                           lost, source.n_frames)
        shots = ShotList(
            fps=source.fps,
            n_frames=n_frames,
            shots=tuple(shots_from_cuts(cuts, n_frames, source.fps, frame_ms)),
            detector=self.cfg.shots.detector,
            frame_pts_ms=tuple(times) if uneven else (),
            frames_lost=lost,
        )
        logger.info(
            "%s: %d shots (cuts at frames %s) in %.1f s",
            Path(video_path).name,
            len(shots.shots),
            shots.cut_frames,
            time.perf_counter() - t0,
        )
        return shots
