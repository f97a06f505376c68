"""The Prefect tasks of the main job: one generic task runs any declared stage, plus the source hash.

:func:`stage_task` wraps :func:`cinedub.pipeline.execute_step`: its cache key is the step's key (stage version,
config sections and models, the source's content hash and the upstream keys: :func:`cinedub.pipeline.plan_source`),
persisted in a local-file-system result storage under the work folder; it holds the GPU slot when the stage
declares GPUs and runs on CUDA; it retries transient failures only. A key whose record (or, for the package step,
whose shards) has disappeared is a miss, so deleting outputs reruns the stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.filesystems import LocalFileSystem
from prefect.states import Failed, State

from cinedub.errors import CineDubError, MediaError
from cinedub.hashing import sha256_file
from cinedub.pipeline import Plan, Step, execute_step

from flows.resources import gpu_slot, retry_options

log = logging.getLogger("cinedub.flow")


def outputs_exist(step: Step) -> bool:
    """The step's record exists, and so do the shards a package record lists (a user may delete either)."""
    path = step.record_path
    if not path.is_file():
        return False
    if step.output == "package":
        try:
            return all(Path(s).is_file() for s in json.loads(path.read_text())["shards"])
        except (json.JSONDecodeError, KeyError):
            return False
    return True


@task(name="hash-source", cache_key_fn=lambda ctx, p: f"hash/{p['path']}/{p['size']}/{p['mtime_ns']}")
def hash_source(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of the input (cached by path, size and mtime, so a file is read for its hash once)."""
    return sha256_file(path)


def _slot(step: Step, plan: Plan):
    stage = step.stage
    if stage.resources_for(plan.cfg).gpus > 0:
        return gpu_slot(stage.device_for(plan.cfg))
    return nullcontext()


def failure_reason(exc: BaseException, stage: str = "") -> str:
    """One line for a failed input: the file, the stage and the reason; a CineDub error's own message (it names
    the file), else ``Type: message``."""
    where = f"{stage}: " if stage else ""
    if isinstance(exc, MediaError):
        return f"{exc.path}: {where}{exc.reason}"
    if isinstance(exc, CineDubError):
        return f"{where}{exc}"
    return f"{where}{type(exc).__name__}: {exc}"


@task(name="stage", cache_key_fn=lambda ctx, p: p["key"], **retry_options())
def stage_task(plan: Plan, output: str, key: str, upstream: dict[str, str]) -> str | State:
    """Run the step producing ``output`` (``key`` is its cache key; ``upstream`` the record paths it reads, passed so
    Prefect sees the dependencies). Bad input and missing models end the task Failed with one line (file, stage,
    reason) and no traceback; anything else raises (a bug, or a transient error that is retried)."""
    step = plan.step(output)
    logger = get_run_logger()
    try:
        path = execute_step(plan, step, slot=lambda s: _slot(s, plan), log_=logger)  # type: ignore[arg-type]
    except CineDubError as e:
        reason = failure_reason(e, step.name)
        logger.error("%s", reason)
        return Failed(message=reason)
    return str(path)


def stage_options(step: Step, storage: str, source_name: str) -> dict[str, Any]:
    """Options of one step's task run: its name, shared result storage, and ``refresh_cache`` when the outputs of
    a cached run were deleted."""
    return {
        "name": step.name,
        "task_run_name": f"{step.name}-{source_name}",
        "result_storage": storage,
        "refresh_cache": not outputs_exist(step),
    }


def ensure_result_storage(work_root: Path) -> str:
    """A saved local-file-system block for this work folder (Prefect needs saved blocks for result storage)."""
    base = (work_root / "prefect-results").resolve()
    name = "cinedub-results-" + hashlib.sha1(str(base).encode()).hexdigest()[:12]
    LocalFileSystem(basepath=str(base)).save(name, overwrite=True)
    return f"local-file-system/{name}"
