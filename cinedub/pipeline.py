"""The one declaration of the CineDub pipeline, and a plain runner for it.

:data:`PIPELINE` lists the stage classes in execution order; each declares its inputs and output by name
(:mod:`cinedub.stages.base`), so the graph is this list. :func:`plan_source` turns it into the concrete steps for
one source and configuration: which stages run, each step's cache key (stage version, config sections and models,
the source's content hash and the upstream keys), where its record and artifacts go, and the provenance every row
records. :func:`execute_step` runs one step (load the input records, call the stage, validate and write its
record) and :func:`run_source` runs them all in order, without Prefect.

Everything that runs the pipeline goes through these three functions: the Prefect flow (:mod:`flows.pipeline`,
which adds caching, retries, GPU slots and reporting around :func:`execute_step`), the benchmark
(``scripts/benchmark.py``, one step per process) and the tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cinedub import progress
from cinedub.atomic import remove_stale_temporaries
from cinedub.config import Config
from cinedub.hashing import sha256_file, stable_hash
from cinedub.stages.asd import AsdStage
from cinedub.stages.asr import AsrStage
from cinedub.stages.base import Stage, StageContext, get_stage
from cinedub.stages.diarization import DiarizationStage
from cinedub.stages.faces import FacesStage
from cinedub.stages.fuse import FuseStage
from cinedub.stages.identity import IdentityStage
from cinedub.stages.ingest import IngestStage
from cinedub.stages.package import PackageStage
from cinedub.stages.segment import SegmentStage
from cinedub.stages.separation import SeparationStage
from cinedub.stages.shots import ShotStage
from cinedub.types import Record
from cinedub.validate import validate

log = logging.getLogger("cinedub.pipeline")

PIPELINE: tuple[type[Stage], ...] = (
    IngestStage,
    SeparationStage,
    AsrStage,
    DiarizationStage,
    FacesStage,  # finds the shots in its decoding pass when it runs
    ShotStage,  # passes them on, or decodes for them when the faces stage is off
    AsdStage,
    IdentityStage,
    FuseStage,
    SegmentStage,
    PackageStage,
)


def source_work_dir(cfg: Config, out_dir: str | Path, source_id: str) -> Path:
    """Folder of one source's intermediate files: ``<work_dir or out/.work>/<source_id>`` (created)."""
    d = work_root(cfg, out_dir) / source_id
    d.mkdir(parents=True, exist_ok=True)
    return d


def work_root(cfg: Config, out_dir: str | Path) -> Path:
    """Folder of every source's work folder and of the task cache: ``cfg.work_dir`` or ``<out_dir>/.work``."""
    return Path(cfg.work_dir) if cfg.work_dir else Path(out_dir) / ".work"


@dataclass(frozen=True)
class Step:
    """One stage of one source's run.

    Attributes:
        stage: the stage class.
        key: cache key ``<stage>/<source_id>/<20 hex>`` (stage token, source hash, upstream keys).
        record_path: the JSON file its output record is written to.
        artifacts_dir: folder for the stage's large files.
        inputs: input name -> producing step's output name, or None when that stage is disabled.
    """

    stage: type[Stage]
    key: str
    record_path: Path
    artifacts_dir: Path
    inputs: dict[str, str | None] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.stage.name

    @property
    def output(self) -> str:
        return self.stage.output


