"""The one place that converts between milliseconds, video frames and audio samples.

All CineDub records keep time as integer milliseconds in the **source timeline** (0 = first sample/frame of the
source file). Frame rates are exact :class:`fractions.Fraction` values, as in PySceneDetect's ``FrameTimecode``
(23.976 fps is ``Fraction(24000, 1001)``), so frame indices never drift on long episodes.
"""

from __future__ import annotations

from collections.abc import Iterable
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


def frame_to_ms(frame_idx: int, fps: Fraction) -> float:
    """Presentation time of frame ``frame_idx`` (0-based) in ms, exact up to float rounding: ``idx / fps * 1000``."""
    return float(Fraction(frame_idx) / fps * 1000)


def ms_to_frame(ms: float, fps: Fraction) -> int:
    """Index of the frame shown at ``ms`` (floor), for a constant frame rate ``fps``."""
    return int(Fraction(ms).limit_denominator(1000) * fps / 1000)


def ms_to_sample(ms: float, sample_rate_hz: int) -> int:
    """Sample index at ``ms`` for ``sample_rate_hz`` (rounded to the nearest sample)."""
    return int(round(ms * sample_rate_hz / 1000))


def sample_to_ms(sample: int, sample_rate_hz: int) -> int:
    """Integer ms of sample index ``sample`` at ``sample_rate_hz`` (rounded)."""
    return int(round(sample * 1000 / sample_rate_hz))


def seconds_to_ms(seconds: float) -> int:
    """Seconds (as most libraries report them) to integer ms, rounded to the nearest ms."""
    return int(round(seconds * 1000))


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
