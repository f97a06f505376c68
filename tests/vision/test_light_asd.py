"""Light-ASD rebuilt from the paper: the real checkpoints load strictly, features match the reference MFCC."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from cinedub.vision.light_asd import LightASD, load_light_asd, mfcc

# python_speech_features 0.6: mfcc(x[:8000], 16000, numcep=13, winlen=0.025, winstep=0.010) on the int16 samples of
# asr/aishell-BAC009S0724W0121.wav, rows 0, 20 and 40 (computed once with that library; Light-ASD's own feature).
PSF_GOLDEN = {
    0: [11.3179, -16.5516, -5.2177, 0.0483, 15.673, 8.1616, -6.0976, -20.7121, -10.0149, 18.0856, -0.6698, -5.2347, -2.3557],
    20: [9.8295, -8.7026, -11.094, -5.5087, 0.937, 6.4473, 14.2643, -17.0261, 5.7754, 28.773, 7.3955, -1.1453, -17.1426],
    40: [8.2338, -10.88, 9.8493, 2.2588, 8.3279, -9.7418, 7.1709, -1.8045, 15.5874, 12.3942, 12.2995, -2.8912, 4.0551],
}


@pytest.mark.parametrize("name", ["pretrain_AVA_CVPR.model", "finetuning_TalkSet.model"])
def test_checkpoints_load_strictly(models_dir, name):
    net = load_light_asd(models_dir / "light-asd" / name)
    state = torch.load(models_dir / "light-asd" / name, map_location="cpu", weights_only=True)
    assert set(net.state_dict()) == set(state)  # every key, no extra module
    n_params = sum(p.numel() for p in net.parameters())
    assert 1.0e6 < n_params < 1.05e6  # 1.03 M including BatchNorm statistics (paper: ~1.0 M)
    out = net.logits(torch.zeros(1, 100, 13), torch.full((1, 25, 112, 112), 128.0))
    assert out.shape == (1, 25, 2) and torch.isfinite(out).all()


def test_mfcc_matches_python_speech_features(media_dir):
    x, sr = sf.read(media_dir / "asr" / "aishell-BAC009S0724W0121.wav", dtype="int16")
    m = mfcc(x[:8000].astype(np.float64), sr)
    assert m.shape == (49, 13)  # 1 + ceil((8000 - 400) / 160)
    for row, ref in PSF_GOLDEN.items():
        np.testing.assert_allclose(m[row], ref, atol=2e-4)


def test_chunked_visual_encoder_equals_one_pass():
    torch.manual_seed(0)
    net = LightASD().eval()
    faces = torch.randint(0, 256, (70, 112, 112)).float()
    whole = net.embed_visual(faces, chunk=1000)
    chunked = net.embed_visual(faces, chunk=16)
    torch.testing.assert_close(chunked, whole, atol=1e-4, rtol=1e-4)


def test_compiled_visual_encoder_equals_eager(models_dir):
    """The CPU-compiled visual encoder (BatchNorm folded, oneDNN) gives the eager network's embeddings on the real
    weights, for track lengths other than the one it was traced with."""
    eager = load_light_asd(models_dir / "light-asd" / "pretrain_AVA_CVPR.model")
    fast = load_light_asd(models_dir / "light-asd" / "pretrain_AVA_CVPR.model", optimize=True)
    torch.manual_seed(1)
    for n in (9, 40):
        faces = torch.randint(0, 256, (n, 112, 112)).float()
        torch.testing.assert_close(fast.embed_visual(faces), eager.embed_visual(faces), atol=1e-4, rtol=1e-4)


def test_audio_drives_the_score(models_dir, media_dir):
    """The real weights respond to the audio: a moving face with speech scores above the same face in silence."""
    from cinedub.vision.asd import score_faces

    net = load_light_asd(models_dir / "light-asd" / "pretrain_AVA_CVPR.model")
    x, sr = sf.read(media_dir / "asr" / "aishell-BAC009S0724W0121.wav", dtype="int16")
    rng = np.random.default_rng(0)
    faces = rng.integers(90, 160, (50, 112, 112), dtype=np.uint8)
    speech = mfcc(x[16000 : 16000 + 50 * 640 + 240].astype(np.float64), sr)[:200]
    quiet = mfcc(rng.normal(0, 20, 50 * 640 + 240), sr)[:200]
    assert score_faces(net, faces, speech, windows_s=(1,)).mean() > score_faces(net, faces, quiet, windows_s=(1,)).mean()
