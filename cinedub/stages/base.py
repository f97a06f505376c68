"""The stage contract, after NeMo Curator's ``ProcessingStage`` (``name``, ``resources``, ``setup``/``process``).

A stage declares what it needs (:class:`Resources`), loads its model once per worker process in :meth:`Stage.setup`
(:func:`get_stage` keeps one instance per process and configuration) and turns input paths into output paths and
records in :meth:`Stage.process`. ``version`` is bumped whenever the stage's output for the same input changes; it is
part of the Prefect cache key together with the source hash and :attr:`Stage.config_sections` of the configuration.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from cinedub.config import Config


@dataclass(frozen=True)
class Resources:
    """What one call of a stage needs: CPU cores, GPUs (0 = CPU only) and GPU memory (GiB)."""

    cpus: float = 1.0
    gpus: float = 0.0
    gpu_memory_gb: float = 0.0

    def __post_init__(self) -> None:
        if self.cpus < 0 or self.gpus < 0 or self.gpu_memory_gb < 0:
            raise ValueError("resources must be non-negative")


class Stage:
    """Base class of every stage.

    Class attributes:
        name: short stage name (used in cache keys, logs, provenance and benchmark rows).
        version: bump when the output for the same input and config changes.
        config_sections: :class:`Config` sections that change the output (hashed into the cache key).
        resources: what one call needs.
    """

    name: ClassVar[str] = "stage"
    version: ClassVar[str] = "1"
    config_sections: ClassVar[tuple[str, ...]] = ()
    resources: ClassVar[Resources] = Resources()

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.device = cfg.resolved_device() if self.resources.gpus else "cpu"
        self._ready = False
        self._lock = threading.Lock()

    def setup(self) -> None:
        """Load models. Called once per instance, lazily, before the first :meth:`process`."""

    def ensure_setup(self) -> None:
        with self._lock:
            if not self._ready:
                self.setup()
                self._ready = True

    def cache_token(self) -> str:
        """``name/version/config-hash``: the stage-specific part of a cache key."""
        return f"{self.name}/v{self.version}/{self.cfg.stage_hash(*self.config_sections)}"

    def provenance(self) -> dict[str, Any]:
        """Small dict recorded in every output row: stage version and model identity."""
        return {"stage": self.name, "version": self.version}


S = TypeVar("S", bound=Stage)
_INSTANCES: dict[tuple[type, str], Stage] = {}
_INSTANCES_LOCK = threading.Lock()


def get_stage(cls: type[S], cfg: Config) -> S:
    """The process-wide instance of ``cls`` for ``cfg`` (models load once per worker, not per call)."""
    key = (cls, cfg.model_dump_json())
    with _INSTANCES_LOCK:
        inst = _INSTANCES.get(key)
        if inst is None:
            inst = _INSTANCES[key] = cls(cfg)
    inst.ensure_setup()
    return inst  # type: ignore[return-value]


def source_work_dir(cfg: Config, out_dir: str | Path, source_id: str) -> Path:
    """Folder of one source's intermediate files: ``<work_dir or out/.work>/<source_id>``."""
    root = Path(cfg.work_dir) if cfg.work_dir else Path(out_dir) / ".work"
    d = root / source_id
    d.mkdir(parents=True, exist_ok=True)
    return d
