"""Progress of a run, reported by the runner and the stages, shown by whoever listens (no UI code here).

The runner announces each step (:meth:`ProgressSink.stage_started` / :meth:`ProgressSink.stage_finished`); a stage
reports how far it is through :attr:`cinedub.stages.base.StageContext.progress` (``done`` of ``total`` in its own
unit: seconds of audio, frames, tracks, clips). Listeners are installed with :func:`add_sink`: the CLI draws rich
progress bars, the Prefect flow keeps a progress artifact per stage. With no listener, reports cost nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol


class ProgressSink(Protocol):
    """What a progress listener receives. ``source`` is the input's display name, ``stage`` the stage name."""

    def stage_started(self, source: str, stage: str) -> None: ...

    def stage_progress(self, source: str, stage: str, done: float, total: float | None, unit: str) -> None: ...

    def stage_finished(self, source: str, stage: str, status: str) -> None: ...

    def source_finished(self, source: str, status: str) -> None: ...


_SINKS: list[ProgressSink] = []
_LOCK = threading.Lock()


def add_sink(sink: ProgressSink) -> None:
    """Start sending reports to ``sink`` (until :func:`remove_sink`)."""
    with _LOCK:
        _SINKS.append(sink)


def remove_sink(sink: ProgressSink) -> None:
    with _LOCK:
        if sink in _SINKS:
            _SINKS.remove(sink)


def _each(method: str, *args: object) -> None:
    with _LOCK:
        sinks = list(_SINKS)
    for s in sinks:
        try:
            getattr(s, method)(*args)
        except Exception:  # noqa: BLE001 - a broken display must never fail the run
            pass


def stage_started(source: str, stage: str) -> None:
    _each("stage_started", source, stage)


def stage_finished(source: str, stage: str, status: str) -> None:
    _each("stage_finished", source, stage, status)


def source_finished(source: str, status: str) -> None:
    """A source is done: ``status`` is "ok", "no_speech", "failed", ..."""
    _each("source_finished", source, status)


Reporter = Callable[[float, "float | None", str], None]


def reporter(source: str, stage: str, min_interval_s: float = 0.25) -> Reporter:
    """A ``report(done, total, unit)`` callable for one stage call, throttled to one report per ``min_interval_s``
    (the last report, ``done == total``, always goes through)."""
    last = [0.0]

    def report(done: float, total: float | None = None, unit: str = "") -> None:
        now = time.monotonic()
        if now - last[0] < min_interval_s and not (total is not None and done >= total):
            return
        last[0] = now
        _each("stage_progress", source, stage, float(done), None if total is None else float(total), unit)

    return report


def no_report(done: float, total: float | None = None, unit: str = "") -> None:
    """A reporter that drops everything (stages called outside a run)."""
