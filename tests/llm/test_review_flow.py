"""The review flow against a real Prefect server (UI on) started by the test, served as a deployment in a subprocess:
it corrects a batch through the scripted OpenAI-compatible server, posts diffs, suspends with a typed form, is
screenshotted in the UI by headless Chromium, is resumed headlessly, and writes the decisions as a new shard version."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cinedub.llm.batch import LIGHT_COLUMNS
from cinedub.llm.versions import latest_version, read_rows, resolve_manifest
from cinedub.schema import clip_schema
from flows.procs import PrefectServer
from fake_openai import Step, answer, clip_data

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-review-secret-91b2"
pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                  "--hide-scrollbars", "--virtual-time-budget=15000", "--window-size=1400,1700"]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """``prefect server start`` with the UI on, on a free port of 127.0.0.1 (its own PREFECT_HOME)."""
    with PrefectServer(tmp_path_factory.mktemp("prefect-review-home"), ui=True) as srv:
        yield srv.api


@pytest.fixture(scope="module")
def review_deployment(prefect_server, tmp_path_factory):
    """The review flow served as deployment ``cinedub-review/test`` by ``flows.review.serve_review`` in a subprocess."""
    import httpx

    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_RUNNER_POLL_FREQUENCY": "1",
           "PREFECT_HOME": str(tmp_path_factory.mktemp("serve-home"))}
    env.pop("CINEDUB_LLM_API_KEY", None)
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "flows.review", "test"], env=env, cwd=REPO, stdout=fh,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + 120
    with httpx.Client(base_url=prefect_server, timeout=30) as http:
        while time.time() < deadline:
            r = http.get("/deployments/name/cinedub-review/test")
            if r.status_code == 200:
                break
            assert proc.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        else:
            pytest.fail("review deployment not served in 120 s:\n" + log.read_text()[-3000:])
    yield {"id": r.json()["id"], "log": log}
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=30)


def _wait_state(http, run_id: str, states: set[str], timeout_s: float = 150) -> dict:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        state = _call(http, "GET", f"/flow_runs/{run_id}").json()["state"]
        if state["type"] in states:
            return state
        assert state["type"] not in {"FAILED", "CRASHED", "CANCELLED"}, state
        time.sleep(0.5)
    raise AssertionError(f"flow run {run_id} not in {states} after {timeout_s} s (last: {state['type']})")


def _call(http, method: str, url: str, **kw):
    """A REST call, retried on 503 (SQLite busy on a loaded 2-core machine; Prefect's own client does the same)."""
    for attempt in range(10):
        r = http.request(method, url, **kw)
        if r.status_code != 503:
            return r.raise_for_status()
        time.sleep(0.5 * (attempt + 1))
    return r.raise_for_status()


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_review_suspend_screenshot_resume_new_version(out_copy, llm_clips, fake_llm, prefect_server, review_deployment,
                                                     tmp_path):
    import httpx
    from prefect.blocks.system import Secret
    from prefect.flow_runs import resume_flow_run
    from prefect.settings import PREFECT_API_URL, temporary_settings

    rows0 = {r["clip_id"]: r for r in read_rows(out_copy, columns=LIGHT_COLUMNS)}
    by_text = {r["text"][:12]: r for r in rows0.values()}
    approve, reject, edit = (by_text[k] for k in ("My biggest w", "In addition ", "Everyone her"))
    zh = by_text["在古老星期中发现了有机分"]
    # the auto-accepted clip: the first other English clip the segmentation made
    picked = {approve["clip_id"], reject["clip_id"], edit["clip_id"]}
    auto = rows0[next(c["clip_id"] for c in llm_clips if c["language"] == "en" and c["clip_id"] not in picked)]
    batch = [approve, auto, reject, edit, zh]

    def reply(body):
        d = clip_data(body)
        if d["clip_id"] == approve["clip_id"]:
            s1, s2 = d["words"][0]["speaker"], d["turns"][0]["speaker"]
            return Step(content=answer(d, [{"speaker": s1, "text": "My biggest weakness is asking for help"},
                                           {"speaker": s2, "text": "when I need it."}], confidence=0.7), delay_s=0.3)
        if d["clip_id"] == reject["clip_id"]:
            return Step(content=answer(d, [{"speaker": "S1", "text": d["asr_text"].replace("tunnels", "tunnel system")}]),
                        delay_s=0.3)
        if d["clip_id"] == zh["clip_id"]:  # a paraphrase: refused by the similarity guard
            return Step(content=answer(d, [{"speaker": "S1", "text": "科学家在遥远的星系里找到了生命的迹象"}]), delay_s=0.3)
        return Step(content=answer(d, confidence=0.99 if d["clip_id"] == auto["clip_id"] else 0.6), delay_s=0.3)

    fake_llm.responder = reply
    with httpx.Client(base_url=prefect_server, timeout=30) as http, temporary_settings({PREFECT_API_URL: prefect_server}):
        Secret(value=SECRET).save("cinedub-llm-test-key", overwrite=True)
        # Prefect global limits: one request in flight (the run has 4 task threads and a local cap of 4)
        _call(http, "POST", "/v2/concurrency_limits/", json={"name": "llm-inflight", "limit": 1})
        _call(http, "POST", "/v2/concurrency_limits/", json={"name": "llm-rate", "limit": 5, "slot_decay_per_second": 10})
        llm = {"base_url": fake_llm.url, "model": "fake-reviewer", "secret_block": "cinedub-llm-test-key",
               "rate_per_minute": 0, "prefect_concurrency_limit": "llm-inflight", "prefect_rate_limit": "llm-rate"}
        params = {"out_dir": str(out_copy), "llm": llm, "clip_ids": [r["clip_id"] for r in batch]}
        run = _call(http, "POST", f"/deployments/{review_deployment['id']}/create_flow_run",
                    json={"parameters": params}).json()
        rid = run["id"]
        t0 = time.monotonic()
        state = _wait_state(http, rid, {"PAUSED"})
        t_suspend = time.monotonic() - t0
        assert state["name"] == "Suspended"
        assert len(fake_llm.requests) == 5 and fake_llm.in_flight_max == 1
        assert {r.headers["authorization"] for r in fake_llm.requests} == {f"Bearer {SECRET}"}

        arts = _call(http, "POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [rid]}}, "limit": 50}).json()
        by_key = {a["key"]: a for a in arts}
        assert {f"correction-{r['clip_id']}" for r in batch} <= set(by_key)
        usage = by_key["cinedub-llm-usage"]["data"]
        usage = json.loads(usage) if isinstance(usage, str) else usage
        assert usage[0]["calls_ok"] == 5 and usage[0]["prefect_limits_used"] == "llm-inflight, llm-rate"
        diff = by_key[f"correction-{approve['clip_id']}"]
        assert "~~weaknesses~~ **weakness**" in diff["data"] and "| when | 00:19.8" in diff["data"]
        assert SECRET not in json.dumps(arts)

        # the typed form: three clips to review (auto-accepted and refused clips are not in it)
        inputs = _call(http, "POST", f"/flow_runs/{rid}/input/filter", json={"prefix": "suspended-review-1-schema", "limit": 5})
        schema = json.loads(inputs.json()[0]["value"])
        assert set(schema["properties"]) == {"reviewer", "decisions"}
        assert {d["clip_id"] for d in schema["properties"]["decisions"]["default"]} == {
            approve["clip_id"], reject["clip_id"], edit["clip_id"]}

        shot, dom = tmp_path / "correction-artifact.png", tmp_path / "correction-artifact.html"
        page = f"{prefect_server.removesuffix('/api')}/artifacts/artifact/{diff['id']}"
        if CHROMIUM:
            t1 = time.monotonic()
            subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--screenshot={shot}", page], capture_output=True, timeout=120)
            html = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, "--dump-dom", page], capture_output=True, text=True,
                                  timeout=120).stdout
            dom.write_text(html)
            t_shot = time.monotonic() - t1
            import cv2

            img = cv2.imread(str(shot))
            assert img is not None and img.shape[:2] == (1700, 1400) and img.std() > 10
            assert "Guards passed" in html and "Speaker relabels" in html and "weakness" in html
            assert 'markdown-renderer__text--del">weaknesses<' in html  # the struck-out ASR word
            print(f"screenshot {shot} ({shot.stat().st_size} bytes) of {page} in {t_shot:.1f} s")
        else:
            pytest.fail("chromium not installed (apt-get install -y chromium)")

        edited_text = "Everyone here today, endeavouring towards a better, more just future."
        t2 = time.monotonic()
        resume_flow_run(rid, run_input={"reviewer": "Ada Lovelace", "decisions": [
            {"clip_id": approve["clip_id"], "decision": "approve"},
            {"clip_id": reject["clip_id"], "decision": "reject", "note": "the speaker says tunnels"},
            {"clip_id": edit["clip_id"], "decision": "edit", "edited_text": edited_text},
        ]})
        _wait_state(http, rid, {"COMPLETED"})
        t_resume = time.monotonic() - t2
    print(f"suspended after {t_suspend:.1f} s, completed {t_resume:.1f} s after resume")
    assert len(fake_llm.requests) == 5  # the re-executed run asked nothing again

    assert latest_version(out_copy) == 1
    m0 = json.loads((out_copy / "manifest.json").read_text())
    assert all(_sha(out_copy / e["path"]) == e["sha256"] for e in m0["shards"])  # version 0 untouched
    rows1 = {r["clip_id"]: r for r in read_rows(out_copy, columns=[*LIGHT_COLUMNS, "speakers", "emotion", "scene_type",
                                                                   "correction"])}
    assert resolve_manifest(out_copy)["version"] == 1 and len(rows1) == len(rows0)

    a = rows1[approve["clip_id"]]
    assert a["provenance"]["review_status"] == "approved"
    assert a["text"] == "My biggest weakness is asking for help when I need it."
    vr1, aoc = approve["words"][0]["speaker_id"], approve["turns"][0]["speaker_id"]
    for new, old in zip(a["words"], approve["words"]):
        assert (new["start_ms"], new["end_ms"]) == (old["start_ms"], old["end_ms"])
        assert new["speaker_id"] == (vr1 if new["start_ms"] < 19820 else aoc)
    assert [t["speaker_id"] for t in a["turns"]] == [aoc, vr1, aoc]
    assert {"stage": "llm", "name": "fake-reviewer"} in [{k: m[k] for k in ("stage", "name")} for m in a["provenance"]["models"]]

    r = rows1[reject["clip_id"]]
    assert r["provenance"]["review_status"] == "rejected"
    assert r["text"] == reject["text"] == reject["text_raw"] and r["words"] == reject["words"]  # ASR kept

    e = rows1[edit["clip_id"]]
    assert e["provenance"]["review_status"] == "edited" and e["text"] == edited_text
    assert e["words"][0]["start_ms"] == edit["words"][0]["start_ms"] and e["words"][-1]["end_ms"] == edit["words"][-1]["end_ms"]

    assert rows1[auto["clip_id"]]["provenance"]["review_status"] == "auto_accepted"
    z = rows1[zh["clip_id"]]
    assert z["provenance"]["review_status"] == "guard_failed" and z["text"] == zh["text"]
    for cid, row in rows1.items():
        if cid not in {x["clip_id"] for x in batch}:
            assert row["provenance"]["review_status"] == "unreviewed" and row["text"] == rows0[cid]["text"]

    report = json.loads((out_copy / "runs" / f"llm-review-{rid}.json").read_text())
    assert report["reviewer"] == "Ada Lovelace" and report["version"] == 1
    assert report["clips"][zh["clip_id"]]["status"] == "guard_failed"
    assert any("similarity" in x for x in report["clips"][zh["clip_id"]]["reasons"])
    if "correction" in clip_schema().names:  # once the lead adds the column (schema 1.2.0)
        assert a["correction"]["reviewer"] == "Ada Lovelace" and a["correction"]["decision"] == "approved"
        assert r["correction"]["review_note"] == "the speaker says tunnels"
        assert not next(g for g in z["correction"]["guards"] if g["name"] == "similarity")["ok"]
    assert SECRET not in review_deployment["log"].read_text()
