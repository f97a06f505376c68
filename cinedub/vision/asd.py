"""Active speaker detection on face tracks with Light-ASD, and the speaking face track of each turn.

Scoring follows Light-ASD's Columbia demo (``evaluate_network``): grey face crops, their central 112x112, at
25 fps with 13-dim MFCC at 100 Hz from the 16 kHz audio of the same span; the back-end runs on windows of
``asd_windows_s`` seconds (1..6 s) and the per-frame results of all window lengths are averaged. Two departures,
both measured on dialogue_5shots: the encoders run once per track instead of once per window (6x less compute;
results differ only within 6 frames of a window edge), and the average is taken over log-odds
``logit[1] - logit[0]`` (the demo averages the raw ``logit[1]``), smoothed over ``asd_smooth_frames`` (the demo
smooths 5 frames when drawing); the score is its ``sigmoid``, a probability thresholded at ``asd_threshold``.

Known limit: the released weights are not sensitive to audio-visual synchrony. With the AVA weights a talking face
scores "speaking" whenever someone speaks (measured: the same face scores as high with audio from another shot),
so an off-screen speaker over a visibly talking face is attributed to that face; the TalkSet weights score every
frame of every track on dialogue_5shots speaking. ``scripts/asd_sync_probe.py`` measures the offset tests tried.
The remedy is :func:`sync_veto`: when SyncNet weights are configured, speaking runs out of sync are vetoed.

Sources at other rates are resampled to 25 fps by taking the source frame nearest to each 40 ms step, and each
source frame gets the score of its nearest 25 fps step. Tracks shorter than ``asd_min_track_ms`` or without audio
are reported as unscored (never guessed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from cinedub.media import load_audio
from cinedub.types import Turn
from cinedub.vision.config import VisionConfig
from cinedub.vision.landmarks import decode_image
from cinedub.vision.light_asd import CROP_PX, MFCC_HZ, VIDEO_FPS, LightASD, mfcc
from cinedub.vision.records import AsdScore, AsdTrack, FaceTrack, TurnSpeaker
from cinedub.vision.syncnet import CROP_PX as SYNC_CROP_PX
from cinedub.vision.syncnet import WINDOW_FRAMES, SyncNetS, av_sync

STEP_MS = 1000 / VIDEO_FPS  # 40 ms per Light-ASD frame
# audio past the last 40 ms step so that the MFCC framing (25 ms windows every 10 ms) yields exactly 4 per step
_MFCC_TAIL_MS = 15

SCORES_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("frame_index", pa.int32()),
        ("pts_ms", pa.int64()),
        ("score", pa.float32()),
        ("logodds", pa.float32()),
        ("speaking", pa.bool_()),
        ("in_sync", pa.bool_()),
        ("sync_confidence", pa.float32()),  # SyncNet confidence of the checked run holding the frame, else null
        ("sync_offset_frames", pa.int16()),
    ]
)


@dataclass(frozen=True)
class SyncCheck:
    """SyncNet's verdict on one speaking run of a track (source timeline, ms) and whether it vetoed the run."""

    start_ms: int
    end_ms: int
    offset_frames: int
    confidence: float
    vetoed: bool


@dataclass(frozen=True)
class TrackScores:
    """Per source frame scores of one track: ``frame_index``, ``pts_ms`` ``(n,)`` int, ``score`` (Light-ASD
    probability) and ``logodds`` ``(n,)`` float32; ``in_sync`` ``(n,)`` bool is False on frames of a speaking run
    that the SyncNet check vetoed (True where no check ran); ``sync`` lists the checks."""

    track_id: str
    frame_index: np.ndarray
    pts_ms: np.ndarray
    score: np.ndarray
    logodds: np.ndarray
    in_sync: np.ndarray | None = None
    sync: tuple[SyncCheck, ...] = ()

    def speaking(self, threshold: float) -> np.ndarray:
        """``(n,)`` bool: scored at least ``threshold`` by Light-ASD and not vetoed by the sync check."""
        mask = self.score >= threshold
        return mask if self.in_sync is None else mask & self.in_sync


