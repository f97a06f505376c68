"""Prefect flows of the main job: one parent run over many inputs, one child flow run per source.

The flows only wire, cache, retry and report. What runs is the declared pipeline (:data:`cinedub.pipeline.PIPELINE`):
:func:`process_source` plans the source (:func:`cinedub.pipeline.plan_source`) and runs each step as one task of
:func:`flows.tasks.stage_task`, in order, passing the upstream record paths (small JSON files in the source's work
folder, never arrays).

Caching: each task's cache key is the step's key (stage version, stage config and models, source content hash,
upstream keys), persisted in a local-file-system result storage under the work folder. A rerun after a crash, or
with more inputs, replays finished stages from the cache and redoes only what changed. A key whose output file has
disappeared is treated as a miss.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.states import Failed

from cinedub import progress
from cinedub.atomic import write_json_atomic
from cinedub.config import Config
from cinedub.errors import MediaError
from cinedub.pipeline import plan_source, work_root
from cinedub.shards import build_manifest, source_shards
from cinedub.types import ClipList, IngestResult, Transcript

from flows.tasks import ensure_result_storage, failure_reason, hash_source, stage_options, stage_task


@flow(name="cinedub-source", flow_run_name="source-{name}", log_prints=True)
def process_source(path: str, out_dir: str, cfg: Config, name: str = "", storage: str | None = None,
                   sha256: str | None = None) -> dict[str, Any]:
    """Run every declared stage on one source and write its shards; returns a small summary dict.

    Args:
        sha256: the file's hash when the caller knows it (the ingest flow does); else hashed once here.

    Returns a Failed state (the parent records it and goes on) when the input is unusable or a stage fails on it.
    """
    logger = get_run_logger()
    p = Path(path)
    if not p.is_file():
        return Failed(message=str(MediaError(p, "file not found")))  # type: ignore[return-value]
    storage = storage or ensure_result_storage(work_root(cfg, out_dir))
    if sha256 is None:
        st = p.stat()
        sha256 = hash_source.with_options(result_storage=storage)(str(p), st.st_size, st.st_mtime_ns)
    plan = plan_source(p, out_dir, cfg, sha256=sha256)
    t0 = time.perf_counter()
    records: dict[str, str] = {}
    for step in plan.steps:
        upstream = {n: records[o] for n, o in step.inputs.items() if o is not None}
        state = stage_task.with_options(**stage_options(step, storage, p.name))(
            plan, step.output, step.key, upstream, return_state=True
        )
        if not state.is_completed():
            if state.is_failed() and state.message and "exception" not in state.message.lower():
                return Failed(message=state.message)  # type: ignore[return-value]
            try:
                state.result()
            except BaseException as exc:  # noqa: BLE001 - the task's exception, re-raised by .result()
                return Failed(message=failure_reason(exc, step.name))  # type: ignore[return-value]
            return Failed(message=f"{p}: {step.name}: run ended {state.type.value}")  # type: ignore[return-value]
        records[step.output] = state.result()

    clips = ClipList.from_json(records["clips"])
    transcript = Transcript.from_json(records["transcript"])
    ingest = IngestResult.from_json(records["ingest"])
    summary = {
        "source_id": plan.source_id,
        "path": str(p),
        "episode": ingest.source.episode,
        "duration_ms": ingest.source.duration_ms,
        "language": transcript.language,
        "clips": len(clips.clips),
        "shards": [str(s.name) for s in source_shards(out_dir, plan.source_id)],
        "wall_s": round(time.perf_counter() - t0, 2),
    }
    logger.info("source %s (%s): %d clips, language %s", p.name, plan.source_id, summary["clips"], summary["language"])
    return summary


@dataclass
class RunReport:
    """What one run did with each input: ``ok`` with a summary, or ``failed`` with the reason."""

    run_id: str
    started_at: str
    inputs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [i for i in self.inputs if i["status"] == "failed"]

    def write(self, out_dir: str | Path) -> Path:
        path = Path(out_dir) / "runs" / f"{self.started_at.replace(':', '')}-{self.run_id[:8]}.json"
        write_json_atomic(path, {"run_id": self.run_id, "started_at": self.started_at, "inputs": self.inputs})
        return path


@flow(name="cinedub-run", log_prints=True)
def run_pipeline(inputs: list[str], out_dir: str, cfg: Config | None = None) -> dict[str, Any]:
    """Process many inputs, one child flow run each; a failed input is recorded and the others go on.

    Progress goes to the listeners of :mod:`cinedub.progress` (the CLI's bars) and to a progress artifact.

    Returns the run report as a dict (also written to ``<out_dir>/runs/`` and shown as a table artifact).
    """
    from prefect.context import get_run_context

    cfg = cfg or Config()
    logger = get_run_logger()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_id = str(get_run_context().flow_run.id)
    report = RunReport(run_id=run_id, started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    storage = ensure_result_storage(work_root(cfg, out))
    artifact_id = create_progress_artifact(0.0, key="cinedub-run-progress", description=f"{len(inputs)} inputs")

    for i, path in enumerate(inputs):
        name = Path(path).name
        state = process_source(path, str(out), cfg, name=name, storage=storage, return_state=True)
        if state.is_completed():
            report.inputs.append({"input": path, "status": "ok", **state.result()})
        else:
            reason = state.message or f"run ended {state.type.value}"
            if "exception" in reason.lower():  # an unexpected error: name it as the child raised it
                try:
                    state.result()
                except BaseException as exc:  # noqa: BLE001 - the child's exception, re-raised by .result()
                    reason = failure_reason(exc)
            logger.error("FAILED %s", reason if path in reason else f"{path}: {reason}")
            report.inputs.append({"input": path, "status": "failed", "reason": reason})
        progress.source_finished(name, report.inputs[-1]["status"])
        update_progress_artifact(artifact_id, 100.0 * (i + 1) / max(1, len(inputs)))

    manifest = build_manifest(out)
    report_path = report.write(out)
    create_table_artifact(
        [
            {
                "input": Path(r["input"]).name,
                "status": r["status"],
                "clips": r.get("clips", ""),
                "language": r.get("language", ""),
                "reason": r.get("reason", ""),
            }
            for r in report.inputs
        ],
        key="cinedub-run-report",
        description=f"{len(report.inputs) - len(report.failed)} ok, {len(report.failed)} failed",
    )
    logger.info(
        "%d ok, %d failed; %d clips in %d shards; report %s",
        len(report.inputs) - len(report.failed),
        len(report.failed),
        manifest["total_rows"],
        len(manifest["shards"]),
        report_path,
    )
    result = {
        "run_id": run_id,
        "report": str(report_path),
        "inputs": report.inputs,
        "total_clips": manifest["total_rows"],
        "shards": len(manifest["shards"]),
    }
    return result


def configure_prefect_env(out_dir: str | Path | None = None) -> None:
    """Environment defaults for running without a server (ephemeral) or against one (``PREFECT_API_URL``)."""
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
