"""One timeline from decoded timestamps (issue 11, point 1) on a variable-frame-rate file built from shared footage.

The first 13 s of ``dialogue_5shots`` (shot 1: KH talking to camera, shot 2 from 8.0 s: ES) are re-encoded twice
with the same settings: a constant-rate copy, and a copy whose frames 60-89 (2.4-3.6 s) and 235-259 (9.4-10.4 s)
are dropped and the rest kept at their times (``-fps_mode vfr``), as a VFR source with dropped frames is. Both copies
share the audio, so they get the same words and clips; every clip's frame span must then hold, frame by frame, the
faces of the constant-rate copy minus exactly those on the dropped frames, and nothing may end after the source.
Only the stages that place frames run (ingest, ASR, shots, faces, segment): diarization and ASD add nothing to the
frame arithmetic and would double the test's time.
"""

from __future__ import annotations

import subprocess
from fractions import Fraction
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cinedub.config import Config
from cinedub.pipeline import PIPELINE, run_source
from cinedub.timebase import frame_to_ms

pytestmark = pytest.mark.slow

FPS = Fraction(25)
DROPPED = ((60, 90), (235, 260))  # [first, end) frame numbers of the constant-rate copy


def _encode(src: Path, dest: Path, select: str | None) -> Path:
    vf = ["-vf", f"select='{select}'", "-fps_mode", "vfr"] if select else ["-fps_mode", "cfr"]
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-t", "13", *vf, "-c:v", "libx264", "-preset",
                    "ultrafast", "-g", "50", "-c:a", "copy", str(dest)], check=True)
    return dest


@pytest.fixture(scope="module")
def runs(media_dir: Path, models_dir: Path, tmp_path_factory):
    d = tmp_path_factory.mktemp("vfr")
    src = media_dir / "dialogue_5shots/dialogue_5shots.mp4"
    keep = "*".join(f"not(between(n\\,{a}\\,{b - 1}))" for a, b in DROPPED)
    files = {"cfr": _encode(src, d / "cfr.mp4", None), "vfr": _encode(src, d / "vfr.mp4", keep)}
    # cheaper detection (320 px, no lip landmarks) and greedy ASR: the same for both copies, the frame arithmetic
    # under test does not depend on them
    cfg = Config.load(models_dir=models_dir, device="cpu", separation={"method": "none"}, work_dir=d / "work",
                      run_diarization=False, vision={"det_size": 320, "landmarks": False}, asr={"beam_size": 1})
    # the declared pipeline up to the clips, without the ASD and identity cues (fusion runs without them)
    stages = tuple(s for s in PIPELINE if s.name not in ("asd", "face_identity", "package"))
    return {k: run_source(p, d / f"out-{k}", cfg, stages=stages) for k, p in files.items()}


def _faces(result, clip) -> list[tuple[str, int, int]]:
    """(track, frame index, pts_ms) of every face row inside the clip's frame span, the rows the package stage
    selects a clip's faces from."""
    table = pq.read_table(result["faces"].frames_path, columns=["track_id", "frame_index", "pts_ms"]).to_pylist()
    return sorted((r["track_id"], r["frame_index"], r["pts_ms"]) for r in table
                  if clip.start_frame <= r["frame_index"] < clip.end_frame)


def test_vfr_source_keeps_its_nominal_rate_and_frame_times(runs):
    cfr, vfr = runs["cfr"]["ingest"].source, runs["vfr"]["ingest"].source
    assert not cfr.variable_frame_rate and cfr.fps == FPS
    assert vfr.variable_frame_rate and vfr.fps == FPS  # nominal, not the average (about 21 fps)
    n_dropped = sum(b - a for a, b in DROPPED)
    shots = runs["vfr"]["shots"]
    assert shots.n_frames == runs["cfr"]["shots"].n_frames - n_dropped
    assert len(shots.frame_pts_ms) == shots.n_frames and runs["cfr"]["shots"].frame_pts_ms == ()
    # every decoded frame keeps the time it had in the constant-rate copy
    kept = [f for f in range(runs["cfr"]["shots"].n_frames) if not any(a <= f < b for a, b in DROPPED)]
    assert all(abs(t - frame_to_ms(f, FPS)) <= 1 for t, f in zip(shots.frame_pts_ms, kept))
    # the real cut (8.0 s) is found at its time (the dropped stretches may add cuts where the picture jumps)
    assert 8000 in runs["cfr"]["shots"].cut_ms and 8000 in runs["vfr"]["shots"].cut_ms


def test_each_clip_holds_the_faces_of_its_frames(runs):
    cfr, vfr = runs["cfr"]["clips"].clips, runs["vfr"]["clips"].clips
    assert len(cfr) == len(vfr) >= 2
    dropped_ms = [(frame_to_ms(a, FPS), frame_to_ms(b, FPS)) for a, b in DROPPED]
    total = 0
    for c, v in zip(cfr, vfr):
        assert abs(c.start_ms - v.start_ms) <= 50 and abs(c.end_ms - v.end_ms) <= 50
        # the clip's frames are those on screen during it, by their decoded times
        pts = runs["vfr"]["shots"].frame_pts_ms
        assert pts[v.start_frame] <= max(v.start_ms, 0) + 1
        assert v.end_frame == len(pts) or pts[v.end_frame] >= v.end_ms - 1
        assert v.end_frame - 1 < len(pts) and pts[v.end_frame - 1] < v.end_ms
        want = [p for _, _, p in _faces(runs["cfr"], c)
                if v.start_ms <= p < v.end_ms and not any(a <= p < b for a, b in dropped_ms)]
        got = [p for _, _, p in _faces(runs["vfr"], v)]
        print(f"clip {v.start_ms}-{v.end_ms} ms: {len(got)} face frames on VFR, {len(want)} expected "
              f"({len(_faces(runs['cfr'], c))} on the constant-rate copy)")
        assert abs(len(got) - len(want)) <= 2, (v.start_ms, len(got), len(want))
        assert len(set(got) & set(want)) >= len(want) - 2
        assert not any(a <= p < b for p in got for a, b in dropped_ms)
        total += len(want)
    assert total > 100  # the speakers' faces were found


def test_no_span_ends_after_the_source(runs):
    for key, r in runs.items():
        end = r["ingest"].source.duration_ms
        assert all(0 <= s.start_ms < s.end_ms <= end for s in r["shots"].shots), key
        assert r["shots"].shots[-1].end_ms == end or end - r["shots"].shots[-1].end_ms <= 40
        assert all(0 <= c.start_ms < c.end_ms <= end for c in r["clips"].clips), key
        assert all(t.end_ms <= end and t.start_ms >= 0 for t in r["faces"].tracks), key
        assert all(w.end_ms <= end for w in r["transcript"].words), key
        pts = pq.read_table(r["faces"].frames_path, columns=["pts_ms"]).column("pts_ms").to_pylist()
        assert pts and all(isinstance(p, int) and 0 <= p < end for p in pts)
