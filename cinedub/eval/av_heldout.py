"""Held-out audio-visual cases built at run time from shared footage the attribution was never tuned on.

The attribution's defaults (:class:`cinedub.ops.av_config.AvConfig`) were chosen on ``av_speakers/*`` and
``dialogue_5shots``. These cases reuse the *same situations* with *other people, rooms, cameras and languages*
(``en_monologue``: a man in an office, English, 30 fps, landscape; ``vertical_hevc``: a woman outdoors, Russian,
25 fps, portrait HEVC), so a default fitted to one dev file shows up here as a regression:

- ``heldout_twoshot``: one two-shot where both people talk the whole time (both mouths move) but only the left
  one is heard for 4 s, then only the right one for 4 s; then each person alone in a shot of their own, in sync
  (the identity must carry the voice across shots). The situation of ``twoshot_dev``.
- ``heldout_reaction``: the woman listening (her own silent talking video) while the man, off screen, is heard;
  then the man on screen speaking. The situation of ``react_*`` plus a speaker seen elsewhere.

Ground truth is known by construction: who is heard when is a choice of the edit, speech regions inside each
span come from Silero VAD on the clean track that was heard (derived, like the shared RTTMs: score with a collar).
Nothing here is written into the repository; the files go to a folder the caller gives.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

FPS = 25
SIDE_PX = 320  # each face tile is SIDE_PX x SIDE_PX; frames are 2*SIDE_PX x SIDE_PX

# (media path under ../shared/media, crop "w:h:x:y" around the face for a square tile, crop for a 2:1 single shot)
PEOPLE = {
    "man": ("en_monologue/englishvideo.mp4", "600:600:360:40", "1000:500:40:80"),
    "woman": ("vertical_hevc/vlog_ru_vertical.mp4", "500:500:350:450", "1080:540:0:400"),
}


@dataclass(frozen=True)
class Part:
    """One span of the edit: ``layout`` "pair" (man left, woman right) or a single person; ``heard``: whose audio
    plays; ``src_s``: where in each person's own video the span starts (seconds); ``dur_s``: its length."""

    layout: str
    heard: str | None
    src_s: dict[str, float]
    dur_s: float
    new_shot: bool


CASES: dict[str, list[Part]] = {
    "heldout_twoshot": [
        Part("pair", "man", {"man": 0.0, "woman": 0.0}, 4.0, True),
        Part("pair", "woman", {"man": 4.0, "woman": 4.0}, 4.0, False),
        Part("man", "man", {"man": 5.9}, 4.0, True),
        Part("woman", "woman", {"woman": 0.0}, 4.0, True),
    ],
    "heldout_reaction": [
        Part("woman", "man", {"woman": 2.0, "man": 0.0}, 5.0, True),
        Part("man", "man", {"man": 5.0}, 4.5, True),
    ],
}


def _ffmpeg(args: list[str]) -> None:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise RuntimeError("ffmpeg not found")
    subprocess.run([exe, "-v", "error", "-y", *args], check=True)


def _video_part(media: Path, part: Part, out: Path) -> None:
    """Render one span (video only, 25 fps, 640x320, H.264) to ``out``."""
    if part.layout == "pair":
        man, woman = PEOPLE["man"], PEOPLE["woman"]
        _ffmpeg(["-ss", f"{part.src_s['man']:.3f}", "-t", f"{part.dur_s:.3f}", "-i", str(media / man[0]),
                 "-ss", f"{part.src_s['woman']:.3f}", "-t", f"{part.dur_s:.3f}", "-i", str(media / woman[0]),
                 "-filter_complex",
                 f"[0:v]fps={FPS},crop={man[1]},scale={SIDE_PX}:{SIDE_PX},setsar=1[l];"
                 f"[1:v]fps={FPS},crop={woman[1]},scale={SIDE_PX}:{SIDE_PX},setsar=1[r];[l][r]hstack=2[v]",
                 "-map", "[v]", "-an", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast",
                 "-t", f"{part.dur_s:.3f}", str(out)])
    else:
        who = PEOPLE[part.layout]
        _ffmpeg(["-ss", f"{part.src_s[part.layout]:.3f}", "-t", f"{part.dur_s:.3f}", "-i", str(media / who[0]),
                 "-vf", f"fps={FPS},crop={who[2]},scale={2 * SIDE_PX}:{SIDE_PX},setsar=1", "-an",
                 "-c:v", "libx264", "-pix_fmt", "yuv420p", "-preset", "veryfast", "-t", f"{part.dur_s:.3f}", str(out)])


def _audio_part(media: Path, part: Part, out: Path) -> np.ndarray:
    """The heard person's audio of the span (16 kHz mono WAV at ``out``); returns the samples."""
    import soundfile as sf

    who = part.heard
    start = part.src_s[who]
    _ffmpeg(["-ss", f"{start:.3f}", "-t", f"{part.dur_s:.3f}", "-i", str(media / PEOPLE[who][0]), "-vn", "-ac", "1",
             "-ar", "16000", "-af", f"apad=whole_dur={part.dur_s:.3f}", "-t", f"{part.dur_s:.3f}", str(out)])
    wav, _ = sf.read(str(out), dtype="float32")
    return wav


