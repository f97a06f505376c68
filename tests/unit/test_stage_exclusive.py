"""Sources processed concurrently pipeline through the stages: one call of a stage instance at a time.

Two sources from ../shared/media run the declared pipeline's real ingest stage plus a probe stage, each source in
its own thread (as `cinedub run` does with ``concurrent_sources`` above 1). The probe's calls must never overlap, every
call must still happen, and each source's records must be those of a run on its own.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import ClassVar

from cinedub.pipeline import run_source
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.stages.ingest import IngestStage
from cinedub.types import IngestResult, Record


@dataclass(frozen=True)
class ProbeRecord(Record):
    source_id: str
    started: float
    ended: float


class ProbeStage(Stage):
    """Records when it ran (a stand-in for a model with per-call state). The first call waits up to 3 s for the
    other source's call to come in, so without the stage's lock the two calls overlap however the ingests are
    timed, and with it the second call only starts after the first returns."""

    name = "probe"
    inputs = ("ingest",)
    output = "probe"
    record = ProbeRecord
    resources = Resources(cpus=1.0)
    active: ClassVar[int] = 0
    entered: ClassVar[int] = 0
    most_active: ClassVar[int] = 0
    guard: ClassVar[threading.Condition] = threading.Condition()

    def process(self, ctx: StageContext, ingest: IngestResult) -> ProbeRecord:
        cls = type(self)
        t0 = time.monotonic()
        with cls.guard:
            cls.active += 1
            cls.entered += 1
            cls.most_active = max(cls.most_active, cls.active)
            cls.guard.notify_all()
            cls.guard.wait_for(lambda: cls.entered >= 2, timeout=3.0)
            cls.active -= 1
        return ProbeRecord(ingest.source.source_id, t0, time.monotonic())


def test_one_call_per_stage_instance_while_sources_run_concurrently(cfg, media_dir, tmp_path):
    sources = [media_dir / "dialogue_5shots/dialogue_5shots.mp4", media_dir / "en_film_titanic/test1.mp4"]
    run_cfg = cfg.model_copy(update={"concurrent_sources": 2})
    results: dict[int, object] = {}
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            results[i] = run_source(sources[i], tmp_path / "out", run_cfg, stages=(IngestStage, ProbeStage))
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert ProbeStage.most_active == 1, "two sources were inside one stage instance at once"
    probes = sorted((results[i]["probe"] for i in range(2)), key=lambda r: r.started)
    assert probes[1].started >= probes[0].ended - 1e-3, probes
    ids = [results[i]["ingest"].source.source_id for i in range(2)]
    assert ids[0] != ids[1] and [results[i]["probe"].source_id for i in range(2)] == ids
