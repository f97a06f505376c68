"""Local mode for annotators: one command starts everything on this machine and says where the UI is.

``cinedub serve`` (:func:`serve_local`): a Prefect server with the UI on 127.0.0.1 (SQLite under ``--home``), one
process work pool ``cinedub-local`` for every deployment, the concurrency limits, the deployments, and a worker.
Ctrl-C stops the worker and the server; the database stays, so history and the ledger survive restarts.

Also: ``cinedub submit INPUT... --out DIR`` (start the ingest deployment on files, folders or URLs),
``cinedub ledger DIR`` (what happened to every source), ``cinedub retry DIR`` (resubmit the failed ones).
The typer commands are in :mod:`cinedub_cli.local`.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any


DEFAULT_PORT = 4200
LOCAL_POOL = "cinedub-local"


def default_home() -> Path:
    """``$CINEDUB_HOME/prefect`` or ``~/.cinedub/prefect``: the local server's ``PREFECT_HOME`` (SQLite lives there)."""
    return Path(os.environ.get("CINEDUB_HOME", Path.home() / ".cinedub")) / "prefect"


def _gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no torch or no driver: CPU only
        return 0


def serve_local(
    home: Path | None = None,
    port: int = DEFAULT_PORT,
    worker_limit: int = 2,
    ingest: dict[str, Any] | None = None,
    cron: str | None = None,
    llm_inflight: int = 2,
    ready: Any = None,
    block: bool = True,
) -> dict[str, Any]:
    """Start (or reuse) the local server with the UI, the pool, the limits, the deployments and one worker.

    Args:
        home: ``PREFECT_HOME`` of the server (default :func:`default_home`).
        port: server port on 127.0.0.1. A healthy server already there is reused (a second ``serve`` just adds a
            worker).
        worker_limit: runs the worker takes at once (GPU stages still queue on ``gpu:<host>:<i>``).
        ingest: an :class:`flows.ingest.IngestSpec` as a dict; with ``cron`` it is scheduled.
        ready: called with the returned dict once everything is up (tests).
        block: wait until Ctrl-C/SIGTERM, then stop what this call started; False returns at once (the caller
            stops ``result["worker"]`` and ``result["server"]``).

    Returns:
        ``{"ui": url, "api": url, "deployments": {...}, "server": PrefectServer | None, "worker": Worker}``.
    """
    import httpx

    from flows.deployments import DeploySettings, setup_server
    from flows.procs import PrefectServer, Worker
    from flows.resources import host_name

    home = Path(home or default_home()).resolve()
    home.mkdir(parents=True, exist_ok=True)
    api = f"http://127.0.0.1:{port}/api"
    server = None
    try:
        healthy = httpx.get(f"{api}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        healthy = False
    if not healthy:
        print(f"cinedub serve: starting the Prefect server (SQLite in {home}) ...", file=sys.stderr, flush=True)
        server = PrefectServer(home, ui=True, port=port).start()
    os.environ["PREFECT_API_URL"] = api
    settings = DeploySettings(cpu_pool=LOCAL_POOL, gpu_pool=LOCAL_POOL, ingest=ingest, cron=cron)
    deployments = setup_server(settings, {host_name(): _gpu_count()}, llm_inflight=llm_inflight)
    worker = Worker(api, home, LOCAL_POOL, f"{host_name()}-local-{os.getpid()}", worker_limit,
                    env={"PREFECT_WORKER_QUERY_SECONDS": "2"}).start()
    from cinedub.llm.listen import start_listener

    listener = start_listener()
    ui = f"http://127.0.0.1:{port}"
    info = {"ui": ui, "api": api, "deployments": deployments, "server": server, "worker": worker, "home": str(home),
            "listener": listener}
    print(
        f"\nCineDub is running.\n  Open the UI:  {ui}\n  API:          {api}\n  Worker:       {worker.name} "
        f"(pool {LOCAL_POOL}, {worker_limit} runs at once; log {worker.log_path})\n"
        f"  Submit:       PREFECT_API_URL={api} cinedub submit VIDEO... --out DIR\n"
        f"  Ledger:       cinedub ledger DIR\n  Review:       cinedub review DIR   (clips to hear on "
        f"{listener.url if listener else 'the clip server already running'})\nCtrl-C stops it.\n",
        flush=True,
    )
    if ready is not None:
        ready(info)
    if not block:
        return info
    stop = {"now": False}

    def _stop(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, _stop)
    try:
        while not stop["now"]:
            time.sleep(1)
            if not worker.alive:  # a crashed worker is restarted; its lost runs are recovered by the next ingest
                print("cinedub serve: worker exited; restarting it", file=sys.stderr, flush=True)
                worker.start()
            if server is not None and server.proc is not None and server.proc.poll() is not None:
                print("cinedub serve: the Prefect server exited", file=sys.stderr, flush=True)
                break
    except KeyboardInterrupt:
        pass
    finally:
        worker.stop()
        if listener is not None:
            listener.stop()
        if server is not None:
            server.stop()
    return info


def _api() -> str:
    return os.environ.get("PREFECT_API_URL") or f"http://127.0.0.1:{DEFAULT_PORT}/api"


def require_server() -> str:
    """The API URL of a healthy Prefect server: ``PREFECT_API_URL``, else the local one ``cinedub serve`` starts.

    Raises:
        ServiceUnavailableError: none answers; the one-line message says how to start one.
    """
    import httpx

    from cinedub.errors import ServiceUnavailableError

    try:
        healthy = httpx.get(f"{_api()}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        healthy = False
    if not healthy:
        raise ServiceUnavailableError(
            f"no Prefect server at {_api()}: start one with `cinedub serve` (or set PREFECT_API_URL to yours)")
    return _api()


def submit(inputs: list[str], out: str, config: dict[str, Any] | None = None, retry_failed: bool = False,
           deployment: str = "cinedub-ingest/scheduled") -> str:
    """Start one run of the ingest deployment on ``inputs`` (files, folders, URLs); returns its flow-run id.

    Raises:
        ServiceUnavailableError: no Prefect server answers at ``PREFECT_API_URL`` (or the local default); the message
            says how to start one.
    """
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    require_server()
    spec = {"out_dir": str(Path(out).resolve()) if "://" not in out else out,
            "sources": [str(Path(i).resolve()) if "://" not in i else i for i in inputs],
            "config": config or {}, "retry_failed": retry_failed}
    # Prefect reads PREFECT_API_URL when it is imported; override it explicitly for this call
    with temporary_settings(updates={PREFECT_API_URL: _api()}):
        run = run_deployment(deployment, parameters={"spec": spec}, timeout=0, as_subflow=False)
    return str(run.id)
