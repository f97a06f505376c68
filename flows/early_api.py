"""A temporary Prefect API for one ``cinedub run``, started before the heavy imports instead of after them.

Without ``PREFECT_API_URL``, Prefect starts a temporary API server (``SubprocessASGIServer``) at the first flow run,
after ``cinedub run`` has imported Prefect, torch and every stage (about 7 s on 2 cores), and imports the server
application into the run's own process to do it (about 5 s more). :class:`EarlyApi` starts the same server process
(the same uvicorn command and environment as Prefect 3.8's ``SubprocessASGIServer``: no UI, the ephemeral
database of ``PREFECT_HOME``) before those imports, so it boots on the other core while they run, and points
``PREFECT_API_URL`` at it. The run then behaves as with Prefect's own temporary server; the process is stopped when
the run ends. This module imports nothing heavy (no Prefect, no httpx until :meth:`EarlyApi.ready`).
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys
from pathlib import Path

from flows.procs import free_port, stop_process


def configure_prefect_env(out_dir: str | Path | None = None) -> None:
    """Environment defaults for running without a server (ephemeral) or against one (``PREFECT_API_URL``)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _die_with_parent() -> None:
    """In the server process, before it runs: end it when the run's process dies, even by SIGKILL (Linux
    ``PR_SET_PDEATHSIG``), so a killed run leaves no server behind."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG
    except OSError:
        pass


class EarlyApi:
    """A temporary Prefect API server on 127.0.0.1, started at construction.

    Use as a context manager: entering waits until it answers ``/api/health``, then points Prefect at it
    (``PREFECT_API_URL`` in the environment, for child processes, and in Prefect's settings, which it read when it
    was imported); if the server failed to start, nothing is changed and Prefect starts its own temporary server as
    usual. Leaving restores both; the process stops when this one exits, after Prefect has flushed its logs and
    events to it (or on :meth:`stop`).
    """

    def __init__(self, startup_timeout_s: float = 120.0):
        import importlib.util

        spec = importlib.util.find_spec("prefect")
        app_dir = Path(spec.origin).parent.parent if spec and spec.origin else None
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.timeout_s = startup_timeout_s
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        env.pop("PREFECT_API_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", *(["--app-dir", str(app_dir)] if app_dir else []), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        atexit.register(self.stop)
        self._old: str | None = None

    def ready(self) -> bool:
        """Wait until the server answers (True), or until it exits or times out (False)."""
        from flows.api import wait_healthy  # httpx, imported by Prefect by now

        try:
            wait_healthy(self.url, self.timeout_s, self.proc, poll_s=0.1)
        except (TimeoutError, RuntimeError):
            return False
        return True

    def stop(self) -> None:
        stop_process(self.proc, 10)

    def __enter__(self) -> "EarlyApi":
        self._old = os.environ.get("PREFECT_API_URL")
        self._settings = None
        if self.ready():
            from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

            os.environ["PREFECT_API_URL"] = self.url
            # no UI is served: no "View at <url>" links to it
            self._settings = temporary_settings(updates={PREFECT_API_URL: self.url, PREFECT_UI_URL: ""})
            self._settings.__enter__()
        else:
            self.stop()
        return self

    def __exit__(self, *exc) -> None:
        if self._settings is not None:
            self._settings.__exit__(*exc)
        # Prefect's log and event workers flush at exit (their atexit hooks, registered after ours, run first);
        # the server stops after them
        if self._old is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = self._old
