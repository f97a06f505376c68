"""Fixtures of the vision tests: a fast config (SCRFD at 320 px), one detector, one lip landmarker, one Light-ASD,
one torch thread."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from cinedub.types import Shot, ShotList
from cinedub.vision.config import VisionConfig


@pytest.fixture(scope="session")
def vcfg() -> VisionConfig:
    # 320 px letterbox: faces in the test footage are >= 100 px, and detection is 3-4x faster than at 640
    return VisionConfig(det_size=320)


@pytest.fixture(scope="session")
def detector(vcfg, models_dir):
    from cinedub.vision.detect import ScrfdDetector, build_detector

    det = build_detector(vcfg, models_dir)
    assert isinstance(det, ScrfdDetector) and det.batched
    return det


@pytest.fixture(scope="session")
def landmarker(models_dir):
    """FaceMesh's landmark network, found through the model registry (the installed mediapipe wheel's file)."""
    from cinedub.config import Config
    from cinedub.models import model_path
    from cinedub.vision.landmarks import LipLandmarker

    return LipLandmarker(model_path(Config(models_dir=models_dir), "facemesh"))


@pytest.fixture(scope="session")
def asd_net(models_dir, vcfg):
    from cinedub.vision.light_asd import load_light_asd

    return load_light_asd(models_dir / vcfg.asd_dir_name / vcfg.asd_model)


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    # the CI/dev machine has 2 shared cores: one intra-op thread is about 2x faster than two under contention
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def shots_from_frames(spans: list[tuple[int, int]], fps: Fraction, n_frames: int) -> ShotList:
    """A ShotList from ``[start, end)`` frame spans."""
    shots = tuple(
        Shot(i, s, e, int(round(s * 1000 / fps)), int(round(e * 1000 / fps))) for i, (s, e) in enumerate(spans)
    )
    return ShotList(fps=fps, n_frames=n_frames, shots=shots, detector="test")


def detect_shots(path) -> ShotList:
    """Shots by PySceneDetect's AdaptiveDetector (what the shots stage uses)."""
    from scenedetect import AdaptiveDetector, detect

    from cinedub.vision.decode import video_info

    scenes = detect(str(path), AdaptiveDetector())
    fps = video_info(path).fps
    spans = [(a.frame_num, b.frame_num) for a, b in scenes]
    return shots_from_frames(spans, fps, spans[-1][1] if spans else 0)


@pytest.fixture(scope="session")
def shot_tools():
    """``(shots_from_frames, detect_shots)`` for test modules (the tests folder is not a package)."""
    return shots_from_frames, detect_shots
