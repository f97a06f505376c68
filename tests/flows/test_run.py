"""The main job end to end, as a user runs it: `cinedub run` in a subprocess on real footage, then the shards.

One run (module fixture) gets three good sources from ../shared/media (dialogue_5shots, en_film_titanic, and
zh_tvdrama's picture muxed with its sound), a damaged one (8 s of dialogue_5shots with corrupt bytes in the middle:
decoded through, the damage reported), a silent one (4 s of nature footage with a silent audio track: status
``no_speech``) plus four bad inputs built from shared files (a truncated mp4, a text file
named .mp4, a video with no audio, an audio-only file). A second run is SIGKILLed half-way and restarted.
Prefect runs ephemerally (no server) with its own PREFECT_HOME.
"""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
import soundfile as sf

from cinedub.config import Config
from cinedub.media import load_audio
from cinedub.reader import ShardReader
from cinedub.schema import clip_schema
from cinedub.types import ClipList, Transcript
from cinedub_testing.media import damaged_copy

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "cinedub_cli"]
pytestmark = pytest.mark.slow


def _env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="120",
        PREFECT_LOGGING_LEVEL="WARNING",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO),
    )
    env.pop("PREFECT_API_URL", None)
    return env


def _run_cmd(inputs: list[Path], out: Path, models_dir: Path) -> list[str]:
    return [*CLI, "run", *map(str, inputs), "--out", str(out), "--separation", "none", "--models-dir", str(models_dir),
            "--no-progress"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, media_dir: Path) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    zh = d / "zh_tvdrama.mp4"
    subprocess.run([*CLI, "mux", str(media_dir / "zh_tvdrama/sample_DEBUG.mp4"), str(media_dir / "zh_tvdrama/sample.wav"),
                    str(zh)], check=True, capture_output=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    truncated = d / "truncated.mp4"
    data = (media_dir / "en_monologue/englishvideo.mp4").read_bytes()
    truncated.write_bytes(data[: len(data) * 2 // 5])
    text = d / "notes.mp4"
    text.write_text("this is not a video, just a text file someone named .mp4\n")
    silent = d / "silent.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(media_dir / "shots/testvideo.mp4"), "-f", "lavfi", "-i",
                    "anullsrc=r=16000:cl=mono", "-t", "4", "-c:v", "copy", "-c:a", "aac", "-shortest", str(silent)],
                   check=True)
    return {
        "silent": silent,
        "damaged": damaged_copy(media_dir / "dialogue_5shots/dialogue_5shots.mp4", d / "damaged.mp4"),
        "dialogue": media_dir / "dialogue_5shots/dialogue_5shots.mp4",
        "titanic": media_dir / "en_film_titanic/test1.mp4",
        "zh": zh,
        "truncated": truncated,
        "text": text,
        "no_audio": media_dir / "shots/testvideo.mp4",
        "audio_only": media_dir / "asr/jfk.flac",
    }


MAIN_ORDER = ["dialogue", "truncated", "titanic", "damaged", "text", "silent", "no_audio", "zh", "audio_only"]


@pytest.fixture(scope="module")
def main_run(tmp_path_factory, inputs, models_dir):
    out = tmp_path_factory.mktemp("out")
    home = tmp_path_factory.mktemp("prefect-home")
    t0 = time.time()
    proc = subprocess.run(_run_cmd([inputs[k] for k in MAIN_ORDER], out, models_dir), capture_output=True, text=True,
                          cwd=REPO, env=_env(home), timeout=1500)
    print(f"main run: {time.time() - t0:.0f} s, exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return out, proc


def _report(out: Path) -> dict:
    reports = sorted((out / "runs").glob("*.json"))
    assert reports, "no run report written"
    return json.loads(reports[-1].read_text())


def test_bad_inputs_fail_clearly_and_good_ones_produce_shards(main_run, inputs):
    out, proc = main_run
    assert proc.returncode == 1, "some inputs failed, so the exit code must say so"
    by_input = {Path(r["input"]).name: r for r in _report(out)["inputs"]}
    expect = {
        "truncated.mp4": "truncated",
        "notes.mp4": "not",
        "testvideo.mp4": "no audio stream",
        "jfk.flac": "no video stream",
    }
    for name, words in expect.items():
        r = by_input[name]
        assert r["status"] == "failed", r
        assert name in r["reason"] and words in r["reason"].lower(), r["reason"]
        assert ": ingest: " in r["reason"] and "\n" not in r["reason"], r["reason"]  # one line naming the stage
    for key in ("dialogue", "titanic", "zh", "damaged"):
        r = by_input[inputs[key].name]
        assert r["status"] == "ok" and r["clips"] >= 1, r
        assert r["speech"]["in_clips_or_reported"] >= 0.99, r["speech"]  # detected speech in clips or reported
    # the damaged file is decoded through, as ffmpeg does, and what was lost is in the report and the terminal
    damage = by_input["damaged.mp4"]["decode_errors"]
    assert damage.get("video_frames_lost", 0) + damage.get("video_packets", 0) >= 1, damage
    assert "decode_errors" not in by_input[inputs["dialogue"].name]
    # no speech is its own status, not "ok" with a language
    silent = by_input["silent.mp4"]
    assert silent["status"] == "no_speech" and silent["language"] is None and silent["clips"] == 0, silent
    assert _report(out)["counts"] == {"ok": 4, "failed": 4, "no_speech": 1}
    assert "Traceback" not in proc.stdout + proc.stderr
    reader = ShardReader(out)
    assert {r["source_id"] for r in reader.table(columns=["source_id"]).to_pylist()} == {
        by_input[inputs[k].name]["source_id"] for k in ("dialogue", "titanic", "zh", "damaged")
    }
    assert "truncated.mp4" in proc.stdout + proc.stderr


def test_sources_pipeline_through_the_stages(main_run, inputs):
    """Several sources at a time (the default ``concurrent_sources``): some source's ASR record lands while another
    source is still between its ASR and its packaging (their stages overlap; a one-at-a-time run never does), and
    the report keeps the order of the command line."""
    out, _ = main_run
    assert [r["input"] for r in _report(out)["inputs"]] == [str(inputs[k]) for k in MAIN_ORDER]
    spans = []  # (ASR record written, package record written) per packaged source, from the work folders
    for src in (out / ".work").iterdir():
        asr, package = sorted(src.glob("asr-*.json")), sorted(src.glob("package-*.json"))
        if asr and package:
            spans.append((asr[0].stat().st_mtime, package[0].stat().st_mtime))
    assert len(spans) == 4, spans  # dialogue, titanic, damaged, zh
    spans.sort()
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), spans


def test_shards_read_with_pyarrow_and_datasets(main_run):
    out, _ = main_run
    reader = ShardReader(out)
    for f in reader.files():
        written = pq.read_schema(f)
        assert written.equals(clip_schema(), check_metadata=False)
        assert dict(written.metadata) == dict(clip_schema().metadata)
    table = ds.dataset(reader.files(), format="parquet").to_table()
    assert table.num_rows == len(reader) and table.num_rows >= 4
    ids = table.column("clip_id").to_pylist()
    assert len(ids) == len(set(ids))

    import datasets

    dset = datasets.load_dataset("parquet", data_files=reader.files(), split="train", cache_dir=str(out / ".hf"))
    assert dset.num_rows == table.num_rows
    assert isinstance(dset.features["audio_vocals"], datasets.Audio)
    for row in dset.select(range(min(3, dset.num_rows))):
        samples = row["audio_vocals"].get_all_samples()
        assert abs(samples.data.shape[-1] / samples.sample_rate * 1000 - row["duration_ms"]) <= 2
    for clip in reader.iter_clips(columns=["duration_ms", "audio_vocals", "sample_rate_hz", "source_sample_rate_hz"]):
        a = clip["audio_vocals"]
        assert a["sampling_rate"] == clip["sample_rate_hz"] == 24_000  # one rate for the dataset (16-44.1 kHz sources)
        assert abs(len(a["array"]) / a["sampling_rate"] * 1000 - clip["duration_ms"]) <= 1
    native = {c["source_sample_rate_hz"] for c in reader.iter_clips(columns=["source_sample_rate_hz"])}
    assert len(native) >= 2, native  # the sources' own rates differ (e.g. 16 and 22.05 kHz); the dataset's does not


def test_output_folder_is_a_dataset_with_a_card(main_run):
    """load_dataset(out) reads the card's configs: each clip once, in its split (Titanic's hash puts it in test);
    torch formatting works on every column; the card holds the statistics, the plots and the data fields."""
    import datasets
    import yaml

    out, _ = main_run
    card = (out / "README.md").read_text(encoding="utf-8")
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["license"] and meta["size_categories"] and "text-to-speech" in meta["task_categories"]
    assert set(meta["language"]) == {"en", "zh"}
    splits = {d["split"]: d["path"] for d in meta["configs"][0]["data_files"]}
    rows = ShardReader(out).table(columns=["clip_id", "split", "episode"]).to_pylist()
    assert set(splits) == {r["split"] for r in rows} and "test" in splits  # en_film_titanic is held out
    dd = datasets.load_dataset(str(out), cache_dir=str(out / ".hf-card"))
    assert {k: v.num_rows for k, v in dd.items()} == {s: sum(r["split"] == s for r in rows) for s in splits}
    assert sorted(i for v in dd.values() for i in v["clip_id"]) == sorted(r["clip_id"] for r in rows)  # once each
    assert "test1" in dd["test"]["episode"]
    t = dd["train"].with_format("torch")
    for row in t:  # every column formats (times are int64 ms, no datetimes)
        assert row["start_ms"].dtype.is_floating_point is False
    stats = json.loads((out / "stats.json").read_text())
    assert stats["clips"] == len(rows) and set(stats["hours_by"]["split"]) == set(splits)
    for png in ("durations.png", "hours.png", "speakers.png"):
        assert (out / "plots" / png).stat().st_size > 1000 and f"(plots/{png})" in card
    assert "## Data fields" in card and "| `frame_width` |" in card


def _work_records(out: Path, source_id: str) -> tuple[Transcript, ClipList]:
    work = out / ".work" / source_id
    return Transcript.from_json(next(work.glob("asr-*.json"))), ClipList.from_json(next(work.glob("segment-*.json")))


def test_clips_within_bounds_no_word_cut_and_on_source_timeline(main_run, inputs, tmp_path):
    out, _ = main_run
    reader = ShardReader(out)
    rows = reader.table(columns=["source_id", "episode", "start_ms", "end_ms", "duration_ms", "words", "text",
                                 "shot_boundaries_ms", "audio_vocals", "fps", "start_frame"]).to_pylist()
    by_source: dict[str, list] = {}
    for r in rows:
        by_source.setdefault(r["source_id"], []).append(r)
        assert 2000 <= r["duration_ms"] <= 30000, r["duration_ms"]
        for w in r["words"]:
            assert r["start_ms"] <= w["start_ms"] <= w["end_ms"] <= r["end_ms"], (w, r["start_ms"], r["end_ms"])
        for cut in r["shot_boundaries_ms"]:
            assert r["start_ms"] < cut < r["end_ms"]
    for source_id, clips in by_source.items():
        transcript, _ = _work_records(out, source_id)
        source_words = [(w.text, w.start_ms, w.end_ms) for w in transcript.words]
        shard_words = [(w["text"], w["start_ms"], w["end_ms"]) for c in sorted(clips, key=lambda c: c["start_ms"])
                       for w in c["words"]]
        # every word of the shards is a source word at the same time (no word cut, no shifted timeline)
        assert set(shard_words) <= set(source_words)
        kept = [w for w in source_words if w in set(shard_words)]
        assert kept == shard_words
        clips.sort(key=lambda c: c["start_ms"])
        for a, b in zip(clips, clips[1:]):
            assert a["end_ms"] <= b["start_ms"]

    # the clip audio is the source audio at the clip's source times (decoded independently from the mp4)
    # at the dataset's one sample rate (shards.sample_rate_hz), whatever the source's own rate is
    dialogue = [r for r in rows if r["episode"] == "dialogue_5shots"]
    assert dialogue
    dataset_sr = Config().shards.sample_rate_hz
    src = inputs["dialogue"]
    ref_path = tmp_path / "ref.wav"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-vn", "-ac", "1", "-ar", str(dataset_sr), str(ref_path)],
                   check=True)
    ref, sr = load_audio(ref_path)
    assert sr == dataset_sr
    for r in dialogue:
        clip, csr = sf.read(io.BytesIO(r["audio_vocals"]["bytes"]), dtype="float32")
        assert csr == sr
        clip = clip if clip.ndim == 1 else clip.mean(axis=1)
        start = int(r["start_ms"] * sr / 1000)
        window = ref[max(0, start - sr // 10): start + len(clip) + sr // 10]
        corr = np.correlate(window, clip[: sr], mode="valid")
        lag_ms = (int(np.argmax(corr)) - (start - max(0, start - sr // 10))) * 1000 / sr
        assert abs(lag_ms) <= 20, f"clip at {r['start_ms']} ms is {lag_ms:.1f} ms off the source timeline"


def test_inspect_shows_clips(main_run):
    out, _ = main_run
    proc = subprocess.run([*CLI, "inspect", str(out), "--clips", "-1"], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    for episode in ("dialogue_5shots", "test1", "zh_tvdrama"):
        assert episode in text
    assert "no_speech 1" in text and "silent.mp4: no_speech" in text  # counted apart, with its reason
    assert " en " in text and " zh " in text
    reader = ShardReader(out)
    first = reader.table(columns=["text", "start_ms"]).to_pylist()[0]
    assert first["text"].split()[0] in text
    assert f"{first['start_ms'] / 1000:.3f}" in text


def _visible_shards_readable(out: Path) -> list[Path]:
    shards = sorted((out / "shards").glob("*.parquet")) if (out / "shards").is_dir() else []
    for s in shards:
        pq.read_table(s)  # raises on a partial file
    return shards


def _content(out: Path) -> dict[str, dict]:
    table = ShardReader(out).table()
    rows = {}
    for r in table.to_pylist():
        rows[r["clip_id"]] = r
    return rows


def test_killed_run_resumes_to_same_result(main_run, inputs, models_dir, tmp_path):
    main_out, _ = main_run
    out = tmp_path / "out"
    home = tmp_path / "home"
    cmd = _run_cmd([inputs["titanic"], inputs["zh"]], out, models_dir)
    proc = subprocess.Popen(cmd, cwd=REPO, env=_env(home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.time() + 600
    try:
        # kill as soon as the first source's shards are visible: the second source is then mid-pipeline
        while time.time() < deadline and proc.poll() is None:
            if (out / "shards").is_dir() and list((out / "shards").glob("*.parquet")):
                break
            time.sleep(0.2)
        assert proc.poll() is None, "run ended before it could be killed"
        time.sleep(1.0)
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    killed = _visible_shards_readable(out)
    assert killed, "the first source should have been written before the kill"
    assert not (out / "manifest.json").exists() or json.loads((out / "manifest.json").read_text())["total_rows"] >= 0

    again = subprocess.run(cmd, cwd=REPO, env=_env(home), capture_output=True, text=True, timeout=1200)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    _visible_shards_readable(out)
    resumed = _content(out)
    reference = {k: v for k, v in _content(main_out).items() if v["episode"] in {"test1", "zh_tvdrama"}}
    assert sorted(resumed) == sorted(reference), "same clips, none duplicated or missing"
    for clip_id, row in resumed.items():
        assert row == reference[clip_id], f"clip {clip_id} differs from the uninterrupted run"
    manifest_ids = [c for e in json.loads((out / "manifest.json").read_text())["shards"] for c in e["clip_ids"]]
    assert sorted(manifest_ids) == sorted(resumed)
    # byte-identical: the resumed shards have the checksums of the uninterrupted run's
    def sums(o: Path) -> dict[str, str]:
        return {e["path"]: e["sha256"] for e in json.loads((o / "manifest.json").read_text())["shards"]}
    ref_sums = sums(main_out)
    assert sums(out) and all(ref_sums[p] == h for p, h in sums(out).items())


def _dialogue_rows(out: Path) -> list[dict]:
    rows = ShardReader(out).table(columns=["source_id", "episode", "clip_index", "start_ms", "end_ms", "start_frame",
                                           "end_frame", "fps", "turns", "faces", "face_tracks", "words",
                                           "scene_type_candidates", "overlaps"]).to_pylist()
    return sorted([r for r in rows if r["episode"] == "dialogue_5shots"], key=lambda r: r["start_ms"])


def test_diarization_in_shards_scores_against_reference(main_run, media_dir, tmp_path):
    out, _ = main_run
    rttm = tmp_path / "rttm"
    proc = subprocess.run([*CLI, "export-rttm", str(out), "--dest", str(rttm)], capture_output=True, text=True,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert proc.returncode == 0, proc.stderr
    hyp = next(rttm.glob("dialogue_5shots.*.rttm"))
    from cinedub.diarization.rttm import read_rttm
    from cinedub.eval.diarization import score

    s = score(read_rttm(media_dir / "dialogue_5shots/dialogue_5shots.rttm"), read_rttm(hyp), collar_s=0.25)
    print(f"dialogue_5shots end to end: DER {s.der:.2%} JER {s.jer:.2%}, {s.hyp_speakers} speakers")
    assert s.hyp_speakers == 5 and s.der <= 0.10
    for r in _dialogue_rows(out):  # every word has a speaker that has a turn in the clip
        turn_speakers = {t["speaker_id"] for t in r["turns"]}
        assert all(w["speaker_id"] in turn_speakers for w in r["words"])
        # source-wide ids: "<source_id>-S<nn>"
        assert all(re.fullmatch(rf"{r['source_id']}-S\d\d", sid) for sid in turn_speakers), turn_speakers


def test_speaking_faces_frame_level_in_shards(main_run, media_dir):
    out, _ = main_run
    truth = json.loads((media_dir / "dialogue_5shots/dialogue_5shots.truth.json").read_text())
    cuts_frames = [round(a * 25) for a, _ in truth["shots_s"][1:]]
    rows = _dialogue_rows(out)
    for r in rows[:5]:  # shots 1-4 (the first clips): the visible speaker's face, frame by frame
        assert r["faces"], f"clip at {r['start_ms']} ms has no face frames"
        on = [t for t in r["turns"] if t["end_ms"] - t["start_ms"] >= 500]
        assert on and all(t["on_screen"] and t["face_track_id"] for t in on)
        for f in r["faces"]:
            assert r["start_frame"] <= f["frame_index"] < r["end_frame"]
            assert abs(f["pts_ms"] - f["frame_index"] * 1000 / r["fps"]) <= 1
            assert f["face_crop"]["bytes"][:2] == b"\xff\xd8"  # JPEG
            assert f["asd_score"] is not None
        for t in r["face_tracks"]:  # no track crosses a cut
            assert not any(t["start_frame"] < c < t["end_frame"] for c in cuts_frames)
        assert "narration" not in r["scene_type_candidates"]


def test_render_contact_sheet_shows_boxes(main_run, tmp_path):
    out, _ = main_run
    reader = ShardReader(out)
    first = sorted((r for r in reader.table(columns=["clip_id", "episode", "start_ms"]).to_pylist()
                    if r["episode"] == "dialogue_5shots"), key=lambda r: r["start_ms"])[0]
    png = tmp_path / "sheet.png"
    proc = subprocess.run([*CLI, "inspect", str(out), "--render", first["clip_id"], "--render-to", str(png)],
                          capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)},
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    import cv2

    img = cv2.imread(str(png))
    assert img is not None and img.shape[1] == 4 * 320
    green = np.all(img == (0, 200, 0), axis=2).sum()  # the speaking face's box (KH speaks in shot 1)
    assert green > 500, green


def test_readme_torch_example_runs_on_a_real_output(main_run):
    """The README's torch Dataset/collate example, run as written against the main run's output folder."""
    out, _ = main_run
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    code = readme.split("<!-- example: torch -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    scope: dict = {}
    exec(compile(code.replace('DubbingClips("out")', f'DubbingClips({str(out)!r})'), "README.md", "exec"), scope)
    batch = scope["batch"]
    n = len(batch["text"])
    assert n >= 1 and batch["vocals"].shape[0] == n and batch["vocals"].dtype.is_floating_point
    assert all(t.shape[1] == 2 and (t[:, 0] <= t[:, 1]).all() for t in batch["word_times_ms"])
    assert [len(s) for s in batch["word_speakers"]] == [len(t) for t in batch["word_times_ms"]]
    assert batch["lips"].shape[0] == n and batch["lips"].shape[2:] == (3, 96, 96)
    assert int(batch["lips_len"].max()) > 0  # the dialogue's speaking faces have lip crops
