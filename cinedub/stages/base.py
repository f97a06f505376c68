"""The stage contract, after NeMo Curator's ``ProcessingStage`` (``name``, ``resources``, ``setup``/``process``).

A stage is one class that declares, as class attributes, everything the pipeline needs to run it:

- ``name`` and ``version`` (bump ``version`` whenever the output for the same input changes);
- ``inputs``: the names of the records it consumes (the ``output`` names of earlier stages), ``optional`` the ones
  that may be absent (their stage is disabled by the configuration);
- ``output``: the name of the record it produces and ``record``: its type (a :class:`cinedub.types.Record`);
- ``config_sections``: the :class:`~cinedub.config.Config` sections that change its output;
- ``models``: the model registry keys it loads (:mod:`cinedub.models`);
- ``resources``: CPU cores, GPUs (a GPU slot is held while it runs on CUDA), GPU memory, batch size, threads.

It loads its models once per worker process in :meth:`Stage.setup` (:func:`get_stage` keeps one instance per
process and configuration) and turns input records into its output record in :meth:`Stage.process`, which never
writes the record itself: the runner (:mod:`cinedub.pipeline`, or the Prefect flow built on it) validates and writes
it, derives the cache key from :meth:`Stage.cache_token` and the upstream keys, and the provenance from
:meth:`Stage.provenance`. Large per-frame or per-sample data (audio, crops, scores) goes to files in
``ctx.artifacts_dir``; records only hold their paths.

Adding a stage is one class like this and one line in :data:`cinedub.pipeline.PIPELINE`.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from cinedub.config import Config
from cinedub.hashing import stable_hash
from cinedub.progress import Reporter, no_report
from cinedub.types import Record


@dataclass(frozen=True)
class Resources:
    """What one call of a stage needs.

    Attributes:
        cpus: CPU cores it keeps busy.
        gpus: GPUs it uses on a CUDA device (0 = CPU only; > 0 = it runs on ``Config.device`` and holds that GPU's
            slot, ``gpu:<host>:<i>``, while it runs).
        gpu_memory_gb: GPU memory it may take (GiB).
        batch_size: items per model call (None: the stage's own default or its config option).
        threads: intra-op threads of its model on CPU (None: every core this process may use). Fixed counts make
            float reductions, hence results, the same on every run of one machine.
    """

    cpus: float = 1.0
    gpus: float = 0.0
    gpu_memory_gb: float = 0.0
    batch_size: int | None = None
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.cpus < 0 or self.gpus < 0 or self.gpu_memory_gb < 0:
            raise ValueError("resources must be non-negative")


def available_cores() -> int:
    """Cores this process may run on (honours container CPU sets, unlike ``os.cpu_count()``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class StageContext:
    """What a stage call gets besides its input records.

    Attributes:
        cfg: the whole configuration.
        source_path: the media file being processed.
        sha256: its content hash (computed once per run); ``source_id`` is its first 16 hex digits.
        out_dir: the dataset folder (shards, manifest).
        work_dir: this source's work folder (:func:`cinedub.pipeline.source_work_dir`).
        artifacts_dir: a folder of this stage call's own (large files: audio, crops, scores), keyed like its record.
        provenance: ``{"stage", "name", "version"}`` of every stage of the run, in pipeline order (rows record it).
        log: the logger to report to (the flow's run logger under Prefect).
        progress: ``progress(done, total, unit)``: how far the stage is (``total`` None when unknown), e.g.
            seconds of audio, frames or tracks; shown by the CLI and the Prefect UI (:mod:`cinedub.progress`).
    """

    cfg: Config
    source_path: Path
    sha256: str
    out_dir: Path
    work_dir: Path
    artifacts_dir: Path
    provenance: tuple[dict[str, str], ...] = ()
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("cinedub"))
    progress: Reporter = no_report

    @property
    def source_id(self) -> str:
        return self.sha256[:16]


class Stage:
    """Base class of every stage (see the module docstring for the declared attributes)."""

    name: ClassVar[str] = "stage"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ()
    optional: ClassVar[frozenset[str]] = frozenset()
    output: ClassVar[str] = ""
    record: ClassVar[type[Record]] = Record
    config_sections: ClassVar[tuple[str, ...]] = ()
    models: ClassVar[tuple[str, ...]] = ()
    resources: ClassVar[Resources] = Resources()

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.device = self.device_for(cfg)
        self._ready = False
        self._lock = threading.Lock()
        self._call_lock = threading.Lock()

    # ------------------------------------------------------------------------------------ declared, per config

    @classmethod
    def enabled(cls, cfg: Config) -> bool:
        """Whether the configuration runs this stage (a disabled stage's output is None for its consumers)."""
        return True

    @classmethod
    def resources_for(cls, cfg: Config) -> Resources:
        """The resources of a call under ``cfg`` (default: the class's ``resources``)."""
        return cls.resources

    @classmethod
    def device_for(cls, cfg: Config) -> str:
        """"cpu", or ``cfg``'s CUDA device when the stage uses GPUs."""
        return cfg.resolved_device() if cls.resources_for(cfg).gpus else "cpu"

    @classmethod
    def threads_for(cls, cfg: Config) -> int:
        """Intra-op CPU threads: the declared count, at most the cores available (default: all of them)."""
        declared = cls.resources_for(cfg).threads
        return max(1, min(declared, available_cores()) if declared else available_cores())

    @classmethod
    def model_names(cls, cfg: Config) -> list[str]:
        """The models this stage runs under ``cfg``, as provenance names them (default: the registry's names)."""
        from cinedub.models import model_name

        return [model_name(cfg, key) for key in cls.models]

    @classmethod
    def provenance(cls, cfg: Config) -> dict[str, str]:
        """``{"stage", "name", "version"}`` recorded in every output row: what ran, with which model(s)."""
        names = cls.model_names(cfg)
        return {"stage": cls.name, "name": "+".join(names) if names else cls.name, "version": cls.version}

    @classmethod
    def cache_token(cls, cfg: Config) -> str:
        """``name/v<version>/<hash>`` of everything of ``cfg`` that changes the output: the declared config
        sections and the models' provenance names (the upstream keys and the source hash are added by the runner)."""
        data = cfg.model_dump(mode="json")
        picked = {s: data[s] for s in cls.config_sections}
        return f"{cls.name}/v{cls.version}/{stable_hash([picked, cls.model_names(cfg)], 12)}"

    @classmethod
    def key_parts(cls, cfg: Config, out_dir: Path) -> tuple[str, ...]:
        """Extra parts of the cache key beyond the config and the upstream keys (e.g. the output folder a stage
        writes into); none by default."""
        return ()

    # ------------------------------------------------------------------------------------ per worker

    def setup(self) -> None:
        """Load models. Called once per instance, lazily, before the first :meth:`process`."""

    def ensure_setup(self) -> None:
        with self._lock:
            if not self._ready:
                self.setup()
                self._ready = True

    def exclusive(self) -> threading.Lock:
        """The lock a runner holds around :meth:`process`: one call of an instance at a time, so sources processed
        concurrently (``Config.concurrent_sources``) pipeline through the stages instead of sharing a model that
        keeps per-call state (dlib's network, a seeded decoder, buffers)."""
        return self._call_lock

    def process(self, ctx: StageContext, **inputs: Any) -> Record:
        """Turn the input records (keyword arguments named as ``inputs``; None for a disabled optional one) into
        this stage's output record. Must not write the record (the runner does)."""
        raise NotImplementedError


S = TypeVar("S", bound=Stage)
_INSTANCES: dict[tuple[type, str], Stage] = {}
_INSTANCES_LOCK = threading.Lock()


def get_stage(cls: type[S], cfg: Config) -> S:
    """The process-wide instance of ``cls`` for ``cfg``, set up (models load once per worker, not per call)."""
    key = (cls, cfg.model_dump_json())
    with _INSTANCES_LOCK:
        inst = _INSTANCES.get(key)
        if inst is None:
            inst = _INSTANCES[key] = cls(cfg)
    inst.ensure_setup()
    return inst  # type: ignore[return-value]
