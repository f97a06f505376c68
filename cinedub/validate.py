"""The invariants of every record type, checked in one place.

The runner (:func:`cinedub.pipeline.execute_step`) validates each stage's output before writing it, so a stage that
breaks an invariant fails with the record and the reason instead of writing silently wrong data. A validator per
record type is registered with :func:`validator`; :func:`validate` dispatches on the type (records without one
pass). Validators are pure and cheap (linear in the record's size).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from cinedub.errors import CineDubError

T = TypeVar("T")
_VALIDATORS: dict[str, Callable[[Any], None]] = {}


class RecordError(CineDubError, ValueError):
    """A record breaks an invariant of its type (a bug in the stage that made it, never bad input)."""


def validator(type_name: str) -> Callable[[Callable[[T], None]], Callable[[T], None]]:
    """Register the decorated function as the validator of records of class ``type_name``."""

    def deco(fn: Callable[[T], None]) -> Callable[[T], None]:
        _VALIDATORS[type_name] = fn
        return fn

    return deco


def validate(record: Any) -> Any:
    """Check ``record`` against its type's invariants; returns it.

    Raises:
        RecordError: the first invariant broken, named with the record type.
    """
    fn = _VALIDATORS.get(type(record).__name__)
    if fn is not None:
        fn(record)
    return record


def _fail(kind: str, why: str) -> None:
    raise RecordError(f"invalid {kind}: {why}")


def _spans_ok(kind: str, items: Any, what: str, end_ms: int | None = None) -> None:
    for x in items:
        if x.end_ms < x.start_ms or x.start_ms < 0:
            _fail(kind, f"{what} [{x.start_ms}, {x.end_ms}) is not a span")
        if end_ms is not None and x.end_ms > end_ms:
            _fail(kind, f"{what} [{x.start_ms}, {x.end_ms}) ends after {end_ms} ms")


@validator("Source")
def _source(s: Any) -> None:
    if len(s.sha256) != 64 or s.source_id != s.sha256[:16]:
        _fail("Source", f"source_id {s.source_id!r} is not the first 16 hex digits of sha256")
    if s.duration_ms <= 0:
        _fail("Source", f"duration {s.duration_ms} ms")
    if s.has_video and (s.fps is None or s.fps <= 0):
        _fail("Source", "video without a frame rate")


@validator("Transcript")
def _transcript(t: Any) -> None:
    words = t.words
    _spans_ok("Transcript", words, "word")
    starts = [w.start_ms for w in words]
    if starts != sorted(starts):
        _fail("Transcript", "word start times go back")
    for w in words:
        if not 0.0 <= w.probability <= 1.0:
            _fail("Transcript", f"word {w.text!r} has probability {w.probability}")


@validator("ShotList")
def _shots(s: Any) -> None:
    prev_frame, prev_ms = 0, 0
    for i, shot in enumerate(s.shots):
        if shot.index != i or shot.start_frame != prev_frame or shot.start_ms < prev_ms:
            _fail("ShotList", f"shot {i} does not follow shot {i - 1}")
        if shot.end_frame <= shot.start_frame or shot.end_ms < shot.start_ms:
            _fail("ShotList", f"shot {i} is empty or reversed")
        prev_frame, prev_ms = shot.end_frame, shot.end_ms
    if s.shots and s.shots[-1].end_frame != s.n_frames:
        _fail("ShotList", f"the last shot ends at frame {s.shots[-1].end_frame}, not at {s.n_frames}")


@validator("DiarizationResult")
def _diarization(d: Any) -> None:
    if d.num_speakers != len(d.speaker_ids):
        _fail("DiarizationResult", f"num_speakers={d.num_speakers} but {len(d.speaker_ids)} speaker ids")
    known = set(d.speaker_ids)
    for t in (*d.turns, *d.exclusive_turns):
        if t.speaker_id not in known or t.end_ms <= t.start_ms:
            _fail("DiarizationResult", f"bad turn {t}: unknown speaker or empty span")
    ex = sorted(d.exclusive_turns, key=lambda t: t.start_ms)
    for a, b in zip(ex, ex[1:]):
        if b.start_ms < a.end_ms:
            _fail("DiarizationResult", f"exclusive turns overlap at {b.start_ms} ms")


@validator("ClipList")
def _clips(c: Any) -> None:
    prev_end = 0
    for clip in c.clips:
        if clip.end_ms <= clip.start_ms or clip.start_ms < prev_end:
            _fail("ClipList", f"clip {clip.index} [{clip.start_ms}, {clip.end_ms}) is empty or overlaps the last")
        for w in clip.words:
            if w.start_ms < clip.start_ms or w.end_ms > clip.end_ms:
                _fail("ClipList", f"word {w.text!r} [{w.start_ms}, {w.end_ms}) is outside clip {clip.index}")
        _spans_ok("ClipList", clip.turns, "turn")
        prev_end = clip.end_ms


@validator("FaceTrackList")
def _faces(f: Any) -> None:
    for t in f.tracks:
        if t.end_frame <= t.start_frame or t.end_ms < t.start_ms or t.n_frames <= 0:
            _fail("FaceTrackList", f"track {t.track_id} is empty or reversed")
