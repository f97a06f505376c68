"""Clip edges and speech coverage on the shared footage (issue 11, point 4): per source, the share of detected speech
(Silero VAD on the separated vocals) that is in clips, in clips or reported with a reason (target >= 99 %), the
reported time by reason, and the clip edges that cut through the voice of their words (target: none).

Runs the declared pipeline up to the clips (no visual stages, which do not move clip edges) with the default
configuration (separation auto), records reused from ``--out``. ``en_2spk_audio`` (overlapping speech, no picture)
is muxed with a black picture; ``zh_tvdrama``'s picture with its sound; ``vertical_hevc`` (Russian) is transcribed
in its own language.

    .venv/bin/python scripts/eval_clip_edges.py [--out /tmp/cinedub-edges] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CINEDUB_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))

SOURCES = {
    "dialogue_5shots": "dialogue_5shots/dialogue_5shots.mp4",
    "en_film_titanic": "en_film_titanic/test1.mp4",
    "en_monologue": "en_monologue/englishvideo.mp4",
    "zh_narration": "zh_narration/10.mp4",
    "vertical_hevc": "vertical_hevc/vlog_ru_vertical.mp4",
    "twoshot_dev": "av_speakers/twoshot_dev.mp4",
}


def built_inputs(media: Path, work: Path) -> dict[str, Path]:
    """Inputs made from shared files: zh_tvdrama's picture and sound muxed, en_2spk_audio over a black picture."""
    work.mkdir(parents=True, exist_ok=True)
    zh, spk = work / "zh_tvdrama.mp4", work / "en_2spk_audio.mp4"
    if not zh.exists():
        from cinedub.media import mux_video_audio

        mux_video_audio(media / "zh_tvdrama/sample_DEBUG.mp4", media / "zh_tvdrama/sample.wav", zh)
    if not spk.exists():
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "color=black:s=160x120:r=25", "-i",
                        str(media / "en_2spk_audio/sample.wav"), "-shortest", "-c:v", "libx264", "-preset",
                        "ultrafast", "-c:a", "aac", str(spk)], check=True)
    return {"zh_tvdrama": zh, "en_2spk_audio": spk}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=SHARED / "models")
    ap.add_argument("--media-dir", type=Path, default=SHARED / "media")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "cinedub-edges")
    ap.add_argument("--separation", default="auto")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    from cinedub.config import Config
    from cinedub.eval.clip_edges import coverage_row
    from cinedub.pipeline import run_source

    cfg = Config.load(models_dir=args.models_dir, device="cpu", run_visual=False,
                      separation={"method": args.separation}, asr={"other_languages": "transcribe"})
    inputs = {k: args.media_dir / v for k, v in SOURCES.items()}
    inputs.update(built_inputs(args.media_dir, args.out / "inputs"))
    rows = []
    print(f"{'source':16s} {'clips':>5s} {'speech s':>8s} {'in clips':>8s} {'+reported':>9s} {'edge cuts':>9s}  "
          "reported by reason (ms)")
    for name, path in inputs.items():
        res = run_source(path, args.out, cfg, until="clips", reuse=True)
        if res.outcome is not None:
            print(f"{name:16s} {res.outcome[0]}: {res.outcome[1]}")
            continue
        row = coverage_row(name, res["clips"], res["transcript"].speech_ms, cfg.segmentation.max_edge_extension_ms)
        rows.append(row)
        print(f"{name:16s} {row['clips']:5d} {row['speech_s']:8.1f} {100 * row['in_clips']:7.1f}% "
              f"{100 * row['in_clips_or_reported']:8.1f}% {len(row['edge_cuts']):9d}  {row['reported_ms_by_reason']}")
    total = sum(r["speech_s"] for r in rows)
    if total:
        inside = sum(r["speech_s"] * r["in_clips"] for r in rows) / total
        told = sum(r["speech_s"] * r["in_clips_or_reported"] for r in rows) / total
        print(f"{'all':16s} {sum(r['clips'] for r in rows):5d} {total:8.1f} {100 * inside:7.1f}% {100 * told:8.1f}% "
              f"{sum(len(r['edge_cuts']) for r in rows):9d}  (target: >= 99 % in clips or reported)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
