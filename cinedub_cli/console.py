"""What the terminal shows: rich progress per source and stage, one line per failure, and nothing else by default.

:func:`terminal` sets a command up: without ``-v`` everything third-party code writes to the process's stderr
(Prefect's loggers, mediapipe / TensorFlow Lite / absl C++ logs, protobuf warnings, library banners) goes to a log
file instead (``OUT/runs/<time>.log`` or a temporary file), while CineDub's own output goes to the real terminal;
with ``-v`` it all stays on the terminal at DEBUG level. :class:`RichProgress` draws one bar per running stage
(source, stage, seconds/frames/clips done of the total, ETA) and a sources bar.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from cinedub import progress as core_progress

# C++ loggers of mediapipe / TensorFlow Lite / absl read these when the libraries load
_QUIET_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3", "ABSL_MIN_LOG_LEVEL": "2"}


@dataclass
class Terminal:
    """The console CineDub writes to (the real terminal) and where third-party output went."""

    console: Console
    log_path: Path | None
    verbose: bool


class RunFormatter(logging.Formatter):
    """Log lines that name the Prefect task or flow run they come from (Prefect's own records carry the names
    as ``task_run_name`` / ``flow_run_name``; its "Finished in state ..." lines say nothing else)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(run)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        name = getattr(record, "task_run_name", None) or getattr(record, "flow_run_name", None)
        record.run = f" [{name}]" if name else ""
        return super().format(record)


@contextmanager
def terminal(verbose: bool, log_dir: Path | None = None, name: str = "cinedub") -> Iterator[Terminal]:
    """Route output for one command (see the module docstring). Yields the :class:`Terminal`.

    Args:
        verbose: keep everything on the terminal (DEBUG logging, third-party noise included).
        log_dir: where the captured output goes (``<log_dir>/<name>.log``); default a temporary file.
    """
    level = logging.DEBUG if verbose else logging.INFO
    if verbose:
        logging.basicConfig(level=level, force=True)
        for h in logging.getLogger().handlers:
            h.setFormatter(RunFormatter())
        yield Terminal(Console(stderr=True), None, True)
        return
    for k, v in _QUIET_ENV.items():
        os.environ.setdefault(k, v)
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{name}.log"
    else:
        fd, tmp = tempfile.mkstemp(prefix=f"{name}-", suffix=".log")
        os.close(fd)
        log_path = Path(tmp)
    sys.stderr.flush()
    saved = os.dup(2)
    log_file = open(log_path, "a", encoding="utf-8", buffering=1)
    os.dup2(log_file.fileno(), 2)  # C++ libraries write to fd 2 directly: only a dup2 catches them
    real = os.fdopen(os.dup(saved), "w", buffering=1)
    handler = logging.StreamHandler(log_file)
    handler.setFormatter(RunFormatter())
    root = logging.getLogger()
    old_handlers, old_level = root.handlers[:], root.level
    root.handlers = [handler]
    root.setLevel(level)
    try:
        yield Terminal(Console(file=real, stderr=True), log_path, False)
    finally:
        root.handlers, root.level = old_handlers, old_level
        logging.getLogger("prefect").setLevel(logging.WARNING)  # its shutdown lines ("Stopping temporary server")
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        real.close()
        log_file.close()


class RichProgress:
    """A :class:`cinedub.progress.ProgressSink` drawing rich bars: sources done, and each running stage."""

    def __init__(self, console: Console, n_sources: int):
        self.progress = Progress(
            TextColumn("[bold]{task.fields[source]}[/bold]", justify="left"),
            TextColumn("{task.description}", justify="left"),
            BarColumn(bar_width=30),
            MofNCompleteColumn(),
            TextColumn("{task.fields[unit]}"),
            TimeRemainingColumn(compact=True, elapsed_when_finished=True),
            console=console,
            transient=False,
        )
        self.sources = self.progress.add_task("sources", total=n_sources, source="all", unit="")
        self.tasks: dict[tuple[str, str], TaskID] = {}

    def __enter__(self) -> "RichProgress":
        self.progress.start()
        core_progress.add_sink(self)
        return self

    def __exit__(self, *exc: object) -> None:
        core_progress.remove_sink(self)
        self.progress.stop()

    def stage_started(self, source: str, stage: str) -> None:
        self.tasks[(source, stage)] = self.progress.add_task(stage, total=None, source=source, unit="")

    def stage_progress(self, source: str, stage: str, done: float, total: float | None, unit: str) -> None:
        task = self.tasks.get((source, stage))
        if task is not None:
            self.progress.update(task, completed=round(done, 1), total=total, unit=unit)

    def stage_finished(self, source: str, stage: str, status: str) -> None:
        task = self.tasks.pop((source, stage), None)
        if task is not None:
            self.progress.remove_task(task)

    def source_finished(self, source: str, status: str) -> None:
        self.progress.advance(self.sources)
        mark = "[green]ok[/green]" if status == "ok" else f"[red]{status}[/red]"
        self.progress.console.print(f"{source}: {mark}")
