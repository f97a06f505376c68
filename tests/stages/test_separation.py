"""Vocal separation on real film audio (Titanic dialogue over score) with a random-weight HTDemucs built by
``cinedub_testing.build_random_demucs_repo``: it proves the offline loading path, the timeline and the file plumbing,
not separation quality (the random model's "stems" are filtered noise of the mix)."""

from __future__ import annotations

import socket
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cinedub.config import Config
from cinedub.errors import ModelNotFoundError
from cinedub.stages.ingest import IngestStage
from cinedub.types import IngestResult
from cinedub.stages.separation import SeparationStage
from cinedub_testing import build_random_demucs_repo
from cinedub.timebase import ms_to_sample


class _NoNetwork:
    """Every socket connection or DNS lookup fails, and is recorded."""

    def __init__(self) -> None:
        self.attempts: list[str] = []

    def refuse(self, what: str):
        def _refuse(*args, **kwargs):
            self.attempts.append(f"{what}{args[1:2] if what == 'connect' else args[:1]}")
            raise OSError(f"network disabled in this test ({what})")

        return _refuse


@pytest.fixture
def no_network(monkeypatch) -> _NoNetwork:
    guard = _NoNetwork()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", guard.refuse("connect"))
    monkeypatch.setattr(socket, "create_connection", guard.refuse("create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", guard.refuse("getaddrinfo"))
    return guard


@pytest.fixture(scope="module")
def models_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build_random_demucs_repo(root / "demucs")
    return root


@pytest.fixture(scope="module")
def titanic_5s(media_dir: Path, tmp_path_factory) -> IngestResult:
    """The first 5 s of the Titanic excerpt (22.05 kHz stereo AAC), ingested: one demucs chunk keeps the test fast."""
    work = tmp_path_factory.mktemp("titanic")
    cut = work / "titanic_5s.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(media_dir / "en_film_titanic/test1.mp4"), "-t", "5", "-c", "copy",
         str(cut)],
        check=True,
    )
    return IngestStage(Config.load(device="cpu")).ingest(cut, work)


def _cfg(models_root: Path, **overrides) -> Config:
    return Config.load(models_dir=models_root, device="cpu", **overrides)


def test_random_htdemucs_separates_real_film_audio_offline(
    models_root: Path, titanic_5s: IngestResult, tmp_path: Path, no_network: _NoNetwork
):
    import torch
    from torchaudio.functional import resample

    stage = SeparationStage(_cfg(models_root))
    tracks = stage.separate(titanic_5s, tmp_path)
    assert no_network.attempts == []

    duration_ms = titanic_5s.source.duration_ms
    assert 4900 <= duration_ms <= 5500  # stream copy cuts at packet boundaries
    assert tracks.separation == "demucs:htdemucs"
    assert tracks.separated_rate_hz == 44100 and tracks.full_rate_hz == 22050
    assert tracks.mix_16k == titanic_5s.mix_16k and tracks.mix_full == titanic_5s.mix_full

    n = ms_to_sample(duration_ms, 44100)
    for path in (tracks.vocals, tracks.accompaniment):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.format, info.subtype) == (44100, 2, "FLAC", "PCM_16")
        assert info.frames == n
        assert abs(info.frames / 44100 - duration_ms / 1000) <= 1 / 44100

    v16 = sf.info(tracks.vocals_16k)
    assert (v16.samplerate, v16.channels) == (16000, 1)
    assert tracks.analysis_audio == tracks.vocals_16k  # demucs' vocals are what the analysis listens to
    assert v16.frames == sf.info(titanic_5s.mix_16k).frames == ms_to_sample(duration_ms, 16000)

    vocals, _ = sf.read(tracks.vocals, dtype="float32")
    acc, _ = sf.read(tracks.accompaniment, dtype="float32")
    assert float(np.sqrt(np.mean(vocals**2))) > 1e-4  # the model produced sound, not zeros
    assert not np.allclose(vocals, acc, atol=1e-3)

    # vocals_16k is the stereo vocals downmixed and resampled without delay: an independent resampler agrees at lag 0
    v16_data, _ = sf.read(tracks.vocals_16k, dtype="float32")
    ref = resample(torch.from_numpy(vocals.mean(axis=1)), 44100, 16000).numpy()
    m = min(len(ref), len(v16_data)) - 160
    corr = [np.corrcoef(v16_data[160:m], ref[160 + k : m + k])[0, 1] for k in (-2, -1, 0, 1, 2)]
    assert int(np.argmax(corr)) == 2 and corr[2] > 0.98, corr

    assert SeparationStage.provenance(stage.cfg) == {
        "stage": "separation",
        "version": SeparationStage.version,
        "name": "demucs:htdemucs@955717e8",
    }


def test_missing_model_folder_names_it(tmp_path: Path, no_network: _NoNetwork):
    cfg = _cfg(tmp_path / "no_models", separation={"method": "demucs"})
    with pytest.raises(ModelNotFoundError) as info:
        SeparationStage(cfg).ensure_setup()
    msg = str(info.value)
    assert str(tmp_path / "no_models" / "demucs") in msg
    assert "htdemucs.yaml" in msg and "models_dir" in msg
    assert no_network.attempts == []


def test_allow_hub_without_network_still_raises_model_not_found(tmp_path: Path, no_network: _NoNetwork, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # demucs' legacy download path creates its cache dir
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = _cfg(tmp_path / "no_models", allow_hub=True, separation={"method": "demucs"})
    with pytest.raises(ModelNotFoundError, match="hub download failed"):
        SeparationStage(cfg).ensure_setup()


def test_yaml_naming_an_absent_checkpoint(models_root: Path, tmp_path: Path):
    repo = build_random_demucs_repo(tmp_path / "demucs", sig="deadbeef")
    (repo / "htdemucs.yaml").write_text("models: ['955717e8']\n", encoding="utf-8")
    with pytest.raises(ModelNotFoundError, match="955717e8"):
        SeparationStage(_cfg(tmp_path)).ensure_setup()


def test_segment_longer_than_the_model_allows(models_root: Path):
    cfg = _cfg(models_root, separation={"segment_s": 10.0})
    with pytest.raises(ValueError, match="segment_s"):
        SeparationStage(cfg).ensure_setup()


def test_method_none_passes_the_mix_through(titanic_5s: IngestResult, tmp_path: Path):
    stage = SeparationStage(_cfg(tmp_path / "no_models", separation={"method": "none"}))
    tracks = stage.separate(titanic_5s, tmp_path)
    assert stage.separator is None
    assert tracks.separation == "none"
    assert tracks.vocals_16k == titanic_5s.mix_16k == tracks.analysis_audio
    assert tracks.vocals is None and tracks.accompaniment is None and tracks.separated_rate_hz is None
    assert list(tmp_path.iterdir()) == []  # nothing written
    assert SeparationStage.provenance(stage.cfg)["name"] == "none"
