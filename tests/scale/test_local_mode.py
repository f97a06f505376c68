"""Local mode for annotators: one call starts a Prefect server with the UI (SQLite) on 127.0.0.1, the pool, the
limits, the deployments and a worker, prints where the UI is, processes a real source submitted to it, and stops
everything on SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from cinedub.ledger import Ledger
from flows import api
from flows.procs import free_port, prefect_env

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def test_serve_local_starts_everything_and_processes_a_source(tmp_path: Path, media_dir: Path, models_dir: Path,
                                                              monkeypatch):
    port = free_port()
    home = tmp_path / "home"
    env = prefect_env(tmp_path / "client-home")
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", f"from flows.local import serve_local; serve_local(home={str(home)!r}, port={port})"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    lines: list[str] = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "Ctrl-C stops it" in line:
                break
        text = "".join(lines)
        m = re.search(r"Open the UI:\s+(http://127\.0\.0\.1:\d+)", text)
        assert m, text[-3000:]
        ui = m.group(1)
        assert ui == f"http://127.0.0.1:{port}"
        page = httpx.get(ui, timeout=10, follow_redirects=True)
        assert page.status_code == 200 and "<html" in page.text.lower(), "the UI is served"
        assert (home / "prefect.db").is_file(), "SQLite under the given home"

        url = f"{ui}/api"
        with api.client(url) as http:
            for dep in ("cinedub-ingest/scheduled", "cinedub-process/default"):
                assert api.deployment(http, dep)["work_pool_name"] == "cinedub-local", dep
            limits = {x["name"] for x in http.post("/v2/concurrency_limits/filter", json={"limit": 100}).json()}
            assert "llm-inflight" in limits
            deadline = time.time() + 60
            while not [w for w in api.workers(http, "cinedub-local") if w["status"] == "ONLINE"]:
                assert time.time() < deadline, "no worker came online"
                time.sleep(1)

        # an annotator submits a clip and reads the ledger
        monkeypatch.setenv("PREFECT_API_URL", url)
        monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "client-home"))
        from flows.local import submit

        from prefect.settings import PREFECT_API_URL, temporary_settings

        out = tmp_path / "dataset"
        with temporary_settings(updates={PREFECT_API_URL: url}):  # settings are read at import, not from the env
            submit([str(media_dir / "zh_narration/10.mp4")], str(out),
                   {"models_dir": str(models_dir), "separation": {"method": "none"}, "device": "cpu"})
        ledger = Ledger(out)
        deadline = time.time() + 300
        while not (ledger.entries() and ledger.entries()[0].status in ("done", "failed")):
            assert time.time() < deadline, "the source was not processed in time"
            time.sleep(2)
        (entry,) = ledger.entries()
        assert entry.status == "done" and entry.clips >= 1, entry.reason
        assert (out / "manifest.json").is_file()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            pytest.fail("serve_local did not stop on SIGTERM")
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2)
