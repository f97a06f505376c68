"""Fixtures of the audio-visual attribution tests: the pipeline's records of every shared AV case, fused.

One ``cinedub run`` (separation off) of all cases of :data:`cinedub.eval.av_run.AV_CASES` into a session folder
(about 4 minutes on 2 cores); ``CINEDUB_TEST_AV_OUT`` names an output folder to reuse instead (records of an earlier
run of the same inputs: the work folders are found by content hash, so only missing sources are run).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cinedub.eval.av_run import AV_CASES, ensure_pipeline, find_work_dir, fuse_work, load_work_records, media_file

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def av_out(tmp_path_factory, media_dir, models_dir) -> Path:
    out = Path(os.environ["CINEDUB_TEST_AV_OUT"]) if os.environ.get("CINEDUB_TEST_AV_OUT") else \
        tmp_path_factory.mktemp("av-out")
    out.mkdir(parents=True, exist_ok=True)
    videos = [media_file(media_dir, spec[0], out) for spec in AV_CASES.values()]
    ensure_pipeline(videos, out, models_dir, repo=REPO)
    return out


@pytest.fixture(scope="session")
def describer(models_dir):
    from cinedub.vision.identity import FaceDescriber, locate_dlib_models

    return FaceDescriber(*locate_dlib_models(models_dir))


@pytest.fixture(scope="session")
def av_case(av_out, media_dir, describer):
    """``name -> (records, FusionResult, FaceIdentityResult, CueCost)``, computed once per case."""
    import pyarrow.dataset  # noqa: F401  (loaded before timing, as in a pipeline worker)
    import scipy.optimize  # noqa: F401

    cache: dict = {}

    def get(name: str):
        if name not in cache:
            rec = load_work_records(find_work_dir(av_out, media_file(media_dir, AV_CASES[name][0], av_out)))
            cache[name] = (rec, *fuse_work(rec, describer))
        return cache[name]

    return get
