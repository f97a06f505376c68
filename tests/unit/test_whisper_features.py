"""BlockLogMel: Whisper's log-Mel features block by block equal faster-whisper's own, in a fraction of the memory."""

import tracemalloc

import numpy as np
import pytest
from faster_whisper.feature_extractor import FeatureExtractor

from cinedub.media import load_audio_at
from cinedub.ops.whisper_features import BlockLogMel


@pytest.fixture(scope="module")
def speech(media_dir) -> np.ndarray:
    audio, sr, _ = load_audio_at(media_dir / "asr/jfk.flac", 0, 11_000, 16000)  # 11 s of speech, 44.1 kHz stereo
    assert sr == 16000
    return np.ascontiguousarray(audio.mean(axis=1) if audio.ndim == 2 else audio, dtype=np.float32)


@pytest.mark.parametrize("n_samples", [0, 100, 401, 16000 * 7 + 123, None])
def test_same_features_as_faster_whisper(speech, n_samples):
    wav = speech if n_samples is None else speech[:n_samples]
    ours = BlockLogMel(FeatureExtractor(), block_frames=700)(wav, chunk_length=30)
    theirs = FeatureExtractor()(wav, chunk_length=30)
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype == np.float32
    # the same arithmetic; only the mel matrix product's blocking may move the last bit
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def _peak_bytes(fx, wav: np.ndarray) -> int:
    tracemalloc.start()
    try:
        fx(wav)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_grows_only_with_the_audio_arrays(speech):
    short, long = np.tile(speech, 10), np.tile(speech, 20)  # about 2 and 4 min
    more_audio = long.nbytes - short.nbytes
    block = _peak_bytes(BlockLogMel(FeatureExtractor()), long) - _peak_bytes(BlockLogMel(FeatureExtractor()), short)
    whole = _peak_bytes(FeatureExtractor(), long) - _peak_bytes(FeatureExtractor(), short)
    # blocks: two padded copies of the audio and the result (half the audio's bytes) grow; the temporaries do not.
    # faster-whisper's own: framed signal and spectra, about 16x the audio
    assert block < 3 * more_audio, (block, more_audio)
    assert whole > 8 * more_audio, (whole, more_audio)
