"""Prefect flows of the main job: one parent run over many inputs, one child flow run per source.

The flows only wire, cache, retry and report; the work is done by the stages in :mod:`cinedub.stages`.
Tasks exchange paths of small JSON records written in the source's work folder, never arrays.

Caching: each task's cache key is ``<stage>/<source_id>/<hash of (stage version, stage config, source content
hash, upstream keys)>`` (see :func:`stage_key`), persisted in a local-file-system result storage under the work folder.
A rerun after a crash, or with more inputs, replays finished stages from the cache and redoes only what changed.
A key whose output file has disappeared is treated as a miss.
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

from cinedub.config import Config
from cinedub.errors import MediaError
from cinedub.shards import build_manifest, source_shards
from cinedub.stages.asd import AsdStage
from cinedub.stages.asr import AsrStage
from cinedub.stages.diarization import DiarizationStage
from cinedub.stages.faces import FacesStage
from cinedub.stages.base import source_work_dir
from cinedub.stages.ingest import IngestResult, IngestStage
from cinedub.stages.package import PackageStage
from cinedub.stages.separation import SeparationStage
from cinedub.stages.shots import ShotStage
from cinedub.types import ClipList, Transcript, write_json_atomic

from flows.tasks import (
    FUSION_VERSION,
    SEGMENT_VERSION,
    asd_task,
    asr_task,
    diarization_task,
    ensure_result_storage,
    faces_task,
    failure_reason,
    fuse_task,
    hash_source,
    ingest_task,
    output_path,
    package_task,
    run_models,
    segment_task,
    separation_task,
    shots_task,
    stage_key,
    task_options,
)

@flow(name="cinedub-source", flow_run_name="source-{name}", log_prints=True)
def process_source(path: str, out_dir: str, cfg: Config, name: str = "", storage: str | None = None) -> dict[str, Any]:
    """Run every stage on one source and write its shards; returns a small summary dict.

    Raises:
        MediaError: the input is unusable (the parent records it and goes on).
    """
    logger = get_run_logger()
    p = Path(path)
    if not p.is_file():
        return Failed(message=str(MediaError(p, "file not found")))  # type: ignore[return-value]
    work_root = Path(cfg.work_dir) if cfg.work_dir else Path(out_dir) / ".work"
    storage = storage or ensure_result_storage(work_root)
    st = p.stat()
    sha = hash_source.with_options(result_storage=storage)(str(p), st.st_size, st.st_mtime_ns)
    source_id = sha[:16]
    work = source_work_dir(cfg, out_dir, source_id)
    t0 = time.perf_counter()

    k_ingest = stage_key("ingest", source_id, IngestStage.version, sha)
    o_ingest = output_path(work, k_ingest)
    ingest_state = ingest_task.with_options(**task_options(storage, o_ingest))(str(p), cfg, out_dir, k_ingest, o_ingest,
                                                                        return_state=True)
    if ingest_state.is_failed():
        return Failed(message=ingest_state.message or "ingest failed")  # type: ignore[return-value]
    ingest_json = ingest_state.result()

    sep = SeparationStage(cfg)
    k_sep = stage_key("separation", source_id, sep.cache_token(), k_ingest)
    o = output_path(work, k_sep)
    tracks_json = separation_task.with_options(**task_options(storage, o))(ingest_json, cfg, k_sep, o)

    k_asr = stage_key("asr", source_id, AsrStage(cfg).cache_token(), k_sep)
    o = output_path(work, k_asr)
    transcript_json = asr_task.with_options(**task_options(storage, o))(tracks_json, cfg, k_asr, o)

    k_shots = stage_key("shots", source_id, ShotStage(cfg).cache_token(), k_ingest)
    o = output_path(work, k_shots)
    shots_json = shots_task.with_options(**task_options(storage, o))(ingest_json, cfg, k_shots, o)

    diar_json = faces_json = asd_json = timeline_json = ""
    k_diar = k_faces = k_asd = k_fuse = ""
    if cfg.run_diarization:
        k_diar = stage_key("diarization", source_id, DiarizationStage(cfg).cache_token(), k_sep)
        o = output_path(work, k_diar)
        diar_json = diarization_task.with_options(**task_options(storage, o))(ingest_json, tracks_json, cfg, k_diar, o)
    if cfg.run_visual:
        k_faces = stage_key("faces", source_id, FacesStage(cfg).cache_token(), k_shots, k_asr, k_diar)
        o = output_path(work, k_faces)
        faces_json = faces_task.with_options(**task_options(storage, o))(ingest_json, shots_json, transcript_json, diar_json,
                                                                  cfg, k_faces, o)
        k_asd = stage_key("asd", source_id, AsdStage(cfg).cache_token(), k_faces, k_diar)
        o = output_path(work, k_asd)
        asd_json = asd_task.with_options(**task_options(storage, o))(faces_json, tracks_json, diar_json, cfg, k_asd, o)
    if cfg.run_diarization:
        k_fuse = stage_key("fuse", source_id, FUSION_VERSION, k_diar, k_asd)
        o = output_path(work, k_fuse)
        timeline_json = fuse_task.with_options(**task_options(storage, o))(diar_json, faces_json, asd_json, source_id, k_fuse, o)

    k_seg = stage_key("segment", source_id, SEGMENT_VERSION, cfg.stage_hash("segmentation"), k_asr, k_shots, k_fuse)
    o = output_path(work, k_seg)
    clips_json = segment_task.with_options(**task_options(storage, o))(ingest_json, transcript_json, shots_json, timeline_json,
                                                                cfg, k_seg, o)

    out_abs = str(Path(out_dir).resolve())
    models = run_models(cfg)
    k_pack = stage_key("package", source_id, PackageStage(cfg).cache_token(), cfg.config_hash(), k_seg, k_sep, k_fuse, k_asd,
                  out_abs, models)
    package_json = output_path(work, k_pack)
    package_task.with_options(**task_options(storage, package_json))(
        ingest_json, tracks_json, transcript_json, clips_json, timeline_json, faces_json, asd_json, cfg, out_dir,
        models, k_pack, package_json,
    )

    clips = ClipList.from_json(clips_json)
    transcript = Transcript.from_json(transcript_json)
    ingest = IngestResult.from_json(ingest_json)
    summary = {
        "source_id": source_id,
        "path": str(p),
        "episode": ingest.source.episode,
        "duration_ms": ingest.source.duration_ms,
        "language": transcript.language,
        "clips": len(clips.clips),
        "shards": [str(s.name) for s in source_shards(out_dir, source_id)],
        "wall_s": round(time.perf_counter() - t0, 2),
    }
    logger.info("source %s (%s): %d clips, language %s", p.name, source_id, summary["clips"], summary["language"])
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
def run_pipeline(inputs: list[str], out_dir: str, cfg: Config | None = None, progress: bool = True) -> dict[str, Any]:
    """Process many inputs, one child flow run each; a failed input is recorded and the others go on.

    Returns the run report as a dict (also written to ``<out_dir>/runs/`` and shown as a table artifact).
    """
    from prefect.context import get_run_context

    cfg = cfg or Config()
    logger = get_run_logger()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run_id = str(get_run_context().flow_run.id)
    report = RunReport(run_id=run_id, started_at=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    work_root = Path(cfg.work_dir) if cfg.work_dir else out / ".work"
    storage = ensure_result_storage(work_root)
    artifact_id = create_progress_artifact(0.0, key="cinedub-run-progress", description=f"{len(inputs)} inputs")

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(inputs), desc="sources", unit="src", dynamic_ncols=True)
    for i, path in enumerate(inputs):
        name = Path(path).name
        if bar is not None:
            bar.set_postfix_str(name)
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
        update_progress_artifact(artifact_id, 100.0 * (i + 1) / max(1, len(inputs)))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

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
