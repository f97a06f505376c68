"""GE2E speaker d-vectors (Resemblyzer's pretrained encoder) on sliding windows, in plain torch + numpy.

The network and its input features are re-implemented from Resemblyzer 0.1.4 (``resemblyzer/voice_encoder.py``,
``audio.py``, ``hparams.py``; Apache-2.0) and load its ``pretrained.pt`` unchanged. The package itself is not used:
it imports ``pkg_resources`` (needs ``setuptools<81``, older than the project's), builds ``webrtcvad`` from source and
pulls librosa + numba, all for a 40-band mel spectrogram and a 3-layer LSTM.

Model (Wan et al., "Generalized End-to-End Loss for Speaker Verification", ICASSP 2018): 40 mel bands of the
**power** spectrogram (not log) at 16 kHz, 25 ms Hann window (n_fft 400), 10 ms hop -> LSTM(40, 256, 3 layers) ->
last hidden state of the top layer -> Linear(256, 256) -> ReLU -> L2 norm: a 256-d, non-negative, unit d-vector.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from cinedub.errors import ModelNotFoundError

SAMPLE_RATE_HZ = 16_000
N_FFT = 400  # 25 ms at 16 kHz (Resemblyzer mel_window_length)
HOP_SAMPLES = 160  # 10 ms (Resemblyzer mel_window_step)
_MEL_BLOCK_FRAMES = 6000  # 60 s of frames per block of wav_to_mel
N_MELS = 40
EMBED_DIM = 256
TARGET_DBFS = -30.0  # Resemblyzer audio_norm_target_dBFS
_INT16_MAX = 2**15 - 1


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney mel scale (librosa ``hz_to_mel(htk=False)``): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = hz / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    log_part = hz >= min_log_hz
    mel = np.where(log_part, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mel)
    return mel


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(sample_rate_hz: int = SAMPLE_RATE_HZ, n_fft: int = N_FFT, n_mels: int = N_MELS) -> np.ndarray:
    """Triangular Slaney-normalised mel filters, as ``librosa.filters.mel`` defaults (which Resemblyzer uses).

    Returns:
        ``(n_mels, 1 + n_fft // 2)`` float64 weights over the rfft bins, 0 Hz to Nyquist.
    """
    fft_freqs = np.linspace(0.0, sample_rate_hz / 2, 1 + n_fft // 2)
    mel_pts = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(sample_rate_hz / 2), n_mels + 2))
    fdiff = np.diff(mel_pts)
    ramps = mel_pts[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    enorm = 2.0 / (mel_pts[2 : n_mels + 2] - mel_pts[:n_mels])  # Slaney: constant energy per band
    return weights * enorm[:, None]


_MEL_FB = mel_filterbank()
_WINDOW = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann (scipy get_window "hann")


def wav_to_mel(wav: np.ndarray) -> np.ndarray:
    """Mel power spectrogram of a 16 kHz waveform, as Resemblyzer's ``wav_to_mel_spectrogram``.

    Centred frames (``n_fft // 2`` zeros each side, librosa >= 0.10 ``center=True, pad_mode="constant"``), so frame
    ``i`` is centred on sample ``i * 160``.

    Args:
        wav: ``(n_samples,)`` float32 in [-1, 1] at 16 kHz.

    Returns:
        ``(1 + n_samples // 160, 40)`` float32 mel power (not log).
    """
    wav = np.asarray(wav, dtype=np.float32)
    padded = np.pad(wav, (N_FFT // 2, N_FFT // 2))
    n_frames = 1 + (len(padded) - N_FFT) // HOP_SAMPLES
    out = np.empty((n_frames, N_MELS), np.float32)
    # In blocks: the framed signal and its complex spectrum are 10x and 40x the audio, so a whole 2-hour recording
    # at once would take GBs; a block's are a few MB and the result is the same frame by frame.
    for a in range(0, n_frames, _MEL_BLOCK_FRAMES):
        b = min(n_frames, a + _MEL_BLOCK_FRAMES)
        idx = np.arange(N_FFT)[None, :] + HOP_SAMPLES * np.arange(a, b)[:, None]
        power = np.abs(np.fft.rfft(padded[idx] * _WINDOW[None, :], n=N_FFT, axis=1)) ** 2
        out[a:b] = power @ _MEL_FB.T
    return out


def normalize_volume(wav: np.ndarray, target_dbfs: float = TARGET_DBFS, increase_only: bool = True) -> np.ndarray:
    """Scale ``wav`` to ``target_dbfs`` RMS (Resemblyzer ``normalize_volume``; its input is not log-compressed,
    so level matters). With ``increase_only`` a louder signal is left as is."""
    rms = float(np.sqrt(np.mean((wav.astype(np.float64) * _INT16_MAX) ** 2))) if len(wav) else 0.0
    if rms <= 0.0:
        return wav
    change_db = target_dbfs - 20 * np.log10(rms / _INT16_MAX)
    if change_db < 0 and increase_only:
        return wav
    return (wav * (10 ** (change_db / 20))).astype(np.float32)


class GE2EEncoder(nn.Module):
    """Resemblyzer's ``VoiceEncoder`` network: LSTM(40, 256, 3) -> Linear(256, 256) -> ReLU -> L2 norm."""

    def __init__(self) -> None:
        super().__init__()
        self.lstm = nn.LSTM(N_MELS, 256, 3, batch_first=True)
        self.linear = nn.Linear(256, EMBED_DIM)
        self.relu = nn.ReLU()

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        """``(batch, n_frames, 40)`` mel power -> ``(batch, 256)`` unit d-vectors."""
        _, (hidden, _) = self.lstm(mels)
        raw = self.relu(self.linear(hidden[-1]))
        return raw / torch.clamp(torch.norm(raw, dim=1, keepdim=True), min=1e-12)


def load_ge2e(weights_path: str | Path, device: str = "cpu") -> GE2EEncoder:
    """Build :class:`GE2EEncoder` and load Resemblyzer's ``pretrained.pt`` (``{"model_state": ...}``).

    Raises:
        ModelNotFoundError: the file is missing.
        RuntimeError: the file holds a different network (a key or shape mismatch).
    """
    path = Path(weights_path)
    if not path.is_file():
        raise ModelNotFoundError(f"GE2E weights not found: {path} (PyPI Resemblyzer==0.1.4: resemblyzer/pretrained.pt)")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    state = ckpt.get("model_state", ckpt)
    # similarity_weight / similarity_bias belong to the GE2E training loss, not the encoder
    state = {k: v for k, v in state.items() if not k.startswith("similarity_")}
    model = GE2EEncoder()
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


class WindowEmbedder:
    """d-vectors of fixed-length windows of one recording.

    Args:
        weights_path: Resemblyzer ``pretrained.pt``.
        device: torch device.
        batch_size: windows per forward pass.
    """

    def __init__(self, weights_path: str | Path, device: str = "cpu", batch_size: int = 64):
        self.model = load_ge2e(weights_path, device)
        self.device = device
        self.batch_size = batch_size
        self.model_name = f"ge2e:{Path(weights_path).parent.name}"

    @torch.inference_mode()
    def embed_mels(self, mels: list[np.ndarray]) -> np.ndarray:
        """Embed mel windows (each ``(n_frames_i, 40)``); windows of one length are batched together.

        Returns:
            ``(len(mels), 256)`` float32 unit vectors, in input order.
        """
        out = np.zeros((len(mels), EMBED_DIM), dtype=np.float32)
        by_len: dict[int, list[int]] = {}
        for i, m in enumerate(mels):
            by_len.setdefault(len(m), []).append(i)
        for idxs in by_len.values():
            for b in range(0, len(idxs), self.batch_size):
                chunk = idxs[b : b + self.batch_size]
                x = torch.from_numpy(np.stack([mels[i] for i in chunk])).to(self.device)
                out[chunk] = self.model(x).cpu().numpy()
        return out

    def embed_windows(self, wav: np.ndarray, windows_ms: list[tuple[int, int]], *, normalize: bool = True) -> np.ndarray:
        """d-vectors of ``[start_ms, end_ms)`` windows of a 16 kHz recording.

        The mel spectrogram is computed once for the whole (volume-normalised) recording and sliced per window, as
        Resemblyzer's ``embed_utterance`` does for its partials.

        Args:
            wav: ``(n_samples,)`` float32 at 16 kHz.
            windows_ms: spans on the recording's timeline (ms); each at least 30 ms.
            normalize: apply Resemblyzer's -30 dBFS increase-only volume normalisation to the recording first.

        Returns:
            ``(len(windows_ms), 256)`` float32 unit d-vectors.
        """
        if not windows_ms:
            return np.zeros((0, EMBED_DIM), dtype=np.float32)
        if normalize:
            wav = normalize_volume(wav)
        mel = wav_to_mel(wav)
        frame_ms = 1000 * HOP_SAMPLES // SAMPLE_RATE_HZ
        mels = []
        for start_ms, end_ms in windows_ms:
            a = max(0, start_ms // frame_ms)
            b = min(len(mel), max(a + 3, end_ms // frame_ms))
            mels.append(mel[a:b])
        return self.embed_mels(mels)
