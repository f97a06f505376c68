"""Light-ASD (Liao et al., "A Light Weight Model for Active Speaker Detection", CVPR 2023), rebuilt in torch so
that the released checkpoints (``pretrain_AVA_CVPR.model``, ``finetuning_TalkSet.model``) load with
``strict=True``, plus its audio features.

Network (module names are the checkpoint's keys):

- ``model.visualEncoder``: 3 blocks on ``(B, 1, T, 112, 112)`` grey face crops normalised as
  ``(x / 255 - 0.4161) / 0.1688``. A block has two parallel branches, a (1,3,3) spatial conv followed by a (3,1,1)
  temporal conv and a (1,5,5) spatial followed by a (5,1,1) temporal conv (each conv + BatchNorm + ReLU), summed
  and mixed by a 1x1x1 conv; widths 32/64/128. Block 1 downsamples spatially (stride 2), max-pools (1,3,3)/(1,2,2)
  follow blocks 1 and 2, and a global spatial max pool leaves ``(B, T, 128)``.
- ``model.audioEncoder``: the 2-D analogue on MFCC ``(B, 1, 13, 4T)``: (3,1) over coefficients then (1,3) over
  time, and (5,1) then (1,5); max pools (1,3)/(1,2) over time after blocks 1 and 2 bring 100 Hz to 25 Hz; the mean
  over coefficients leaves ``(B, T, 128)``.
- fusion by addition, then ``model.GRU``: a forward GRU, GELU, a GRU over the reversed sequence, reversed back,
  GELU (the paper's bidirectional GRU back-end); ``lossAV.FC`` 128 -> 2 gives not-speaking/speaking logits per
  frame; ``lossV.FC`` is the visual-only auxiliary head used in training.

BatchNorm uses ``eps = 1e-3`` (momentum 0.01) as in the release: the running statistics were learnt with it.

Audio features: :func:`mfcc` reimplements ``python_speech_features.mfcc(audio, 16000, numcep=13, winlen=0.025,
winstep=0.010)`` (v0.6) in numpy/scipy, which Light-ASD's training and demo code call on int16 PCM: 26 mel filters,
512-point FFT, pre-emphasis 0.97, rectangular window, lifter 22, c0 replaced by the log frame energy. The kaldi
MFCC of ``torchaudio.compliance.kaldi`` differs (povey window, dither, energy floor, different mel warping), so it
is not used: the network was trained on the former.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from scipy.fftpack import dct
from torch import nn

VISUAL_MEAN = 0.4161  # grey-level normalisation of Light-ASD's visual front-end
VISUAL_STD = 0.1688
CROP_PX = 112  # the network sees the central 112x112 of a 224x224 face crop
VIDEO_FPS = 25  # Light-ASD's frame rate; 4 MFCC frames (100 Hz) per video frame
_VISUAL_CONTEXT = 8  # frames of context kept around a chunk (receptive field +-6)
MFCC_HZ = 100
AUDIO_RATE_HZ = 16_000


def _bn3(c: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(c, momentum=0.01, eps=0.001)


def _bn2(c: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(c, momentum=0.01, eps=0.001)


class VisualBlock(nn.Module):
    """Parallel (1,k,k) spatial -> (k,1,1) temporal branches for k = 3 and 5, summed, then a 1x1x1 conv."""

    def __init__(self, cin: int, cout: int, downsample: bool = False):
        super().__init__()
        st = (1, 2, 2) if downsample else (1, 1, 1)
        self.s_3 = nn.Conv3d(cin, cout, (1, 3, 3), stride=st, padding=(0, 1, 1), bias=False)
        self.bn_s_3 = _bn3(cout)
        self.t_3 = nn.Conv3d(cout, cout, (3, 1, 1), padding=(1, 0, 0), bias=False)
        self.bn_t_3 = _bn3(cout)
        self.s_5 = nn.Conv3d(cin, cout, (1, 5, 5), stride=st, padding=(0, 2, 2), bias=False)
        self.bn_s_5 = _bn3(cout)
        self.t_5 = nn.Conv3d(cout, cout, (5, 1, 1), padding=(2, 0, 0), bias=False)
        self.bn_t_5 = _bn3(cout)
        self.last = nn.Conv3d(cout, cout, (1, 1, 1), bias=False)
        self.bn_last = _bn3(cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.relu
        b3 = r(self.bn_t_3(self.t_3(r(self.bn_s_3(self.s_3(x))))))
        b5 = r(self.bn_t_5(self.t_5(r(self.bn_s_5(self.s_5(x))))))
        return r(self.bn_last(self.last(b3 + b5)))


class AudioBlock(nn.Module):
    """2-D analogue of :class:`VisualBlock` on (MFCC, time): (k,1) then (1,k) for k = 3 and 5, summed, 1x1."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.m_3 = nn.Conv2d(cin, cout, (3, 1), padding=(1, 0), bias=False)
        self.bn_m_3 = _bn2(cout)
        self.t_3 = nn.Conv2d(cout, cout, (1, 3), padding=(0, 1), bias=False)
        self.bn_t_3 = _bn2(cout)
        self.m_5 = nn.Conv2d(cin, cout, (5, 1), padding=(2, 0), bias=False)
        self.bn_m_5 = _bn2(cout)
        self.t_5 = nn.Conv2d(cout, cout, (1, 5), padding=(0, 2), bias=False)
        self.bn_t_5 = _bn2(cout)
        self.last = nn.Conv2d(cout, cout, (1, 1), bias=False)
        self.bn_last = _bn2(cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.relu
        b3 = r(self.bn_t_3(self.t_3(r(self.bn_m_3(self.m_3(x))))))
        b5 = r(self.bn_t_5(self.t_5(r(self.bn_m_5(self.m_5(x))))))
        return r(self.bn_last(self.last(b3 + b5)))


class VisualEncoder(nn.Module):
    """``(B, 1, T, 112, 112)`` normalised grey crops -> ``(B, T, 128)``."""

    def __init__(self):
        super().__init__()
        self.block1 = VisualBlock(1, 32, downsample=True)
        self.pool1 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.block2 = VisualBlock(32, 64)
        self.pool2 = nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.block3 = VisualBlock(64, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.pool2(self.block2(self.pool1(self.block1(x)))))
        return x.amax(dim=(3, 4)).transpose(1, 2)  # global spatial max per frame


class AudioEncoder(nn.Module):
    """``(B, 1, 13, 4T)`` MFCC -> ``(B, T, 128)``."""

    def __init__(self):
        super().__init__()
        self.block1 = AudioBlock(1, 32)
        self.pool1 = nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1))
        self.block2 = AudioBlock(32, 64)
        self.pool2 = nn.MaxPool2d((1, 3), stride=(1, 2), padding=(0, 1))
        self.block3 = AudioBlock(64, 128)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block3(self.pool2(self.block2(self.pool1(self.block1(x)))))
        return x.mean(dim=2).transpose(1, 2)  # average over MFCC coefficients


