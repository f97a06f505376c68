"""Ingest on real footage: probe facts against the media README and ffprobe, audio on the source timeline, and
bad inputs (truncated, not media, missing streams) refused with a MediaError that names the file and the reason."""

from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from cinedub.config import Config
from cinedub.errors import MediaError
from cinedub.media import probe
from cinedub.stages.ingest import IngestStage
from cinedub.types import IngestResult, Source
from cinedub.timebase import ms_to_sample

# (file, README duration s, expected Source fields); rates and channels of the first audio stream are ffprobe's
CASES = {
    "en_film_titanic/test1.mp4": (
        20.1,
        {"fps": Fraction(24000, 1001), "variable_frame_rate": False, "width": 426, "height": 240, "n_frames": 482},
        (22050, 2),
    ),
    "en_monologue/englishvideo.mp4": (
        10.0,
        {"fps": Fraction(30), "variable_frame_rate": False, "width": 1080, "height": 720},
        (44100, 1),
    ),
    "dialogue_5shots/dialogue_5shots.mp4": (
        30.8,
        {"fps": Fraction(25), "variable_frame_rate": False, "width": 640, "height": 640},
        (44100, 1),
    ),
    "zh_narration/10.mp4": (10.0, {"variable_frame_rate": True, "width": 512, "height": 288}, (44100, 2)),
    "vertical_hevc/vlog_ru_vertical.mp4": (
        10.0,
        {"fps": Fraction(25), "width": 1080, "height": 1920, "video_codec": "hevc", "rotation_deg": 0},
        (44100, 2),
    ),
}


@pytest.fixture(scope="module")
def stage() -> IngestStage:
    return IngestStage(Config.load(device="cpu"))


def _files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def _lag(a: np.ndarray, b: np.ndarray) -> int:
    """Lag (samples) maximising the cross-correlation of ``b`` against ``a``: b[t] ~ a[t - lag]."""
    n = len(a) + len(b)
    spec = np.fft.rfft(b, n) * np.conj(np.fft.rfft(a, n))
    corr = np.fft.irfft(spec, n)
    lag = int(np.argmax(corr))
    return lag if lag < n // 2 else lag - n


@pytest.mark.parametrize("rel", list(CASES))
def test_ingest_real_media(stage: IngestStage, media_dir: Path, tmp_path: Path, rel: str):
    readme_s, expected, (rate, channels) = CASES[rel]
    result = stage.ingest(media_dir / rel, tmp_path)
    src = result.source

    for key, value in expected.items():
        assert getattr(src, key) == value, f"{rel}: {key}={getattr(src, key)!r}, expected {value!r}"
    if src.variable_frame_rate is False:
        assert isinstance(src.fps, Fraction)
    assert abs(src.duration_ms - readme_s * 1000) <= 150, src.duration_ms
    assert src.has_video and src.has_audio
    assert src.source_id == src.sha256[:16] and len(src.sha256) == 64

    info16 = sf.info(result.mix_16k)
    assert (info16.samplerate, info16.channels, info16.subtype) == (16000, 1, "PCM_16")
    assert abs(info16.frames / 16000 * 1000 - src.duration_ms) <= 50
    assert info16.frames == ms_to_sample(src.duration_ms, 16000)  # padded/trimmed exactly to the source

    info_full = sf.info(result.mix_full)
    assert (info_full.samplerate, info_full.channels) == (rate, channels)
    assert (result.full_rate_hz, result.channels) == (rate, channels)
    assert info_full.frames == ms_to_sample(src.duration_ms, rate)

    # real sound, not silence or a constant
    mix16, _ = sf.read(result.mix_16k, dtype="float32")
    assert float(np.sqrt(np.mean(mix16**2))) > 1e-3

    # nothing but the two outputs (no temporary files left)
    assert sorted(p.name for p in _files(tmp_path)) == ["mix_16k.flac", "mix_full.flac"]


