"""Frame-level bookkeeping of the offline path (pure numpy): window scores to frames, smoothing, frames to turns.

A frame is ``frame_ms`` long (10 ms by default, the mel hop); frame ``i`` covers ``[i * frame_ms, (i + 1) * frame_ms)``.
"""

from __future__ import annotations

import numpy as np

from cinedub.diarization.records import OverlapRegion
from cinedub.types import Turn


def spans_to_mask(spans_ms: list[tuple[int, int]], n_frames: int, frame_ms: int) -> np.ndarray:
    """``(n_frames,)`` bool mask, True inside any ``[start_ms, end_ms)`` span."""
    mask = np.zeros(n_frames, dtype=bool)
    for a, b in spans_ms:
        mask[max(0, a // frame_ms) : min(n_frames, -(-b // frame_ms))] = True
    return mask


def frame_scores(
    windows_ms: list[tuple[int, int]], window_scores: np.ndarray, n_frames: int, frame_ms: int
) -> tuple[np.ndarray, np.ndarray]:
    """Average the per-window speaker scores over the frames each window covers.

    Args:
        windows_ms: ``n`` spans (ms).
        window_scores: ``(n, k)`` scores (e.g. cosine similarity of the window's d-vector to each centroid).
        n_frames / frame_ms: frame grid.

    Returns:
        ``(scores, covered)``: ``(n_frames, k)`` float mean score (0 where uncovered) and ``(n_frames,)`` bool.
    """
    k = window_scores.shape[1] if window_scores.ndim == 2 else 0
    total = np.zeros((n_frames, k))
    count = np.zeros(n_frames)
    for (a, b), s in zip(windows_ms, window_scores):
        i, j = max(0, a // frame_ms), min(n_frames, -(-b // frame_ms))
        total[i:j] += s
        count[i:j] += 1
    covered = count > 0
    total[covered] /= count[covered, None]
    return total, covered


def fill_from_nearest(scores: np.ndarray, covered: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Copy scores of the nearest covered frame into uncovered frames selected by ``where`` (e.g. short VAD speech)."""
    idx = np.flatnonzero(covered)
    out = scores.copy()
    if len(idx) == 0:
        return out
    todo = np.flatnonzero(where & ~covered)
    pos = np.clip(np.searchsorted(idx, todo), 1, len(idx) - 1) if len(idx) > 1 else np.zeros(len(todo), dtype=int)
    if len(idx) > 1:
        left, right = idx[pos - 1], idx[pos]
        nearest = np.where(todo - left <= right - todo, left, right)
    else:
        nearest = np.full(len(todo), idx[0])
    out[todo] = scores[nearest]
    return out


def runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of equal values: ``(start_frame, end_frame_exclusive, value)``."""
    if len(labels) == 0:
        return []
    change = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [len(labels)]])
    return [(int(a), int(b), int(labels[a])) for a, b in zip(starts, ends)]


def smooth_labels(labels: np.ndarray, min_run: int) -> np.ndarray:
    """Relabel speaker runs shorter than ``min_run`` frames to a neighbouring speaker (-1 = silence is kept).

    A short run between two speech runs takes the label of the longer neighbour; repeated until stable, shortest
    runs first (pyannote's ``min_duration_on`` is the analogue for its binarised output).
    """
    out = labels.copy()
    if min_run <= 1:
        return out
    for _ in range(len(out)):
        rs = runs(out)
        cands = [(b - a, i) for i, (a, b, v) in enumerate(rs) if v >= 0 and b - a < min_run]
        changed = False
        for _, i in sorted(cands):
            a, b, v = rs[i]
            left = rs[i - 1] if i > 0 and rs[i - 1][2] >= 0 and rs[i - 1][1] == a else None
            right = rs[i + 1] if i + 1 < len(rs) and rs[i + 1][2] >= 0 and rs[i + 1][0] == b else None
            if left is None and right is None:
                continue  # an isolated short stretch of speech keeps its speaker
            nb = max((r for r in (left, right) if r is not None), key=lambda r: r[1] - r[0])
            out[a:b] = nb[2]
            changed = True
            break
        if not changed:
            break
    return out


def activity_to_turns(
    dominant: np.ndarray, second: np.ndarray, speaker_ids: list[str], frame_ms: int, duration_ms: int | None = None
) -> tuple[list[Turn], list[Turn], list[OverlapRegion]]:
    """Turn frame labels into turns, exclusive turns and overlap regions.

    Args:
        dominant: ``(n_frames,)`` speaker index per frame, -1 for no speech.
        second: ``(n_frames,)`` index of a second, overlapping speaker, -1 where none.
        speaker_ids: id of each speaker index.
        frame_ms: frame length (ms).
        duration_ms: audio length; the last frame's end is clipped to it.

    Returns:
        ``(turns, exclusive_turns, overlaps)``; ``turns`` include each speaker's overlapped stretches and carry
        ``overlap=True`` when they share time with another speaker.
    """
    k = len(speaker_ids)
    n = len(dominant)
    end_cap = duration_ms if duration_ms is not None else n * frame_ms

    def ms(frame: int) -> int:
        return min(frame * frame_ms, end_cap)

    active = np.zeros((n, k), dtype=bool)
    rows = np.arange(n)
    active[rows[dominant >= 0], dominant[dominant >= 0]] = True
    active[rows[second >= 0], second[second >= 0]] = True
    ovl = active.sum(axis=1) >= 2
    turns: list[Turn] = []
    for s in range(k):
        for a, b, v in runs(active[:, s].astype(int)):
            if v:
                turns.append(Turn(ms(a), ms(b), speaker_ids[s], overlap=bool(ovl[a:b].any())))
    exclusive = [Turn(ms(a), ms(b), speaker_ids[v]) for a, b, v in runs(dominant) if v >= 0 and ms(b) > ms(a)]
    overlaps: list[OverlapRegion] = []
    for a, b, v in runs(ovl.astype(int)):
        if v:
            who = sorted({speaker_ids[i] for i in np.flatnonzero(active[a:b].any(axis=0))})
            overlaps.append(OverlapRegion(ms(a), ms(b), tuple(who)))
    turns.sort(key=lambda t: (t.start_ms, t.speaker_id))
    return turns, exclusive, overlaps
