"""Prefect flows of the main job: one parent run over many inputs, one child flow run per source.

The flows only wire, cache, retry and report; the work is done by the stages in :mod:`cinedub.stages`.
Tasks exchange paths of small JSON records written in the source's work folder, never arrays.

Caching: each task's cache key is ``<stage>/<source_id>/<hash of (stage version, stage config, source content
hash, upstream keys)>`` (see :func:`_key`), persisted in a local-file-system result storage under the work folder.
A rerun after a crash, or with more inputs, replays finished stages from the cache and redoes only what changed.
A key whose output file has disappeared is treated as a miss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, create_table_artifact, update_progress_artifact
from prefect.filesystems import LocalFileSystem
from prefect.states import Failed, State

from cinedub.config import Config
from cinedub.errors import CineDubError, MediaError
from cinedub.media import sha256_file
from cinedub.diarization.records import DiarizationResult
from cinedub.diarization.rttm import write_rttm
from cinedub.ops.fusion import fuse, speech_spans
from cinedub.ops.segment import segment_source
from cinedub.ops.words_to_speakers import assign_word_speakers
from cinedub.shards import build_manifest, source_shards
from cinedub.stages.asd import AsdStage
from cinedub.stages.asr import AsrStage
from cinedub.stages.diarization import DiarizationStage
from cinedub.stages.faces import FacesStage
from cinedub.stages.base import get_stage, source_work_dir
from cinedub.stages.ingest import IngestResult, IngestStage
from cinedub.stages.package import PackageStage, clip_turns
from cinedub.stages.separation import SeparationStage
from cinedub.stages.shots import ShotStage
from cinedub.types import AudioTracks, ClipList, ShotList, Transcript, write_json_atomic
from cinedub.vision.records import AsdResult, FaceTrackList

from flows.resources import gpu_slot, retry_options  # noqa: E402

log = logging.getLogger("cinedub.flow")
_RETRY = retry_options()  # transient failures only (network, 429/5xx, CUDA OOM): never bad input

SEGMENT_VERSION = "3"  # v3: blocks of overlapping words, abbreviations, no greedy fallback (dropped spans)
FUSION_VERSION = "1"
_HASH_VERSION = "1"


def _key(stage: str, source_id: str, *parts: Any) -> str:
    digest = hashlib.sha256(json.dumps([str(p) for p in parts]).encode()).hexdigest()[:20]
    return f"{stage}/{source_id}/{digest}"


def _outputs_exist(output: str | None) -> bool:
    """The task's output record exists, and so do the shards it lists (a user may delete either)."""
    if not output:
        return True
    path = Path(output)
    if not path.is_file():
        return False
    if path.name.startswith("package-"):
        try:
            return all(Path(s).is_file() for s in json.loads(path.read_text())["shards"])
        except (json.JSONDecodeError, KeyError):
            return False
    return True


def _cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """The key the flow computed (see :func:`_key`)."""
    return parameters["cache_key"]


def _opts(storage: str, output: str) -> dict[str, Any]:
    """Task options: shared result storage; ``refresh_cache`` when the outputs of a cached run were deleted."""
    return {"result_storage": storage, "refresh_cache": not _outputs_exist(output)}


def _output(work: Path, key: str, suffix: str = ".json") -> str:
    stage, _, digest = key.split("/")
    return str(work / f"{stage}-{digest[:12]}{suffix}")


@task(name="hash-source", cache_key_fn=lambda ctx, p: f"hash/{p['path']}/{p['size']}/{p['mtime_ns']}")
def hash_source(path: str, size: int, mtime_ns: int) -> str:
    """SHA-256 of the input (cached by path, size and mtime so large files are hashed once)."""
    return sha256_file(path)


@task(name="ingest", cache_key_fn=_cache_key)
def ingest_task(path: str, cfg: Config, out_dir: str, cache_key: str, output: str) -> str | State:
    """Probe and extract audio. Bad input ends the task Failed with the reason (no traceback: it is not a bug)."""
    work = Path(output).parent
    try:
        result = get_stage(IngestStage, cfg).process(Path(path), work, require_video=True)
    except MediaError as e:
        get_run_logger().error("%s", e)
        return Failed(message=str(e))
    result.to_json(output)
    return output


@task(name="separation", cache_key_fn=_cache_key, **_RETRY)
def separation_task(ingest_json: str, cfg: Config, cache_key: str, output: str) -> str:
    ingest = IngestResult.from_json(ingest_json)
    stage_dir = Path(output).with_suffix("")
    stage = get_stage(SeparationStage, cfg)
    with gpu_slot(stage.device):
        tracks = stage.process(ingest, stage_dir)
    tracks.to_json(output)
    return output


@task(name="asr", cache_key_fn=_cache_key, **_RETRY)
def asr_task(tracks_json: str, cfg: Config, cache_key: str, output: str) -> str:
    tracks = AudioTracks.from_json(tracks_json)
    stage = get_stage(AsrStage, cfg)
    with gpu_slot(stage.device):
        stage.process(Path(tracks.vocals_16k), Path(output))
    return output


