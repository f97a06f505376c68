"""Audio-visual synchrony of a face track with the audio, from the lip landmarks the faces stage stores.

Method (after Hershey & Movellan 2000, "Audio Vision: Using Audio-Visual Synchrony to Locate Sounds", NIPS 12):
synchrony is the mutual information of a visual and an audio feature under a joint Gaussian model over a window,
``I = -1/2 log(1 - r^2)``, a monotone function of their Pearson correlation ``r``; so ``r`` is what is measured.

- Visual feature: **lip-contour motion energy**, the mean speed of the 40 FaceMesh lip points after removing the
  contour's centroid (head motion) and dividing by the mouth width (scale), in mouth widths per second. Speech
  moves the lips; a still or smiling listener does not move them in time with the voice.
- Audio feature: **log energy of the F2 band** (800-2200 Hz, 20 ms windows every 10 ms), whose envelope correlates
  best with lip kinematics (Grant & Seitz 2000, "The use of visible speech cues for improving auditory detection
  of spoken sentences", JASA 108(3)).
- ``r`` is maximised over lags within ``+-sync_max_lag_ms`` (edited footage is not always in sync) and calibrated
  against the same correlation at far lags (``sync_null_min_lag_ms``..``sync_null_max_lag_ms``, both signs): the
  signals out of sync are the null, as SyncNet's confidence compares the best offset with the median one (Chung &
  Zisserman 2016, "Out of time: automated lip sync in the wild"). The score is ``z = (r_best - mean_null) / sd_null``.

Measured on the shared dev set (twoshot_dev, grp_*, react_*, dialogue_5shots: 36 turn x face pairs): ROC AUC 0.81
for "this face speaks this turn" (Light-ASD alone 0.90; z of speaking faces 2.7 +- 1.2, of the others 1.3 +- 0.9),
and it picks the heard face in both turns of twoshot_dev's two-talking-faces shot, where Light-ASD scores both faces
speaking. The feature was chosen on those pairs among mouth opening, inner/outer lip aperture speed and mouth-crop
pixel motion, against wide-band, 300-3000 Hz and F2-band energy: mouth opening against the envelope scored AUC
0.44-0.68 (``scripts/asd_sync_probe.py`` tells the same story), lip-contour speed 0.78-0.84. It does **not**
separate dialogue_5shots shot 5 (an off-screen voice over a talking woman: z 0.5-1.6, like the weakest real
speaker), and listeners who laugh with the speech can score high (grp_1e), so it is one cue among others.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from cinedub.media import load_audio
from cinedub.ops.av_config import AvConfig

ENERGY_HOP_MS = 10  # audio feature rate: 100 Hz, twice the bandwidth of lip motion at 25-60 fps
_FLOOR_DB = 50.0  # log energy is floored this far below its 95th percentile (silence carries no timing)


@dataclass(frozen=True)
class Envelope:
    """Band log energy (dB) of the audio on the source timeline: ``t_ms`` ``(m,)`` window centres, ``db`` ``(m,)``."""

    t_ms: np.ndarray
    db: np.ndarray


@dataclass(frozen=True)
class SyncScore:
    """Synchrony of one face track with the audio over one window.

    Attributes:
        r: best Pearson correlation of lip motion with the band log energy within the lag range.
        lag_ms: the lag of ``r`` (positive: the audio comes after the lips).
        z: ``r`` in standard deviations of the far-lag (out of sync) correlations above their mean.
        n_frames: frames with landmarks in the window.
    """

    r: float
    lag_ms: int
    z: float
    n_frames: int


def lip_motion(lip_xy: np.ndarray, pts_ms: np.ndarray) -> np.ndarray:
    """Lip-contour motion energy per frame.

    Args:
        lip_xy: ``(n, 40, 2)`` float lip points (px; FaceMesh order of :data:`cinedub.vision.landmarks.LIP_INDICES`:
            outer contour from the left corner, then inner), NaN rows where FaceMesh found no face.
        pts_ms: ``(n,)`` frame times (ms, increasing).

    Returns:
        ``(n,)`` float64: mean speed of the centred, width-normalised points (mouth widths per second), NaN next to
        frames without landmarks.
    """
    p = np.asarray(lip_xy, np.float64)
    if p.ndim != 3 or len(p) < 2:
        return np.full(len(p), np.nan)
    width = np.linalg.norm(p[:, 0] - p[:, 10], axis=1)  # outer mouth corners (FaceMesh 61 and 291)
    width = np.where(width > 1e-3, width, np.nan)
    shape = (p - p.mean(axis=1, keepdims=True)) / width[:, None, None]
    t_s = np.asarray(pts_ms, np.float64) / 1000.0
    vel = np.gradient(shape, t_s, axis=0)
    return np.linalg.norm(vel, axis=2).mean(axis=1)


def band_envelope(audio_path: str | Path, start_ms: int, end_ms: int, band_hz: tuple[float, float]) -> Envelope:
    """Log energy (dB) of ``band_hz`` in 20 ms Hann windows every 10 ms over ``[start_ms, end_ms)`` of a mono
    16 kHz file: the power spectrum's bins inside the band, summed (a short-time band-pass with no phase delay).

    Only that span is read (memory is bounded by the span, not the film).

    Raises:
        ValueError: the file is not 16 kHz, or the band does not fit under its Nyquist frequency.
    """
    start_ms = max(0, int(start_ms))
    x, sr = load_audio(audio_path, start_ms=start_ms, end_ms=int(end_ms))
    if sr != 16_000:
        raise ValueError(f"{audio_path}: synchrony needs 16 kHz audio, got {sr} Hz")
    lo, hi = band_hz
    if not 0 < lo < hi < sr / 2:
        raise ValueError(f"{audio_path}: synchrony band {band_hz} Hz must lie in (0, {sr / 2})")
    if x.ndim > 1:
        x = x.mean(axis=1)
    hop, win = sr * ENERGY_HOP_MS // 1000, 2 * sr * ENERGY_HOP_MS // 1000
    n = (len(x) - win) // hop + 1
    if n < 4:
        return Envelope(np.zeros(0), np.zeros(0))
    frames = np.lib.stride_tricks.sliding_window_view(x.astype(np.float64), win)[::hop][:n] * np.hanning(win)
    freqs = np.fft.rfftfreq(win, 1 / sr)
    band = (freqs >= lo) & (freqs <= hi)
    power = (np.abs(np.fft.rfft(frames, axis=1)[:, band]) ** 2).sum(axis=1)
    db = 10 * np.log10(power + 1e-12)
    db = np.maximum(db, np.percentile(db, 95) - _FLOOR_DB)
    t_ms = start_ms + ENERGY_HOP_MS * np.arange(n) + ENERGY_HOP_MS  # window centres
    return Envelope(t_ms.astype(np.float64), db)


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``a`` ``(n,)`` with each row of ``b`` ``(k, n)``; 0 where a side is constant."""
    a = a - a.mean()
    b = b - b.mean(axis=1, keepdims=True)
    den = np.sqrt((a * a).sum() * (b * b).sum(axis=1))
    return np.divide((b * a).sum(axis=1), den, out=np.zeros(len(b)), where=den > 1e-12)


