"""Rate limit and in-flight cap of LLM calls: limits shared by a whole deployment when the caller provides them,
process-wide ones otherwise.

The core knows no orchestrator. A caller that has deployment-wide limits (the Prefect flows: global concurrency
limits on the server, see :class:`flows.resources.PrefectLimits`) passes them in as a :class:`SharedLimits`; with
:attr:`LlmConfig.prefect_concurrency_limit` / ``prefect_rate_limit`` naming limits, every request then holds a slot
of the named in-flight limit for its duration and takes a slot of the named rate limit before it starts. Without
shared limits, or when a name is not configured or its limit is unusable (missing on the server, no server), a
process-wide semaphore and token bucket apply instead (an unusable limit is logged once, then the local limiter is
used for the rest of the process).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Protocol

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


class SharedLimits(Protocol):
    """Limits shared by every process of a deployment, injected by the orchestration layer.

    Both methods raise any exception when the named limit cannot be used (it does not exist, no server); the
    :class:`CallLimiter` then falls back to its local limits.
    """

    def rate(self, name: str) -> None:
        """Block until one slot of the rate limit ``name`` is free and take it (the slot decays by itself)."""

    def hold(self, name: str, lease_duration_s: float) -> AbstractContextManager[None]:
        """Hold one slot of the concurrency limit ``name`` for the block; a crashed holder's slot is freed after
        ``lease_duration_s`` seconds."""


class CallLimiter:
    """One slot per LLM request: ``with limiter.slot(): call()``.

    Thread-safe; share one instance per process, configuration and shared limits (:func:`limiter_for`).

    Args:
        cfg: rate, burst, in-flight cap and the names of the shared limits.
        shared: deployment-wide limits (None: local limits only).

    Attributes:
        used_shared: names of the shared limits used at least once (for reports and tests).
    """

    def __init__(self, cfg: LlmConfig, shared: SharedLimits | None = None):
        self.cfg = cfg
        self.shared = shared
        self._sem = threading.BoundedSemaphore(cfg.max_in_flight)
        self._bucket = TokenBucket(cfg.rate_per_minute / 60.0, cfg.rate_burst) if cfg.rate_per_minute > 0 else None
        self._missing: set[str] = set()
        self.used_shared: set[str] = set()
        self._lock = threading.Lock()

    def _shared_name(self, name: str | None) -> str | None:
        if not name or self.shared is None:
            return None
        with self._lock:
            return None if name in self._missing else name

    def _mark_missing(self, name: str, exc: BaseException) -> None:
        with self._lock:
            if name not in self._missing:
                log.warning("shared limit %r unusable (%s): using the in-process limiter", name, type(exc).__name__)
            self._missing.add(name)

    def _rate(self) -> None:
        name = self._shared_name(self.cfg.prefect_rate_limit)
        if name:
            try:
                self.shared.rate(name)  # type: ignore[union-attr]
                with self._lock:
                    self.used_shared.add(name)
                return
            except Exception as exc:  # noqa: BLE001 - missing limit or no server: fall back, never fail the call
                self._mark_missing(name, exc)
        if self._bucket is not None:
            self._bucket.acquire()

    @contextmanager
    def slot(self) -> Iterator[None]:
        """Wait for the rate limit, then hold an in-flight slot for the duration of the block."""
        self._rate()
        name = self._shared_name(self.cfg.prefect_concurrency_limit)
        with ExitStack() as stack:
            if name:
                try:
                    lease = max(60.0, 2 * self.cfg.timeout_s)
                    stack.enter_context(self.shared.hold(name, lease))  # type: ignore[union-attr]
                    with self._lock:
                        self.used_shared.add(name)
                except Exception as exc:  # noqa: BLE001 - see _rate
                    self._mark_missing(name, exc)
                    name = None
            if not name:
                self._sem.acquire()
                stack.callback(self._sem.release)
            yield


_LIMITERS: dict[tuple[str, int], CallLimiter] = {}
_LIMITERS_LOCK = threading.Lock()


def limiter_for(cfg: LlmConfig, shared: SharedLimits | None = None) -> CallLimiter:
    """The process-wide limiter of ``cfg`` and ``shared`` (one per distinct configuration and shared-limit object,
    so every clip of a process shares its limits)."""
    key = (cfg.model_dump_json(), id(shared))
    with _LIMITERS_LOCK:
        lim = _LIMITERS.get(key)
        if lim is None:
            lim = _LIMITERS[key] = CallLimiter(cfg, shared)
        return lim