class BiGRU(nn.Module):
    """Forward GRU, GELU, GRU over the reversed sequence (reversed back), GELU: ``(B, T, C) -> (B, T, C)``."""

    def __init__(self, channels: int = 128):
        super().__init__()
        self.gru_forward = nn.GRU(channels, channels, num_layers=1, batch_first=True)
        self.gru_backward = nn.GRU(channels, channels, num_layers=1, batch_first=True)
        self.gelu = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.gelu(self.gru_forward(x)[0])
        x = torch.flip(self.gru_backward(torch.flip(x, dims=[1]))[0], dims=[1])
        return self.gelu(x)


class ASDNet(nn.Module):
    """Encoders + fusion + back-end (the checkpoint's ``model.*``)."""

    def __init__(self):
        super().__init__()
        self.visualEncoder = VisualEncoder()  # noqa: N815 - checkpoint key names
        self.audioEncoder = AudioEncoder()  # noqa: N815
        self.GRU = BiGRU(128)  # noqa: N815

    def forward(self, mfcc_feats: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """``mfcc_feats (B, 4T, 13)`` float, ``faces (B, T, 112, 112)`` uint8/float 0..255 -> ``(B, T, 128)``."""
        v = (faces.float().unsqueeze(1) / 255.0 - VISUAL_MEAN) / VISUAL_STD
        a = mfcc_feats.float().unsqueeze(1).transpose(2, 3)
        return self.GRU(self.audioEncoder(a) + self.visualEncoder(v))


class _Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.FC = nn.Linear(128, 2)  # noqa: N815


class LightASD(nn.Module):
    """The released checkpoint's layout: ``model`` (:class:`ASDNet`), ``lossAV.FC`` and ``lossV.FC``."""

    def __init__(self):
        super().__init__()
        self.model = ASDNet()
        self.lossAV = _Head()  # noqa: N815
        self.lossV = _Head()  # noqa: N815
        self._fast_visual = None

    def optimize_for_cpu(self) -> "LightASD":
        """Compile the visual encoder for CPU inference (TorchScript trace, frozen, then
        ``torch.jit.optimize_for_inference``: BatchNorm folded into the convolutions, oneDNN kernels). The visual
        encoder is about 90 % of Light-ASD's compute; this makes it 2-4x faster on CPU, with outputs equal to the
        eager network within 1e-5 (float reassociation). Costs a few seconds once per worker. Eval mode only."""
        import warnings

        example = torch.zeros(1, 1, 16, CROP_PX, CROP_PX)
        with torch.no_grad(), warnings.catch_warnings():
            # deprecated in favour of torch.compile, which needs a C++ toolchain at run time; still supported
            warnings.filterwarnings("ignore", message=".*torch.jit.*deprecated.*", category=DeprecationWarning)
            traced = torch.jit.trace(self.model.visualEncoder.eval(), example)
            self._fast_visual = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
        return self

    @torch.no_grad()
    def embed_visual(self, faces: torch.Tensor, chunk: int = 128) -> torch.Tensor:
        """Visual embeddings ``(T, 128)`` of one track's faces ``(T, 112, 112)`` (0..255).

        Computed in chunks of ``chunk`` frames with a margin of :data:`_VISUAL_CONTEXT` frames on each side, which
        covers the encoder's temporal receptive field (three blocks with (5,1,1) convs: +-6 frames), so the result
        equals one pass over the whole track while memory stays bounded.
        """
        n, out = faces.shape[0], []
        encoder = self._fast_visual or self.model.visualEncoder
        for s in range(0, n, chunk):
            lo, hi = max(0, s - _VISUAL_CONTEXT), min(n, s + chunk + _VISUAL_CONTEXT)
            v = (faces[lo:hi].float() / 255.0 - VISUAL_MEAN) / VISUAL_STD
            emb = encoder(v[None, None])[0]
            out.append(emb[s - lo : s - lo + min(chunk, n - s)])
        return torch.cat(out)

    @torch.no_grad()
    def embed_audio(self, mfcc_feats: torch.Tensor) -> torch.Tensor:
        """Audio embeddings ``(T, 128)`` of one track's MFCC ``(4T, 13)``."""
        return self.model.audioEncoder(mfcc_feats.float()[None, None].transpose(2, 3))[0]

    @torch.no_grad()
    def backend_logits(self, fused: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, 2)`` from fused (audio + visual) embeddings ``(B, T, 128)`` (GRU back-end + FC)."""
        return self.lossAV.FC(self.model.GRU(fused))

    @torch.no_grad()
    def logits(self, mfcc_feats: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        """Per-frame logits ``(B, T, 2)`` (index 1 = speaking) for ``mfcc (B, 4T, 13)`` and ``faces (B, T, 112, 112)``.

        Raises:
            ValueError: the audio is not 4x the video length.
        """
        if mfcc_feats.shape[1] != 4 * faces.shape[1]:
            raise ValueError(f"need 4 MFCC frames per video frame, got {mfcc_feats.shape[1]} for {faces.shape[1]}")
        return self.lossAV.FC(self.model(mfcc_feats, faces))


def load_light_asd(path: str | Path, device: str = "cpu", *, optimize: bool = False) -> LightASD:
    """Load a Light-ASD checkpoint (a plain state_dict) with ``strict=True``, in eval mode on ``device``.

    Args:
        optimize: on CPU, compile the visual encoder for inference (:meth:`LightASD.optimize_for_cpu`).

    Raises:
        FileNotFoundError: missing file. RuntimeError: keys or shapes differ from the rebuilt network.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Light-ASD checkpoint not found: {path}")
    state = torch.load(str(path), map_location="cpu", weights_only=True)
    net = LightASD()
    net.load_state_dict(state, strict=True)
    net = net.to(device).eval()
    if optimize and str(device) == "cpu":
        net.optimize_for_cpu()
    return net


# --- audio features ---------------------------------------------------------------------------------------------


def _hz2mel(hz):
    return 2595 * np.log10(1 + np.asarray(hz) / 700.0)


def _mel2hz(mel):
    return 700 * (10 ** (np.asarray(mel) / 2595.0) - 1)


def _filterbank(nfilt: int, nfft: int, rate: int) -> np.ndarray:
    """Triangular mel filters ``(nfilt, nfft // 2 + 1)`` on FFT bins, python_speech_features' construction."""
    mel = np.linspace(_hz2mel(0), _hz2mel(rate / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(mel) / rate)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = bins[j], bins[j + 1], bins[j + 2]
        for i in range(int(lo), int(mid)):
            fb[j, i] = (i - lo) / (mid - lo)
        for i in range(int(mid), int(hi)):
            fb[j, i] = (hi - i) / (hi - mid)
    return fb


_FB_CACHE: dict[tuple[int, int, int], np.ndarray] = {}


def mfcc(
    signal: np.ndarray,
    rate: int = AUDIO_RATE_HZ,
    *,
    win_s: float = 0.025,
    step_s: float = 0.010,
    numcep: int = 13,
    nfilt: int = 26,
    nfft: int = 512,
    preemph: float = 0.97,
    ceplifter: int = 22,
) -> np.ndarray:
    """MFCC as ``python_speech_features.mfcc`` v0.6 computes them: ``(n_frames, numcep)`` float64 at 100 Hz.

    Args:
        signal: mono samples **on the int16 scale** (Light-ASD reads 16-bit WAV without normalising; c0 is the log
            energy, so the scale matters). Float input in [-1, 1] must be multiplied by 32768 first.
        rate: sample rate (Hz).

    ``n_frames = 1 + ceil((len - win) / step)`` (the last frame zero-padded).
    """
    sig = np.asarray(signal, np.float64).ravel()
    sig = np.append(sig[:1], sig[1:] - preemph * sig[:-1]) if len(sig) else sig
    flen, fstep = int(math.floor(win_s * rate + 0.5)), int(math.floor(step_s * rate + 0.5))
    n = 1 if len(sig) <= flen else 1 + int(math.ceil((len(sig) - flen) / fstep))
    sig = np.concatenate([sig, np.zeros((n - 1) * fstep + flen - len(sig))])
    idx = np.arange(flen)[None, :] + fstep * np.arange(n)[:, None]
    frames = sig[idx]
    pspec = np.abs(np.fft.rfft(frames, nfft)) ** 2 / nfft
    energy = pspec.sum(axis=1)
    energy = np.where(energy == 0, np.finfo(float).eps, energy)
    key = (nfilt, nfft, rate)
    if key not in _FB_CACHE:
        _FB_CACHE[key] = _filterbank(nfilt, nfft, rate)
    feat = pspec @ _FB_CACHE[key].T
    feat = np.where(feat == 0, np.finfo(float).eps, feat)
    feat = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :numcep]
    if ceplifter > 0:
        feat = feat * (1 + (ceplifter / 2.0) * np.sin(np.pi * np.arange(numcep) / ceplifter))
    feat[:, 0] = np.log(energy)
    return feat
