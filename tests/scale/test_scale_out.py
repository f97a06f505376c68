"""Scale-out proof on one machine: a real Prefect server on a real PostgreSQL, a process work pool with two workers
(each pretends to be a machine: its own ``CINEDUB_HOST``), real footage submitted through the ingest deployment.

One module-scoped cluster (PostgreSQL started by the test with Debian's ``postgresql`` package, ``prefect server
start`` on it, the deployments of :mod:`flows.deployments`, an ingest worker and two per-source workers). The ledger
lives in the same PostgreSQL database as Prefect's tables.

1. Four sources through ``cinedub-ingest``: each processed exactly once, by both workers between them, one dataset
   whose manifest lists each clip once, ledger all ``done``. While they run, the same sources are submitted again
   (a second ingest, and ``submit_source`` directly): no second run of any source.
2. A worker SIGKILLed (with its flow-run process) mid-source: no partial shard is visible; after a restart and the
   next ingest, the lost run is marked ``Crashed`` and resubmitted once, and the dataset holds the same clips as an
   uninterrupted run, none duplicated or missing.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from cinedub.ledger import Ledger
from cinedub.hashing import sha256_file
from cinedub.media import mux_video_audio
from cinedub.reader import ShardReader
from cinedub_testing.cluster import Postgres, PrefectServer, Worker
from flows import api

pytestmark = pytest.mark.slow
CPU_POOL, GPU_POOL = "scale-cpu", "scale-gpu"
INGEST, PROCESS = "cinedub-ingest/scheduled", "cinedub-process/default"


def _wait(cond, timeout_s: float, what: str, every: float = 1.0):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        v = cond()
        if v:
            return v
        time.sleep(every)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, media_dir: Path) -> dict[str, Path]:
    zh = tmp_path_factory.mktemp("inputs") / "zh_tvdrama.mp4"
    mux_video_audio(media_dir / "zh_tvdrama/sample_DEBUG.mp4", media_dir / "zh_tvdrama/sample.wav", zh)
    return {
        "monologue": media_dir / "en_monologue/englishvideo.mp4",
        "titanic": media_dir / "en_film_titanic/test1.mp4",
        "zh_tvdrama": zh,
        "narration": media_dir / "zh_narration/10.mp4",
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deployments import DeploySettings, setup_server

    home = tmp_path_factory.mktemp("cluster")
    saved = {k: os.environ.get(k) for k in ("PREFECT_API_URL", "PREFECT_HOME")}
    with Postgres() as pg:
        db = pg.create_db("prefect")
        with PrefectServer(home / "server", database_url=db) as server:
            os.environ.update(PREFECT_API_URL=server.api, PREFECT_HOME=str(home / "client"))
            # Prefect reads its settings once, at import: an earlier test in this process may have left the client
            # on an ephemeral server, so the settings are overridden explicitly, not only through the environment
            settings = temporary_settings(updates={PREFECT_API_URL: server.api})
            settings.__enter__()
            workers: dict = {}
            try:
                setup_server(DeploySettings(cpu_pool=CPU_POOL, gpu_pool=GPU_POOL), review=False)
                env = {"CINEDUB_LEDGER_HEARTBEAT_S": "1"}
                workers = {
                    "ingest": Worker(server.api, home, CPU_POOL, "ingest", 2, env).start(),
                    "w1": Worker(server.api, home, GPU_POOL, "w1", 1, {**env, "CINEDUB_HOST": "w1"}).start(),
                    "w2": Worker(server.api, home, GPU_POOL, "w2", 1, {**env, "CINEDUB_HOST": "w2"}).start(),
                }
                with api.client(server.api) as http:
                    _wait(lambda: {w["name"] for w in api.workers(http, GPU_POOL) if w["status"] == "ONLINE"}
                          >= {"w1", "w2"}, 90, "both workers online")
                yield {"api": server.api, "pg": pg, "ledger_url": pg.url("prefect", "postgresql"), "workers": workers,
                       "home": home}
            finally:
                settings.__exit__(None, None, None)
                for w in workers.values():
                    w.stop()
                for k, v in saved.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v
                for log in sorted(home.glob("worker-*.log")):
                    print(f"--- {log.name} (tail)\n{log.read_text(errors='replace')[-1500:]}")


def _spec(out: Path, sources: list[Path], cluster, models_dir: Path, **kw) -> dict:
    return {"out_dir": str(out), "sources": [str(s) for s in sources], "ledger_url": cluster["ledger_url"],
            "config": {"separation": {"method": "none"}, "models_dir": str(models_dir), "device": "cpu"}, **kw}


def _ingest(spec: dict) -> str:
    from prefect.deployments import run_deployment

    return str(run_deployment(INGEST, parameters={"spec": spec}, timeout=0, as_subflow=False).id)


def _process_runs(http, name: str | None = None) -> list[dict]:
    dep = api.deployment(http, PROCESS)
    runs = api.flow_runs(http, deployment_id=dep["id"])
    return [r for r in runs if name is None or r["parameters"]["name"] == name]


def _state(http, run_id: str) -> str:
    return api.read_flow_run(http, run_id)["state"]["type"]


@pytest.fixture(scope="module")
def scale_run(cluster, inputs, models_dir, tmp_path_factory):
    """Four sources through the ingest deployment, with duplicate submissions while they run."""
    out = tmp_path_factory.mktemp("dataset")
    spec = _spec(out, list(inputs.values()), cluster, models_dir)
    ledger = Ledger(out, cluster["ledger_url"])
    t0 = time.time()
    first = _ingest(spec)
    obs: dict = {"ingests": [first]}
    with api.client(cluster["api"]) as http:
        running = _wait(lambda: [e for e in ledger.entries() if e.status == "running"], 240, "a source running")
        # the same sources again, while one runs: a second ingest, and a direct submission of the running one
        obs["ingests"].append(_ingest(spec))
        from flows.ingest import submit_source

        e = running[0]
        obs["direct"] = (e.flow_run_id, submit_source(e, str(out.resolve()), PROCESS, spec["config"], ledger))
        _wait(lambda: _state(http, obs["ingests"][1]) in api.TERMINAL, 240, "the second ingest")
        obs["counts_when_second_ingest_ended"] = ledger.counts()
        _wait(lambda: ledger.counts()["done"] + ledger.counts()["failed"] == len(inputs), 600, "all sources")
        obs["wall_s"] = time.time() - t0
        obs["ingest_states"] = [_state(http, i) for i in obs["ingests"]]
        obs["runs"] = _process_runs(http)
    print(f"scale run: {obs['wall_s']:.0f} s for {len(inputs)} sources on 2 workers")
    return out, ledger, obs


def test_every_source_processed_exactly_once_by_two_workers(scale_run, inputs):
    out, ledger, obs = scale_run
    entries = ledger.entries()
    assert [e.status for e in entries] == ["done"] * len(inputs), [(e.name, e.status, e.reason) for e in entries]
    assert all(e.attempts == 0 for e in entries)
    assert {e.key for e in entries} == {sha256_file(p) for p in inputs.values()}
    assert obs["ingest_states"] == ["COMPLETED", "COMPLETED"]
    runs = obs["runs"]
    assert len(runs) == len(inputs), [(r["name"], r["state"]["type"]) for r in runs]
    assert sorted(r["parameters"]["key"] for r in runs) == sorted(e.key for e in entries)
    assert {r["state"]["type"] for r in runs} == {"COMPLETED"}
    assert {e.flow_run_id for e in entries} == {r["id"] for r in runs}
    assert {e.worker.split(":")[0] for e in entries} == {"w1", "w2"}, "both workers took sources"


def test_resubmitting_a_running_source_starts_no_second_run(scale_run):
    _, _, obs = scale_run
    running_id, again_id = obs["direct"]
    assert again_id == running_id, "the same idempotency key must return the run that exists"
    c = obs["counts_when_second_ingest_ended"]
    assert c["pending"] + c["running"] > 0, f"the second ingest should overlap the runs: {c}"


def test_one_dataset_lists_each_clip_once(scale_run, inputs):
    out, ledger, _ = scale_run
    manifest = json.loads((out / "manifest.json").read_text())
    listed = [c for e in manifest["shards"] for c in e["clip_ids"]]
    table = ds.dataset(sorted(str(p) for p in (out / "shards").glob("*.parquet")), format="parquet").to_table(
        columns=["clip_id", "source_id", "language"])
    assert len(listed) == len(set(listed)) == table.num_rows == manifest["total_rows"]
    assert set(listed) == set(table.column("clip_id").to_pylist())
    by_source: dict[str, set] = {}
    for r in table.to_pylist():
        by_source.setdefault(r["source_id"], set()).add(r["language"])
    entries = {e.name: e for e in ledger.entries()}
    assert set(by_source) == {e.source_id for e in entries.values()}
    assert sum(e.clips for e in entries.values()) == manifest["total_rows"]
    expected_lang = {"englishvideo.mp4": "en", "test1.mp4": "en", "zh_tvdrama.mp4": "zh", "10.mp4": "zh"}
    for name, lang in expected_lang.items():
        assert by_source[entries[name].source_id] == {lang}, name
    assert len(ShardReader(out)) == manifest["total_rows"]
    assert not list((out / "shards").glob(".*")), "no temporary shard left behind"


def test_the_server_rejects_bad_ingest_parameters(cluster, tmp_path):
    with api.client(cluster["api"]) as http:
        dep = api.deployment(http, INGEST)
        assert dep["enforce_parameter_schema"] and dep["global_concurrency_limit"]["limit"] == 1
        for bad in ({"spec": {"out_dir": 5, "sources": ["a.mp4"]}}, {"spec": {"sources": ["a.mp4"]}},
                    {"spec": {"out_dir": str(tmp_path), "max_attempts": 0, "sources": ["a.mp4"]}}):
            r = http.post(f"/deployments/{dep['id']}/create_flow_run", json={"parameters": bad})
            assert r.status_code == 409, (bad, r.status_code, r.text)


def _visible_shards_readable(out: Path) -> set[str]:
    clip_ids = set()
    for p in sorted((out / "shards").glob("*.parquet")) if (out / "shards").is_dir() else []:
        clip_ids |= set(pq.read_table(p, columns=["clip_id"]).column("clip_id").to_pylist())  # raises if partial
    if (out / "manifest.json").is_file():
        for e in json.loads((out / "manifest.json").read_text())["shards"]:
            assert (out / e["path"]).is_file(), f"manifest lists a missing shard {e['path']}"
    return clip_ids


def _rows(out: Path, source_id: str) -> dict[str, dict]:
    rows = {}
    for r in ShardReader(out).table(source_id=source_id).to_pylist():
        r["provenance"].pop("created_at", None)
        rows[r["clip_id"]] = r
    return rows


def test_killed_worker_run_recovers_without_duplicates(scale_run, cluster, inputs, models_dir, tmp_path):
    reference_out, reference_ledger, _ = scale_run
    out = tmp_path / "dataset"
    spec = _spec(out, [inputs["titanic"]], cluster, models_dir, stale_after_s=5)
    ledger = Ledger(out, cluster["ledger_url"])
    titanic_key = sha256_file(inputs["titanic"])
    work = out / ".work" / titanic_key[:16]
    _ingest(spec)
    with api.client(cluster["api"]) as http:
        # mid-source: running, its ingest stage written, its shards not yet
        entry = _wait(lambda: (e := ledger.get(titanic_key)) and e.status == "running" and list(work.glob("ingest-*"))
                      and e, 300, "titanic mid-run")
        host = entry.worker.split(":")[0]
        victim = cluster["workers"][host]
        killed = victim.kill()
        t_kill = time.time()
        assert len(killed) >= 2, "the worker and its flow-run process"
        assert _state(http, entry.flow_run_id) == "RUNNING", "a killed run stays Running (a zombie)"
        assert not (out / "shards").is_dir() or not list((out / "shards").glob(f"{titanic_key[:16]}-*.parquet"))
        _visible_shards_readable(out)

        victim.start()  # the machine comes back
        time.sleep(max(0.0, 6 - (time.time() - t_kill)))  # past stale_after_s without a heartbeat
        _ingest(spec)  # the next scheduled ingest finds the lost run and resubmits the source
        _wait(lambda: ledger.counts()["done"] == 1, 400, "the source done after the restart")
        crashed = _state(http, entry.flow_run_id)
        runs = _process_runs(http, "test1.mp4")
        runs = [r for r in runs if r["parameters"]["out_dir"] == str(out.resolve())]
    after = ledger.get(titanic_key)
    assert crashed == "CRASHED"
    assert after.status == "done" and after.attempts == 1 and after.flow_run_id != entry.flow_run_id
    assert sorted(r["state"]["type"] for r in runs) == ["COMPLETED", "CRASHED"], "one lost run, one rerun"

    clip_ids = _visible_shards_readable(out)
    manifest = json.loads((out / "manifest.json").read_text())
    listed = [c for e in manifest["shards"] for c in e["clip_ids"]]
    assert sorted(listed) == sorted(clip_ids), "each clip once, none missing"
    assert not list((out / "shards").glob(".*")), "no temporary shard left behind"
    ref = _rows(reference_out, titanic_key[:16])
    got = _rows(out, titanic_key[:16])
    assert sorted(got) == sorted(ref) and ref
    for clip_id, row in got.items():
        assert row == ref[clip_id], f"clip {clip_id} differs from the uninterrupted run"
