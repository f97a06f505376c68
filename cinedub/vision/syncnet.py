"""SyncNet audio-visual synchrony check: does this face say this audio, and at what offset?

Chung & Zisserman, "Out of time: automated lip sync in the wild" (ACCV workshops 2016). The network is rebuilt
from the reference implementation (joonson/syncnet_python, ``SyncNetModel.S``) with its module names, so the
released ``syncnet_v2.model`` state_dict loads by name with ``strict=True``. The evaluation follows that
repository's ``SyncNetInstance.evaluate``:

- video: face crops of 224x224 BGR (the same TalkNet/Light-ASD crop geometry CineDub stores), 25 fps, in
  windows of 5 frames; audio: 13-dim MFCC at 100 Hz of int16-scaled 16 kHz PCM, 20 MFCC frames per window;
- both streams are embedded (1024-d), and for every frame the Euclidean distance to the audio embedding of the
  frames ``-vshift..+vshift`` away is computed; the mean over frames gives a distance per offset;
- ``offset`` is the offset of the smallest mean distance, in frames (the reference's sign: positive when the
  audio leads the lips); ``confidence`` is ``median - min`` of the mean distances (the "LSE-C" of Prajwal et al., Wav2Lip,
  ACM MM 2020). A face that speaks the audio has a clear minimum (real talking heads score about 6-8); a face
  that talks over someone else's voice, or a still face, has a flat curve (about 0-2).

Why here: Light-ASD's released weights are not sensitive to synchrony (see :mod:`cinedub.vision.asd`), so a
visibly talking face over an off-screen voice scores "speaking". The ASD stage uses this check to veto such
runs when SyncNet weights are in the model directory. No SyncNet weights exist on the development machines:
the loading path is tested with random weights, the thresholds come from the literature above, not from
measurement here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

WINDOW_FRAMES = 5  # video frames per SyncNet window
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps video
CROP_PX = 224


class SyncNetS(nn.Module):
    """SyncNet's two-stream network (``SyncNetModel.S``): ``netcnnaud``/``netfcaud`` embed MFCC windows
    ``(B, 1, 13, 20)``, ``netcnnlip``/``netfclip`` embed video windows ``(B, 3, 5, 224, 224)`` (0..255 floats);
    both give ``(B, 1024)``."""

    def __init__(self, embed_dim: int = 1024):
        super().__init__()
        self.netcnnaud = nn.Sequential(
            nn.Conv2d(1, 64, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(1, 1), stride=(1, 1)),
            nn.Conv2d(64, 192, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1)),
            nn.BatchNorm2d(192),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(1, 2)),
            nn.Conv2d(192, 384, kernel_size=(3, 3), padding=(1, 1)),
            nn.BatchNorm2d(384),
            nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, kernel_size=(3, 3), padding=(1, 1)),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=(3, 3), padding=(1, 1)),
            nn.BatchNorm2d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=(3, 3), stride=(2, 2)),
            nn.Conv2d(256, 512, kernel_size=(5, 4), padding=(0, 0)),
            nn.BatchNorm2d(512),
            nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim)
        )
        self.netfclip = nn.Sequential(
            nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim)
        )
        self.netcnnlip = nn.Sequential(
            nn.Conv3d(3, 96, kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=0),
            nn.BatchNorm3d(96),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(96, 256, kernel_size=(1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.Conv3d(256, 256, kernel_size=(1, 3, 3), padding=(0, 1, 1)),
            nn.BatchNorm3d(256),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2)),
            nn.Conv3d(256, 512, kernel_size=(1, 6, 6), padding=0),
            nn.BatchNorm3d(512),
            nn.ReLU(inplace=True),
        )

    @torch.no_grad()
    def embed_audio(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, 13, 20)`` MFCC windows -> ``(B, 1024)``."""
        return self.netfcaud(self.netcnnaud(x).flatten(1))

    @torch.no_grad()
    def embed_lips(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 5, 224, 224)`` BGR windows (0..255) -> ``(B, 1024)``."""
        return self.netfclip(self.netcnnlip(x).flatten(1))


def load_syncnet(path: str | Path, device: str = "cpu") -> SyncNetS:
    """Load ``syncnet_v2.model`` (a state_dict, or a pickled module's state) strictly by name, in eval mode.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        RuntimeError: the checkpoint's keys or shapes do not match :class:`SyncNetS`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SyncNet weights not found: {path}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("__S__."): v for k, v in state.items()}
    net = SyncNetS()
    net.load_state_dict(state, strict=True)
    return net.eval().to(device)


@dataclass(frozen=True)
class SyncResult:
    """SyncNet's verdict on one span of one face track.

    Attributes:
        offset_frames: audio offset with the smallest mean distance, in 25 fps frames (the reference's sign:
            positive when the audio leads the lips).
        confidence: ``median - min`` of the mean distances over offsets (LSE-C); higher is more certain.
        min_dist: the smallest mean distance (LSE-D).
        n_windows: 5-frame windows compared.
    """

    offset_frames: int
    confidence: float
    min_dist: float
    n_windows: int


def av_sync(
    net: SyncNetS,
    faces_bgr: np.ndarray,
    mfcc_feats: np.ndarray,
    *,
    vshift: int = 15,
    batch: int = 32,
    device: str = "cpu",
) -> SyncResult | None:
    """Offset and confidence of ``faces_bgr`` ``(T, 224, 224, 3)`` uint8 at 25 fps against ``mfcc_feats``
    ``(4T, 13)`` (100 Hz, int16 scale); None when ``T`` is under :data:`WINDOW_FRAMES` + 1.

    ``vshift`` is the largest offset searched, in frames (the reference uses 15 = 600 ms).
    """
    n = min(len(faces_bgr), len(mfcc_feats) // MFCC_PER_FRAME)
    last = n - WINDOW_FRAMES
    if last < 1:
        return None
    video = torch.from_numpy(np.ascontiguousarray(faces_bgr[:n])).to(device).float().permute(3, 0, 1, 2)  # C,T,H,W
    audio = torch.from_numpy(np.ascontiguousarray(mfcc_feats[: 4 * n].T, dtype=np.float32)).to(device)  # 13, 4T
    im_feat, cc_feat = [], []
    for s in range(0, last, batch):
        idx = range(s, min(last, s + batch))
        im_feat.append(net.embed_lips(torch.stack([video[:, i : i + WINDOW_FRAMES] for i in idx])))
        cc_feat.append(net.embed_audio(torch.stack([audio[None, :, 4 * i : 4 * i + 20] for i in idx])))
    im = torch.cat(im_feat).cpu()
    cc = torch.cat(cc_feat).cpu()
    padded = torch.nn.functional.pad(cc, (0, 0, vshift, vshift))
    win = 2 * vshift + 1
    dists = torch.stack([torch.nn.functional.pairwise_distance(im[[i]].repeat(win, 1), padded[i : i + win])
                         for i in range(len(im))])  # (windows, offsets)
    mdist = dists.mean(0)
    min_dist, min_idx = torch.min(mdist, 0)
    return SyncResult(
        offset_frames=int(vshift - min_idx),
        confidence=float(torch.median(mdist) - min_dist),
        min_dist=float(min_dist),
        n_windows=len(im),
    )
