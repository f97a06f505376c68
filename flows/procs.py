"""Prefect server and worker processes on this machine (local mode, tests, benchmark).

- :class:`PrefectServer`: ``prefect server start`` on 127.0.0.1 with SQLite in its ``PREFECT_HOME`` or a PostgreSQL
  URL, optionally with the UI.
- :class:`Worker`: ``prefect worker start --pool P --type process --limit N`` in its own process group;
  :meth:`Worker.kill` SIGKILLs it and every process under it (its flow-run processes, which Prefect starts in their
  own sessions), as when a machine dies.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(proc: subprocess.Popen, timeout_s: float, *, group: bool = False) -> None:
    """SIGTERM ``proc`` (its whole process group with ``group``), wait up to ``timeout_s``, then SIGKILL and reap."""
    if proc.poll() is not None:
        return
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait()


def descendants(pid: int) -> list[int]:
    """Every live process under ``pid`` (psutil)."""
    try:
        return [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> list[int]:
    """Send ``sig`` to ``pid`` and all its descendants (found first, then signalled together)."""
    victims = [pid, *descendants(pid)]
    for p in victims:
        try:
            os.kill(p, sig)
        except ProcessLookupError:
            pass
    return victims


def prefect_env(home: Path, api_url: str | None = None, **extra: str) -> dict[str, str]:
    """Environment of a Prefect process of this cluster (own ``PREFECT_HOME``, quick worker polling)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_WORKER_QUERY_SECONDS="1",
        PREFECT_WORKER_PREFETCH_SECONDS="2",
        PREFECT_WORKER_HEARTBEAT_SECONDS="5",
        PREFECT_LOGGING_LEVEL="INFO",  # the UI shows the runs' logs (WARNING hid every stage line)
        PYANNOTE_METRICS_ENABLED="false",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    if api_url:
        env["PREFECT_API_URL"] = api_url
    env.update(extra)
    return env


class PrefectServer:
    """``prefect server start`` on 127.0.0.1 (SQLite in ``home``, or ``database_url``); ``.api`` is its API URL."""

    def __init__(self, home: Path, database_url: str | None = None, ui: bool = False, port: int | None = None):
        self.home = Path(home)
        self.port = port or free_port()
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.database_url = database_url
        self.ui = ui
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 180) -> "PrefectServer":
        self.home.mkdir(parents=True, exist_ok=True)
        extra = {"PREFECT_UI_ENABLED": "true" if self.ui else "false",
                 "PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_API_PORT": str(self.port)}
        if self.ui:  # the UI's browser code calls this URL
            extra["PREFECT_UI_API_URL"] = self.api
        if self.database_url:
            extra["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = self.database_url
        self.log = open(self.home / "server.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                                      "--port", str(self.port)], env=prefect_env(self.home, **extra),
                                     stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        from flows.api import wait_healthy  # httpx: keeps this module light for flows.early_api

        try:
            wait_healthy(self.api, timeout_s, self.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc:
            stop_process(self.proc, 30, group=True)

    def __enter__(self) -> "PrefectServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class Worker:
    """A process worker of ``pool`` named ``name`` taking at most ``limit`` runs at once."""

    def __init__(self, api_url: str, home: Path, pool: str, name: str, limit: int = 1,
                 env: dict[str, str] | None = None):
        self.api_url, self.home, self.pool, self.name, self.limit = api_url, Path(home), pool, name, limit
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Worker":
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path = self.home / f"worker-{self.name}.log"
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "worker", "start", "--pool", self.pool, "--type", "process",
             "--name", self.name, "--limit", str(self.limit)],
            env=prefect_env(self.home, self.api_url, **self.env), stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True, cwd=str(REPO),
        )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> list[int]:
        """SIGKILL the worker and every process under it (a machine loss). Returns the pids killed."""
        assert self.proc is not None
        victims = kill_tree(self.proc.pid)
        self.proc.wait()
        return victims

    def stop(self) -> None:
        if self.alive:
            assert self.proc is not None
            kids = descendants(self.proc.pid)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc.pid)
                self.proc.wait()
            for p in kids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    def __enter__(self) -> "Worker":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