@dataclass(frozen=True)
class Plan:
    """The steps of one source, in order, with what every step needs to run.

    Attributes:
        source_path / sha256 / out_dir / work_dir: the source and where its files go.
        steps: enabled stages in pipeline order.
        provenance: ``{"stage", "name", "version"}`` of each step (rows record it).
    """

    cfg: Config
    source_path: Path
    sha256: str
    out_dir: Path
    work_dir: Path
    steps: tuple[Step, ...]
    provenance: tuple[dict[str, str], ...]

    @property
    def source_id(self) -> str:
        return self.sha256[:16]

    def step(self, output: str) -> Step:
        """The step producing ``output``.

        Raises:
            KeyError: no enabled step produces it.
        """
        for s in self.steps:
            if s.output == output:
                return s
        raise KeyError(output)

    def step_named(self, name: str) -> Step:
        """The step of stage ``name`` (e.g. "separation").

        Raises:
            KeyError: no enabled step has that name.
        """
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def producer(self, output: str) -> type[Stage]:
        return self.step(output).stage

    @property
    def source_name(self) -> str:
        """The input's file name (how progress and reports name it)."""
        return self.source_path.name

    def context(self, step: Step, log_: logging.Logger | None = None) -> StageContext:
        step.artifacts_dir.mkdir(parents=True, exist_ok=True)
        return StageContext(
            cfg=self.cfg, source_path=self.source_path, sha256=self.sha256, out_dir=self.out_dir,
            work_dir=self.work_dir, artifacts_dir=step.artifacts_dir, provenance=self.provenance,
            log=log_ or logging.getLogger(f"cinedub.{step.name}"),
            progress=progress.reporter(self.source_name, step.name),
        )


def plan_source(
    source_path: str | Path,
    out_dir: str | Path,
    cfg: Config,
    *,
    sha256: str | None = None,
    stages: Sequence[type[Stage]] = PIPELINE,
) -> Plan:
    """The steps that process ``source_path`` under ``cfg``.

    Args:
        sha256: the file's content hash if already known (a run hashes each source once).
        stages: the declaration to plan (default :data:`PIPELINE`).

    Raises:
        ValueError: a stage needs an input no earlier enabled stage produces (a declaration error).
    """
    source_path = Path(source_path)
    sha = sha256 or sha256_file(source_path)
    work = source_work_dir(cfg, out_dir, sha[:16])
    keys: dict[str, str | None] = {}
    steps: list[Step] = []
    for cls in stages:
        if not cls.enabled(cfg):
            keys[cls.output] = None
            continue
        inputs: dict[str, str | None] = {}
        for name in cls.inputs:
            if name not in keys:
                raise ValueError(f"stage {cls.name!r} needs {name!r}, which no earlier stage produces")
            if keys[name] is None and name not in cls.optional:
                raise ValueError(f"stage {cls.name!r} needs {name!r}, but its stage is disabled by the configuration")
            inputs[name] = name if keys[name] is not None else None
        parts = [cls.cache_token(cfg), sha, *cls.key_parts(cfg, Path(out_dir)), *(keys[n] for n in cls.inputs)]
        digest = stable_hash(parts, 20)
        key = f"{cls.name}/{sha[:16]}/{digest}"
        keys[cls.output] = key
        stem = f"{cls.name}-{digest[:12]}"
        steps.append(Step(cls, key, work / f"{stem}.json", work / stem, inputs))
    provenance = tuple(s.stage.provenance(cfg) for s in steps)
    return Plan(cfg, source_path.absolute(), sha, Path(out_dir), work, tuple(steps), provenance)


def load_inputs(plan: Plan, step: Step) -> dict[str, Record | None]:
    """The input records of ``step``, read from their producers' record files (None for a disabled one)."""
    out: dict[str, Record | None] = {}
    for name, produced in step.inputs.items():
        if produced is None:
            out[name] = None
            continue
        src = plan.step(produced)
        out[name] = src.stage.record.from_json(src.record_path)
    return out


def execute_step(
    plan: Plan,
    step: Step,
    *,
    slot: Callable[[Step], AbstractContextManager[Any]] | None = None,
    log_: logging.Logger | None = None,
) -> Path:
    """Run one step: load its inputs, run the stage (holding its :meth:`~cinedub.stages.base.Stage.exclusive` lock
    and ``slot(step)``, e.g. a GPU slot), validate the record
    (:func:`cinedub.validate.validate`) and write it atomically. Returns the record's path.

    Raises:
        Whatever the stage raises (:class:`~cinedub.errors.MediaError` for bad input, ...); nothing is written then.
    """
    progress.stage_started(plan.source_name, step.name)
    status = "failed"
    try:
        inputs = load_inputs(plan, step)
        stage = get_stage(step.stage, plan.cfg)
        ctx = plan.context(step, log_)
        with stage.exclusive(), (slot(step) if slot is not None else nullcontext()):
            record = stage.process(ctx, **inputs)
        if not isinstance(record, step.stage.record):
            raise TypeError(f"stage {step.name} returned {type(record).__name__}, declared "
                            f"{step.stage.record.__name__}")
        validate(record)
        record.to_json(step.record_path)
        status = "done"
    finally:
        progress.stage_finished(plan.source_name, step.name, status)
    return step.record_path


