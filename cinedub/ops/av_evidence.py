"""The evidence of the audio-visual attribution: per turn piece, the face tracks present and their cues.

Reads the per-frame records the visual stages wrote (the faces Parquet for presence, the ASD Parquet for Light-ASD
log-odds and the SyncNet veto) and fills :class:`cinedub.ops.attribution.Candidate` records; the synchrony scores
come from :func:`cinedub.vision.av_sync.track_sync`. No model runs here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from cinedub.ops.attribution import Candidate, Piece, asd_llr, margin_llr, sync_llr
from cinedub.ops.av_config import AvConfig
from cinedub.types import Turn
from cinedub.vision.av_sync import SyncScore
from cinedub.vision.records import FaceTrack


def read_presence(frames_path: str | Path, track_ids: Sequence[str]) -> dict[str, np.ndarray]:
    """``track_id -> (n,)`` int64 sorted pts (ms) of the track's frames (faces Parquet)."""
    if not track_ids:
        return {}
    t = pq.read_table(str(frames_path), columns=["track_id", "pts_ms"], filters=[("track_id", "in", sorted(track_ids))])
    out: dict[str, list[int]] = {}
    for tid, pts in zip(t.column("track_id").to_pylist(), t.column("pts_ms").to_pylist()):
        out.setdefault(tid, []).append(pts)
    return {k: np.sort(np.asarray(v, np.int64)) for k, v in out.items()}


def read_asd_logodds(scores_path: str | Path, cfg: AvConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``track_id -> (pts_ms (n,) int64, log-odds (n,) float64)`` from an ASD scores Parquet file. Frames the SyncNet
    check vetoed (``in_sync`` False, only when its weights were present) get ``-asd_llr_clip``: not speaking."""
    path = Path(scores_path)
    if not path.is_file():
        return {}
    names = pq.read_schema(str(path)).names
    cols = ["track_id", "pts_ms", "logodds"] + (["in_sync"] if "in_sync" in names else [])
    t = pq.read_table(str(path), columns=cols).to_pydict()
    out: dict[str, tuple[list, list]] = {}
    for i, tid in enumerate(t["track_id"]):
        lo = t["logodds"][i]
        if "in_sync" in t and t["in_sync"][i] is False:
            lo = -cfg.asd_llr_clip
        acc = out.setdefault(tid, ([], []))
        acc[0].append(t["pts_ms"][i])
        acc[1].append(np.nan if lo is None else lo)
    res = {}
    for tid, (pts, lo) in out.items():
        order = np.argsort(pts, kind="stable")
        res[tid] = (np.asarray(pts, np.int64)[order], np.asarray(lo, np.float64)[order])
    return res


def make_pieces(
    exclusive: Sequence[Turn],
    tracks: Sequence[FaceTrack],
    presence: dict[str, np.ndarray],
    shot_of,
    identity: dict[str, str | None],
    *,
    fps: float,
    cfg: AvConfig,
) -> list[Piece]:
    """One :class:`Piece` per exclusive turn (already cut at the shots) with its candidate faces.

    A candidate is a track of the piece's shot present in at least ``cfg.min_candidate_frames`` of its frames;
    ``shot_of(ms)`` gives the shot index of a time (None without shots: every track is a candidate by time).
    """
    pieces = []
    for t in exclusive:
        shot = shot_of(t.start_ms)
        n_frames = max(1, int(round((t.end_ms - t.start_ms) * fps / 1000)))
        p = Piece(t.start_ms, t.end_ms, t.speaker_id, t.speaker_id, shot, n_frames)
        seen_any = False
        for tr in tracks:
            if tr.end_ms <= t.start_ms or tr.start_ms >= t.end_ms or (shot is not None and tr.shot_index != shot):
                continue
            pts = presence.get(tr.track_id)
            n = 0 if pts is None else int(np.count_nonzero((pts >= t.start_ms) & (pts < t.end_ms)))
            seen_any = seen_any or n > 0
            if n >= cfg.min_candidate_frames:
                p.candidates.append(Candidate(tr.track_id, identity.get(tr.track_id), n, round(min(1.0, n / n_frames), 4)))
        p.too_short = seen_any and not p.candidates
        pieces.append(p)
    return pieces


def add_asd(pieces: Sequence[Piece], asd: dict[str, tuple[np.ndarray, np.ndarray]], cfg: AvConfig) -> None:
    """Fill each candidate's mean Light-ASD log-odds over the piece, its margin over the best competitor in the
    frames both are present, and the ASD LLR."""
    for p in pieces:
        per = {}
        for c in p.candidates:
            if c.track_id in asd:
                pts, lo = asd[c.track_id]
                m = (pts >= p.start_ms) & (pts < p.end_ms) & np.isfinite(lo)
                if m.any():
                    per[c.track_id] = (pts[m], lo[m])
        out = []
        for c in p.candidates:
            if c.track_id not in per:
                out.append(c)
                continue
            pts, lo = per[c.track_id]
            margins = []
            for other, (opts, olo) in per.items():
                if other == c.track_id:
                    continue
                common, ia, ib = np.intersect1d(pts, opts, return_indices=True)
                if len(common):
                    margins.append(float(np.mean(lo[ia] - olo[ib])))
            mean = float(lo.mean())
            margin = min(margins) if margins else None
            out.append(replace(c, asd_logodds=round(mean, 4), asd_margin=None if margin is None else round(margin, 4),
                               asd_llr=round(asd_llr(mean, cfg), 4), margin_llr=round(margin_llr(margin, cfg), 4)))
        p.candidates = out


def sync_windows(pieces: Sequence[Piece]) -> dict[str, list[tuple[int, int]]]:
    """``track_id -> [(start_ms, end_ms)]`` of the pieces each track is a candidate for (what to measure)."""
    out: dict[str, list[tuple[int, int]]] = {}
    for p in pieces:
        for c in p.candidates:
            out.setdefault(c.track_id, []).append((p.start_ms, p.end_ms))
    return out


def add_sync(pieces: Sequence[Piece], sync: dict[tuple[str, int, int], SyncScore], cfg: AvConfig) -> None:
    """Fill each candidate's synchrony score and LLR (left unset where it could not be measured)."""
    for p in pieces:
        out = []
        for c in p.candidates:
            s = sync.get((c.track_id, p.start_ms, p.end_ms))
            out.append(c if s is None else replace(c, sync_r=s.r, sync_lag_ms=s.lag_ms, sync_z=s.z,
                                                   sync_llr=round(sync_llr(s.z, cfg), 4)))
        p.candidates = out


def co_visible_identities(tracks: Sequence[FaceTrack], identity: dict[str, str | None]) -> set[frozenset[str]]:
    """Identity pairs with tracks on screen at the same time (surely two different people)."""
    out = set()
    for i, a in enumerate(tracks):
        for b in tracks[i + 1 :]:
            fa, fb = identity.get(a.track_id), identity.get(b.track_id)
            if fa and fb and fa != fb and a.start_ms < b.end_ms and b.start_ms < a.end_ms:
                out.add(frozenset((fa, fb)))
    return out