@task(name="shots", cache_key_fn=_cache_key)
def shots_task(ingest_json: str, cfg: Config, cache_key: str, output: str) -> str:
    ingest = IngestResult.from_json(ingest_json)
    get_stage(ShotStage, cfg).process(Path(ingest.source.path), ingest.source, Path(output))
    return output


@task(name="diarization", cache_key_fn=_cache_key, **_RETRY)
def diarization_task(ingest_json: str, tracks_json: str, cfg: Config, cache_key: str, output: str) -> str:
    source = IngestResult.from_json(ingest_json).source
    tracks = AudioTracks.from_json(tracks_json)
    get_stage(DiarizationStage, cfg).process(tracks.vocals_16k, output, speaker_prefix=f"{source.source_id}-",
                                             uri=source.episode)
    return output


@task(name="faces", cache_key_fn=_cache_key, **_RETRY)
def faces_task(ingest_json: str, shots_json: str, transcript_json: str, diar_json: str, cfg: Config, cache_key: str,
               output: str) -> str:
    source = IngestResult.from_json(ingest_json).source
    spans = speech_spans(Transcript.from_json(transcript_json),
                         DiarizationResult.from_json(diar_json) if diar_json else None)
    folder = Path(output).with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    stage = get_stage(FacesStage, cfg)
    with gpu_slot(stage.device):
        stage.process(source, ShotList.from_json(shots_json), spans, folder).to_json(output)
    return output


@task(name="asd", cache_key_fn=_cache_key, **_RETRY)
def asd_task(faces_json: str, tracks_json: str, diar_json: str, cfg: Config, cache_key: str, output: str) -> str:
    faces = FaceTrackList.from_json(faces_json)
    turns = DiarizationResult.from_json(diar_json).exclusive_turns if diar_json else ()
    folder = Path(output).with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    stage = get_stage(AsdStage, cfg)
    with gpu_slot(stage.device):
        stage.process(faces, AudioTracks.from_json(tracks_json).vocals_16k, turns, folder).to_json(output)
    return output


@task(name="fuse", cache_key_fn=_cache_key)
def fuse_task(diar_json: str, faces_json: str, asd_json: str, source_id: str, cache_key: str, output: str) -> str:
    diar = DiarizationResult.from_json(diar_json)
    faces = FaceTrackList.from_json(faces_json) if faces_json else None
    asd = AsdResult.from_json(asd_json) if asd_json else None
    fused = fuse(diar, asd.turns if asd else None, faces.tracks if faces else (), speaker_prefix=f"{source_id}-")
    fused.to_json(output)
    write_rttm(Path(output).with_suffix(".rttm"), fused.turns, source_id)
    return output


@task(name="segment", cache_key_fn=_cache_key)
def segment_task(ingest_json: str, transcript_json: str, shots_json: str, timeline_json: str, cfg: Config,
                 cache_key: str, output: str) -> str:
    ingest = IngestResult.from_json(ingest_json)
    words = Transcript.from_json(transcript_json).words
    timeline = DiarizationResult.from_json(timeline_json) if timeline_json else None
    if timeline is not None:
        words = assign_word_speakers(words, timeline.exclusive_turns)
    seg = segment_source(ingest.source, words, ShotList.from_json(shots_json), cfg.segmentation)
    clips = list(seg.clips)
    if seg.dropped:
        get_run_logger().info("%s: %d speech spans dropped (%d words; no %g-%g s clip can hold them)",
                              ingest.source.source_id, len(seg.dropped), sum(len(d.words) for d in seg.dropped),
                              cfg.segmentation.min_clip_s, cfg.segmentation.max_clip_s)
    if timeline is not None:
        clips = [dataclasses.replace(c, turns=tuple(clip_turns(c.start_ms, c.end_ms, timeline.turns))) for c in clips]
    ClipList(source_id=ingest.source.source_id, clips=tuple(clips)).to_json(output)
    return output


@task(name="package", cache_key_fn=_cache_key)
def package_task(
    ingest_json: str,
    tracks_json: str,
    transcript_json: str,
    clips_json: str,
    timeline_json: str,
    faces_json: str,
    asd_json: str,
    cfg: Config,
    out_dir: str,
    models: list[dict[str, str]],
    cache_key: str,
    output: str,
) -> str:
    ingest = IngestResult.from_json(ingest_json)
    shards = get_stage(PackageStage, cfg).process(
        ingest.source,
        AudioTracks.from_json(tracks_json),
        Transcript.from_json(transcript_json),
        ClipList.from_json(clips_json),
        out_dir,
        models=models,
        timeline=DiarizationResult.from_json(timeline_json) if timeline_json else None,
        faces=FaceTrackList.from_json(faces_json) if faces_json else None,
        asd=AsdResult.from_json(asd_json) if asd_json else None,
    )
    write_json_atomic(output, {"shards": [str(p) for p in shards]})
    return output


