"""`cinedub run` against a real Prefect server (started by the test on 127.0.0.1): the runs, the progress artifact
and the per-input report table are there for the UI to show."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-server-home")
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_UI_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("prefect server did not start in 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_run_against_server_reports_progress_and_failures(server, media_dir, models_dir, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PREFECT_API_URL": server, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    bad = tmp_path / "empty.mp4"
    bad.write_bytes(b"")
    proc = subprocess.run(
        [sys.executable, "-m", "cinedub.cli", "run", str(media_dir / "en_monologue/englishvideo.mp4"), str(bad),
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
