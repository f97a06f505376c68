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

import json
import os
import socket
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.states import Failed
from prefect.task_runners import ThreadPoolTaskRunner

from cinedub import progress
from cinedub.atomic import write_json_atomic
from cinedub.card import write_card
from cinedub.config import Config
from cinedub.errors import MediaError
from cinedub.pipeline import clean_work_dir, decode_errors, plan_source, work_root
from cinedub.shards import build_manifest, source_shards, write_source_shards
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
    clean_work_dir(plan)  # left by a killed run of this source (one run per source at a time)
    try:
        return _process_plan(plan, p, out_dir, storage, logger)
    finally:
        clean_work_dir(plan)  # e.g. written by an ffmpeg child that outlived a killed run


def _process_plan(plan, p: Path, out_dir: str, storage: str, logger) -> dict[str, Any]:
    """The steps of :func:`process_source` once planned (returns its summary or a Failed state)."""
    t0 = time.perf_counter()
    records: dict[str, str] = {}
    steps_report: list[dict[str, Any]] = []
    outcome: tuple[str, str] | None = None
    for step in plan.steps:
        upstream = {n: records[o] for n, o in step.inputs.items() if o is not None}
        t_step = time.perf_counter()
        state = stage_task.with_options(**stage_options(step, storage, p.name))(
            plan, step.output, step.key, upstream, return_state=True
        )
        steps_report.append({"stage": step.name, "state": state.name, "seconds": round(time.perf_counter() - t_step, 2)})
        if not state.is_completed():
            _source_artifact(p.name, steps_report, "failed")
            if state.is_failed() and state.message and "exception" not in state.message.lower():
                return Failed(message=state.message)  # type: ignore[return-value]
            try:
                state.result()
            except BaseException as exc:  # noqa: BLE001 - the task's exception, re-raised by .result()
                return Failed(message=failure_reason(exc, step.name))  # type: ignore[return-value]
            return Failed(message=f"{p}: {step.name}: run ended {state.type.value}")  # type: ignore[return-value]
        records[step.output] = state.result()
        outcome = step.stage.record.from_json(records[step.output]).outcome()
        if outcome is not None:  # nothing more to do for this source (no speech, a language not configured)
            write_source_shards([], out_dir, plan.source_id)  # an earlier configuration's clips would be stale
            logger.info("source %s: %s (%s); the remaining stages are skipped", p.name, *outcome)
            break

    status, reason = outcome if outcome is not None else ("ok", "")
    ingest = IngestResult.from_json(records["ingest"])
    transcript = Transcript.from_json(records["transcript"]) if "transcript" in records else None
    clips = ClipList.from_json(records["clips"]) if "clips" in records else None
    summary = {
        "status": status,
        "reason": reason,
        "source_id": plan.source_id,
        "path": str(p),
        "episode": ingest.source.episode,
        "duration_ms": ingest.source.duration_ms,
        "language": transcript.language if transcript else None,
        "clips": len(clips.clips) if clips else 0,
        "shards": [str(s.name) for s in source_shards(out_dir, plan.source_id)],
        "wall_s": round(time.perf_counter() - t0, 2),
    }
    if clips is not None:
        summary["dropped_speech"] = [d.to_dict() for d in clips.dropped]
        summary["speech"] = clips.speech_report()
    damage = decode_errors({o: plan.step(o).stage.record.from_json(path) for o, path in records.items()
                            if o in ("ingest", "shots", "faces")})
    if damage:
        summary["decode_errors"] = damage
        logger.warning("source %s: decoded through corrupt data (%s)", p.name,
                       ", ".join(f"{k} {v}" for k, v in damage.items()))
    _source_artifact(p.name, steps_report, status)
    logger.info("source %s (%s): %s, %d clips, language %s", p.name, plan.source_id, status, summary["clips"],
                summary["language"])
    return summary


def _source_artifact(name: str, steps: list[dict[str, Any]], status: str) -> None:
    """A table artifact of one source's stages (state: Completed or Cached, seconds) for the UI. Seconds are the
    source's wall time in the step, including any wait for a stage another source holds (``concurrent_sources``)."""
    try:
        create_table_artifact(steps, description=f"{name}: {status}")
    except Exception:  # noqa: BLE001 - reporting must not fail the run
        pass


