"""Shared resources of the distributed pipeline: GPU slots, the LLM endpoint limit, and retries of transient errors.

GPU stages (separation, ASR, faces/ASD, diarization) run one at a time per GPU; CPU stages (shots, segmentation,
packaging) run in parallel. Two layers do it:

1. **Device pinning** (per worker): one Prefect worker per GPU, started with ``CUDA_VISIBLE_DEVICES=<i>`` (process
   pool; its flow-run processes inherit the worker's environment) or, in Docker, a device reservation of GPU ``i``.
   ``device: cuda`` then always means that worker's own GPU.
2. **A global concurrency limit per GPU**, ``gpu:<host>:<i>`` with limit 1 (Prefect GCL with leases, so a crashed
   holder frees its slot after ``lease_duration``). GPU tasks hold it through :func:`gpu_slot`; CPU tasks do not.
   A worker can then take ``--limit 2`` (or more) runs: while one run holds the GPU, the others do CPU stages.
   With ``--limit 1`` the worker alone already gives one run per GPU.

The LLM correction stage holds ``llm-inflight`` around each request (:class:`PrefectLimits`, injected into the
Prefect-free client of :mod:`cinedub.llm`), so however many workers run, the OpenAI-compatible
endpoint never sees more than that many requests at once. :func:`prefect_secret` reads the client's API key from a
Prefect ``Secret`` block when the configuration names one.

Retries: :func:`is_transient` is a Prefect ``retry_condition_fn``; only network hiccups, HTTP 408/429/5xx,
timeouts and CUDA out-of-memory (another process on the GPU) are retried, with exponential backoff and jitter.
A bad input (:class:`~cinedub.errors.MediaError`), a missing model or a bug fails at once.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

GPU_LIMIT_PREFIX = "gpu"
LLM_LIMIT = "llm-inflight"
ENV_GPU_SLOT = "CINEDUB_GPU_SLOT"
ENV_HOST = "CINEDUB_HOST"
RETRIES = 3
BACKOFF_FACTOR_S = 10.0  # 10 s, 20 s, 40 s
JITTER = 0.5

_TRANSIENT_ERRNOS = {
    errno.EAGAIN, errno.EBUSY, errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.ENETDOWN, errno.ENETUNREACH,
    errno.ENETRESET, errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.EHOSTUNREACH,
}
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
_TRANSIENT_NAMES = {
    # network clients (httpx, openai, fsspec/aiohttp, botocore) and CUDA memory pressure, matched by class name so
    # this module imports none of them
    "TransportError", "TimeoutException", "ConnectError", "ReadTimeout", "WriteTimeout", "PoolTimeout",
    "RemoteProtocolError", "APIConnectionError", "APITimeoutError", "RateLimitError", "InternalServerError",
    "ServiceUnavailableError", "ClientConnectionError", "ServerDisconnectedError", "EndpointConnectionError",
    "OutOfMemoryError",
}
_TRANSIENT_TEXT = ("cuda out of memory", "cuda error: out of memory", "cublas_status_alloc_failed",
                   "connection reset", "connection refused", "temporarily unavailable", "timed out")


def host_name() -> str:
    """This machine's name in limit names: ``CINEDUB_HOST`` (set it in containers) or the host name."""
    return os.environ.get(ENV_HOST) or socket.gethostname()


def gpu_limit_name(host: str | None = None, device: int | str | None = None) -> str:
    """``gpu:<host>:<device>``: the limit of one GPU. ``device`` defaults to the first of
    ``CUDA_VISIBLE_DEVICES`` (the worker's pinned GPU), else 0."""
    if device is None:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        device = visible or 0
    return f"{GPU_LIMIT_PREFIX}:{host or host_name()}:{device}"


def exception_is_transient(exc: BaseException | None, message: str = "") -> bool:
    """Whether an error is worth retrying (the same call may succeed a little later).

    Never transient: CineDub's own errors (bad media, missing model, schema), which a retry cannot fix.
    """
    from cinedub.errors import CineDubError

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, CineDubError):
            return False
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS:
            return True
        names = {c.__name__ for c in type(exc).__mro__}
        if names & _TRANSIENT_NAMES:
            return True
        status = getattr(exc, "status_code", None) or getattr(getattr(exc, "response", None), "status_code", None)
        if isinstance(status, int) and status in _TRANSIENT_STATUS:
            return True
        if isinstance(exc, RuntimeError) and any(t in str(exc).lower() for t in _TRANSIENT_TEXT[:3]):
            return True
        exc = exc.__cause__ or exc.__context__
    return bool(message) and any(t in message.lower() for t in _TRANSIENT_TEXT)