def window_sync(
    motion: np.ndarray, pts_ms: np.ndarray, frame_ms: float, env: Envelope, start_ms: int, end_ms: int, cfg: AvConfig
) -> SyncScore | None:
    """Synchrony of a track's lip motion with ``env`` over the track frames in ``[start_ms, end_ms)``.

    Args:
        motion / pts_ms: ``(n,)`` :func:`lip_motion` and frame times of the whole track.
        frame_ms: one frame's duration (the audio under a frame is taken at its middle, ``pts + frame_ms / 2``).
        env: envelope covering the window plus the null lags.

    Returns:
        The score, or None when fewer than ``cfg.sync_min_frames`` frames have landmarks or the audio is constant.
    """
    inside = (pts_ms >= start_ms) & (pts_ms < end_ms) & np.isfinite(motion)
    if inside.sum() < cfg.sync_min_frames or len(env.t_ms) < 4:
        return None
    a, t = motion[inside], pts_ms[inside].astype(np.float64) + frame_ms / 2
    step = frame_ms
    near = np.arange(-int(cfg.sync_max_lag_ms // step), int(cfg.sync_max_lag_ms // step) + 1) * step
    far_k = np.arange(int(np.ceil(cfg.sync_null_min_lag_ms / step)), int(cfg.sync_null_max_lag_ms // step) + 1)
    far = np.concatenate([-far_k[::-1], far_k]) * step
    lags = np.concatenate([near, far])
    b = np.interp((t[None, :] + lags[:, None]).ravel(), env.t_ms, env.db).reshape(len(lags), len(t))
    r = _pearson_rows(a, b)
    if not np.any(r):
        return None
    r_near, r_far = r[: len(near)], r[len(near) :]
    i = int(np.argmax(r_near))
    sd = max(float(r_far.std()), 0.05) if len(r_far) else 0.2  # floor: a flat null must not blow z up
    z = (float(r_near[i]) - float(r_far.mean() if len(r_far) else 0.0)) / sd
    return SyncScore(round(float(r_near[i]), 4), int(round(near[i])), round(z, 3), int(inside.sum()))


def read_lips(frames_path: str | Path, track_ids: Iterable[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``track_id -> (pts_ms (n,) int64, lip_xy (n, 40, 2) float64 with NaN rows)`` from a faces Parquet file."""
    ids = sorted(set(track_ids))
    if not ids:
        return {}
    table = pq.read_table(str(frames_path), columns=["track_id", "pts_ms", "lip_xy"], filters=[("track_id", "in", ids)])
    out: dict[str, tuple[list, list]] = {}
    for tid, pts, lips in zip(*(table.column(c).to_pylist() for c in ("track_id", "pts_ms", "lip_xy"))):
        row = np.asarray(lips, np.float64).reshape(-1, 2) if lips else np.empty((0, 2))
        out.setdefault(tid, ([], []))
        out[tid][0].append(pts)
        out[tid][1].append(row if len(row) == 40 else np.full((40, 2), np.nan))
    res = {}
    for tid, (pts, lips) in out.items():
        order = np.argsort(pts, kind="stable")
        res[tid] = (np.asarray(pts, np.int64)[order], np.stack(lips)[order])
    return res


def track_sync(
    frames_path: str | Path,
    audio_path: str | Path,
    windows: dict[str, Sequence[tuple[int, int]]],
    *,
    fps: float,
    cfg: AvConfig,
) -> dict[tuple[str, int, int], SyncScore]:
    """Synchrony of each track with the audio over each of its windows.

    Args:
        frames_path: faces Parquet (``track_id``, ``pts_ms``, ``lip_xy``).
        audio_path: mono 16 kHz audio on the source timeline.
        windows: ``track_id -> [(start_ms, end_ms), ...]`` (e.g. the turns during which the track is visible).
        fps: the source's frame rate (frame duration for the lag grid and the audio under each frame).

    Returns:
        ``(track_id, start_ms, end_ms) -> SyncScore`` for the windows that could be scored.
    """
    lips = read_lips(frames_path, [t for t, w in windows.items() if w])
    frame_ms = 1000.0 / fps
    pad = cfg.sync_null_max_lag_ms + cfg.sync_max_lag_ms + 2 * frame_ms
    out: dict[tuple[str, int, int], SyncScore] = {}
    for tid, spans in windows.items():
        if tid not in lips or not spans:
            continue
        pts, xy = lips[tid]
        motion = lip_motion(xy, pts)
        lo, hi = min(s for s, _ in spans), max(e for _, e in spans)
        env = band_envelope(audio_path, int(lo - pad), int(hi + pad), cfg.sync_band_hz)
        for s, e in spans:
            score = window_sync(motion, pts, frame_ms, env, s, e, cfg)
            if score is not None:
                out[(tid, s, e)] = score
    return out
