"""Single-pass video frame reader (PyAV): each frame inside the requested spans is decoded once, upright, in BGR.

Frame indices are the 0-based decode (presentation) order of the video stream, PySceneDetect's convention, so
they line up with :class:`cinedub.types.Shot` frame numbers. ``pts_ms`` comes from the frame's real presentation
timestamp relative to the container's start (the source timeline shared with the extracted audio), so
variable-frame-rate sources keep exact times even where ``index / fps`` drifts.

Given the decoded frames' times of the whole stream (``ShotList.frame_pts_ms``, recorded by the shot stage for
variable-frame-rate sources and sources that lost frames), a frame's index is its position in that list, so seeking
is exact on any source. Without it, constant-frame-rate sources seek to each span (index =
``round((pts - start) * fps)``) and variable-frame-rate ones are decoded from the start so that the index stays an
exact count.

Corrupt packets are skipped as the ffmpeg CLI does (the decoder resumes at the next packet; the frames they carried
are missing) and counted in :class:`DecodeStats`; only :data:`MAX_CONSECUTIVE_ERRORS` failures in a row (an
undecodable stream) stop the decode with a :class:`~cinedub.errors.MediaError`.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from cinedub.errors import MediaError
from cinedub.timebase import merge_spans, parse_fps, pick_frame_rate

# Gaps between spans shorter than this are decoded through rather than sought over (a seek lands on the
# previous keyframe and decodes forward anyway).
_SEEK_MIN_GAP_MS = 4000
# Packets in a row that fail to decode before the stream counts as undecodable (PySceneDetect's PyAV backend
# gives up after 8 consecutive failed frames; a damaged stretch of an H.264 file fails one packet at a time).
MAX_CONSECUTIVE_ERRORS = 50


@dataclass
class DecodeStats:
    """What a decode met: packets the decoder rejected (corrupt data) and their reasons (first few).

    Attributes:
        bad_packets: packets that failed to decode and were skipped (each lost the frame it carried).
        errors: the first decoder messages, for the log.
        unindexed_frames: decoded frames whose time is not in the given ``frame_pts_ms`` (skipped).
    """

    bad_packets: int = 0
    errors: list[str] = field(default_factory=list)
    unindexed_frames: int = 0


@dataclass(frozen=True, eq=False)
class DecodedFrame:
    """One decoded frame; its pixels are converted to an array on first use of :attr:`image` (a frame nobody
    looks at, e.g. between face detections with no face tracked, costs only its decode).

    Attributes:
        index: 0-based frame index in decode order.
        pts_ms: presentation time (ms) from the source start, rounded to the nearest ms.
    """

    index: int
    pts_ms: int
    _frame: object = field(repr=False)  # the av.VideoFrame (or an array, for frames made in tests)
    _cache: dict = field(default_factory=dict, repr=False)

    @property
    def image(self) -> np.ndarray:
        """``(height, width, 3)`` uint8 BGR array, rotated upright per the container's display matrix."""
        if "image" not in self._cache:
            f = self._frame
            self._cache["image"] = f if isinstance(f, np.ndarray) else _image(f)
        return self._cache["image"]

    def small(self, size: tuple[int, int]) -> np.ndarray:
        """The upright frame scaled to ``size`` = ``(width, height)`` px, BGR, the way PySceneDetect's
        ``SceneManager`` downscales (``cv2.resize``, bilinear, from the full BGR frame). Its detectors' thresholds
        were set on that sampling: a smoothing scaler (swscale's bilinear or area) found false cuts in a slow pan of
        ``shots/testvideo.mp4`` and in ``zh_narration``."""
        import cv2

        key = ("small", *size)
        if key not in self._cache:
            self._cache[key] = cv2.resize(self.image, size, interpolation=cv2.INTER_LINEAR)
        return self._cache[key]


@dataclass(frozen=True)
class VideoInfo:
    """What the reader learnt about the video stream.

    Attributes:
        fps: nominal frame rate (exact fraction, NTSC rates snapped; :func:`cinedub.timebase.pick_frame_rate`);
            variable_frame_rate: the nominal and the average rate disagree; rotation_deg: display rotation applied to every frame (counter-clockwise).
    """

    fps: Fraction
    variable_frame_rate: bool
    width: int
    height: int
    rotation_deg: int


