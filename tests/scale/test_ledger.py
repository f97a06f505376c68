"""The ledger (SQLite here; the scale-out test runs it on PostgreSQL): states, restarts, stale runs, concurrency."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pytest

from cinedub.ledger import DONE, FAILED, PENDING, RUNNING, Ledger, normalize_url

KEY_A, KEY_B = "a" * 64, "b" * 64


def test_lifecycle_survives_a_new_ledger_object(tmp_path: Path):
    led = Ledger(tmp_path)
    e = led.add(KEY_A, "/in/a.mp4", "a.mp4", 100, 1)
    assert (e.status, e.attempts, e.flow_run_id) == (PENDING, 0, None)
    assert led.add(KEY_A, "/in/a.mp4", "a.mp4", 100, 1) == e  # idempotent
    assert led.mark_submitted(KEY_A, "run-1", {"separation": {"method": "none"}})
    assert led.mark_running(KEY_A, "run-1", "host1:42")
    assert led.heartbeat(KEY_A, "run-1")
    assert led.mark_done(KEY_A, "run-1", "aaaa", 7)

    again = Ledger(tmp_path)  # a restart: the file is the state
    e = again.get(KEY_A)
    assert (e.status, e.clips, e.source_id, e.worker) == (DONE, 7, "aaaa", "host1:42")
    assert e.finished_at >= e.started_at >= e.submitted_at
    assert again.counts() == {PENDING: 0, RUNNING: 0, DONE: 1, FAILED: 0}
    assert (tmp_path / "ledger.sqlite").is_file()


def test_a_stale_run_cannot_overwrite_the_current_one(tmp_path: Path):
    led = Ledger(tmp_path)
    led.add(KEY_A, "/in/a.mp4")
    led.mark_submitted(KEY_A, "run-1")
    led.mark_running(KEY_A, "run-1", "h:1")
    assert led.mark_failed(KEY_A, "lost: no heartbeat", "run-1")
    assert not led.mark_failed(KEY_A, "lost again", "run-1"), "one failure counts once"
    e = led.get(KEY_A)
    assert (e.status, e.attempts, e.reason) == (FAILED, 1, "lost: no heartbeat")
    assert led.mark_submitted(KEY_A, "run-2")
    # the zombie of run-1 wakes up: it may neither start, beat, finish nor fail the source any more
    assert not led.mark_running(KEY_A, "run-1", "h:1")
    assert not led.heartbeat(KEY_A, "run-1")
    assert not led.mark_done(KEY_A, "run-1", "x", 1)
    assert not led.mark_failed(KEY_A, "zombie", "run-1")
    assert led.mark_running(KEY_A, "run-2", "h:2") and led.mark_done(KEY_A, "run-2", "aaaa", 3)
    e = led.get(KEY_A)
    assert (e.status, e.flow_run_id, e.attempts, e.clips) == (DONE, "run-2", 1, 3)


def test_known_key_and_copies(tmp_path: Path):
    led = Ledger(tmp_path)
    led.add(KEY_A, "/in/a.mp4", "a.mp4", 100, 5)
    assert led.known_key("/in/a.mp4", 100, 5) == KEY_A
    assert led.known_key("/in/a.mp4", 100, 6) is None  # touched: hash again
    led.add(KEY_A, "/in/copy-of-a.mp4", "copy-of-a.mp4", 100, 9)  # same content, other name: one source
    assert [e.uri for e in led.entries()] == ["/in/a.mp4"]
    led.add(KEY_B, "/in/b.mp4")
    other = Ledger(tmp_path / "other", url=f"sqlite:///{tmp_path / 'ledger.sqlite'}")  # same db, other dataset
    assert other.entries() == [] and len(led.entries()) == 2


def _hammer(args):
    path, worker = args
    led = Ledger(path)
    for i in range(15):
        key = f"{i:064d}"
        led.add(key, f"/in/{i}.mp4")
        led.mark_submitted(key, f"run-{i}")
        led.heartbeat(key, f"run-{i}")
        if i % 2 == worker:
            led.mark_running(key, f"run-{i}", f"w{worker}")
    return worker


def test_two_processes_share_one_sqlite_ledger(tmp_path: Path):
    with mp.get_context("spawn").Pool(2) as pool:
        assert sorted(pool.map(_hammer, [(tmp_path, 0), (tmp_path, 1)])) == [0, 1]
    entries = Ledger(tmp_path).entries()
    assert len(entries) == 15 and all(e.status == RUNNING for e in entries)
    assert {e.worker for e in entries} == {"w0", "w1"}


def test_urls():
    assert normalize_url("postgresql://u@h:5/db") == "postgresql+asyncpg://u@h:5/db"
    assert normalize_url("sqlite:////x/l.sqlite") == "sqlite+aiosqlite:////x/l.sqlite"
    with pytest.raises(ValueError, match="sqlite"):
        normalize_url("mysql://u@h/db")
