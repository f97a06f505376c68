"""`cinedub run` against a real Prefect server (started by the test on 127.0.0.1): the runs, the progress artifact
and the per-input report table are there for the UI to show."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.procs import PrefectServer

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with PrefectServer(tmp_path_factory.mktemp("prefect-server-home")) as srv:
        yield srv.api


def test_run_against_server_reports_progress_and_failures(server, media_dir, models_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PREFECT_API_URL": server, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    bad = tmp_path / "empty.mp4"
    bad.write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "cinedub_cli", "run", str(media_dir / "en_monologue/englishvideo.mp4"), str(bad),
         "--out", str(out), "--separation", "none", "--models-dir", str(models_dir), "--no-progress"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=600,
    )
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Stopping temporary server" not in proc.stderr  # it used the configured server, not an ephemeral one

    import httpx

    with httpx.Client(base_url=server, timeout=30) as http:
        runs = http.post("/flow_runs/filter", json={"limit": 50}).raise_for_status().json()
        arts = http.post("/artifacts/filter", json={
            "artifacts": {"key": {"any_": ["cinedub-run-progress", "cinedub-run-report"]}}, "limit": 10,
        }).raise_for_status().json()
    names = {r["name"] for r in runs}
    assert {"source-englishvideo.mp4", "source-empty.mp4"} <= names
    child = next(r for r in runs if r["name"] == "source-empty.mp4")
    assert child["state"]["type"] == "FAILED" and "empty file" in child["state"]["message"]
    by_key = {a["key"]: a for a in arts}
    assert by_key["cinedub-run-progress"]["data"] == 100.0
    table = by_key["cinedub-run-report"]["data"]
    assert "englishvideo.mp4" in str(table) and "empty file" in str(table)
