"""Turn hygiene of the fused timeline (pure logic on :class:`~cinedub.types.Turn` lists, integer ms).

- :func:`absorb_short_turns`: no turn shorter than a minimum (pyannote's ``min_duration_on`` analogue), also
  after the turns are cut at the shots (a turn that crosses a cut by 30 ms leaves no 30 ms piece).
- :func:`union_same_speaker`: no two overlapping turns of one speaker.
- :func:`handover_at_cuts`: no overlap invented at a hard cut by window smoothing of a hand-over on the cut.
- :func:`split_at_cuts`: a turn's face track lies in one shot, so turns are cut at the shot boundaries.
- :func:`overlap_regions`: overlap flags and regions recomputed from the turns themselves.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence

from cinedub.diarization.records import OverlapRegion
from cinedub.types import Turn

_TOUCH_MS = 10  # turns this close count as touching (one 10 ms diarization frame)


def _touches(a: Turn, b: Turn) -> bool:
    return a.start_ms <= b.end_ms + _TOUCH_MS and b.start_ms <= a.end_ms + _TOUCH_MS


def absorb_short_turns(turns: Sequence[Turn], min_ms: int, cuts_ms: Sequence[int] = ()) -> list[Turn]:
    """Turns shorter than ``min_ms`` join a touching or overlapping turn (one of the same speaker first, else the
    longest), taking its speaker; isolated short turns are dropped. Shortest first, until none is left. No turn
    grows across one of ``cuts_ms`` (pieces of a turn cut at a shot stay in their shot)."""
    out = sorted(turns, key=lambda t: (t.start_ms, t.speaker_id))
    cuts = sorted(cuts_ms)

    def crosses(a: Turn, b: Turn) -> bool:
        lo, hi = min(a.start_ms, b.start_ms), max(a.end_ms, b.end_ms)
        k = bisect.bisect_right(cuts, lo)
        return k < len(cuts) and cuts[k] < hi

    while True:
        short = [i for i, t in enumerate(out) if t.end_ms - t.start_ms < min_ms]
        if not short:
            return out
        i = min(short, key=lambda i: (out[i].end_ms - out[i].start_ms, i))
        t = out.pop(i)
        near = [j for j, u in enumerate(out) if _touches(t, u) and not crosses(t, u)]
        if not near:
            continue
        j = max(near, key=lambda j: (out[j].speaker_id == t.speaker_id, out[j].end_ms - out[j].start_ms))
        u = out[j]
        out[j] = dataclasses.replace(u, start_ms=min(u.start_ms, t.start_ms), end_ms=max(u.end_ms, t.end_ms))
        if u.speaker_id != t.speaker_id:  # the grown turn must not now overlap another of its own speaker
            out = union_same_speaker(out)
        out.sort(key=lambda t: (t.start_ms, t.speaker_id))


def union_same_speaker(turns: Sequence[Turn], *, touching: bool = False) -> list[Turn]:
    """Overlapping turns of one speaker become one (with ``touching``, also turns that meet); the longer part's
    other fields are kept."""
    by: dict[str, list[Turn]] = {}
    for t in sorted(turns, key=lambda t: (t.start_ms, t.end_ms)):
        runs = by.setdefault(t.speaker_id, [])
        if runs and (t.start_ms < runs[-1].end_ms or (touching and t.start_ms <= runs[-1].end_ms)):
            last = runs[-1]
            keep = last if last.end_ms - last.start_ms >= t.end_ms - t.start_ms else t
            runs[-1] = dataclasses.replace(keep, start_ms=last.start_ms, end_ms=max(last.end_ms, t.end_ms))
        else:
            runs.append(t)
    return sorted((t for r in by.values() for t in r), key=lambda t: (t.start_ms, t.speaker_id))


def handover_at_cuts(
    turns: Sequence[Turn], exclusive: Sequence[Turn], cuts_ms: Sequence[int], max_ms: int
) -> tuple[list[Turn], list[Turn]]:
    """Move a hand-over smeared across a hard cut onto the cut.

    Where speaker A's turn (begun before) and speaker B's turn (going on after) overlap over at most ``max_ms``
    around a cut, the overlap is the smoothing of the diarization windows across the change, not two people talking:
    A's turn ends and B's starts at the cut, and an exclusive-turn boundary between them inside that stretch moves
    to the cut too.

    Returns:
        ``(turns, exclusive)`` updated.
    """
    turns, exclusive = list(turns), list(exclusive)
    for c in cuts_ms:
        for i, a in enumerate(turns):
            for j, b in enumerate(turns):
                lo, hi = max(a.start_ms, b.start_ms), min(a.end_ms, b.end_ms)
                if a.speaker_id == b.speaker_id or not lo <= c <= hi or hi - lo > max_ms:
                    continue
                if not (a.start_ms < lo and b.end_ms > hi and a.start_ms < c < b.end_ms):
                    continue
                if c - a.start_ms <= 0 or b.end_ms - c <= 0:
                    continue
                turns[i] = a = dataclasses.replace(a, end_ms=c)
                turns[j] = dataclasses.replace(b, start_ms=c)
                for k in range(len(exclusive) - 1):
                    x, y = exclusive[k], exclusive[k + 1]
                    if (x.speaker_id, y.speaker_id) == (a.speaker_id, b.speaker_id) and x.end_ms == y.start_ms \
                            and lo <= x.end_ms <= hi and x.start_ms < c < y.end_ms:
                        exclusive[k], exclusive[k + 1] = dataclasses.replace(x, end_ms=c), dataclasses.replace(y, start_ms=c)
    key = lambda t: (t.start_ms, t.speaker_id)  # noqa: E731
    return sorted((t for t in turns if t.end_ms > t.start_ms), key=key), sorted(
        (t for t in exclusive if t.end_ms > t.start_ms), key=key)


def split_at_cuts(turns: Sequence[Turn], cuts_ms: Sequence[int]) -> list[Turn]:
    """Each turn cut at the shot boundaries strictly inside it (fields copied to every piece)."""
    cuts = sorted(cuts_ms)
    out = []
    for t in turns:
        a = t.start_ms
        for c in cuts[bisect.bisect_right(cuts, t.start_ms) : bisect.bisect_left(cuts, t.end_ms)]:
            out.append(dataclasses.replace(t, start_ms=a, end_ms=c))
            a = c
        out.append(dataclasses.replace(t, start_ms=a, end_ms=t.end_ms) if a != t.start_ms else t)
    return out


def shot_index_at(ms: int, starts_ms: Sequence[int]) -> int | None:
    """Index of the shot holding ``ms`` given the shots' sorted start times (None before the first)."""
    i = bisect.bisect_right(starts_ms, ms) - 1
    return i if i >= 0 else None


