"""Diarize media files and print DER/JER for those with a reference, plus one benchmark row (JSON) per file.

Usage::

    python -m cinedub.diarization.bench MEDIA [MEDIA ...] --models-dir ../shared/models \
        [--method offline|pyannote] [--reference REF.rttm] [--collar 0.25] [--skip-overlap] [--rows rows.jsonl]

A file's reference is ``--reference`` (single input) or ``<media stem>.rttm`` next to it. Audio that is not mono
16 kHz (e.g. an mp4) is first extracted with :func:`cinedub.media.extract_audio` into a temporary folder.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import soundfile as sf

from cinedub.config import Config
from cinedub.diarization.config import DiarizationConfig
from cinedub.diarization.records import DiarizationResult
from cinedub.media import extract_audio
from cinedub.diarization.rttm import write_rttm
from cinedub.stages.diarization import DiarizationStage


def find_reference(media: Path) -> Path | None:
    """``<stem>.rttm`` next to ``media``, if present."""
    ref = media.with_suffix(".rttm")
    return ref if ref.is_file() else None


def benchmark_row(
    media: Path, result: DiarizationResult, process_s: float, scores: Any | None, *, load_s: float = 0.0,
    threads: int | None = None,
) -> dict[str, Any]:
    """One flat row, with the fields of ``scripts/benchmark.py`` (``load_s``, ``process_s``, ``duration_s``; RTF =
    process / media time, model load apart) plus the method, speaker counts and, with a reference, DER/JER."""
    audio_s = result.duration_ms / 1000
    row: dict[str, Any] = {
        "stage": DiarizationStage.name,
        "stage_version": DiarizationStage.version,
        "method": result.method,
        "source": media.name,
        "duration_s": round(audio_s, 3),
        "load_s": round(load_s, 3),
        "process_s": round(process_s, 3),
        "rtf": round(process_s / audio_s, 4) if audio_s else None,
        "device": "cpu",
        "threads": threads,
        "host_cpus": os.cpu_count(),
        "machine": platform.machine(),
        "num_speakers": result.num_speakers,
        "overlap_s": round(result.overlap_ms / 1000, 3),
        "speech_s": round(result.speech_ms / 1000, 3),
    }
    if scores is not None:
        row.update(
            ref_speakers=scores.ref_speakers,
            der=round(scores.der, 4),
            jer=round(scores.jer, 4),
            missed_s=round(scores.missed_s, 3),
            false_alarm_s=round(scores.false_alarm_s, 3),
            confusion_s=round(scores.confusion_s, 3),
            collar_s=scores.collar_s,
            skip_overlap=scores.skip_overlap,
        )
    return row


def _audio_16k(media: Path, tmp: Path) -> Path:
    try:
        info = sf.info(str(media))
        if info.samplerate == 16_000 and info.channels == 1:
            return media
    except Exception:  # not a soundfile format (mp4, ...)
        pass
    return extract_audio(media, tmp / f"{media.stem}.16k.flac")


def main(argv: list[str] | None = None) -> int:
    from cinedub.eval.diarization import score

    p = argparse.ArgumentParser(prog="python -m cinedub.diarization.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("media", nargs="+", type=Path)
    p.add_argument("--models-dir", type=Path, default=None)
    p.add_argument("--method", choices=["offline", "pyannote"], default="offline")
    p.add_argument("--reference", type=Path, default=None, help="reference RTTM (only with one media file)")
    p.add_argument("--collar", type=float, default=0.25, help="pyannote.metrics collar, total width in s")
    p.add_argument("--skip-overlap", action="store_true")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--num-speakers", type=int, default=None)
    p.add_argument("--out-dir", type=Path, default=None, help="keep result JSON/RTTM here")
    p.add_argument("--rows", type=Path, default=None, help="append benchmark rows (JSON lines) to this file")
    a = p.parse_args(argv)
    if a.reference and len(a.media) > 1:
        p.error("--reference needs exactly one media file")
    overrides: dict[str, Any] = {"device": "cpu"}
    if a.models_dir:
        overrides["models_dir"] = a.models_dir
    cfg = Config.load(**overrides)
    dcfg = DiarizationConfig(method=a.method, num_threads=a.threads, num_speakers=a.num_speakers)
    stage = DiarizationStage(cfg, dcfg)
    t_load = time.perf_counter()
    stage.ensure_setup()
    load_s = time.perf_counter() - t_load
    with tempfile.TemporaryDirectory(prefix="cinedub-diar-") as tmp_s:
        tmp = Path(tmp_s)
        out_dir = a.out_dir or tmp
        for media in a.media:
            wav_path = _audio_16k(media, tmp)
            t0 = time.perf_counter()
            result = stage.diarize(wav_path)
            wall = time.perf_counter() - t0
            result.to_json(out_dir / f"{media.stem}.diarization.json")
            write_rttm(out_dir / f"{media.stem}.diarization.rttm", result.turns, media.stem)
            ref = a.reference or find_reference(media)
            s = None
            if ref is not None:
                from cinedub.diarization.rttm import read_rttm

                s = score(read_rttm(ref), result.turns, collar_s=a.collar, skip_overlap=a.skip_overlap)
                print(f"{media.name}: {s.line()}")
            else:
                print(f"{media.name}: {result.num_speakers} speakers, no reference")
            row = benchmark_row(media, result, wall, s, load_s=load_s, threads=a.threads)
            load_s = 0.0  # paid once per process
            print(json.dumps(row))
            if a.rows:
                with a.rows.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
