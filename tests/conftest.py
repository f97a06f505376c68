"""Shared fixtures: where ../shared is, and a Config pointing at the offline model pack."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _shared() -> Path:
    return Path(os.environ.get("CINEDUB_SHARED", REPO.parent / "shared")).resolve()


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    d = _shared()
    if not (d / "media").is_dir():
        pytest.fail(f"shared data not found at {d} (set CINEDUB_SHARED)")
    return d


@pytest.fixture(scope="session")
def media_dir(shared_dir: Path) -> Path:
    return shared_dir / "media"


@pytest.fixture(scope="session")
def models_dir(shared_dir: Path) -> Path:
    return shared_dir / "models"


@pytest.fixture(scope="session")
def cfg(models_dir: Path, tmp_path_factory):
    """Default configuration on the offline model pack, CPU, no separation (no demucs weights exist here)."""
    from cinedub.config import Config

    return Config.load(
        models_dir=models_dir,
        device="cpu",
        separation={"method": "none"},
        work_dir=tmp_path_factory.mktemp("work"),
    )