def video_info(path: str | Path) -> VideoInfo:
    """Probe the first video stream with PyAV (rate, VFR flag, upright size, rotation).

    Raises:
        MediaError: unreadable file or no video stream.
    """
    with _open(path) as container:
        vs = container.streams.video[0]
        fps, vfr = _rates(vs, path)
        rot = 0
        for frame in _decode(container, vs, DecodeStats()):
            rot = _rotation(frame)
            break
        w, h = vs.codec_context.width, vs.codec_context.height
        if rot in (90, 270):
            w, h = h, w
        return VideoInfo(fps=fps, variable_frame_rate=vfr, width=w, height=h, rotation_deg=rot)


def iter_frames(
    path: str | Path,
    spans_ms: Sequence[tuple[int, int]] | None = None,
    *,
    threads: bool = True,
    frame_pts_ms: Sequence[int] | None = None,
    stats: DecodeStats | None = None,
    sequential: bool = False,
) -> Iterator[DecodedFrame]:
    """Yield every frame whose ``pts_ms`` lies in one of ``spans_ms`` (``[start, end)``), in order, decoded once.

    Args:
        path: a video file.
        spans_ms: source-timeline spans (merged here); None = the whole stream.
        threads: let FFmpeg decode with frame threads.
        frame_pts_ms: the presentation time (ms, increasing) of every frame of the stream in decode order, when
            known (``ShotList.frame_pts_ms``): indices are then positions in it (a frame whose time is not in it,
            within 1 ms, is skipped and counted in ``stats``).
        stats: filled with the corrupt packets met.
        sequential: decode from the start without seeking; the index is then the count of frames decoded before
            (decode order, exact on any source, as the shot detector and the faces stage number frames).

    Raises:
        MediaError: unreadable file, no video stream, or an undecodable stream (:data:`MAX_CONSECUTIVE_ERRORS`).
    """
    spans = merge_spans(spans_ms) if spans_ms is not None else [(0, 1 << 62)]
    if not spans:
        return
    stats = stats if stats is not None else DecodeStats()
    with _open(path) as container:
        vs = container.streams.video[0]
        if threads:
            vs.thread_type = "AUTO"
        fps, vfr = _rates(vs, path)
        tb = vs.time_base
        origin_s = Fraction(container.start_time or 0, 1_000_000)
        start_pts = vs.start_time if vs.start_time is not None else 0
        if frame_pts_ms:
            index_of = _indexer(list(frame_pts_ms), stats)
        else:
            def index_of(frame, pts_ms, last_index):  # noqa: ARG001 - same signature as _indexer's
                if frame.pts is None:
                    return last_index + 1
                return int(round((Fraction(frame.pts - start_pts) * tb) * fps))
        try:
            if sequential or (vfr and not frame_pts_ms):
                yield from _sequential(container, vs, spans, tb, origin_s, stats)
            else:
                yield from _seeking(container, vs, spans, tb, origin_s, start_pts, index_of, stats)
        except av.error.FFmpegError as e:
            raise MediaError(path, f"video decode failed ({e})") from None
        except _Undecodable as e:
            raise MediaError(path, f"video decode failed: {e}") from None


class _Undecodable(Exception):
    pass


def _indexer(frame_pts_ms: list[int], stats: DecodeStats):
    def index_of(frame, pts_ms: int, last_index: int) -> int | None:  # noqa: ARG001
        i = bisect.bisect_left(frame_pts_ms, pts_ms - 1)
        if i < len(frame_pts_ms) and abs(frame_pts_ms[i] - pts_ms) <= 1:
            return i
        stats.unindexed_frames += 1
        return None

    return index_of