@dataclass
class RunResult:
    """What :func:`run_source` produced: each output record by name, the seconds each step took, and the outcome
    that ended the source early (``(status, reason)``, e.g. ``("no_speech", ...)``), if any."""

    plan: Plan
    records: dict[str, Record] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    outcome: tuple[str, str] | None = None

    def __getitem__(self, output: str) -> Any:
        return self.records[output]


def decode_errors(records: dict[str, Record]) -> dict[str, int]:
    """What corrupt data cost a source, from its records (by output name; absent ones are skipped): corrupt audio
    packets ffmpeg skipped at ingest (``audio_packets``), video frames the container declares that no decoder got
    (``video_frames_lost``, from the shot stage), corrupt video packets the faces stage skipped (``video_packets``).
    Only non-zero counts are returned: an empty dict is an undamaged source."""
    out = {
        "audio_packets": getattr(records.get("ingest"), "audio_decode_errors", 0),
        "video_frames_lost": getattr(records.get("shots"), "frames_lost", 0),
        "video_packets": getattr(records.get("faces"), "bad_packets", 0),
    }
    return {k: int(v) for k, v in out.items() if v}


def clean_work_dir(plan: Plan) -> int:
    """Remove the temporaries (:mod:`cinedub.atomic`: hidden ``.<name>.<pid>-<id>.tmp[.flac]`` files) that a killed
    run of this source left in its work folder, e.g. the half-written FLAC of an ingest hit by ``kill -9``. Called
    when a source's run starts and when it ends (an ffmpeg child that outlived a killed parent may have finished
    writing one since); safe because a source is processed by one run at a time. Returns the count removed."""
    n = remove_stale_temporaries(plan.work_dir)
    if n:
        log.info("%s: removed %d temporary files left by an interrupted run", plan.source_name, n)
    return n


def iter_steps(plan: Plan, until: str | None = None) -> Iterator[Step]:
    """The plan's steps in order, stopping after the one producing ``until`` (all when None)."""
    for step in plan.steps:
        yield step
        if until is not None and step.output == until:
            return


def run_source(
    source_path: str | Path,
    out_dir: str | Path,
    cfg: Config,
    *,
    until: str | None = None,
    reuse: bool = False,
    stages: Sequence[type[Stage]] = PIPELINE,
) -> RunResult:
    """Run the pipeline on one source in this process (no Prefect, no cache database).

    Args:
        until: stop after the step producing this output (e.g. "transcript", "clips").
        reuse: keep a step's record when its file already exists (the key in its name covers its inputs).
        stages: the declaration to run.

    Temporaries a killed earlier run left in the source's work folder are removed first (:func:`clean_work_dir`).

    Raises:
        Whatever a stage raises; the steps before it keep their records.
    """
    plan = plan_source(source_path, out_dir, cfg, stages=stages)
    clean_work_dir(plan)
    result = RunResult(plan)
    try:
        for step in iter_steps(plan, until):
            t0 = time.perf_counter()
            if not (reuse and step.record_path.is_file()):
                execute_step(plan, step)
            result.seconds[step.name] = time.perf_counter() - t0
            record = result.records[step.output] = step.stage.record.from_json(step.record_path)
            result.outcome = record.outcome()
            if result.outcome is not None:  # e.g. no speech: nothing further to do for this source
                break
    finally:
        clean_work_dir(plan)
    return result