def _ensure_result_storage(work_root: Path) -> str:
    """A saved local-file-system block for this work folder (Prefect needs saved blocks for result storage)."""
    base = (work_root / "prefect-results").resolve()
    name = "cinedub-results-" + hashlib.sha1(str(base).encode()).hexdigest()[:12]
    LocalFileSystem(basepath=str(base)).save(name, overwrite=True)
    return f"local-file-system/{name}"


def _models(cfg: Config) -> list[dict[str, str]]:
    models = [{"stage": "asr", "name": cfg.asr.model, "version": AsrStage.version}]
    if cfg.separation.method != "none":
        models.insert(0, {"stage": "separation", "name": f"demucs:{cfg.separation.model}", "version": SeparationStage.version})
    models.append({"stage": "shots", "name": f"scenedetect:{cfg.shots.detector}", "version": ShotStage.version})
    if cfg.run_diarization:
        models.append({"stage": "diarization", "name": f"{cfg.diarization.method}", "version": DiarizationStage.version})
    if cfg.run_visual:
        models.append({"stage": "faces", "name": f"{cfg.vision.detector}+mediapipe-facemesh", "version": FacesStage.version})
        models.append({"stage": "asd", "name": f"light-asd:{cfg.vision.asd_model}", "version": AsdStage.version})
    return models


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
    storage = storage or _ensure_result_storage(work_root)
    st = p.stat()
    sha = hash_source.with_options(result_storage=storage)(str(p), st.st_size, st.st_mtime_ns)
    source_id = sha[:16]
    work = source_work_dir(cfg, out_dir, source_id)
    t0 = time.perf_counter()

    k_ingest = _key("ingest", source_id, IngestStage.version, sha)
    o_ingest = _output(work, k_ingest)
    ingest_state = ingest_task.with_options(**_opts(storage, o_ingest))(str(p), cfg, out_dir, k_ingest, o_ingest,
                                                                        return_state=True)
    if ingest_state.is_failed():
        return Failed(message=ingest_state.message or "ingest failed")  # type: ignore[return-value]
    ingest_json = ingest_state.result()

    sep = SeparationStage(cfg)
    k_sep = _key("separation", source_id, sep.cache_token(), k_ingest)
    o = _output(work, k_sep)
    tracks_json = separation_task.with_options(**_opts(storage, o))(ingest_json, cfg, k_sep, o)

    k_asr = _key("asr", source_id, AsrStage(cfg).cache_token(), k_sep)
    o = _output(work, k_asr)
    transcript_json = asr_task.with_options(**_opts(storage, o))(tracks_json, cfg, k_asr, o)

    k_shots = _key("shots", source_id, ShotStage(cfg).cache_token(), k_ingest)
    o = _output(work, k_shots)
    shots_json = shots_task.with_options(**_opts(storage, o))(ingest_json, cfg, k_shots, o)

    diar_json = faces_json = asd_json = timeline_json = ""
    k_diar = k_faces = k_asd = k_fuse = ""
    if cfg.run_diarization:
        k_diar = _key("diarization", source_id, DiarizationStage(cfg).cache_token(), k_sep)
        o = _output(work, k_diar)
        diar_json = diarization_task.with_options(**_opts(storage, o))(ingest_json, tracks_json, cfg, k_diar, o)
    if cfg.run_visual:
        k_faces = _key("faces", source_id, FacesStage(cfg).cache_token(), k_shots, k_asr, k_diar)
        o = _output(work, k_faces)
        faces_json = faces_task.with_options(**_opts(storage, o))(ingest_json, shots_json, transcript_json, diar_json,
                                                                  cfg, k_faces, o)
        k_asd = _key("asd", source_id, AsdStage(cfg).cache_token(), k_faces, k_diar)
        o = _output(work, k_asd)
        asd_json = asd_task.with_options(**_opts(storage, o))(faces_json, tracks_json, diar_json, cfg, k_asd, o)
    if cfg.run_diarization:
        k_fuse = _key("fuse", source_id, FUSION_VERSION, k_diar, k_asd)
        o = _output(work, k_fuse)
        timeline_json = fuse_task.with_options(**_opts(storage, o))(diar_json, faces_json, asd_json, source_id, k_fuse, o)

    k_seg = _key("segment", source_id, SEGMENT_VERSION, cfg.stage_hash("segmentation"), k_asr, k_shots, k_fuse)
    o = _output(work, k_seg)
    clips_json = segment_task.with_options(**_opts(storage, o))(ingest_json, transcript_json, shots_json, timeline_json,
                                                                cfg, k_seg, o)

    out_abs = str(Path(out_dir).resolve())
    models = _models(cfg)
    k_pack = _key("package", source_id, PackageStage(cfg).cache_token(), cfg.config_hash(), k_seg, k_sep, k_fuse, k_asd,
                  out_abs, models)
    package_json = _output(work, k_pack)
    package_task.with_options(**_opts(storage, package_json))(
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


def _reason(exc: BaseException) -> str:
    if isinstance(exc, CineDubError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


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
    storage = _ensure_result_storage(work_root)
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
                    reason = _reason(exc)
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