def test_both_mixes_share_the_timeline(stage: IngestStage, media_dir: Path, tmp_path: Path):
    """mix_16k and mix_full come from one decode: downsampled, the full-rate mix lines up with lag 0."""
    import torch
    from torchaudio.functional import resample

    result = stage.ingest(media_dir / "en_film_titanic/test1.mp4", tmp_path)
    mix16, _ = sf.read(result.mix_16k, dtype="float32")
    full, sr = sf.read(result.mix_full, dtype="float32", always_2d=True)
    down = resample(torch.from_numpy(full.mean(axis=1)), sr, 16000).numpy()[: len(mix16)]
    assert abs(_lag(mix16[: 16000 * 8], down[: 16000 * 8])) <= 1
    corr = np.corrcoef(mix16[: len(down)], down)[0, 1]
    assert corr > 0.98, corr


def test_late_audio_is_padded_onto_the_source_timeline(stage: IngestStage, media_dir: Path, tmp_path: Path):
    """An audio stream muxed 0.5 s after the video keeps its 0.5 s offset in the extracted mix."""
    orig = media_dir / "en_monologue/englishvideo.mp4"
    delayed = tmp_path / "delayed.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(orig), "-itsoffset", "0.5", "-i", str(orig),
         "-map", "0:v", "-map", "1:a", "-c", "copy", str(delayed)],
        check=True,
    )
    a = stage.ingest(orig, tmp_path / "orig")
    b = stage.ingest(delayed, tmp_path / "delayed")
    assert abs(b.source.duration_ms - (a.source.duration_ms + 500)) <= 40
    x, _ = sf.read(a.mix_16k, dtype="float32")
    y, _ = sf.read(b.mix_16k, dtype="float32")
    assert len(y) == ms_to_sample(b.source.duration_ms, 16000)
    lag_ms = _lag(x, y) / 16
    assert abs(lag_ms - 500) <= 25, lag_ms  # AAC priming makes the mux offset differ from 0.5 s by < 1 frame


def test_source_id_is_the_content_hash(stage: IngestStage, media_dir: Path, tmp_path: Path):
    a = probe(media_dir / "en_monologue/englishvideo.mp4")
    b = probe(media_dir / "en_monologue/englishvideo.mp4")
    renamed = tmp_path / "another_name.mp4"
    shutil.copyfile(media_dir / "en_monologue/englishvideo.mp4", renamed)
    c = probe(renamed)
    other = probe(media_dir / "dialogue_5shots/dialogue_5shots.mp4")
    assert a.source_id == b.source_id == c.source_id
    assert c.episode == "another_name" and c.path != a.path
    assert other.source_id != a.source_id


def test_records_round_trip(stage: IngestStage, media_dir: Path, tmp_path: Path):
    result = stage.ingest(media_dir / "en_film_titanic/test1.mp4", tmp_path)
    assert IngestResult.from_json(result.to_json(tmp_path / "ingest.json")) == result
    assert Source.from_json(result.source.to_json(tmp_path / "again" / "source.json")) == result.source
    tracks = result.unseparated_tracks()
    assert tracks.vocals_16k == result.mix_16k and tracks.separation == "none" and tracks.vocals is None


def test_audio_only_source_when_video_not_required(stage: IngestStage, media_dir: Path, tmp_path: Path):
    result = stage.ingest(media_dir / "asr/jfk.flac", tmp_path, require_video=False)
    assert not result.source.has_video and result.source.fps is None
    assert result.source.duration_ms == 11000  # README: 11 s
    assert sf.info(result.mix_16k).frames == 11 * 16000
    assert (result.full_rate_hz, result.channels) == (44100, 2)


# ---- bad inputs ---------------------------------------------------------------------------------------------------


def _truncated_40(media: Path, dest: Path) -> Path:
    """First 40 % of dialogue_5shots.mp4: its index (moov) sits at the end and is lost."""
    data = (media / "dialogue_5shots/dialogue_5shots.mp4").read_bytes()
    (out := dest / "dialogue_cut.mp4").write_bytes(data[: int(len(data) * 0.4)])
    return out