def _decode(container, vs, stats: DecodeStats) -> Iterator[av.VideoFrame]:
    """The stream's frames from the current position, skipping packets the decoder rejects (counted in ``stats``),
    as the ffmpeg CLI does."""
    failures = 0
    for packet in container.demux(vs):
        try:
            frames = packet.decode()
        except av.error.EOFError:
            return
        except av.error.FFmpegError as e:
            stats.bad_packets += 1
            failures += 1
            if len(stats.errors) < 5:
                stats.errors.append(f"pts {packet.pts}: {e}")
            if failures >= MAX_CONSECUTIVE_ERRORS:
                raise _Undecodable(f"{failures} packets in a row failed to decode (last: {e})") from None
            continue
        failures = 0
        yield from frames


def _sequential(container, vs, spans, tb, origin_s, stats) -> Iterator[DecodedFrame]:
    k = 0
    for index, frame in enumerate(_decode(container, vs, stats)):
        pts_ms = _pts_ms(frame, tb, origin_s)
        while k < len(spans) and pts_ms >= spans[k][1]:
            k += 1
        if k == len(spans):
            return
        if pts_ms >= spans[k][0]:
            yield DecodedFrame(index, pts_ms, frame)


def _seeking(container, vs, spans, tb, origin_s, start_pts, index_of, stats) -> Iterator[DecodedFrame]:
    last_index = -1
    position_ms: int | None = None  # pts of the last decoded frame, None before the first seek
    k = 0
    while k < len(spans):
        s, e = spans[k]
        sought = -1
        if position_ms is None or s - position_ms > _SEEK_MIN_GAP_MS:
            target = int((Fraction(s, 1000) + origin_s) / tb) + start_pts
            container.seek(max(start_pts, target), stream=vs, backward=True, any_frame=False)
            sought = k  # a seek lands on the keyframe before: decode forward from there, never seek again for k
        for frame in _decode(container, vs, stats):
            pts_ms = _pts_ms(frame, tb, origin_s)
            position_ms = pts_ms
            index = index_of(frame, pts_ms, last_index)
            while k < len(spans) and pts_ms >= spans[k][1]:
                k += 1
            if k == len(spans):
                return
            if k != sought and spans[k][0] - pts_ms > _SEEK_MIN_GAP_MS:
                break  # far before the next span: seek instead of decoding through
            if index is not None and pts_ms >= spans[k][0] and index > last_index:
                last_index = index
                yield DecodedFrame(index, pts_ms, frame)
        else:
            return  # end of stream


def _pts_ms(frame: av.VideoFrame, tb: Fraction, origin_s: Fraction) -> int:
    if frame.pts is None:
        return int(round(float(frame.time or 0) * 1000))
    return int(round((frame.pts * tb - origin_s) * 1000))


def _rotation(frame: av.VideoFrame) -> int:
    try:
        return int(round(frame.rotation or 0)) % 360
    except (AttributeError, TypeError, ValueError):
        return 0


def _image(frame: av.VideoFrame) -> np.ndarray:
    img = frame.to_ndarray(format="bgr24")
    rot = _rotation(frame)
    if rot:
        # PyAV's rotation is counter-clockwise; np.rot90 turns counter-clockwise too (checked against ffmpeg's
        # autorotate output)
        img = np.ascontiguousarray(np.rot90(img, rot // 90))
    return img


def _rates(vs, path) -> tuple[Fraction, bool]:
    avg = vs.average_rate
    base = vs.base_rate or vs.guessed_rate
    if not avg and not base:
        raise MediaError(path, "video stream has no frame rate")
    fps, vfr = pick_frame_rate(parse_fps(Fraction(avg)) if avg else None, parse_fps(Fraction(base)) if base else None)
    assert fps is not None
    return fps, vfr


class _open:
    """``av.open`` as a context manager that raises :class:`MediaError` with the reason."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __enter__(self):
        if not self.path.is_file():
            raise MediaError(self.path, "file not found")
        try:
            self.container = av.open(str(self.path))
        except av.error.FFmpegError as e:
            raise MediaError(self.path, f"not a readable media file ({e})") from None
        if not self.container.streams.video:
            self.container.close()
            raise MediaError(self.path, "no video stream")
        return self.container

    def __exit__(self, *exc) -> None:
        self.container.close()