def build_case(name: str, media: str | Path, folder: str | Path) -> tuple[Path, Path, Path]:
    """Build ``name`` (a key of :data:`CASES`) from ``media`` (``../shared/media``) into ``folder``.

    Returns:
        ``(video .mp4, reference .rttm, truth .json)``; the truth has the format of ``twoshot_dev.truth.json``
        (positions "left"/"right"/"center"; null = nobody visible speaks). Built once; reused when present.

    Raises:
        KeyError: unknown case; subprocess.CalledProcessError: ffmpeg failed.
    """
    from cinedub.diarization.config import VadConfig
    from cinedub.diarization.vad import speech_regions

    media, folder = Path(media), Path(folder)
    video, rttm, truth_path = folder / f"{name}.mp4", folder / f"{name}.rttm", folder / f"{name}.truth.json"
    if video.is_file() and rttm.is_file() and truth_path.is_file():
        return video, rttm, truth_path
    parts = CASES[name]
    tmp = folder / f".{name}.parts"
    tmp.mkdir(parents=True, exist_ok=True)
    audio, shots, turns = [], [], []
    t_ms = 0
    for i, part in enumerate(parts):
        _video_part(media, part, tmp / f"v{i}.mp4")
        wav = _audio_part(media, part, tmp / f"a{i}.wav")
        audio.append(wav)
        dur_ms = int(round(part.dur_s * 1000))
        if part.new_shot:
            shots.append([t_ms, t_ms + dur_ms])
        else:
            shots[-1][1] = t_ms + dur_ms
        if part.layout == "pair":
            position = "left" if part.heard == "man" else "right"
        else:
            position = "center" if part.heard == part.layout else None
        for a, b in speech_regions(wav, VadConfig(), 16000):
            turns.append({"speaker": part.heard, "start": (t_ms + a) / 1000, "end": (t_ms + b) / 1000,
                          "on_screen": position})
        t_ms += dur_ms
    (tmp / "list.txt").write_text("".join(f"file 'v{i}.mp4'\n" for i in range(len(parts))))
    import soundfile as sf

    sf.write(str(tmp / "audio.wav"), np.concatenate(audio), 16000)
    _ffmpeg(["-f", "concat", "-safe", "0", "-i", str(tmp / "list.txt"), "-i", str(tmp / "audio.wav"),
             "-map", "0:v", "-map", "1:a", "-c:v", "copy", "-c:a", "aac", "-shortest", str(tmp / "out.mp4")])
    truth = {"shots_s": [[a / 1000, b / 1000] for a, b in shots], "turns": turns,
             "built_from": {k: v[0] for k, v in PEOPLE.items()}}
    truth_path.write_text(json.dumps(truth, indent=1), encoding="utf-8")
    rttm.write_text("".join(f"SPEAKER {name} 1 {t['start']:.3f} {t['end'] - t['start']:.3f} <NA> <NA> {t['speaker']} "
                            "<NA> <NA>\n" for t in turns), encoding="utf-8")
    (tmp / "out.mp4").replace(video)
    shutil.rmtree(tmp, ignore_errors=True)
    return video, rttm, truth_path


def build_repeated(name: str, video: str | Path, rttm: str | Path, truth: str | Path, times: int,
                   folder: str | Path) -> tuple[Path, Path, Path]:
    """``video`` played ``times`` times in a row (stream copy, one file), with its RTTM and truth JSON repeated at
    the same offsets: the same people recurring over a longer source, which tests what a count rule or a link
    threshold does with length (``dialogue_5shots`` x 10 = 5 min, 5 people).

    Returns:
        ``(video .mp4, reference .rttm, truth .json)`` in ``folder`` (built once; reused when present).

    Raises:
        subprocess.CalledProcessError: ffmpeg failed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out, out_rttm, out_truth = folder / f"{name}.mp4", folder / f"{name}.rttm", folder / f"{name}.truth.json"
    if out.is_file() and out_rttm.is_file() and out_truth.is_file():
        return out, out_rttm, out_truth
    lst = folder / f".{name}.txt"
    lst.write_text("".join(f"file '{Path(video).resolve()}'\n" for _ in range(times)))
    tmp = folder / f".{name}.mp4"
    _ffmpeg(["-f", "concat", "-safe", "0", "-i", str(lst), "-c", "copy", str(tmp)])
    lst.unlink()
    # the concat demuxer starts each copy where the previous one ended: the period is the result's length / times
    exe = shutil.which("ffprobe")
    total = float(subprocess.run([exe, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(tmp)],
                                 capture_output=True, text=True, check=True).stdout.strip())
    period = total / times
    lines = [ln.split() for ln in Path(rttm).read_text().splitlines() if ln.strip()]
    out_rttm.write_text("".join(
        f"SPEAKER {name} 1 {float(p[3]) + i * period:.3f} {p[4]} <NA> <NA> {p[7]} <NA> <NA>\n"
        for i in range(times) for p in lines))
    t = json.loads(Path(truth).read_text())
    rep = {"shots_s": [[a + i * period, b + i * period] for i in range(times) for a, b in t["shots_s"]],
           "turns": [{**x, "start": x["start"] + i * period, "end": x["end"] + i * period}
                     for i in range(times) for x in t["turns"]],
           "built_from": f"{Path(video).name} x {times}"}
    out_truth.write_text(json.dumps(rep, indent=1))
    tmp.replace(out)
    return out, out_rttm, out_truth