def _moov_lost_70(media: Path, dest: Path) -> Path:
    """en_monologue cut to 70 %: again moov-last, so ffprobe reports "moov atom not found"."""
    data = (media / "en_monologue/englishvideo.mp4").read_bytes()
    (out := dest / "monologue_cut.mp4").write_bytes(data[: int(len(data) * 0.7)])
    return out


def _mdat_cut_70(media: Path, dest: Path) -> Path:
    """en_monologue remuxed with the index first (+faststart), then cut to 70 %: ffprobe still reads the full
    duration from moov and exits 0; only the packets past the cut are missing."""
    fast = dest / "faststart.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(media / "en_monologue/englishvideo.mp4"), "-c", "copy",
         "-movflags", "+faststart", str(fast)],
        check=True,
    )
    data = fast.read_bytes()
    fast.unlink()
    (out := dest / "monologue_mdat_cut.mp4").write_bytes(data[: int(len(data) * 0.7)])
    return out


def _text_as_mp4(media: Path, dest: Path) -> Path:
    (out := dest / "notes.mp4").write_text("this is a shooting script, not a video\n" * 20, encoding="utf-8")
    return out


def _empty(media: Path, dest: Path) -> Path:
    (out := dest / "empty.mp4").write_bytes(b"")
    return out


def _missing(media: Path, dest: Path) -> Path:
    return dest / "does_not_exist.mp4"


def _no_audio(media: Path, dest: Path) -> Path:
    return media / "shots/testvideo.mp4"


def _no_video(media: Path, dest: Path) -> Path:
    return media / "asr/jfk.flac"


BAD = {
    "truncated_40pct": (_truncated_40, "truncated or unfinished MP4 (moov atom not found"),
    "moov_lost_70pct": (_moov_lost_70, "truncated or unfinished MP4 (moov atom not found"),
    "mdat_cut_70pct": (_mdat_cut_70, "truncated: video stream 0 ends at"),
    "text_named_mp4": (_text_as_mp4, "not a readable media file"),
    "empty_file": (_empty, "empty file"),
    "missing_file": (_missing, "file not found"),
    "video_without_audio": (_no_audio, "no audio stream"),
    "audio_only": (_no_video, "no video stream"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_raises_media_error(stage: IngestStage, media_dir: Path, tmp_path: Path, case: str):
    build, reason = BAD[case]
    src_dir = tmp_path / "in"
    src_dir.mkdir()
    path = build(media_dir, src_dir)
    work = tmp_path / "work"
    with pytest.raises(MediaError) as info:
        stage.ingest(path, work)
    err = info.value
    assert err.path == str(path)
    assert str(path) in str(err)
    assert reason in err.reason, err.reason
    assert _files(work) == []  # no partial FLAC


def test_mdat_cut_reports_how_far_the_data_goes(stage: IngestStage, media_dir: Path, tmp_path: Path):
    path = _mdat_cut_70(media_dir, tmp_path)
    with pytest.raises(MediaError) as info:
        probe(path)
    # "truncated: video stream 0 ends at 7.43 s of the declared 9.97 s": the data stops well before the end
    words = info.value.reason.split()
    reached, declared = float(words[words.index("at") + 1]), float(words[words.index("declared") + 1])
    assert 9.5 < declared < 10.5 and 5.0 < reached < declared - 1.0


def test_file_cut_after_probe_leaves_nothing(stage: IngestStage, media_dir: Path, tmp_path: Path):
    """The probe passed, then the file was cut (still being copied): extraction fails and removes its outputs."""
    fast = tmp_path / "episode.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(media_dir / "en_monologue/englishvideo.mp4"), "-c", "copy",
         "-movflags", "+faststart", str(fast)],
        check=True,
    )
    source = probe(fast)
    data = fast.read_bytes()
    fast.write_bytes(data[: int(len(data) * 0.7)])
    work = tmp_path / "work"
    with pytest.raises(MediaError, match="truncated during audio decode"):
        stage.ingest(fast, work, source=source)
    assert _files(work) == []
