"""The one place that converts between milliseconds, video frames and audio samples.

All CineDub records keep time as integer milliseconds in the **source timeline** (0 = first sample/frame of the
source file). Frame rates are exact :class:`fractions.Fraction` values, as in PySceneDetect's ``FrameTimecode``
(23.976 fps is ``Fraction(24000, 1001)``), so frame indices never drift on long episodes.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction

# Rates that containers often store rounded; snapped to the exact NTSC fraction (PySceneDetect's
# `framerate_to_fraction` does the same).
_NTSC = {Fraction(24000, 1001), Fraction(30000, 1001), Fraction(60000, 1001), Fraction(48000, 1001)}


def parse_fps(value: str | float | Fraction) -> Fraction:
    """Parse an ffprobe rate ("30000/1001", "25/1", "29.97") into an exact fraction.

    Rates within 0.01 fps of an NTSC rate (23.976, 29.97, 47.952, 59.94) are snapped to it
    (``2997/125`` as written by some muxers becomes ``24000/1001``).

    Raises:
        ValueError: the rate is zero, negative or unparsable.
    """
    if isinstance(value, Fraction):
        fps = value
    elif isinstance(value, str) and "/" in value:
        num, den = value.split("/", 1)
        if int(den) == 0:
            raise ValueError(f"invalid frame rate {value!r}")
        fps = Fraction(int(num), int(den))
    else:
        fps = Fraction(str(value)).limit_denominator(1001)
    if fps <= 0:
        raise ValueError(f"invalid frame rate {value!r}")
    for ntsc in _NTSC:
        if abs(float(fps) - float(ntsc)) < 0.01:
            return ntsc
    return fps


MAX_NOMINAL_FPS = 121  # above this a container's "nominal" rate is a timestamp resolution (e.g. 1000/1), not a rate
MAX_NOMINAL_OVER_AVERAGE = 2.5  # nor is a nominal rate this many times the average (most frames missing)


def pick_frame_rate(average: Fraction | None, nominal: Fraction | None) -> tuple[Fraction | None, bool]:
    """``(fps, variable_frame_rate)`` of a video stream from its average rate (frames / duration; ffprobe's
    ``avg_frame_rate``) and its nominal rate (the rate its timestamps are spaced at; ffprobe's ``r_frame_rate``).

    The stream is variable-frame-rate when both are known and differ by more than 0.01 fps (dropped or duplicated
    frames, or a true VFR encode). The rate kept is the nominal one (``24000/1001`` for a 23.976 fps film with
    dropped frames, not the 16.05 fps average), unless it is implausible (over :data:`MAX_NOMINAL_FPS`, or over
    :data:`MAX_NOMINAL_OVER_AVERAGE` times the average, as muxers write for timestamp-only VFR), then the average.
    Frame times of a VFR stream come from its decoded timestamps, never from ``index / fps``.
    """
    vfr = bool(average and nominal and abs(float(average) - float(nominal)) > 0.01)
    if nominal and (not average or (float(nominal) <= MAX_NOMINAL_FPS
                                    and float(nominal) <= MAX_NOMINAL_OVER_AVERAGE * float(average))):
        return nominal, vfr
    return average or nominal, vfr


def frame_to_ms(frame_idx: int, fps: Fraction) -> int:
    """Presentation time (integer ms, rounded) of frame ``frame_idx`` (0-based) at a constant rate ``fps``."""
    return round(Fraction(frame_idx) * 1000 / fps)


def frame_duration_ms(fps: Fraction) -> int:
    """Duration of one frame at ``fps`` (integer ms, rounded; 42 at 23.976, 40 at 25)."""
    return round(1000 / Fraction(fps))


def ms_to_frame(ms: int | float, fps: Fraction) -> int:
    """Index of the frame shown at ``ms`` (floor) at a constant rate ``fps``."""
    return math.floor(Fraction(ms).limit_denominator(1000) * fps / 1000)


def ms_to_frames(ms: int | float, fps: Fraction) -> int:
    """How many frames last ``ms`` at ``fps`` (rounded): a duration, not an index."""
    return round(Fraction(ms).limit_denominator(1000) * fps / 1000)


def frame_span(start_ms: int, end_ms: int, fps: Fraction, n_frames: int | None = None) -> tuple[int, int]:
    """Video frames ``[start, end)`` on screen during ``[start_ms, end_ms)`` at a constant ``fps``.

    Shot and clip times are integer ms rounded from exact frame times, so each edge gets half a millisecond of
    rounding allowance: a clip starting on a cut at 23.976 fps (frame 58 = 2419.08 ms, stored as 2419) starts on
    the cut frame 58, not on frame 57 (``floor(2419 ms * 23.976 fps)``); a clip ending there ends before frame 58.
    Exact in :class:`~fractions.Fraction` arithmetic.

    Args:
        n_frames: frame count of the video, if known; both indices are clamped to it.

    Returns:
        ``(start, end)`` 0-based frame indices, ``start <= end``.
    """
    start = math.floor(Fraction(2 * start_ms + 1, 2000) * fps)
    end = math.ceil(Fraction(2 * end_ms - 1, 2000) * fps)
    if n_frames is not None:
        start, end = min(start, n_frames), min(end, n_frames)
    return start, max(start, end)


def frame_span_pts(start_ms: int, end_ms: int, frame_pts_ms: Sequence[int]) -> tuple[int, int]:
    """Video frames ``[start, end)`` on screen during ``[start_ms, end_ms)`` from the decoded frames' presentation
    times (integer ms, increasing; any frame rate, variable included): frame ``i`` is on screen from
    ``frame_pts_ms[i]`` until the next frame's time. Same half-millisecond allowance as :func:`frame_span`."""
    start = max(0, bisect.bisect_right(frame_pts_ms, start_ms) - 1)
    end = bisect.bisect_left(frame_pts_ms, end_ms)
    return start, max(start, end)


def ms_to_sample(ms: int | float, sample_rate_hz: int) -> int:
    """Sample index at ``ms`` for ``sample_rate_hz`` (rounded to the nearest sample)."""
    return int(round(ms * sample_rate_hz / 1000))


def sample_to_ms(sample: int, sample_rate_hz: int) -> int:
    """Integer ms of sample index ``sample`` at ``sample_rate_hz`` (rounded); also the duration of ``sample``
    samples."""
    return int(round(sample * 1000 / sample_rate_hz))


def seconds_to_ms(seconds: float) -> int:
    """Seconds (as most libraries report them) to integer ms, rounded to the nearest ms."""
    return int(round(seconds * 1000))


def ms_to_seconds(ms: int) -> float:
    """Integer ms to seconds (for libraries that take seconds: pyannote, RTTM, ffmpeg)."""
    return ms / 1000


@dataclass(frozen=True, order=True)
class Span:
    """A half-open stretch ``[start_ms, end_ms)`` of the source timeline (integer ms).

    The interval operations CineDub needs; unions of many spans use pyannote.core's ``Timeline`` (see
    :func:`union_ms`).
    """

    start_ms: int
    end_ms: int

    @property
    def duration_ms(self) -> int:
        return max(0, self.end_ms - self.start_ms)

    def overlap_ms(self, other: "Span | tuple[int, int]") -> int:
        """Length of the intersection with ``other`` (0 when disjoint)."""
        s, e = (other.start_ms, other.end_ms) if isinstance(other, Span) else other
        return max(0, min(self.end_ms, e) - max(self.start_ms, s))

    def intersect(self, other: "Span") -> "Span | None":
        s, e = max(self.start_ms, other.start_ms), min(self.end_ms, other.end_ms)
        return Span(s, e) if e > s else None

    def contains(self, ms: int) -> bool:
        return self.start_ms <= ms < self.end_ms

    def to_segment(self):
        """The ``pyannote.core.Segment`` (seconds)."""
        from pyannote.core import Segment

        return Segment(ms_to_seconds(self.start_ms), ms_to_seconds(self.end_ms))


def union_ms(spans: Iterable[tuple[int, int]]) -> int:
    """Total length (ms) of the union of ``[start_ms, end_ms)`` spans (pyannote.core ``Timeline.support``)."""
    from pyannote.core import Segment, Timeline

    tl = Timeline([Segment(s / 1000, e / 1000) for s, e in spans if e > s]).support()
    return seconds_to_ms(tl.duration())


def merge_spans(
    spans_ms: Iterable[tuple[int, int]], *, pad_ms: int = 0, gap_ms: int = 0, end_ms: int | None = None
) -> list[tuple[int, int]]:
    """Union of ``[start_ms, end_ms)`` spans as sorted, disjoint spans.

    Each span is first widened by ``pad_ms`` on both sides and clipped to ``[0, end_ms]`` (``end_ms`` None: no
    upper bound); empty spans are dropped; spans closer than ``gap_ms`` to the previous one join it.
    """
    out: list[list[int]] = []
    for s, e in sorted((int(s) - pad_ms, int(e) + pad_ms) for s, e in spans_ms):
        s = max(0, s)
        if end_ms is not None:
            e = min(e, end_ms)
        if e <= s:
            continue
        if out and s <= out[-1][1] + gap_ms:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]
