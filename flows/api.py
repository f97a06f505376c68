"""Small REST helpers for the Prefect server (plain JSON bodies through httpx).

Prefect 3.8.8's Python client sends ``null`` for unset ``limit``/``sort`` fields of ``/…/filter`` requests, which a
3.8.8 server under the pinned FastAPI rejects with 422; these helpers send only the fields they mean.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
IN_FLIGHT = {"SCHEDULED", "PENDING", "RUNNING", "PAUSED", "CANCELLING"}


def api_url() -> str:
    """The API URL in force (``PREFECT_API_URL`` or the active profile's).

    Raises:
        RuntimeError: none is configured (these helpers need a real server).
    """
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        from prefect.settings import get_current_settings

        url = get_current_settings().api.url
    if not url:
        raise RuntimeError("PREFECT_API_URL is not set: point it at a Prefect server (e.g. http://127.0.0.1:4200/api)")
    return url.rstrip("/")


@contextmanager
def client(url: str | None = None, timeout: float = 30) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url or api_url(), timeout=timeout) as http:
        yield http


def wait_healthy(url: str, timeout_s: float = 120, proc: Any = None, poll_s: float = 0.5) -> None:
    """Poll ``<url>/health`` every ``poll_s`` seconds until it answers 200.

    Raises:
        TimeoutError: not healthy in time. RuntimeError: ``proc`` (the server process) exited first.
    """
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the Prefect server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(poll_s)
    raise TimeoutError(f"{url} not healthy after {timeout_s:.0f} s")


def read_flow_run(http: httpx.Client, flow_run_id: str) -> dict[str, Any] | None:
    r = http.get(f"/flow_runs/{flow_run_id}")
    if r.status_code == 404:
        return None
    r.raise_for_status()
    return r.json()


def flow_runs(http: httpx.Client, *, deployment_id: str | None = None, parent_flow_run_id: str | None = None,
              states: list[str] | None = None, names: list[str] | None = None, limit: int = 200) -> list[dict]:
    """Flow runs matching the given filters (all given filters must match), newest first."""
    fr: dict[str, Any] = {}
    if deployment_id:
        fr["deployment_id"] = {"any_": [deployment_id]}
    if parent_flow_run_id:
        fr["parent_flow_run_id"] = {"any_": [parent_flow_run_id]}
    if states:
        fr["state"] = {"type": {"any_": states}}
    if names:
        fr["name"] = {"any_": names}
    body: dict[str, Any] = {"limit": limit, "sort": "EXPECTED_START_TIME_DESC"}
    if fr:
        body["flow_runs"] = fr
    return http.post("/flow_runs/filter", json=body).raise_for_status().json()


def set_state(http: httpx.Client, flow_run_id: str, state_type: str, message: str, force: bool = True) -> None:
    """Set a flow run's state (``CRASHED`` for a zombie whose worker died)."""
    http.post(f"/flow_runs/{flow_run_id}/set_state",
              json={"state": {"type": state_type, "message": message}, "force": force}).raise_for_status()


def deployment(http: httpx.Client, name: str) -> dict[str, Any] | None:
    """A deployment by ``"<flow name>/<deployment name>"``, or None."""
    flow, dep = name.split("/", 1)
    r = http.get(f"/deployments/name/{flow}/{dep}")
    if r.status_code == 404:
        return None
    return r.raise_for_status().json()


def ensure_work_pool(http: httpx.Client, name: str, concurrency_limit: int | None = None) -> None:
    """Create a process work pool when missing (with the process worker's default job template). Docker or
    Kubernetes pools are created with ``prefect work-pool create --type docker|kubernetes``."""
    if http.get(f"/work_pools/{name}").status_code == 200:
        return
    from prefect.workers.process import ProcessWorker

    body: dict[str, Any] = {"name": name, "type": "process",
                            "base_job_template": ProcessWorker.get_default_base_job_template()}
    if concurrency_limit is not None:
        body["concurrency_limit"] = concurrency_limit
    r = http.post("/work_pools/", json=body)
    if r.status_code != 409:
        r.raise_for_status()


def workers(http: httpx.Client, pool: str) -> list[dict[str, Any]]:
    """The workers that polled ``pool`` (with ``status`` ONLINE/OFFLINE and ``last_heartbeat_time``)."""
    return http.post(f"/work_pools/{pool}/workers/filter", json={"limit": 100}).raise_for_status().json()
