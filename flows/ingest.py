"""Scheduled ingestion: find new sources, keep the ledger, fan out one per-source run each on the workers.

``cinedub-ingest`` (:func:`ingest_flow`, cron-scheduled): discovers sources (:mod:`flows.discover`), records them in
the ledger (:mod:`cinedub.ledger`), finds runs whose worker died (a ``running`` row without a heartbeat for
``stale_after_s``: its flow run is set ``Crashed`` and the row ``failed``), and submits every source that needs a run
with ``run_deployment(..., timeout=0, idempotency_key=...)``. The key is ``<dataset>:<source sha256>:<attempt>``:
while a run of a source exists, submitting it again (a second ingest, a double click) returns that same run; only a
recorded failure moves the attempt on.

``cinedub-process`` (:func:`process_job`, run by the workers): the per-source run. It marks the ledger ``running``
(refusing to start when the row belongs to another run), beats every ``CINEDUB_LEDGER_HEARTBEAT_S`` seconds, runs
:func:`flows.pipeline.process_source` (which does the work and writes the shards atomically), retries it with
backoff on transient errors only, rebuilds the manifest (file-locked, safe for concurrent workers) and marks the
ledger ``done`` or ``failed`` with the reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.states import Failed
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cinedub.ledger import DONE, FAILED, PENDING, RUNNING, Entry, Ledger
from flows import api
from flows.discover import MEDIA_SUFFIXES, Candidate, content_sha256, discover, fetch
from flows.resources import BACKOFF_FACTOR_S, RETRIES, exception_is_transient, host_name, state_exception

PROCESS_DEPLOYMENT = "cinedub-process/default"
ENV_HEARTBEAT = "CINEDUB_LEDGER_HEARTBEAT_S"
AUTO_RESUBMIT = ("crashed", "lost")  # reasons that say the machine died, not the input


class IngestSpec(BaseModel):
    """What the ingest flow looks at and where the dataset goes (the deployment's validated parameter).

    At least one of ``glob``, ``prefix`` and ``sources`` is required. ``config`` holds overrides of
    :class:`cinedub.config.Config` (e.g. ``{"separation": {"method": "none"}, "languages": ["zh"]}``); the workers'
    environment (``CINEDUB_MODELS_DIR``, ...) supplies the rest.
    """

    model_config = ConfigDict(extra="forbid")

    out_dir: str = Field(description="Dataset folder on storage every worker sees (shards, manifest, ledger).")
    glob: str | None = Field(None, description="Files to take, e.g. /landing/**/*.mp4 or s3://bucket/in/*.mkv")
    prefix: str | None = Field(None, description="Folder or object-store prefix searched recursively.")
    sources: list[str] = Field(default_factory=list, description="Explicit files, folders or URLs.")
    suffixes: list[str] = Field(default_factory=lambda: list(MEDIA_SUFFIXES))
    config: dict[str, Any] = Field(default_factory=dict, description="Config overrides for the per-source runs.")
    ledger_url: str | None = Field(None, description="sqlite:///… or postgresql://…; default <out_dir>/ledger.sqlite")
    deployment: str = Field(PROCESS_DEPLOYMENT, description="Per-source deployment, '<flow>/<deployment>'.")
    retry_failed: bool = Field(False, description="Also resubmit sources that failed (bad inputs fail again).")
    max_attempts: int = Field(3, ge=1, le=100)
    stale_after_s: float = Field(600.0, ge=5, description="A running source without heartbeat this long is lost.")
    max_new: int | None = Field(None, ge=1, description="Submit at most this many runs per ingest.")

    @field_validator("deployment")
    @classmethod
    def _deployment(cls, v: str) -> str:
        if v.count("/") != 1:
            raise ValueError("deployment must be '<flow name>/<deployment name>'")
        return v

    @field_validator("config")
    @classmethod
    def _config(cls, v: dict[str, Any]) -> dict[str, Any]:
        from cinedub.config import Config

        Config.load(**v)  # raises ValidationError naming the bad field
        return v

    @model_validator(mode="after")
    def _something(self) -> "IngestSpec":
        if not (self.glob or self.prefix or self.sources):
            raise ValueError("give at least one of glob, prefix or sources")
        return self


def dataset_tag(out_dir: str | Path) -> str:
    """Short hash of the dataset folder (part of idempotency keys: the same source may go into two datasets)."""
    return hashlib.sha256(str(Path(out_dir).resolve()).encode()).hexdigest()[:12]


def idempotency_key(out_dir: str | Path, entry: Entry) -> str:
    """``<dataset>:<source key>:<attempt>``: stable while a run of the source exists (see module doc)."""
    return f"{dataset_tag(out_dir)}:{entry.key}:{entry.attempts}"


def source_key(ledger: Ledger, c: Candidate) -> str:
    """The ledger key of a candidate: its content SHA-256 (local; cached by path, size and mtime) or its identity
    hash (object store)."""
    if not c.local:
        return c.identity_key()
    return ledger.known_key(c.uri, c.size, c.mtime_ns) or content_sha256(c.uri)


def reconcile(ledger: Ledger, stale_after_s: float, url: str | None = None) -> list[str]:
    """Bring the ledger in line with the runs: a run that ended badly marks its source ``failed``; a run still
    ``Running`` whose source has not beaten for ``stale_after_s`` (its worker was killed or lost) is set
    ``Crashed`` in Prefect and its source ``failed`` ("lost: ..."). Returns the keys it marked."""
    marked = []
    now = time.time()
    with api.client(url) as http:
        for e in ledger.entries():
            if e.status not in (PENDING, RUNNING) or not e.flow_run_id:
                continue
            run = api.read_flow_run(http, e.flow_run_id)
            if run is None:
                if ledger.mark_failed(e.key, f"lost: flow run {e.flow_run_id} no longer exists", e.flow_run_id):
                    marked.append(e.key)
                continue
            state = (run.get("state") or {}).get("type", "")
            msg = (run.get("state") or {}).get("message") or ""
            if state in ("FAILED", "CRASHED", "CANCELLED", "COMPLETED"):
                if ledger.mark_failed(e.key, f"{state.lower()}: {msg}".strip(), e.flow_run_id):
                    marked.append(e.key)
            elif state in ("RUNNING", "CANCELLING"):
                life = e.last_sign_of_life()
                if life is not None and now - life.timestamp() > stale_after_s:
                    why = f"lost: no heartbeat for {now - life.timestamp():.0f} s from {e.worker or 'its worker'}"
                    api.set_state(http, e.flow_run_id, "CRASHED", why)
                    for child in api.flow_runs(http, parent_flow_run_id=e.flow_run_id, states=["RUNNING"]):
                        api.set_state(http, child["id"], "CRASHED", why)
                    if ledger.mark_failed(e.key, why, e.flow_run_id):
                        marked.append(e.key)
    return marked


def _wants_run(e: Entry, retry_failed: bool, max_attempts: int) -> bool:
    if e.status == PENDING:
        return e.flow_run_id is None
    if e.status == FAILED and e.attempts < max_attempts:
        return retry_failed or e.reason.startswith(AUTO_RESUBMIT)
    return False


def submit_source(entry: Entry, out_dir: str, deployment: str, config: dict[str, Any], ledger: Ledger,
                  storage: str | None = None) -> str:
    """Create (or find) the source's flow run on ``deployment``; returns its id and records it in the ledger."""
    from prefect.deployments import run_deployment

    run = run_deployment(
        deployment,
        parameters={"source": entry.uri, "out_dir": out_dir, "key": entry.key, "name": entry.name,
                    "config": config, "ledger_url": ledger.url, "storage": storage},
        timeout=0,
        idempotency_key=idempotency_key(out_dir, entry),
        flow_run_name=f"process-{entry.name}",
        tags=["cinedub", f"dataset:{dataset_tag(out_dir)}"],
    )
    ledger.mark_submitted(entry.key, str(run.id), config)
    return str(run.id)


def _ingest_run_name() -> str:
    from prefect.runtime import flow_run

    spec = flow_run.parameters.get("spec") or {}
    out = spec.get("out_dir", "") if isinstance(spec, dict) else getattr(spec, "out_dir", "")
    return f"ingest-{Path(str(out)).name or 'dataset'}"


@flow(name="cinedub-ingest", flow_run_name=_ingest_run_name, log_prints=True)
def ingest_flow(spec: IngestSpec) -> dict[str, Any]:
    """Discover sources, update the ledger, recover lost runs, and submit one ``cinedub-process`` run per source
    that needs one. Returns counts (``discovered``, ``submitted``, ledger statuses) and the submitted run ids."""
    from cinedub.pipeline import work_root
    from flows.tasks import ensure_result_storage

    logger = get_run_logger()
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(out, spec.ledger_url)
    found = discover(spec.glob, spec.prefix, spec.sources, spec.suffixes)
    for c in found:
        ledger.add(source_key(ledger, c), c.uri, c.name, c.size, c.mtime_ns)
    lost = reconcile(ledger, spec.stale_after_s)
    if lost:
        logger.warning("%d source(s) lost their run (worker died or run ended badly): %s", len(lost), lost)

    from cinedub.config import Config

    cfg = Config.load(**spec.config)
    storage = ensure_result_storage(work_root(cfg, out))
    submitted: dict[str, str] = {}
    for e in ledger.entries():
        if spec.max_new is not None and len(submitted) >= spec.max_new:
            break
        if _wants_run(e, spec.retry_failed, spec.max_attempts):
            config = spec.config or json.loads(e.config or "{}")  # a retry keeps the options of the first run
            submitted[e.key] = submit_source(e, str(out.resolve()), spec.deployment, config, ledger, storage)
    counts = ledger.counts()
    logger.info("ingest %s: %d found, %d submitted; ledger %s", out, len(found), len(submitted), counts)
    ledger_artifact(ledger, out, f"{len(found)} found, {len(submitted)} submitted, {len(lost)} lost run(s) recovered.")
    return {"discovered": len(found), "submitted": submitted, "lost": lost, "ledger": counts}


def ledger_artifact(ledger: Ledger, out: Path, note: str) -> None:
    """The ledger's counts per status as the dataset's markdown artifact (a new version of the same key each
    time: after every ingest and every finished source run)."""
    counts = ledger.counts()
    create_markdown_artifact(
        "| status | sources |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in counts.items()) + f"\n\n{note}",
        key=f"cinedub-ledger-{dataset_tag(out)}", description=f"ledger of {out}",
    )


def _flow_run_id() -> str:
    from prefect.runtime import flow_run

    return str(flow_run.id or "")


class _Heartbeat:
    """Beats the ledger row every ``interval_s`` from a daemon thread while the run works."""

    def __init__(self, ledger: Ledger, key: str, run_id: str, interval_s: float):
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._loop, args=(ledger, key, run_id, interval_s), daemon=True,
                                   name="cinedub-heartbeat")

    def _loop(self, ledger: Ledger, key: str, run_id: str, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            try:
                ledger.heartbeat(key, run_id)
            except Exception:  # noqa: BLE001 - a missed beat is not fatal; the next one may pass
                pass

    def __enter__(self) -> "_Heartbeat":
        self._t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._t.join(timeout=5)


def _failure_reason(state: Any) -> str:
    """The reason a ``process_source`` run failed, named as ``run_pipeline`` names it."""
    reason = state.message or f"run ended {state.type.value}"
    if "exception" in reason.lower():  # an unexpected error: name it as the child raised it
        exc = state_exception(state)
        if exc is not None:
            from flows.tasks import failure_reason

            reason = failure_reason(exc)
    return reason


@flow(name="cinedub-process", flow_run_name="process-{name}", log_prints=True)
def process_job(source: str, out_dir: str, key: str = "", name: str = "", config: dict[str, Any] | None = None,
                ledger_url: str | None = None, storage: str | None = None) -> dict[str, Any]:
    """One source on one worker: ledger ``running`` -> :func:`flows.pipeline.process_source` -> manifest -> ledger
    ``done`` (or ``failed`` with the reason). JSON-only parameters, so it can be a deployment.

    Args:
        source: local path or fsspec URL of the video.
        out_dir: dataset folder (shared by all workers).
        key: the ledger key (computed here when empty: a run started by hand).
        config: :class:`cinedub.config.Config` overrides; the worker's environment supplies the rest.
    """
    from cinedub.config import Config
    from cinedub.pipeline import work_root
    from cinedub.shards import build_manifest
    from flows.pipeline import process_source

    logger = get_run_logger()
    cfg = Config.load(**(config or {}))
    out = Path(out_dir)
    ledger = Ledger(out, ledger_url)
    run_id = _flow_run_id()
    name = name or source.rsplit("/", 1)[-1]
    if not key:
        c = discover(sources=[source])[0]
        key = source_key(ledger, c)
        ledger.add(key, c.uri, c.name, c.size, c.mtime_ns)
    worker = f"{host_name()}:{os.getpid()}"
    if not ledger.mark_running(key, run_id, worker):
        current = ledger.get(key)
        logger.warning("source %s belongs to run %s (%s): not processed again", name,
                       current.flow_run_id if current else "?", current.status if current else "?")
        return {"key": key, "status": "skipped", "owner": current.flow_run_id if current else None}

    interval = float(os.environ.get(ENV_HEARTBEAT, "30"))
    try:
        with _Heartbeat(ledger, key, run_id, interval):
            path = fetch(source, work_root(cfg, out) / "downloads" / key[:16])
            # a local source's ledger key is its content hash: the pipeline need not read it again
            sha = key if re.fullmatch(r"[0-9a-f]{64}", key) and Path(path) == Path(source) else None
            for attempt in range(RETRIES + 1):
                state = process_source(str(path), str(out), cfg, name=name, storage=storage, sha256=sha,
                                       return_state=True)
                if state.is_completed() or attempt == RETRIES:
                    break
                exc = state_exception(state)
                if not exception_is_transient(exc, state.message or ""):
                    break
                delay = BACKOFF_FACTOR_S * 2**attempt
                logger.warning("transient failure (%s); retrying in %.0f s", _failure_reason(state), delay)
                time.sleep(delay)
            if not state.is_completed():
                reason = _failure_reason(state)
                ledger.mark_failed(key, f"failed: {reason}", run_id)
                ledger_artifact(ledger, out, f"{name}: failed.")
                return Failed(message=reason)  # type: ignore[return-value]
            summary = state.result()
            manifest = build_manifest(out)
            ledger.mark_done(key, run_id, summary["source_id"], summary["clips"])
            ledger_artifact(ledger, out, f"{name}: {summary.get('status', 'ok')}, {summary['clips']} clips.")
    except BaseException as exc:
        ledger.mark_failed(key, f"failed: {type(exc).__name__}: {exc}", run_id)
        raise
    logger.info("%s done: %d clips; dataset now %d clips in %d shards", name, summary["clips"],
                manifest["total_rows"], len(manifest["shards"]))
    return {"key": key, "status": DONE, **summary}


def ledger_table(out_dir: str | Path, url: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
    """The ledger rows of a dataset as dicts (for the CLI and scripts)."""
    return [e.to_dict() for e in Ledger(out_dir, url).entries(status)]


__all__ = ["IngestSpec", "ingest_flow", "process_job", "reconcile", "submit_source", "idempotency_key",
           "ledger_table", "RUNNING", "DONE", "FAILED", "PENDING"]
