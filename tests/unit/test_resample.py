"""Clip audio at the dataset's one sample rate: a span resampled with context equals the same span of the whole
file resampled at once (no edge ramps), and has exactly the samples its ms edges give."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from cinedub.media import load_audio_at
from cinedub.timebase import ms_to_sample


@pytest.mark.parametrize("rate", [24_000, 16_000, 44_100])
def test_span_matches_whole_file_resampling(media_dir, rate):
    path = media_dir / "asr/jfk.flac"  # 44.1 kHz stereo
    whole, src = sf.read(str(path), dtype="float32")
    ref = resample_poly(whole, rate, src, axis=0) if rate != src else whole
    for start_ms, end_ms in [(0, 2000), (3170, 7411), (9000, 11000)]:
        got, sr, src_sr = load_audio_at(path, start_ms, end_ms, rate)
        assert (sr, src_sr) == (rate, src) and got.shape[1] == 2
        assert len(got) == ms_to_sample(end_ms, rate) - ms_to_sample(start_ms, rate)
        want = ref[ms_to_sample(start_ms, rate): ms_to_sample(start_ms, rate) + len(got)]
        n = min(len(want), len(got))
        # identical away from the file's own end; 50 ms of context leaves only filter-tail differences
        assert np.max(np.abs(got[:n] - want[:n])) < 2e-3, (start_ms, end_ms)
