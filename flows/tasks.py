"""Prefect tasks of the main job, one per stage, and their cache keys.

Each task wraps one stage of :mod:`cinedub.stages` (or one op of :mod:`cinedub.ops`), reads and writes small JSON
records in the source's work folder and returns the record's path, never arrays. A task's cache key is
``<stage>/<source_id>/<hash of (stage version, stage config, source content hash, upstream keys)>`` (:func:`stage_key`);
a key whose output file has disappeared is a miss (:func:`_outputs_exist`), so deleting outputs reruns the stage.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
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
from cinedub.stages.asd import AsdStage
from cinedub.stages.asr import AsrStage
from cinedub.stages.diarization import DiarizationStage
from cinedub.stages.faces import FacesStage
from cinedub.stages.base import get_stage
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
FUSION_VERSION = "2"  # v2: speaker ids "<source_id>-S<nn>" (v1 wrote "<source_id>--S<nn>")
_HASH_VERSION = "1"


def stage_key(stage: str, source_id: str, *parts: Any) -> str:
    """Cache key ``<stage>/<source_id>/<20 hex of sha256(parts)>``; ``parts`` are the stage version or config
    token, the source content hash or the upstream keys (anything with a stable ``str``)."""
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
    """The key the flow computed (see :func:`stage_key`)."""
    return parameters["cache_key"]


def task_options(storage: str, output: str) -> dict[str, Any]:
    """Task options: shared result storage; ``refresh_cache`` when the outputs of a cached run were deleted."""
    return {"result_storage": storage, "refresh_cache": not _outputs_exist(output)}


def output_path(work: Path, key: str, suffix: str = ".json") -> str:
    """Where the task of cache key ``key`` writes its record: ``<work>/<stage>-<12 hex of the digest><suffix>``."""
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
    get_stage(DiarizationStage, cfg).process(tracks.vocals_16k, output, speaker_prefix=source.source_id,
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
    fused = fuse(diar, asd.turns if asd else None, faces.tracks if faces else (), speaker_prefix=source_id)
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


def ensure_result_storage(work_root: Path) -> str:
    """A saved local-file-system block for this work folder (Prefect needs saved blocks for result storage)."""
    base = (work_root / "prefect-results").resolve()
    name = "cinedub-results-" + hashlib.sha1(str(base).encode()).hexdigest()[:12]
    LocalFileSystem(basepath=str(base)).save(name, overwrite=True)
    return f"local-file-system/{name}"


def run_models(cfg: Config) -> list[dict[str, str]]:
    """The models this configuration runs, ``{"stage", "name", "version"}`` each, for the rows' provenance."""
    models = [{"stage": "asr", "name": cfg.asr.model, "version": AsrStage.version}]
    if cfg.separation.method != "none":
        models.insert(0, {"stage": "separation", "name": f"demucs:{cfg.separation.model}", "version": SeparationStage.version})
    models.append({"stage": "shots", "name": f"scenedetect:{cfg.shots.detector}", "version": ShotStage.version})
    if cfg.run_diarization:
        models.append({"stage": "diarization", "name": f"{cfg.diarization.method}", "version": DiarizationStage.version})
    if cfg.run_visual:
        models.append({"stage": "faces", "name": f"{cfg.vision.detector}+mediapipe-facemesh", "version": FacesStage.version})
        models.append({"stage": "asd", "name": AsdStage(cfg).model_name, "version": AsdStage.version})
    return models


def failure_reason(exc: BaseException) -> str:
    """One line for a failed input: a CineDub error's own message (it names the file), else ``Type: message``."""
    if isinstance(exc, CineDubError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"
