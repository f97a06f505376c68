"""Fixtures of the diarization tests: real recordings from ../shared/media and one offline diarizer per session."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cinedub.diarization.config import DiarizationConfig
from cinedub.diarization.rttm import read_rttm
from cinedub.media import extract_audio, load_audio
from cinedub.types import Turn


@pytest.fixture(scope="session")
def en2(media_dir: Path) -> tuple[np.ndarray, int, list[Turn]]:
    """en_2spk_audio: 30 s, 16 kHz telephone conversation, 2 speakers with overlap, hand-labelled RTTM."""
    d = media_dir / "en_2spk_audio"
    wav, sr = load_audio(d / "sample.wav")
    return wav, sr, read_rttm(d / "sample.rttm")


@pytest.fixture(scope="session")
def dialogue5(media_dir: Path, tmp_path_factory) -> tuple[np.ndarray, int, list[Turn]]:
    """dialogue_5shots: 16 kHz mono extracted from the mp4 (5 speakers, derived RTTM)."""
    d = media_dir / "dialogue_5shots"
    flac = extract_audio(d / "dialogue_5shots.mp4", tmp_path_factory.mktemp("d5") / "d5.flac")
    wav, sr = load_audio(flac)
    return wav, sr, read_rttm(d / "dialogue_5shots.rttm")


@pytest.fixture(scope="session")
def monologue(media_dir: Path, tmp_path_factory) -> tuple[np.ndarray, int]:
    """en_monologue: 10 s, one man talking to camera."""
    flac = extract_audio(media_dir / "en_monologue" / "englishvideo.mp4", tmp_path_factory.mktemp("mono") / "m.flac")
    return load_audio(flac)


@pytest.fixture(scope="session")
def ge2e_weights(models_dir: Path) -> Path:
    return models_dir / "resemblyzer-ge2e" / "pretrained.pt"


@pytest.fixture(scope="session")
def dcfg() -> DiarizationConfig:
    # one torch thread: on a shared 2-core machine OpenMP threads otherwise wait on each other (10x slower)
    return DiarizationConfig(num_threads=1)


@pytest.fixture(scope="session")
def diarizer(ge2e_weights: Path, dcfg: DiarizationConfig):
    from cinedub.diarization.offline import OfflineDiarizer

    return OfflineDiarizer(ge2e_weights, dcfg)


@pytest.fixture(scope="session")
def en2_result(diarizer, en2):
    wav, sr, _ = en2
    return diarizer.diarize(wav, sr)


@pytest.fixture(scope="session")
def dialogue5_result(diarizer, dialogue5):
    wav, sr, _ = dialogue5
    return diarizer.diarize(wav, sr)


@pytest.fixture(scope="session")
def community1(tmp_path_factory) -> Path:
    """Random-weight pyannote folder laid out like speaker-diarization-community-1, inside a models dir."""
    from cinedub_testing.pyannote_ckpt import build_random_community1

    return build_random_community1(tmp_path_factory.mktemp("models") / "speaker-diarization-community-1")
