"""SyncNet (rebuilt from joonson/syncnet_python) and the ASD stage's sync veto.

No real SyncNet weights exist on these machines: a random-weight checkpoint in ``syncnet_v2.model``'s layout proves
the loading path and the plumbing, not the quality of the check. The offset search itself is checked with an
embedding whose answer is known (a face brightness that follows the audio energy with a chosen delay).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cinedub.config import Config
from cinedub.errors import ModelNotFoundError
from cinedub.stages.asd import AsdStage
from cinedub_testing import build_random_syncnet
from cinedub.vision.asd import speaking_runs
from cinedub.vision.config import VisionConfig
from cinedub.vision.syncnet import SyncNetS, av_sync, load_syncnet


@pytest.fixture(scope="module")
def random_syncnet(tmp_path_factory):
    path = build_random_syncnet(tmp_path_factory.mktemp("models") / "syncnet" / "syncnet_v2.model")
    return path, load_syncnet(path)


def test_random_checkpoint_loads_strictly_and_embeds(random_syncnet):
    path, net = random_syncnet
    state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(net.state_dict()) == set(state)
    assert any(k.startswith("netcnnlip.") for k in state) and any(k.startswith("netfcaud.") for k in state)
    assert net.embed_lips(torch.zeros(2, 3, 5, 224, 224)).shape == (2, 1024)
    assert net.embed_audio(torch.zeros(2, 1, 13, 20)).shape == (2, 1024)
    broken = {k: v for k, v in state.items() if not k.startswith("netfclip.3")}
    torch.save(broken, path.with_name("broken.model"))
    with pytest.raises(RuntimeError, match="netfclip.3"):
        load_syncnet(path.with_name("broken.model"))
    with pytest.raises(FileNotFoundError, match="missing.model"):
        load_syncnet(path.with_name("missing.model"))


class _Energy(torch.nn.Module):
    """Embeds a lip window by the mean brightness of its first frame and an MFCC window by the mean of its first
    four columns (the audio of that frame): a stand-in whose best offset is known."""

    def embed_lips(self, x):
        return x[:, :, 0].mean(dim=(1, 2, 3))[:, None] / 255.0

    def embed_audio(self, x):
        return x[:, 0, :, :4].mean(dim=(1, 2))[:, None]


@pytest.mark.parametrize("delay", [0, 3, -4])
def test_offset_search_finds_a_known_delay(delay):
    rng = np.random.default_rng(7)
    n = 120
    energy = rng.random(n + 40)
    # frame t shows energy[t + 20]; the audio of frame t is energy[t + 20 - delay]: the audio lags the lips by
    # ``delay`` frames, which SyncNet's convention reports as offset -delay
    faces = np.repeat((255 * energy[20:20 + n])[:, None, None, None], 224 * 224 * 3).reshape(n, 224, 224, 3)
    audio = np.repeat(energy[20 - delay:20 - delay + n], 4)[:, None].repeat(13, axis=1)
    res = av_sync(_Energy(), faces.astype(np.uint8), audio, vshift=8)
    assert res.offset_frames == -delay
    # the right offset is clearly the best (its distance is not 0: windows at the ends meet the zero padding)
    assert res.min_dist < 0.05 and res.confidence > 0.2
    flat = av_sync(_Energy(), np.full_like(faces, 128, dtype=np.uint8), audio, vshift=8)
    assert flat.confidence < res.confidence / 5  # a still face: no offset stands out


def test_speaking_runs():
    m = np.array([0, 1, 1, 1, 0, 1, 0, 1, 1, 1, 1], bool)
    assert speaking_runs(m, 3) == [(1, 4), (7, 11)]
    assert speaking_runs(m, 1) == [(1, 4), (5, 6), (7, 11)]


def test_stage_sync_modes(models_dir, tmp_path):
    def cfg(**vision):
        return Config(models_dir=tmp_path, vision=VisionConfig(**vision))

    (tmp_path / "light-asd").mkdir()
    (tmp_path / "light-asd" / "pretrain_AVA_CVPR.model").symlink_to(models_dir / "light-asd" / "pretrain_AVA_CVPR.model")
    auto = AsdStage(cfg())
    off_token = AsdStage.cache_token(cfg())
    auto.setup()
    assert auto.sync_net is None and auto.model_name == "light-asd:pretrain_AVA_CVPR.model"
    with pytest.raises(ModelNotFoundError, match="syncnet_v2.model"):
        AsdStage(cfg(sync_check="on")).setup()
    build_random_syncnet(tmp_path / "syncnet" / "syncnet_v2.model")
    with_sync = AsdStage(cfg())
    with_sync.setup()
    assert isinstance(with_sync.sync_net, SyncNetS)
    assert with_sync.model_name == "light-asd:pretrain_AVA_CVPR.model+syncnet:syncnet_v2.model"
    assert AsdStage.cache_token(cfg()) != off_token  # weights appearing change the output: a new cache key
    off = AsdStage(cfg(sync_check="off"))
    off.setup()
    assert off.sync_net is None
