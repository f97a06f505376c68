"""Whisper's log-Mel features in blocks, so their memory does not grow with the length of the source.

faster-whisper's ``FeatureExtractor.__call__`` frames, windows and FFTs the whole recording at once: the framed
signal, the complex128 spectrum and its complex64 copy together take about 0.6 MB per second of audio (4 GB for a
2-hour episode) for a result of 32 KB per second. :class:`BlockLogMel` computes the same numbers block by block
(the mel power of each frame only depends on its own 400 samples) and keeps only the ``(80, n_frames)`` result.
"""

from __future__ import annotations

from typing import Any

import numpy as np

BLOCK_FRAMES = 3000  # 30 s of 10 ms frames per block: ~15 MB of temporaries


class BlockLogMel:
    """Drop-in for a faster-whisper ``FeatureExtractor`` (``model.feature_extractor``): the same ``(n_mels,
    n_frames)`` float32 log-Mel spectrogram, computed ``block_frames`` frames at a time; every attribute (hop,
    sampling rate, ``nb_max_frames``...) is the wrapped extractor's.

    The steps are faster-whisper 1.2's ``FeatureExtractor.__call__`` (itself Whisper's ``log_mel_spectrogram``):
    ``padding`` zeros appended, reflect padding of ``n_fft // 2`` each side, Hann window, power spectrum without
    the last frame, mel filter bank, ``log10`` clipped at 1e-10, floor at the maximum minus 8, ``(x + 4) / 4``.

    Args:
        base: the model's ``faster_whisper.feature_extractor.FeatureExtractor``.
        block_frames: frames per block (memory of the temporaries, not the result).
    """

    def __init__(self, base: Any, block_frames: int = BLOCK_FRAMES):
        self._base = base
        self._block = max(1, int(block_frames))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._base, name)

    def __call__(self, waveform: np.ndarray, padding: int = 160, chunk_length: int | None = None) -> np.ndarray:
        """``waveform``: ``(n_samples,)`` 16 kHz mono. Returns ``(n_mels, n_frames)`` float32 (10 ms frames)."""
        base = self._base
        if chunk_length is not None:  # as the wrapped __call__: the window length it decodes with
            base.n_samples = chunk_length * base.sampling_rate
            base.nb_max_frames = base.n_samples // base.hop_length
        wav = np.asarray(waveform, dtype=np.float32)
        if padding:
            wav = np.pad(wav, (0, padding))
        n_fft, hop = base.n_fft, base.hop_length
        window = np.hanning(n_fft + 1)[:-1].astype("float32")
        padded = np.pad(wav, (n_fft // 2, n_fft // 2), mode="reflect")
        n_out = (len(padded) - n_fft) // hop  # all frames but the last, which Whisper drops
        mel = np.empty((base.mel_filters.shape[0], n_out), np.float32)
        for a in range(0, n_out, self._block):
            b = min(n_out, a + self._block)
            spec = base.stft(padded[a * hop : (b - 1) * hop + n_fft], n_fft, hop, window=window, center=False,
                             return_complex=True).astype("complex64")
            mel[:, a:b] = base.mel_filters @ (np.abs(spec) ** 2)
        np.maximum(mel, 1e-10, out=mel)
        np.log10(mel, out=mel)
        if mel.size:
            np.maximum(mel, mel.max() - 8.0, out=mel)
        mel += 4.0
        mel /= 4.0
        return mel
