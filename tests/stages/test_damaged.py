"""Damaged and odd files (issue 11, point 5), built from shared footage at test time.

- The first 8 s of ``dialogue_5shots`` with 4 KiB of random bytes written over its media data at 40 % and 60 % of
  the file: ffmpeg decodes it to the end with a few errors; so must every stage, counting what was lost (before,
  the faces stage failed late on it, after ASR had run).
- A file whose name starts with ``-`` is probed and ingested (ffmpeg and ffprobe get absolute paths).
- ``kill -9`` while ingest writes its FLAC files leaves hidden temporaries; the rerun removes them.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cinedub.config import Config
from cinedub.media import probe
from cinedub.pipeline import decode_errors, plan_source, run_source
from cinedub.stages.ingest import IngestStage
from cinedub_testing.media import damaged_copy

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def damaged_run(media_dir: Path, models_dir: Path, tmp_path_factory):
    d = tmp_path_factory.mktemp("damaged")
    path = damaged_copy(media_dir / "dialogue_5shots/dialogue_5shots.mp4", d / "damaged.mp4")
    errors = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-f", "null", "-"], capture_output=True,
                            text=True)
    assert errors.returncode == 0 and "Error while decoding" in errors.stderr  # ffmpeg decodes it, with errors
    # cheaper detection and greedy ASR: decoding is under test, not faces or words
    cfg = Config.load(models_dir=models_dir, device="cpu", separation={"method": "none"}, work_dir=d / "work",
                      run_diarization=False, vision={"det_size": 320, "landmarks": False}, asr={"beam_size": 1})
    return run_source(path, d / "out", cfg, until="shots")  # the faces stage decodes for both


def test_stages_decode_through_corrupt_packets_and_count_them(damaged_run):
    r = damaged_run
    assert r.outcome is None and set(r.records) >= {"ingest", "transcript", "shots", "faces"}
    src, shots, faces = r["ingest"].source, r["shots"], r["faces"]
    damage = decode_errors(r.records)
    print("decode errors:", damage)
    assert damage and damage.get("video_frames_lost", 0) + damage.get("video_packets", 0) >= 1
    # nearly every declared frame decoded, to the end of the file
    assert src.n_frames - 5 <= shots.n_frames < src.n_frames
    assert shots.frames_lost == src.n_frames - shots.n_frames
    assert shots.shots[-1].end_ms >= src.duration_ms - 100
    # a lost frame breaks index / fps: every frame keeps its decoded time, and the faces use the same indices
    assert len(shots.frame_pts_ms) == shots.n_frames
    rows = pq.read_table(faces.frames_path, columns=["frame_index", "pts_ms"]).to_pylist()
    assert rows and all(shots.frame_pts_ms[x["frame_index"]] == x["pts_ms"] for x in rows)
    assert r["transcript"].words  # the speech was transcribed


def test_a_name_starting_with_a_dash(media_dir: Path, tmp_path: Path, monkeypatch):
    odd = tmp_path / "-i episode.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(media_dir / "en_monologue/englishvideo.mp4"), "-t", "3",
                    "-c", "copy", str(tmp_path / "ok.mp4")], check=True)
    shutil.move(tmp_path / "ok.mp4", odd)
    monkeypatch.chdir(tmp_path)  # a relative name, as a user types it
    src = probe("-i episode.mp4")
    assert src.has_video and 2900 <= src.duration_ms <= 3100
    result = IngestStage(Config.load(device="cpu")).ingest(Path("-i episode.mp4"), tmp_path / "work")
    assert Path(result.mix_16k).is_file() and result.source.episode == "-i episode"


def test_temporaries_of_a_killed_ingest_do_not_outlive_the_rerun(media_dir: Path, models_dir: Path, tmp_path: Path):
    """A run killed (SIGKILL) while ffmpeg writes the ingest FLACs leaves hidden ``.tmp.flac`` files; the rerun of
    the source removes them and finishes the ingest."""
    long = tmp_path / "long.mp4"  # about 2 minutes, so the kill lands inside the ingest's writes
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-stream_loop", "3", "-i",
                    str(media_dir / "dialogue_5shots/dialogue_5shots.mp4"), "-c", "copy", str(long)], check=True)
    cfg = Config.load(models_dir=models_dir, device="cpu", separation={"method": "none"}, work_dir=tmp_path / "work")
    out = tmp_path / "out"
    code = ("import sys; from cinedub.config import Config; from cinedub.pipeline import run_source; "
            "run_source(sys.argv[1], sys.argv[2], Config.model_validate_json(sys.argv[3]), until='ingest')")
    proc = subprocess.Popen([sys.executable, "-c", code, str(long), str(out), cfg.model_dump_json()], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    work = tmp_path / "work"
    seen: list[Path] = []
    deadline = time.time() + 120
    try:
        while time.time() < deadline and proc.poll() is None and not seen:
            seen = [p for p in work.rglob(".*") if ".tmp" in p.name] if work.is_dir() else []
            time.sleep(0.005)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert seen, "the run ended before its temporaries could be seen"
    left = [p for p in work.rglob(".*") if ".tmp" in p.name]
    assert left, "killed mid-write: its temporaries are still there"
    result = run_source(long, out, cfg, until="ingest")
    assert [p for p in work.rglob(".*") if ".tmp" in p.name] == []
    ingest_step = plan_source(long, out, cfg).step("ingest")
    assert ingest_step.record_path.is_file() and Path(result["ingest"].mix_16k).is_file()