def state_exception(state: Any) -> BaseException | None:
    """The exception a failed Prefect state carries, if any (without raising it)."""
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        res = state.result(raise_on_failure=False)
    except BaseException as e:  # noqa: BLE001 - a result that cannot be read is itself the error
        return e
    return res if isinstance(res, BaseException) else None


def is_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry only transient failures (see :func:`exception_is_transient`)."""
    return exception_is_transient(state_exception(state), getattr(state, "message", "") or "")


def retry_options(retries: int = RETRIES, backoff_s: float = BACKOFF_FACTOR_S) -> dict[str, Any]:
    """Task options for ``task.with_options(**retry_options())``: retries with exponential backoff and jitter,
    on transient failures only."""
    from prefect.tasks import exponential_backoff

    return {
        "retries": retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=backoff_s)(retries),
        "retry_jitter_factor": JITTER,
        "retry_condition_fn": is_transient,
    }


def _uses_gpu(device: str) -> bool:
    return device.startswith("cuda")


@contextmanager
def gpu_slot(device: str, lease_duration_s: float = 600) -> Iterator[None]:
    """Hold this worker's GPU (limit ``CINEDUB_GPU_SLOT`` or :func:`gpu_limit_name`) while a GPU stage runs.

    A no-op when ``device`` (a resolved device: ``cpu``, ``cuda``, ``cuda:N``) is the CPU. Blocks until the slot is
    free. The slot is a lease renewed while held, released on exit, and freed by the server if the holder dies.
    """
    if not _uses_gpu(device):
        yield
        return
    from prefect.concurrency.sync import concurrency

    name = os.environ.get(ENV_GPU_SLOT) or gpu_limit_name()
    with concurrency(name, occupy=1, lease_duration=lease_duration_s, strict=False):
        yield


class PrefectLimits:
    """:class:`cinedub.llm.limits.SharedLimits` backed by Prefect global concurrency limits (the flows inject it into
    the LLM client; the core never imports Prefect).

    ``hold`` is ``prefect.concurrency.sync.concurrency`` (a leased slot, freed after ``lease_duration_s`` if the
    holder dies), ``rate`` is ``prefect.concurrency.sync.rate_limit`` (needs a limit with slot decay). Both are
    strict: a limit missing on the server raises, and the client falls back to its in-process limits. Outside a
    Prefect flow or task run both raise too (there is no server to share limits through).
    """

    @staticmethod
    def _check_run() -> None:
        from prefect.context import FlowRunContext, TaskRunContext

        if FlowRunContext.get() is None and TaskRunContext.get() is None:
            raise RuntimeError("not inside a Prefect run")

    def rate(self, name: str) -> None:
        from prefect.concurrency.sync import rate_limit

        self._check_run()
        rate_limit(name, occupy=1, strict=True)

    @contextmanager
    def hold(self, name: str, lease_duration_s: float) -> Iterator[None]:
        from prefect.concurrency.sync import concurrency

        self._check_run()
        with concurrency(name, occupy=1, strict=True, lease_duration=lease_duration_s):
            yield


PREFECT_LIMITS = PrefectLimits()


def prefect_secret(name: str) -> str:
    """The value of the Prefect ``Secret`` block ``name`` (for :class:`cinedub.llm.client.LlmClient`'s
    ``secret_loader``).

    Raises:
        ValueError: the block cannot be loaded (the message names the block, never a value).
    """
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get())


def ensure_limits(gpus_by_host: dict[str, int] | None = None, llm_inflight: int = 4,
                  api_url: str | None = None) -> list[str]:
    """Create (or update) the global concurrency limits: ``gpu:<host>:<i>`` = 1 for each GPU and
    ``llm-inflight`` = ``llm_inflight``. Returns the limit names. Uses the REST API directly (plain JSON bodies).
    """
    import httpx

    from flows.api import api_url as _api_url

    url = api_url or _api_url()
    wanted = {LLM_LIMIT: llm_inflight}
    for host, n in (gpus_by_host or {}).items():
        for i in range(n):
            wanted[gpu_limit_name(host, i)] = 1
    with httpx.Client(base_url=url, timeout=30) as http:
        for name, limit in wanted.items():
            r = http.post("/v2/concurrency_limits/", json={"name": name, "limit": limit, "active": True})
            if r.status_code == 409:
                http.patch(f"/v2/concurrency_limits/{name}", json={"limit": limit, "active": True}).raise_for_status()
            else:
                r.raise_for_status()
    return sorted(wanted)