def asd_face(face_crop: np.ndarray) -> np.ndarray:
    """Light-ASD's view of a face crop: grey, resized to 224x224, central 112x112 (uint8)."""
    grey = face_crop if face_crop.ndim == 2 else cv2.cvtColor(face_crop, cv2.COLOR_BGR2GRAY)
    if grey.shape[:2] != (2 * CROP_PX, 2 * CROP_PX):
        grey = cv2.resize(grey, (2 * CROP_PX, 2 * CROP_PX))
    q = CROP_PX // 2
    return grey[q : q + CROP_PX, q : q + CROP_PX]


def grid_25fps(pts_ms: np.ndarray, end_ms: float) -> tuple[np.ndarray, np.ndarray]:
    """40 ms steps from the first frame to ``end_ms``: ``(step_ms (T,), nearest source position (T,))``."""
    pts = np.asarray(pts_ms, np.float64)
    n_steps = int((end_ms - pts[0]) // STEP_MS)
    steps = pts[0] + STEP_MS * np.arange(max(n_steps, 0))
    right = np.clip(np.searchsorted(pts, steps), 0, len(pts) - 1)
    left = np.clip(right - 1, 0, len(pts) - 1)
    nearest = np.where(np.abs(pts[left] - steps) <= np.abs(pts[right] - steps), left, right)
    return steps, nearest


def score_faces(
    net: LightASD,
    faces: np.ndarray,
    feats: np.ndarray,
    *,
    windows_s: Sequence[int] = (1, 2, 3, 4, 5, 6),
    device: str = "cpu",
) -> np.ndarray:
    """Per-step log-odds ``(T,)`` for 25 fps faces ``(T, 112, 112)`` uint8 and MFCC ``(4T, 13)``.

    The encoders run once over the whole track (their output equals the demo's per-window runs except within
    6 frames of a window edge, where the demo zero-pads and this keeps the real context); the GRU back-end then
    runs on windows of each length in ``windows_s`` (the last one shorter), and the log-odds of all window
    lengths are averaged, as in Light-ASD's Columbia demo.
    """
    n = len(faces)
    v = net.embed_visual(torch.from_numpy(np.ascontiguousarray(faces)).to(device))
    a = net.embed_audio(torch.from_numpy(np.ascontiguousarray(feats, dtype=np.float32)).to(device))
    fused = a + v
    out = np.zeros((len(windows_s), n), np.float64)
    for w, d in enumerate(windows_s):
        step = int(d * VIDEO_FPS)
        n_full = n // step
        parts = []
        if n_full:
            parts.append(net.backend_logits(fused[: n_full * step].reshape(n_full, step, -1)).reshape(-1, 2))
        if n % step:
            parts.append(net.backend_logits(fused[n_full * step :][None]).reshape(-1, 2))
        logits = torch.cat(parts).float().cpu().numpy()
        out[w] = logits[:, 1] - logits[:, 0]
    return out.mean(axis=0)


def smooth(x: np.ndarray, frames: int) -> np.ndarray:
    """Centred moving average over ``frames`` (edges average what exists)."""
    if frames <= 1 or len(x) == 0:
        return x
    k = np.ones(frames)
    return np.convolve(x, k, mode="same") / np.convolve(np.ones_like(x), k, mode="same")


def score_track(
    net: LightASD,
    track_id: str,
    frame_index: np.ndarray,
    pts_ms: np.ndarray,
    face_crops: Sequence[np.ndarray],
    audio_path: str | Path,
    *,
    fps: Fraction,
    vcfg: VisionConfig,
    device: str = "cpu",
    sync_net: SyncNetS | None = None,
    sync_crops: Sequence[np.ndarray] | None = None,
) -> tuple[AsdTrack, TrackScores | None]:
    """Score one track's frames (``face_crops`` BGR or grey, in frame order) against the audio.

    With ``sync_net``, every run of speaking 25 fps steps of at least ``vcfg.sync_min_run_ms`` is checked with
    SyncNet (:func:`cinedub.vision.syncnet.av_sync`); a run whose confidence is under
    ``vcfg.sync_min_confidence`` or whose offset exceeds ``vcfg.sync_max_offset_frames`` is vetoed: its frames
    get ``in_sync = False`` and are not speaking, whatever Light-ASD scored. ``sync_crops`` are the BGR crops
    SyncNet sees (default ``face_crops``).

    Returns:
        The track's status and, when scored, its per-frame scores.
    """
    pts = np.asarray(pts_ms, np.int64)
    if len(pts) == 0:
        return AsdTrack(track_id, "no_face"), None
    end_ms = float(pts[-1]) + 1000 / float(fps)
    steps, nearest = grid_25fps(pts, end_ms)
    if len(steps) * STEP_MS < vcfg.asd_min_track_ms:
        return AsdTrack(track_id, "too_short"), None
    t0 = int(round(pts[0]))
    n_steps = len(steps)
    audio, sr = load_audio(audio_path, start_ms=t0, end_ms=t0 + int(n_steps * STEP_MS) + _MFCC_TAIL_MS)
    if audio.ndim > 1:
        audio = audio.mean(axis=1)
    if sr != 16_000:
        raise ValueError(f"{audio_path}: ASD needs 16 kHz audio, got {sr} Hz")
    if len(audio) < 0.5 * n_steps * STEP_MS * sr / 1000:  # the track is mostly past the end of the audio
        return AsdTrack(track_id, "no_audio"), None
    need = n_steps * int(STEP_MS * sr / 1000) + _MFCC_TAIL_MS * sr // 1000
    audio = np.pad(audio, (0, max(0, need - len(audio))))
    feats = mfcc(audio * 32768.0, sr)  # Light-ASD reads int16 PCM: same scale
    n_feat = n_steps * MFCC_HZ // VIDEO_FPS
    feats = np.pad(feats, ((0, max(0, n_feat - len(feats))), (0, 0)), mode="edge")[:n_feat]
    faces = np.stack([asd_face(face_crops[i]) for i in nearest])
    lo = smooth(score_faces(net, faces, feats, windows_s=vcfg.asd_windows_s, device=device), vcfg.asd_smooth_frames)
    k = np.clip(np.round((pts - pts[0]) / STEP_MS).astype(int), 0, n_steps - 1)
    logodds = lo[k].astype(np.float32)
    score = (1 / (1 + np.exp(-logodds))).astype(np.float32)
    step_ok, checks = np.ones(n_steps, bool), ()
    if sync_net is not None:
        crops_25 = [(sync_crops if sync_crops is not None else face_crops)[i] for i in nearest]
        step_ok, checks = sync_veto(sync_net, lo, crops_25, feats, t0, vcfg, device=device)
    scores = TrackScores(track_id, np.asarray(frame_index, np.int64), pts, score, logodds,
                         in_sync=step_ok[k] if sync_net is not None else None, sync=checks)
    speaking = scores.speaking(vcfg.asd_threshold)
    status = AsdTrack(
        track_id, "scored", n_scored=len(pts), mean_score=round(float(score.mean()), 4),
        speaking_fraction=round(float(speaking.mean()), 4),
        sync_vetoed_fraction=round(float(1 - scores.in_sync.mean()), 4) if scores.in_sync is not None else None,
    )
    return status, scores


def speaking_runs(mask: np.ndarray, min_len: int) -> list[tuple[int, int]]:
    """``[start, end)`` index runs of True in ``mask`` (1-D bool) at least ``min_len`` long."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_len]


def sync_veto(
    net: SyncNetS,
    logodds: np.ndarray,
    crops: Sequence[np.ndarray],
    feats: np.ndarray,
    t0_ms: int,
    vcfg: VisionConfig,
    *,
    device: str = "cpu",
) -> tuple[np.ndarray, tuple[SyncCheck, ...]]:
    """Check each speaking run of 25 fps steps with SyncNet.

    Args:
        logodds: ``(T,)`` Light-ASD log-odds per 40 ms step; crops: ``T`` BGR face crops (any square size,
            resized to 224); feats: ``(4T, 13)`` MFCC of the same span; t0_ms: time of step 0 (source ms).

    Returns:
        ``(T,)`` bool, False on the steps of vetoed runs, and one :class:`SyncCheck` per run checked.
    """
    cut = float(np.log(vcfg.asd_threshold / (1 - vcfg.asd_threshold)))
    ok = np.ones(len(logodds), bool)
    checks = []
    for a, b in speaking_runs(logodds >= cut, max(WINDOW_FRAMES + 2, int(vcfg.sync_min_run_ms // STEP_MS))):
        faces = np.stack([_bgr224(crops[i]) for i in range(a, b)])
        res = av_sync(net, faces, feats[4 * a : 4 * b], vshift=vcfg.sync_vshift, device=device)
        if res is None:
            continue
        vetoed = res.confidence < vcfg.sync_min_confidence or abs(res.offset_frames) > vcfg.sync_max_offset_frames
        if vetoed:
            ok[a:b] = False
        checks.append(SyncCheck(int(t0_ms + a * STEP_MS), int(t0_ms + b * STEP_MS), res.offset_frames,
                                round(res.confidence, 3), vetoed))
    return ok, tuple(checks)


def _bgr224(crop: np.ndarray) -> np.ndarray:
    img = cv2.cvtColor(crop, cv2.COLOR_GRAY2BGR) if crop.ndim == 2 else crop
    return img if img.shape[:2] == (SYNC_CROP_PX, SYNC_CROP_PX) else cv2.resize(img, (SYNC_CROP_PX, SYNC_CROP_PX))


def score_tracks(
    net: LightASD,
    frames_path: str | Path,
    tracks: Sequence[FaceTrack],
    audio_path: str | Path,
    *,
    fps: Fraction,
    vcfg: VisionConfig,
    device: str = "cpu",
    sync_net: SyncNetS | None = None,
) -> tuple[list[AsdTrack], list[TrackScores]]:
    """Score every track of a faces Parquet file (crops decoded one track at a time); ``sync_net`` as in
    :func:`score_track`."""
    statuses, scores = [], []
    cols = ["track_id", "frame_index", "pts_ms", "face_crop"]
    for tr in tracks:
        table = pq.read_table(str(frames_path), columns=cols, filters=[("track_id", "=", tr.track_id)])
        table = table.sort_by("frame_index")
        crops = []
        for b in table.column("face_crop").to_pylist():
            try:
                crops.append(decode_image(b, grey=True))
            except (ValueError, TypeError):
                crops.append(None)
        ok = [i for i, c in enumerate(crops) if c is not None]
        if not ok:
            statuses.append(AsdTrack(tr.track_id, "no_face"))
            continue
        # SyncNet sees colour; Light-ASD keeps its own grey decode (a BGR->grey conversion differs slightly)
        colour = [decode_image(b) for b in table.column("face_crop").to_pylist()] if sync_net is not None else None
        fidx = np.asarray(table.column("frame_index").to_pylist())[ok]
        pts = np.asarray(table.column("pts_ms").to_pylist())[ok]
        st, sc = score_track(
            net, tr.track_id, fidx, pts, [crops[i] for i in ok], audio_path, fps=fps, vcfg=vcfg, device=device,
            sync_net=sync_net, sync_crops=[colour[i] for i in ok] if colour is not None else None,
        )
        statuses.append(st)
        if sc is not None:
            scores.append(sc)
    return statuses, scores


def scores_table(scores: Sequence[TrackScores], threshold: float) -> pa.Table:
    """All per-frame scores as one Arrow table (:data:`SCORES_SCHEMA`)."""
    cols: dict[str, list] = {n: [] for n in SCORES_SCHEMA.names}
    for s in scores:
        cols["track_id"] += [s.track_id] * len(s.frame_index)
        cols["frame_index"] += s.frame_index.tolist()
        cols["pts_ms"] += s.pts_ms.tolist()
        cols["score"] += s.score.tolist()
        cols["logodds"] += s.logodds.tolist()
        cols["speaking"] += s.speaking(threshold).tolist()
        cols["in_sync"] += (s.in_sync if s.in_sync is not None else np.ones(len(s.score), bool)).tolist()
        conf: list[float | None] = [None] * len(s.pts_ms)
        offset: list[int | None] = [None] * len(s.pts_ms)
        for c in s.sync:
            for i in np.flatnonzero((s.pts_ms >= c.start_ms) & (s.pts_ms < c.end_ms)):
                conf[i], offset[i] = c.confidence, c.offset_frames
        cols["sync_confidence"] += conf
        cols["sync_offset_frames"] += offset
    return pa.table(cols, schema=SCORES_SCHEMA)


def read_asd_scores(path: str | Path) -> list[AsdScore]:
    """The rows of an ``asd_scores.parquet`` file as :class:`AsdScore` records."""
    cols = ["track_id", "frame_index", "pts_ms", "score", "speaking"]
    return [AsdScore(**r) for r in pq.read_table(str(path), columns=cols).to_pylist()]


def assign_turns(
    turns: Sequence[Turn],
    tracks: Sequence[FaceTrack],
    statuses: Sequence[AsdTrack],
    scores: Sequence[TrackScores],
    *,
    fps: Fraction,
    threshold: float,
    min_speaking_fraction: float,
) -> list[TurnSpeaker]:
    """The speaking face track of each turn, or none with the reason.

    For each track overlapping the turn, count its frames inside ``[start_ms, end_ms)`` scored speaking; the
    track with most is the speaker if that count covers at least ``min_speaking_fraction`` of the turn's frames
    (``duration * fps``). Otherwise the turn is "not_speaking" (faces scored, none speaks: off-screen speaker,
    face turned away, narration), "no_face" (no track overlaps it) or "unscored" (tracks overlap it but none could
    be scored; ``on_screen`` stays None).
    """
    by_id = {s.track_id: s for s in scores}
    status = {s.track_id: s.status for s in statuses}
    out = []
    for turn in turns:
        s_ms, e_ms = turn.start_ms, turn.end_ms
        n_turn = max(1, int(round((e_ms - s_ms) * float(fps) / 1000)))
        overlapping = [t for t in tracks if t.start_ms < e_ms and t.end_ms > s_ms]
        best: tuple[int, float, str] | None = None
        for t in overlapping:
            sc = by_id.get(t.track_id)
            if sc is None:
                continue
            inside = (sc.pts_ms >= s_ms) & (sc.pts_ms < e_ms)
            if not inside.any():
                continue
            n_speak = int(sc.speaking(threshold)[inside].sum())
            cand = (n_speak, float(sc.score[inside].mean()), t.track_id)
            if best is None or cand[:2] > best[:2]:
                best = cand
        speaker_id = getattr(turn, "speaker_id", "") or ""
        if best is not None and best[0] / n_turn >= min_speaking_fraction:
            out.append(TurnSpeaker(s_ms, e_ms, speaker_id, best[2], True, round(best[1], 4), round(best[0] / n_turn, 4), "speaking"))
        elif best is not None:
            out.append(TurnSpeaker(s_ms, e_ms, speaker_id, None, False, round(best[1], 4), round(best[0] / n_turn, 4), "not_speaking"))
        elif not overlapping:
            out.append(TurnSpeaker(s_ms, e_ms, speaker_id, None, False, None, 0.0, "no_face"))
        else:
            reason = "unscored" if all(status.get(t.track_id) != "scored" for t in overlapping) else "no_face"
            out.append(TurnSpeaker(s_ms, e_ms, speaker_id, None, None if reason == "unscored" else False, None, 0.0, reason))
    return out