def overlap_regions(turns: Sequence[Turn]) -> tuple[list[Turn], list[OverlapRegion]]:
    """``overlap`` flags set from the turns (True when another speaker's turn shares time) and the regions where two
    or more speakers talk, with who (one sweep over the turn boundaries)."""
    events = sorted([(t.start_ms, 1, t.speaker_id) for t in turns] + [(t.end_ms, -1, t.speaker_id) for t in turns])
    active: dict[str, int] = {}
    regions: list[OverlapRegion] = []
    i = 0
    while i < len(events):
        at = events[i][0]
        while i < len(events) and events[i][0] == at:
            _, d, sid = events[i]
            active[sid] = active.get(sid, 0) + d
            i += 1
        if i == len(events):
            break
        who = tuple(sorted(s for s, n in active.items() if n > 0))
        nxt = events[i][0]
        if len(who) >= 2 and nxt > at:
            if regions and regions[-1].end_ms == at and regions[-1].speaker_ids == who:
                regions[-1] = OverlapRegion(regions[-1].start_ms, nxt, who)
            else:
                regions.append(OverlapRegion(at, nxt, who))
    starts, ends = [r.start_ms for r in regions], [r.end_ms for r in regions]  # sorted, regions are disjoint
    flagged = []
    for t in turns:
        lo, hi = bisect.bisect_right(ends, t.start_ms), bisect.bisect_left(starts, t.end_ms)
        ov = any(t.speaker_id in regions[j].speaker_ids for j in range(lo, hi))
        flagged.append(t if t.overlap == ov else dataclasses.replace(t, overlap=ov))
    return flagged, regions
