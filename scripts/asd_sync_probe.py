"""Probe how sensitive Light-ASD is to audio-visual synchrony on one source's face tracks.

Usage::

    python scripts/asd_sync_probe.py OUT/.work/<source_id> [--model pretrain_AVA_CVPR.model] [--models-dir DIR]

For every face track of a pipeline work folder (``faces-*/faces.parquet`` + ``mix_16k.flac``) it prints:

- ``speaking``: the share of 25 fps steps that Light-ASD scores speaking (log-odds >= 0) with the aligned audio;
- ``shift_rank``: a SyncNet-style offset test run with Light-ASD itself. For each speaking step whose 40 ms of
  audio is speech (energy above -35 dBFS), the aligned log-odds is compared with the log-odds obtained with the
  audio shifted by +-6..+-50 steps (0.24..2 s), counting only shifts that also land on speech (so that speech
  presence is matched). A face that truly speaks the audio should beat most shifts (rank near 1); a face that
  talks out of sync should not (rank near 0.5);
- ``v_corr``: the Pearson correlation of the visual-only head (``lossV``) log-odds with the audio energy (dB).

It exists to document issue 3's open case (dialogue_5shots shot 5: an off-screen man speaks over a visibly
talking woman). Measured on that footage, neither statistic separates shot 5 from shots 1-4 reliably: both move
with the detector's crop (``det_size`` 320 vs 640) by more than the gap between the classes.
"""

from __future__ import annotations

import argparse
import glob
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from cinedub.media import load_audio
from cinedub.vision.asd import asd_face, grid_25fps, score_faces
from cinedub.vision.landmarks import decode_image
from cinedub.vision.light_asd import load_light_asd, mfcc

STEP = 640  # samples per 40 ms step at 16 kHz
SHIFTS = [s * k for k in range(6, 51, 2) for s in (-1, 1)]
SPEECH_DBFS = -35.0


def _mfcc_at(x: np.ndarray, start: int, n: int) -> np.ndarray:
    seg = x[max(start, 0) : start + n * STEP + 240]
    if start < 0:
        seg = np.pad(seg, (-start, 0))
    seg = np.pad(seg, (0, max(0, n * STEP + 240 - len(seg))))
    return mfcc(seg * 32768.0, 16000)[: 4 * n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("work", type=Path, help="a source's work folder (OUT/.work/<source_id>)")
    ap.add_argument("--models-dir", type=Path, default=Path("../shared/models"))
    ap.add_argument("--model", default="pretrain_AVA_CVPR.model")
    args = ap.parse_args()
    torch.set_num_threads(2)
    net = load_light_asd(args.models_dir / "light-asd" / args.model)
    frames = sorted(glob.glob(str(args.work / "faces-*" / "faces.parquet")))
    if not frames:
        raise SystemExit(f"{args.work}: no faces-*/faces.parquet (run the pipeline with the visual stages first)")
    rows = pq.read_table(frames[-1], columns=["track_id", "frame_index", "pts_ms", "face_crop"]).to_pylist()
    x, _ = load_audio(args.work / "mix_16k.flac")
    n_all = len(x) // STEP
    db = 10 * np.log10((x[: n_all * STEP].reshape(n_all, STEP) ** 2).mean(1) + 1e-12)
    speech = np.convolve(db > SPEECH_DBFS, np.ones(5), "same") >= 3

    def is_speech(i: int) -> bool:
        return 0 <= i < n_all and bool(speech[i])

    tracks: dict[str, list[dict]] = {}
    for r in rows:
        tracks.setdefault(r["track_id"], []).append(r)
    print(f"{'track':<28} {'start_s':>7} {'steps':>5} {'speaking':>8} {'shift_rank':>10} {'v_corr':>7}")
    for tid, rs in tracks.items():
        rs.sort(key=lambda r: r["frame_index"])
        pts = np.array([r["pts_ms"] for r in rs])
        _, nearest = grid_25fps(pts, pts[-1] + 40)
        n = len(nearest)
        if n < 25:
            continue
        faces = np.stack([asd_face(decode_image(rs[i]["face_crop"])) for i in nearest])
        base = int(round(pts[0] / 40))
        with torch.no_grad():
            aligned = score_faces(net, faces, _mfcc_at(x, base * STEP, n))
            shifted = np.stack([score_faces(net, faces, _mfcc_at(x, (base + k) * STEP, n)) for k in SHIFTS])
            v = net.lossV.FC(net.embed_visual(torch.from_numpy(faces))).numpy()
        wins = []
        for t in range(n):
            if aligned[t] < 0 or not is_speech(base + t):
                continue
            ok = [j for j, k in enumerate(SHIFTS) if is_speech(base + t + k)]
            if len(ok) >= 4:
                wins.append(np.mean(aligned[t] > shifted[ok, t]))
        energy = np.pad(db[base : base + n], (0, max(0, n - len(db[base : base + n]))), constant_values=-120)
        v_corr = np.corrcoef(v[:, 1] - v[:, 0], energy)[0, 1]
        rank = f"{np.mean(wins):.2f}" if wins else "n/a"
        print(f"{tid:<28} {pts[0] / 1000:>7.2f} {n:>5} {np.mean(aligned >= 0):>8.2f} {rank:>10} {v_corr:>+7.2f}")


if __name__ == "__main__":
    main()
