"""Voice activity detection with Silero VAD v6 as shipped in faster-whisper (``faster_whisper/assets``, ONNX).

No download and no torch: faster-whisper runs the ONNX model through onnxruntime. Silero works on 512-sample
(32 ms) frames at 16 kHz.
"""

from __future__ import annotations

import numpy as np

from cinedub.diarization.config import VadConfig
from cinedub.timebase import sample_to_ms

SAMPLE_RATE_HZ = 16_000


def speech_regions(
    wav: np.ndarray, cfg: VadConfig | None = None, sample_rate_hz: int = SAMPLE_RATE_HZ
) -> list[tuple[int, int]]:
    """Speech regions of a mono 16 kHz recording.

    Args:
        wav: ``(n_samples,)`` float32 in [-1, 1].
        cfg: thresholds (see :class:`~cinedub.diarization.config.VadConfig` for their sources).
        sample_rate_hz: must be 16000 (Silero v6 in faster-whisper supports 16 kHz only).

    Returns:
        Sorted, non-overlapping ``(start_ms, end_ms)`` spans on the recording's timeline.

    Raises:
        ValueError: wrong sample rate or not a 1-D array.
    """
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    if sample_rate_hz != SAMPLE_RATE_HZ:
        raise ValueError(f"Silero VAD needs 16 kHz audio, got {sample_rate_hz} Hz")
    wav = np.asarray(wav, dtype=np.float32)
    if wav.ndim != 1:
        raise ValueError(f"VAD needs mono audio, got shape {wav.shape}")
    if len(wav) == 0:
        return []
    cfg = cfg or VadConfig()
    opts = VadOptions(
        threshold=cfg.threshold,
        min_speech_duration_ms=cfg.min_speech_ms,
        min_silence_duration_ms=cfg.min_silence_ms,
        speech_pad_ms=cfg.speech_pad_ms,
    )
    chunks = get_speech_timestamps(wav, opts, sampling_rate=sample_rate_hz)
    out: list[tuple[int, int]] = []
    for c in chunks:
        start, end = sample_to_ms(int(c["start"]), sample_rate_hz), sample_to_ms(int(c["end"]), sample_rate_hz)
        if out and start <= out[-1][1]:  # padding can make neighbours touch
            out[-1] = (out[-1][0], max(out[-1][1], end))
        elif end > start:
            out.append((start, end))
    return out
