"""The deployments of CineDub, in one registry (the "deployments.py" convention: flows stay thin, this file says
where and how they run).

==========================  =============================  ===========  ==============================================
deployment                  entry point                    work pool    how it runs
==========================  =============================  ===========  ==============================================
``cinedub-ingest/scheduled``  flows/ingest.py:ingest_flow  CPU pool     cron (when an :class:`IngestSpec` is given),
                                                                        one at a time (deployment limit 1, ENQUEUE),
                                                                        parameters validated (``spec`` is a pydantic
                                                                        model: a form in the UI, 409 on bad types)
``cinedub-process/default``   flows/ingest.py:process_job  GPU pool     one run per source, fanned out by ingest;
                                                                        one worker per GPU (``--limit`` and
                                                                        ``CUDA_VISIBLE_DEVICES``, see
                                                                        :mod:`flows.resources`)
``<review flow>/default``     flows/review.py:review_flow  CPU pool     started by hand or by the pipeline; skipped
                                                                        while that file does not exist
==========================  =============================  ===========  ==============================================

Deploy (the server in ``PREFECT_API_URL``; code read from this checkout on every worker, so every machine needs the
same checkout or image at the same path)::

    python -m flows.deployments --cpu-pool cinedub-cpu --gpu-pool cinedub-gpu \\
        --out /data/out --glob '/data/landing/**/*.mp4' --cron '*/15 * * * *' --gpus-per-host node1=2

It creates the pools (process type) when missing, the global concurrency limits (``gpu:<host>:<i>``,
``llm-inflight``) and the deployments. Prefect's ``prefect deploy`` / ``prefect.yaml`` are not used: this file is the
single description, so the local mode, the compose file and the tests deploy exactly the same thing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
INGEST = "flows/ingest.py:ingest_flow"
PROCESS = "flows/ingest.py:process_job"
REVIEW = "flows/review.py:review_flow"
JOB_ENV = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PYANNOTE_METRICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "cinedub",
}


@dataclass
class DeploySettings:
    """Where the deployments go.

    Attributes:
        cpu_pool / gpu_pool: work pools of ingest and review / of per-source runs (the same name for one pool).
        ingest: default ``spec`` of the ingest deployment; with ``cron`` it becomes the cron schedule's parameters.
        cron: cron string (e.g. ``"*/15 * * * *"``) or None for no schedule.
        timezone: the cron's IANA time zone.
        paused: create the schedule paused (an operator resumes it in the UI).
        env: extra environment for every flow-run process (job variable ``env``).
        source_dir: the checkout the workers run (the same path on every machine / in every image).
    """

    cpu_pool: str = "cinedub-cpu"
    gpu_pool: str = "cinedub-gpu"
    ingest: dict[str, Any] | None = None
    cron: str | None = None
    timezone: str = "UTC"
    paused: bool = False
    env: dict[str, str] = field(default_factory=dict)
    source_dir: Path = REPO


def _deploy(entrypoint: str, name: str, pool: str, s: DeploySettings, **kwargs: Any) -> tuple[str, str]:
    from prefect import Flow

    # from_source + to_deployment + apply (what ``flow.deploy`` does without an image); ``flow.deploy`` itself also
    # lists the pool's workers with a request the 3.8.8 server rejects (see flows/api.py).
    flow = Flow.from_source(source=str(s.source_dir), entrypoint=entrypoint)
    deployment = flow.to_deployment(
        name=name,
        work_pool_name=pool,
        job_variables={"env": {**JOB_ENV, **s.env}},
        enforce_parameter_schema=True,
        **kwargs,
    )
    dep_id = deployment.apply()
    return f"{flow.name}/{name}", str(dep_id)


def deploy_all(s: DeploySettings | None = None, review: bool = True) -> dict[str, str]:
    """Create or update every deployment (see the module table). Returns ``{"<flow>/<deployment>": id}``.

    Raises:
        pydantic.ValidationError: ``s.ingest`` is not a valid :class:`flows.ingest.IngestSpec`.
    """
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
    from prefect.schedules import Cron

    from flows.ingest import IngestSpec

    s = s or DeploySettings()
    out: dict[str, str] = {}
    ingest_kwargs: dict[str, Any] = {
        "concurrency_limit": ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        "description": "Find new sources, keep the ledger, submit one cinedub-process run per source.",
        "tags": ["cinedub", "ingest"],
    }
    if s.ingest is not None:
        spec = IngestSpec.model_validate(s.ingest).model_dump(mode="json")
        ingest_kwargs["parameters"] = {"spec": spec}
        if s.cron:
            ingest_kwargs["schedules"] = [Cron(s.cron, timezone=s.timezone, parameters={"spec": spec},
                                               active=not s.paused)]
    for entry, name, pool, kwargs in (
        (INGEST, "scheduled", s.cpu_pool, ingest_kwargs),
        (PROCESS, "default", s.gpu_pool, {"description": "One source end to end (ledger, pipeline, manifest).",
                                          "tags": ["cinedub", "gpu"]}),
    ):
        full, dep_id = _deploy(entry, name, pool, s, **kwargs)
        out[full] = dep_id
    if review:
        if (s.source_dir / REVIEW.split(":")[0]).is_file():
            try:
                full, dep_id = _deploy(REVIEW, "default", s.cpu_pool, s, description="Human review of a dataset.",
                                       tags=["cinedub", "review"])
                out[full] = dep_id
            except Exception as e:  # noqa: BLE001 - a broken review flow must not stop ingestion from deploying
                print(f"deployments: {REVIEW} could not be deployed ({type(e).__name__}: {e})", file=sys.stderr)
        else:
            print(f"deployments: {REVIEW} not found; review deployment skipped", file=sys.stderr)
    return out


def setup_server(s: DeploySettings, gpus_by_host: dict[str, int] | None = None, llm_inflight: int = 4,
                 pool_limit: int | None = None, review: bool = True) -> dict[str, str]:
    """Pools (process type, created when missing), concurrency limits, then every deployment."""
    from flows import api
    from flows.resources import ensure_limits

    with api.client() as http:
        for pool in dict.fromkeys((s.cpu_pool, s.gpu_pool)):
            api.ensure_work_pool(http, pool, concurrency_limit=pool_limit)
    ensure_limits(gpus_by_host or {}, llm_inflight=llm_inflight)
    return deploy_all(s, review=review)


def _parse_gpus(items: list[str]) -> dict[str, int]:
    out = {}
    for item in items:
        host, _, n = item.partition("=")
        out[host] = int(n or 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m flows.deployments", description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu-pool", default="cinedub-cpu")
    p.add_argument("--gpu-pool", default="cinedub-gpu")
    p.add_argument("--out", help="dataset folder of the scheduled ingest")
    p.add_argument("--glob", help="files the scheduled ingest takes (e.g. '/data/landing/**/*.mp4')")
    p.add_argument("--prefix", help="folder or object-store prefix the scheduled ingest searches")
    p.add_argument("--config-json", default="{}", help="Config overrides for the per-source runs (JSON)")
    p.add_argument("--ledger-url", default=os.environ.get("CINEDUB_LEDGER_URL"))
    p.add_argument("--cron", default=None, help="cron of the ingest (e.g. '*/15 * * * *'); none = no schedule")
    p.add_argument("--timezone", default="UTC")
    p.add_argument("--paused", action="store_true")
    p.add_argument("--gpus-per-host", nargs="*", default=[], metavar="HOST=N",
                   help="create gpu:<HOST>:<i> limits (one slot per GPU)")
    p.add_argument("--llm-inflight", type=int, default=4)
    p.add_argument("--source-dir", default=str(REPO))
    p.add_argument("--limits-only", action="store_true",
                   help="only create the concurrency limits (a new machine: --limits-only --gpus-per-host node2=2)")
    a = p.parse_args(argv)
    if a.limits_only:
        from flows.resources import ensure_limits

        print("\n".join(ensure_limits(_parse_gpus(a.gpus_per_host), llm_inflight=a.llm_inflight)))
        return 0
    ingest = None
    if a.out:
        ingest = {"out_dir": a.out, "glob": a.glob, "prefix": a.prefix, "config": json.loads(a.config_json),
                  "ledger_url": a.ledger_url}
    s = DeploySettings(cpu_pool=a.cpu_pool, gpu_pool=a.gpu_pool, ingest=ingest, cron=a.cron, timezone=a.timezone,
                       paused=a.paused, source_dir=Path(a.source_dir))
    for name, dep_id in setup_server(s, _parse_gpus(a.gpus_per_host), a.llm_inflight).items():
        print(f"{name}\t{dep_id}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
