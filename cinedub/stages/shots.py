"""Shot detection with PySceneDetect 0.7's detectors (``AdaptiveDetector`` by default, ``ContentDetector`` on request)
fed by :mod:`cinedub.vision.cuts` (see there for what is reproduced of PySceneDetect's ``SceneManager``).

PySceneDetect's convention is kept: a cut is the **first frame of the new shot** (its ``CutList`` docs: "each
timecode represents the first frame of a new shot"), and a shot is ``[start_frame, end_frame)``.

Frame indices are the 0-based **decode order** of the video stream (:mod:`cinedub.vision.decode`, decoded
sequentially, corrupt packets skipped as ffmpeg does), not derived from timestamps (``round(pts * rate)`` is off by
one or more on variable-frame-rate files with missing frames), the same indices the faces stage uses. Milliseconds
are the decoded frames' presentation times: on a constant-rate source they equal :func:`cinedub.timebase.frame_to_ms`
of the exact rate (``Fraction(24000, 1001)`` for 23.976 fps, never an assumed 25); where they do not (variable frame
rate, frames dropped or lost to corrupt packets) every frame's time is kept in ``ShotList.frame_pts_ms``. The last
shot ends one frame after the last frame, and never after the source.

"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from cinedub.config import Config
from cinedub.errors import MediaError
from cinedub.progress import Reporter, no_report
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.types import IngestResult, ShotList, Source
from cinedub.vision.cuts import CutFinder
from cinedub.vision.decode import DecodeStats, iter_frames, video_info
from cinedub.vision.records import FaceTrackList

logger = logging.getLogger("cinedub.shots")


class ShotStage(Stage):
    """The cuts of a video.

    With the faces stage on, its record already holds the shots (found while it decoded every frame for faces), so
    this stage passes them on; otherwise it decodes the video itself (CPU; about 0.5-4 s for 10-30 s of 240p-1080p
    footage on one core: frames are downscaled to about 256 px wide before the detector).
    """

    name = "shots"
    version = "4"  # v3: decoded times for every source (frame_pts_ms when uneven), last shot in the source;
    # v4: frames pushed from our decoder
    inputs = ("ingest", "faces")
    optional = frozenset({"faces"})
    output = "shots"
    record = ShotList
    config_sections = ("shots",)
    resources = Resources(cpus=1)

    @classmethod
    def model_names(cls, cfg: Config) -> list[str]:
        return [f"scenedetect:{cfg.shots.detector}"]

    def process(self, ctx: StageContext, ingest: IngestResult, faces: FaceTrackList | None) -> ShotList:
        """The shots of the source's video (from the faces record when it has them)."""
        if faces is not None and faces.shots is not None:
            return faces.shots
        return self.detect(Path(ingest.source.path), ingest.source, progress=ctx.progress)

    def detect(self, video_path: Path, source: Source, *, progress: Reporter = no_report) -> ShotList:
        """Detect the shots of ``video_path`` (every frame decoded once, in order).

        Args:
            video_path: the source's media file.
            source: its probed record (``fps`` must be set: the exact frame rate).

        Returns:
            The ShotList: one shot when no cut is found, ``fps`` = ``source.fps``, ``n_frames`` = frames decoded.

        Raises:
            MediaError: the source has no video stream, or the video cannot be opened or decoded.
        """
        if not source.has_video or source.fps is None:
            raise MediaError(video_path, "no video stream: shot detection needs one")
        t0 = time.perf_counter()
        info = video_info(video_path)
        finder = CutFinder(self.cfg.shots, source.fps, (info.width, info.height))
        stats = DecodeStats()
        for frame in iter_frames(video_path, sequential=True, stats=stats):
            finder.push(frame.index, frame.pts_ms, frame.small(finder.size))
            progress(finder.n_frames, source.n_frames, "frames")
        if finder.n_frames == 0:
            raise MediaError(video_path, "no video frame could be decoded")
        if stats.bad_packets:
            logger.warning("%s: %d corrupt video packets skipped (%s)", Path(video_path).name, stats.bad_packets,
                           "; ".join(stats.errors))
        shots = finder.finish(source_duration_ms=source.duration_ms, declared_frames=source.n_frames)
        logger.info("%s: %d shots (cuts at frames %s) in %.1f s", Path(video_path).name, len(shots.shots),
                    shots.cut_frames, time.perf_counter() - t0)
        return shots
