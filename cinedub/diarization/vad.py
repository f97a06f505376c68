"""Voice activity detection with Silero VAD v6 as shipped in faster-whisper (``faster_whisper/assets``, ONNX).

No download and no torch: faster-whisper runs the ONNX model through onnxruntime. Silero works on 512-sample
(32 ms) frames at 16 kHz.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from cinedub.diarization.config import VadConfig
from cinedub.timebase import sample_to_ms

if TYPE_CHECKING:
    from faster_whisper.vad import VadOptions

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
    from faster_whisper.vad import VadOptions

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
    chunks = silero_chunks(wav, opts)
    out: list[tuple[int, int]] = []
    for c in chunks:
        start, end = sample_to_ms(int(c["start"]), sample_rate_hz), sample_to_ms(int(c["end"]), sample_rate_hz)
        if out and start <= out[-1][1]:  # padding can make neighbours touch
            out[-1] = (out[-1][0], max(out[-1][1], end))
        elif end > start:
            out.append((start, end))
    return out


VAD_BLOCK_S = 600  # Silero VAD runs on blocks of this much audio (see silero_chunks)


def silero_chunks(wav: np.ndarray, opts: VadOptions, block_s: int = VAD_BLOCK_S) -> list[dict[str, int]]:
    """Silero VAD's speech chunks of ``wav`` (float32 mono 16 kHz), as faster-whisper's ``get_speech_timestamps``
    finds them with ``opts`` (faster-whisper's ``vad_filter`` uses the default ``VadOptions()``), computed
    on blocks of ``block_s`` seconds: that function makes a padded copy and a windowed copy of its whole input, which
    on a 2-hour episode is about 1 GB, and its working memory then stays block-sized.

    Up to ``block_s`` this is exactly ``get_speech_timestamps``'s result. On longer audio a chunk that runs into a
    block's end and one that starts at the next block's start are joined; the VAD's state restarts at each block, so
    the chunks within a few hundred ms of a block edge may differ from a single pass.

    Returns:
        ``[{"start": sample, "end": sample}, ...]`` in order, not overlapping (samples at 16 kHz).
    """
    from faster_whisper.vad import get_speech_timestamps

    block = block_s * SAMPLE_RATE_HZ
    out: list[dict[str, int]] = []
    for b in range(0, len(wav), block):
        for c in get_speech_timestamps(wav[b : b + block], opts, sampling_rate=SAMPLE_RATE_HZ):
            start, end = int(c["start"]) + b, int(c["end"]) + b
            if out and out[-1]["end"] >= b and start <= b:  # one chunk cut by the block edge
                out[-1]["end"] = max(out[-1]["end"], end)
            else:
                out.append({"start": start, "end": end})
    return out
