"""Throughput of the distributed pipeline with 1 and with 2 workers on the same inputs (sources per hour).

Starts what production runs, on this machine: PostgreSQL (Debian's package), ``prefect server start`` on it, the
deployments of ``flows/deployments.py``, one ingest worker and N per-source workers (process pool, ``--limit 1``
each). For each N, the same inputs go into a fresh dataset (nothing cached) through the ingest deployment; the clock
runs from the ingest request to the last source ``done`` in the ledger.

    .venv/bin/python scripts/benchmark_workers.py --models-dir ../shared/models            # 1 and 2 workers
    .venv/bin/python scripts/benchmark_workers.py --workers 1 2 4 --json bench.json

Reported per N: wall time, sources/hour, media hours per hour, mean per-source processing time (ledger start to
finish) and mean queue wait (submission to start: worker polling plus flow-run process start-up).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_INPUTS = [
    "media/en_monologue/englishvideo.mp4",
    "media/en_film_titanic/test1.mp4",
    "media/zh_narration/10.mp4",
    "zh_tvdrama",  # muxed from media/zh_tvdrama (picture + sound)
]


def _inputs(shared: Path, names: list[str], tmp: Path) -> list[Path]:
    from cinedub.media import mux_video_audio

    out = []
    for n in names:
        if n == "zh_tvdrama":
            p = tmp / "zh_tvdrama.mp4"
            mux_video_audio(shared / "media/zh_tvdrama/sample_DEBUG.mp4", shared / "media/zh_tvdrama/sample.wav", p)
            out.append(p)
        else:
            out.append(shared / n)
    return out


def _duration_s(path: Path) -> float:
    r = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                       capture_output=True, text=True, check=True)
    return float(r.stdout.strip())


def run_once(n_workers: int, api_url: str, home: Path, inputs: list[Path], config: dict, ledger_url: str,
             timeout_s: float) -> dict:
    from prefect.deployments import run_deployment

    from cinedub.ledger import Ledger
    from flows import api
    from flows.procs import Worker

    out = home / f"dataset-{n_workers}w"
    workers = [Worker(api_url, home, "bench-gpu", f"w{i}", 1, {"CINEDUB_HOST": f"w{i}"}).start()
               for i in range(n_workers)]
    try:
        with api.client(api_url) as http:
            deadline = time.time() + 90
            while len([w for w in api.workers(http, "bench-gpu") if w["status"] == "ONLINE"
                       and w["name"] in {x.name for x in workers}]) < n_workers:
                if time.time() > deadline:
                    raise TimeoutError("workers did not come online")
                time.sleep(1)
        ledger = Ledger(out, ledger_url)
        spec = {"out_dir": str(out), "sources": [str(p) for p in inputs], "config": config, "ledger_url": ledger_url}
        t0 = time.time()
        run_deployment("cinedub-ingest/scheduled", parameters={"spec": spec}, timeout=0, as_subflow=False)
        while True:
            c = ledger.counts()
            if c["done"] + c["failed"] == len(inputs) and sum(c.values()) == len(inputs):
                break
            if time.time() - t0 > timeout_s:
                raise TimeoutError(f"{n_workers} worker(s): not finished after {timeout_s:.0f} s: {c}")
            time.sleep(1)
        wall = time.time() - t0
    finally:
        for w in workers:
            w.stop()
    entries = ledger.entries()
    proc = [(e.finished_at - e.started_at).total_seconds() for e in entries if e.started_at and e.finished_at]
    wait = [(e.started_at - e.submitted_at).total_seconds() for e in entries if e.started_at and e.submitted_at]
    return {
        "workers": n_workers,
        "sources": len(inputs),
        "failed": [e.name for e in entries if e.status != "done"],
        "wall_s": round(wall, 1),
        "sources_per_hour": round(len(inputs) / wall * 3600, 1),
        "mean_source_s": round(sum(proc) / max(1, len(proc)), 1),
        "mean_queue_wait_s": round(sum(wait) / max(1, len(wait)), 1),
        "by_worker": {h: sum(1 for e in entries if e.worker.split(":")[0] == h) for h in {e.worker.split(":")[0]
                                                                                           for e in entries}},
    }


def _run_all(a: argparse.Namespace, home: Path, inputs: list[Path], media_s: float, config: dict,
             results: list[dict]) -> None:
    from cinedub_testing.cluster import Postgres
    from flows.deployments import DeploySettings, setup_server
    from flows.procs import PrefectServer, Worker

    with Postgres() as pg, PrefectServer(home / "server", database_url=pg.create_db("prefect")) as server:
        os.environ.update(PREFECT_API_URL=server.api, PREFECT_HOME=str(home / "client"))
        setup_server(DeploySettings(cpu_pool="bench-cpu", gpu_pool="bench-gpu"), review=False)
        with Worker(server.api, home, "bench-cpu", "ingest", 2):
            for n in a.workers:
                r = run_once(n, server.api, home, inputs, config, pg.url("prefect", "postgresql"), a.timeout)
                r["media_hours_per_hour"] = round(media_s / r["wall_s"], 2)
                results.append(r)
                print(json.dumps(r), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shared", default=str(REPO.parent / "shared"))
    p.add_argument("--models-dir", default=None)
    p.add_argument("--inputs", nargs="*", default=DEFAULT_INPUTS, help="paths under --shared (or zh_tvdrama)")
    p.add_argument("--workers", nargs="*", type=int, default=[1, 2])
    p.add_argument("--timeout", type=float, default=1800)
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder (datasets, logs)")
    a = p.parse_args()
    shared = Path(a.shared).resolve()
    models_dir = Path(a.models_dir).resolve() if a.models_dir else shared / "models"

    home = Path(tempfile.mkdtemp(prefix="cinedub-bench-"))
    results: list[dict] = []
    try:
        inputs = _inputs(shared, a.inputs, home)
        media_s = sum(_duration_s(x) for x in inputs)
        config = {"separation": {"method": "none"}, "models_dir": str(models_dir), "device": "cpu"}
        _run_all(a, home, inputs, media_s, config, results)
    finally:
        if not a.keep:
            shutil.rmtree(home, ignore_errors=True)
    base = results[0]["sources_per_hour"]
    print(f"\n{len(inputs)} sources, {media_s:.1f} s of media, {os.cpu_count()} CPU cores, no GPU")
    print(f"{'workers':>7} {'wall s':>7} {'src/h':>7} {'media h/h':>9} {'per src s':>9} {'wait s':>7} {'speed-up':>8}")
    for r in results:
        print(f"{r['workers']:>7} {r['wall_s']:>7} {r['sources_per_hour']:>7} {r['media_hours_per_hour']:>9} "
              f"{r['mean_source_s']:>9} {r['mean_queue_wait_s']:>7} {r['sources_per_hour'] / base:>8.2f}")
    if a.json:
        Path(a.json).write_text(json.dumps({"media_s": media_s, "cpus": os.cpu_count(), "results": results}, indent=2))
    return 0 if all(not r["failed"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