@dataclass
class RunReport:
    """What one run did with each input (``ok``, ``no_speech``, ``skipped_language`` or ``failed`` with the reason),
    written to ``<out>/runs/<time>-<run>.json`` when the run starts and after every source (atomically), so a run
    killed half-way leaves a report that the next run marks ``crashed``."""

    run_id: str
    started_at: str
    inputs: list[dict[str, Any]] = field(default_factory=list)
    status: str = "running"
    pid: int = field(default_factory=os.getpid)
    host: str = field(default_factory=socket.gethostname)
    ended_at: str | None = None

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [i for i in self.inputs if i["status"] == "failed"]

    def counts(self) -> dict[str, int]:
        """Inputs per status."""
        out: dict[str, int] = {}
        for i in self.inputs:
            out[i["status"]] = out.get(i["status"], 0) + 1
        return out

    def path(self, out_dir: str | Path) -> Path:
        return Path(out_dir) / "runs" / f"{self.started_at.replace(':', '')}-{self.run_id[:8]}.json"

    def write(self, out_dir: str | Path) -> Path:
        return write_json_atomic(self.path(out_dir), {
            "run_id": self.run_id, "started_at": self.started_at, "ended_at": self.ended_at, "status": self.status,
            "pid": self.pid, "host": self.host, "counts": self.counts(), "inputs": self.inputs})


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def mark_crashed_runs(out_dir: str | Path) -> list[str]:
    """Reports under ``<out>/runs`` still ``running`` whose process on this host is gone (killed, machine reboot)
    become ``crashed``, and their Prefect flow run is set Crashed when the API knows it. Returns their run ids."""
    crashed = []
    for path in sorted((Path(out_dir) / "runs").glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("status") != "running" or data.get("host") != socket.gethostname() or \
                _pid_alive(int(data.get("pid") or 0)):
            continue
        data.update(status="crashed", ended_at=_now(),
                    crash="the process ended without finishing the run (killed or lost); rerun to resume it")
        write_json_atomic(path, data)
        crashed.append(str(data.get("run_id")))
        try:
            from prefect import get_client
            from prefect.states import Crashed

            with get_client(sync_client=True) as client:
                client.set_flow_run_state(data["run_id"], Crashed(message="killed: found by the next run"), force=True)
        except Exception:  # noqa: BLE001 - a throwaway server of the killed run no longer knows it: fine
            pass
    return crashed


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@task(name="source", task_run_name="source-{path}", cache_policy=NO_CACHE, persist_result=False)
def source_task(path: str, out_dir: str, cfg: Config, storage: str) -> dict[str, Any]:
    """One source's child flow run (:func:`process_source`) inside the parent's thread pool. Returns its entry of
    the run report: the source's summary, or ``status: failed`` with the one-line reason (logged)."""
    state = process_source(path, out_dir, cfg, name=Path(path).name, storage=storage, return_state=True)
    if state.is_completed():
        return {"input": path, **state.result()}
    reason = state.message or f"run ended {state.type.value}"
    if "exception" in reason.lower():  # an unexpected error: name it as the child raised it
        try:
            state.result()
        except BaseException as exc:  # noqa: BLE001 - the child's exception, re-raised by .result()
            reason = failure_reason(exc)
    return _failed_entry(path, reason, get_run_logger())


def _failed_entry(path: str, reason: str, logger) -> dict[str, Any]:
    """The run report's entry of a failed source; its one-line reason (naming the file) goes to the log."""
    logger.error("FAILED %s", reason if path in reason else f"{path}: {reason}")
    return {"input": path, "status": "failed", "reason": reason}


@flow(name="cinedub-run", log_prints=True)
def run_pipeline(inputs: list[str], out_dir: str, cfg: Config | None = None) -> dict[str, Any]:
    """Process many inputs, one child flow run each (``cfg.concurrent_sources`` at once); a failed input is recorded
    and the others go on.

    The run report (``<out_dir>/runs/``) and the manifest are rewritten after every source, so readers see the
    shards that landed even if the run is killed later; a run killed before is marked ``crashed`` first.
    Progress goes to the listeners of :mod:`cinedub.progress` (the CLI's bars) and to a progress artifact.
    """
    from prefect.context import get_run_context

    cfg = cfg or Config()
    logger = get_run_logger()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for old in mark_crashed_runs(out):
        logger.warning("run %s was killed before it finished: marked crashed", old)
    run_id = str(get_run_context().flow_run.id)
    report = RunReport(run_id=run_id, started_at=_now())
    report.write(out)
    storage = ensure_result_storage(work_root(cfg, out))
    artifact_id = create_progress_artifact(0.0, key="cinedub-run-progress", description=f"{len(inputs)} inputs")

    # Sources run concurrently (cfg.concurrent_sources), each a child flow run inside a task of this flow's thread
    # pool; every stage instance takes one source at a time, so they pipeline through the stages.
    runner = ThreadPoolTaskRunner(max_workers=max(1, min(cfg.concurrent_sources, len(inputs))))
    done: dict[int, dict[str, Any]] = {}
    with runner:
        futures = {runner.submit(source_task, {"path": path, "out_dir": str(out), "cfg": cfg, "storage": storage}): i
                   for i, path in enumerate(inputs)}
        for future in as_completed(list(futures)):
            i, path = futures[future], inputs[futures[future]]
            try:
                done[i] = future.result()
            except Exception as exc:  # noqa: BLE001 - the task itself broke (not the source's flow): record it
                done[i] = _failed_entry(path, failure_reason(exc), logger)
            report.inputs = [done[k] for k in sorted(done)]  # input order, whatever finishes first
            build_manifest(out)  # the source's shards are visible to readers now
            report.write(out)
            progress.source_finished(Path(path).name, done[i]["status"])
            update_progress_artifact(artifact_id, 100.0 * len(done) / max(1, len(inputs)))

    manifest = build_manifest(out)
    if manifest["shards"]:
        write_card(out, cfg.shards.license)  # README.md dataset card, stats.json, plots/
    report.status, report.ended_at = "done", _now()
    report_path = report.write(out)
    counts = report.counts()
    create_table_artifact(
        [
            {
                "input": Path(r["input"]).name,
                "status": r["status"],
                "clips": r.get("clips", ""),
                "language": r.get("language") or "",
                "reason": r.get("reason", ""),
            }
            for r in report.inputs
        ],
        key="cinedub-run-report",
        description=", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
    )
    logger.info("%s; %d clips in %d shards; report %s", ", ".join(f"{v} {k}" for k, v in sorted(counts.items())),
                manifest["total_rows"], len(manifest["shards"]), report_path)
    return {
        "run_id": run_id,
        "report": str(report_path),
        "inputs": report.inputs,
        "total_clips": manifest["total_rows"],
        "shards": len(manifest["shards"]),
    }
