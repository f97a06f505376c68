"""Benchmark: every stage on the shared footage; prints wall time, real-time factor and peak memory per stage.

Each (stage, source) runs in a fresh subprocess so its peak resident memory (``ru_maxrss`` from ``os.wait4``) is
that stage's own, model load included. Model load and processing time are reported apart: production workers load
once and process many sources, so ``RTF`` uses processing time only; ``load s`` is the one-off cost.

    .venv/bin/python scripts/benchmark.py --models-dir ../shared/models            # default footage
    .venv/bin/python scripts/benchmark.py --separation demucs-random                # include a random-weight demucs
    .venv/bin/python scripts/benchmark.py --syncnet-random      # time ASD with the SyncNet check (random weights)

Random weights cost the same compute as real ones, so their rows are real timings (not quality).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DEFAULT_INPUTS = [
    "media/dialogue_5shots/dialogue_5shots.mp4",
    "media/en_film_titanic/test1.mp4",
    "media/en_monologue/englishvideo.mp4",
    "media/zh_narration/10.mp4",
]
STAGES = ["ingest", "separation", "asr", "shots", "diarization", "faces", "asd", "segment", "package"]


def _cfg(args_json: str):
    from cinedub.config import Config

    return Config.model_validate_json(args_json)


def stage_worker(stage: str, cfg_json: str, src: str, work: str, out: str) -> dict:
    """Run one stage on one source (inputs are read from earlier stages' JSON in ``work``)."""
    from cinedub.ops.segment import segment_clips
    from cinedub.stages.asr import AsrStage
    from cinedub.stages.ingest import IngestResult, IngestStage
    from cinedub.stages.package import PackageStage
    from cinedub.stages.separation import SeparationStage
    from cinedub.stages.shots import ShotStage
    from cinedub.types import AudioTracks, ClipList, ShotList, Transcript

    from cinedub.diarization.records import DiarizationResult
    from cinedub.ops.fusion import fuse, speech_spans
    from cinedub.ops.words_to_speakers import assign_word_speakers
    from cinedub.stages.asd import AsdStage
    from cinedub.stages.diarization import DiarizationStage
    from cinedub.stages.faces import FacesStage
    from cinedub.vision.records import AsdResult, FaceTrackList

    cfg = _cfg(cfg_json)
    w = Path(work)
    classes = {"ingest": IngestStage, "separation": SeparationStage, "asr": AsrStage, "shots": ShotStage,
               "diarization": DiarizationStage, "faces": FacesStage, "asd": AsdStage, "package": PackageStage}
    frames = None
    t0 = time.perf_counter()
    inst = classes[stage](cfg) if stage in classes else None
    if inst is not None:
        inst.ensure_setup()
    t1 = time.perf_counter()
    if stage == "ingest":
        inst.process(Path(src), w).to_json(w / "ingest.json")
    else:
        ing = IngestResult.from_json(w / "ingest.json")
        if stage == "separation":
            inst.process(ing, w / "sep").to_json(w / "tracks.json")
        elif stage == "asr":
            inst.process(Path(AudioTracks.from_json(w / "tracks.json").vocals_16k), w / "asr.json")
        elif stage == "shots":
            inst.process(Path(src), ing.source, w / "shots.json")
        elif stage == "diarization":
            inst.process(AudioTracks.from_json(w / "tracks.json").vocals_16k, w / "diar.json",
                         speaker_prefix=ing.source.source_id)
        elif stage == "faces":
            spans = speech_spans(Transcript.from_json(w / "asr.json"), DiarizationResult.from_json(w / "diar.json"))
            (w / "faces").mkdir(exist_ok=True)
            faces = inst.process(ing.source, ShotList.from_json(w / "shots.json"), spans, w / "faces")
            faces.to_json(w / "faces.json")
            frames = faces.n_frames_decoded
        elif stage == "asd":
            faces = FaceTrackList.from_json(w / "faces.json")
            (w / "asd").mkdir(exist_ok=True)
            inst.process(faces, AudioTracks.from_json(w / "tracks.json").vocals_16k,
                         DiarizationResult.from_json(w / "diar.json").exclusive_turns, w / "asd").to_json(w / "asd.json")
            frames = sum(t.n_frames for t in faces.tracks)
        elif stage == "segment":
            asd = AsdResult.from_json(w / "asd.json")
            faces = FaceTrackList.from_json(w / "faces.json")
            timeline = fuse(DiarizationResult.from_json(w / "diar.json"), asd.turns, faces.tracks,
                            speaker_prefix=ing.source.source_id)
            timeline.to_json(w / "timeline.json")
            words = assign_word_speakers(Transcript.from_json(w / "asr.json").words, timeline.exclusive_turns)
            clips = segment_clips(ing.source, words, ShotList.from_json(w / "shots.json"), cfg.segmentation)
            ClipList(source_id=ing.source.source_id, clips=tuple(clips)).to_json(w / "clips.json")
        elif stage == "package":
            inst.process(ing.source, AudioTracks.from_json(w / "tracks.json"), Transcript.from_json(w / "asr.json"),
                         ClipList.from_json(w / "clips.json"), out, models=[],
                         timeline=DiarizationResult.from_json(w / "timeline.json"),
                         faces=FaceTrackList.from_json(w / "faces.json"), asd=AsdResult.from_json(w / "asd.json"))
    t2 = time.perf_counter()
    return {"load_s": t1 - t0, "process_s": t2 - t1, "frames": frames,
            "duration_s": IngestResult.from_json(w / "ingest.json").source.duration_ms / 1000}


def _run_stage(stage: str, cfg_json: str, src: str, work: Path, out: Path) -> dict:
    result_file = work / f"bench-{stage}.json"
    cmd = [sys.executable, __file__, "--_stage", stage, "--_cfg", cfg_json, "--_src", src, "--_work", str(work),
           "--_out", str(out), "--_result", str(result_file)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"stage {stage} failed on {src}")
    res = json.loads(result_file.read_text())
    res.update(wall_s=wall, peak_rss_mb=rusage.ru_maxrss / 1024)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="media files (default: shared footage)")
    p.add_argument("--shared", default=str(REPO.parent / "shared"), help="the shared folder (default ../shared)")
    p.add_argument("--models-dir", default=None, help="model folder (default <shared>/models)")
    p.add_argument("--separation", choices=["none", "demucs", "demucs-random"], default="none",
                   help="demucs-random builds a small random-weight demucs to time the stage's plumbing")
    p.add_argument("--syncnet-random", action="store_true",
                   help="put a random-weight syncnet_v2.model in the model folder: the ASD row then includes the "
                        "SyncNet check of every speaking run")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--_stage"), p.add_argument("--_cfg"), p.add_argument("--_src"), p.add_argument("--_work")
    p.add_argument("--_out"), p.add_argument("--_result")
    args = p.parse_args()
    if args._stage:
        res = stage_worker(args._stage, args._cfg, args._src, args._work, args._out)
        Path(args._result).write_text(json.dumps(res))
        return 0

    from rich.console import Console
    from rich.table import Table

    from cinedub.config import Config

    shared = Path(args.shared)
    inputs = args.inputs or [str(shared / i) for i in DEFAULT_INPUTS]
    tmp = Path(tempfile.mkdtemp(prefix="cinedub-bench-"))
    models_dir = Path(args.models_dir or shared / "models")
    sep: dict = {"method": "none"}
    if args.separation == "demucs-random" or args.syncnet_random:
        from cinedub.testing.checkpoints import build_random_demucs_repo, build_random_syncnet

        rand_models = tmp / "models"
        rand_models.mkdir()
        for child in models_dir.iterdir():
            (rand_models / child.name).symlink_to(child.resolve())
        if args.separation == "demucs-random":
            build_random_demucs_repo(rand_models / "demucs")
            sep = {"method": "demucs"}
        if args.syncnet_random:
            build_random_syncnet(rand_models / "syncnet" / "syncnet_v2.model")
        models_dir = rand_models
    if args.separation == "demucs":
        sep = {"method": "demucs"}
    cfg = Config.load(models_dir=models_dir, device=args.device, separation=sep)
    cfg_json = cfg.model_dump_json()

    rows: dict[str, dict] = {s: {"wall_s": 0.0, "load_s": 0.0, "process_s": 0.0, "media_s": 0.0, "peak_rss_mb": 0.0,
                                 "frames": 0} for s in STAGES}
    for src in inputs:
        work = tmp / Path(src).stem
        work.mkdir()
        for stage in STAGES:
            r = _run_stage(stage, cfg_json, src, work, tmp / "out")
            agg = rows[stage]
            agg["wall_s"] += r["wall_s"]
            agg["load_s"] += r["load_s"]
            agg["process_s"] += r["process_s"]
            agg["media_s"] += r["duration_s"]
            agg["peak_rss_mb"] = max(agg["peak_rss_mb"], r["peak_rss_mb"])
            agg["frames"] += r.get("frames") or 0
            print(f"  {Path(src).name:28s} {stage:10s} {r['process_s']:7.2f} s  {r['peak_rss_mb']:7.0f} MB", file=sys.stderr)

    table = Table(title=f"CineDub stages on {len(inputs)} sources ({rows['ingest']['media_s']:.1f} s of media), "
                        f"device {cfg.resolved_device()}, {os.cpu_count()} CPU cores")
    for c in ("stage", "wall s", "load s", "process s", "RTF (process/media)", "frames/s", "peak RSS MB"):
        table.add_column(c, justify="right" if c != "stage" else "left")
    for stage, r in rows.items():
        rtf = r["process_s"] / r["media_s"] if r["media_s"] else float("nan")
        fps = f"{r['frames'] / r['process_s']:.1f}" if r["frames"] and r["process_s"] else ""
        table.add_row(stage, f"{r['wall_s']:.1f}", f"{r['load_s']:.2f}", f"{r['process_s']:.2f}", f"{rtf:.3f}", fps,
                      f"{r['peak_rss_mb']:.0f}")
    total_p = sum(r["process_s"] for r in rows.values())
    media = rows["ingest"]["media_s"]
    table.add_row("all", f"{sum(r['wall_s'] for r in rows.values()):.1f}", f"{sum(r['load_s'] for r in rows.values()):.2f}",
                  f"{total_p:.2f}", f"{total_p / media:.3f}", "", f"{max(r['peak_rss_mb'] for r in rows.values()):.0f}")
    Console().print(table)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
