"""Rate limit and in-flight cap of LLM calls: Prefect global concurrency limits inside Prefect, local ones otherwise.

Inside a Prefect flow or task run, with :attr:`LlmConfig.prefect_concurrency_limit` / ``prefect_rate_limit`` naming
global concurrency limits that exist on the server, every worker of a deployment shares them
(``prefect.concurrency.sync.concurrency`` holds a slot for the call's duration, ``rate_limit`` takes a slot that
decays at the limit's ``slot_decay_per_second``). Outside Prefect, or when a name is not configured or its limit does
not exist on the server, a process-wide semaphore and token bucket apply instead (a missing limit is logged once,
then the local limiter is used for the rest of the process).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from cinedub.llm.config import LlmConfig

log = logging.getLogger("cinedub.llm")


class TokenBucket:
    """Token bucket (Turner, 1986): ``rate_per_s`` tokens per second, at most ``burst`` stored.

    :meth:`acquire` blocks until a token is available; start times of consecutive calls are then at least
    ``1 / rate_per_s`` seconds apart once the burst is spent.
    """

    def __init__(self, rate_per_s: float, burst: int = 1):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate_per_s must be > 0 and burst >= 1")
        self.rate = rate_per_s
        self.burst = burst
        self._tokens = float(burst)
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token; returns the seconds waited."""
        waited = 0.0
        while True:
            with self._lock:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                delay = (1.0 - self._tokens) / self.rate
            time.sleep(delay)
            waited += delay


def _in_prefect_run() -> bool:
    try:
        from prefect.context import FlowRunContext, TaskRunContext
    except ImportError:  # pragma: no cover - prefect is a dependency
        return False
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


class CallLimiter:
    """One slot per LLM request: ``with limiter.slot(): call()``.

    Thread-safe; share one instance per process and configuration (:func:`limiter_for`).

    Attributes:
        used_prefect: names of the Prefect limits used at least once (for reports and tests).
    """

    def __init__(self, cfg: LlmConfig):
        self.cfg = cfg
        self._sem = threading.BoundedSemaphore(cfg.max_in_flight)
        self._bucket = TokenBucket(cfg.rate_per_minute / 60.0, cfg.rate_burst) if cfg.rate_per_minute > 0 else None
        self._missing: set[str] = set()
        self.used_prefect: set[str] = set()
        self._lock = threading.Lock()

    def _prefect_name(self, name: str | None) -> str | None:
        if not name or not _in_prefect_run():
            return None
        with self._lock:
            return None if name in self._missing else name

    def _mark_missing(self, name: str, exc: BaseException) -> None:
        with self._lock:
            if name not in self._missing:
                log.warning("Prefect limit %r unusable (%s): using the in-process limiter", name, exc)
            self._missing.add(name)

    def _rate(self) -> None:
        name = self._prefect_name(self.cfg.prefect_rate_limit)
        if name:
            from prefect.concurrency.sync import rate_limit

            try:
                rate_limit(name, occupy=1, strict=True)
                with self._lock:
                    self.used_prefect.add(name)
                return
            except Exception as exc:  # noqa: BLE001 - missing limit or no server: fall back, never fail the call
                self._mark_missing(name, exc)
        if self._bucket is not None:
            self._bucket.acquire()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for the rate limit, then hold an in-flight slot for the duration of the block."""
        self._rate()
        name = self._prefect_name(self.cfg.prefect_concurrency_limit)
        with ExitStack() as stack:
            if name:
                from prefect.concurrency.sync import concurrency

                try:
                    stack.enter_context(concurrency(name, occupy=1, strict=True, lease_duration=max(60.0, 2 * self.cfg.timeout_s)))
                    with self._lock:
                        self.used_prefect.add(name)
                except Exception as exc:  # noqa: BLE001 - see _rate
                    self._mark_missing(name, exc)
                    name = None
            if not name:
                self._sem.acquire()
                stack.callback(self._sem.release)
            yield


_LIMITERS: dict[str, CallLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(cfg: LlmConfig) -> CallLimiter:
    """The process-wide limiter of ``cfg`` (one per distinct configuration, so every clip shares its limits)."""
    key = cfg.model_dump_json()
    with _LIMITERS_LOCK:
        lim = _LIMITERS.get(key)
        if lim is None:
            lim = _LIMITERS[key] = CallLimiter(cfg)
        return lim
