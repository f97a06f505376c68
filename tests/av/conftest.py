"""Fixtures of the audio-visual attribution tests: the declared pipeline's records of every shared AV case.

The pipeline (:data:`cinedub.pipeline.PIPELINE`, separation off) runs once per case up to the fused timeline into a
session folder; ``CINEDUB_TEST_AV_OUT`` names an output folder to reuse instead (its records are reused where their
keys match).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cinedub.eval.av_run import case_files, run_case


@pytest.fixture(scope="session")
def av_out(tmp_path_factory) -> Path:
    out = Path(os.environ["CINEDUB_TEST_AV_OUT"]) if os.environ.get("CINEDUB_TEST_AV_OUT") else \
        tmp_path_factory.mktemp("av-out")
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="session")
def av_cfg(cfg, av_out):
    return cfg.model_copy(update={"work_dir": av_out / ".work"})


@pytest.fixture(scope="session")
def describer(models_dir):
    from cinedub.models import DLIB_RECOGNITION, DLIB_SHAPE, model_path
    from cinedub.config import Config
    from cinedub.vision.identity import FaceDescriber

    folder = model_path(Config.load(models_dir=models_dir), "face-identity")
    return FaceDescriber(folder / DLIB_RECOGNITION, folder / DLIB_SHAPE)


@pytest.fixture(scope="session")
def av_case(av_out, av_cfg, media_dir):
    """``name -> (records, FusionResult, FaceIdentityResult, RunResult)``, run once per case."""
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            rec, fusion, run = run_case(case_files(name, media_dir, av_out).video, av_out, av_cfg)
            cache[name] = (rec, fusion, rec.identities, run)
        return cache[name]

    return get
