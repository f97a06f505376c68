"""Media ingest: probe a file, hash it, extract its audio once (ffmpeg-python over the ffmpeg CLI).

Everything here raises :class:`~cinedub.errors.MediaError` naming the file and the reason, so the flow can record
the failure and go on with the other inputs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from fractions import Fraction
from pathlib import Path

import ffmpeg
import numpy as np
import soundfile as sf

from cinedub.errors import MediaError
from cinedub.timebase import parse_fps, seconds_to_ms
from cinedub.types import AudioStream, Source

ASR_SAMPLE_RATE_HZ = 16_000
_HASH_CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _ffprobe(path: Path) -> dict:
    try:
        return ffmpeg.probe(str(path))
    except ffmpeg.Error as e:
        msg = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        detail = msg[-1] if msg else "ffprobe failed"
        raise MediaError(path, f"not a readable media file ({detail})") from None


def _rotation(stream: dict) -> int:
    rot = stream.get("tags", {}).get("rotate")
    for sd in stream.get("side_data_list", []) or []:
        if "rotation" in sd:
            rot = sd["rotation"]
    try:
        return int(round(float(rot or 0))) % 360
    except ValueError:
        return 0


def probe(path: str | Path, *, require_video: bool = False, require_audio: bool = True) -> Source:
    """Probe ``path`` and return its :class:`Source` record (content hash included).

    Args:
        path: a media file.
        require_video / require_audio: raise when that stream is missing.

    Raises:
        MediaError: missing file, not media, no usable stream, zero duration, or a truncated/undecodable file
            (the last audio and video packets are decoded to prove the file is whole).
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "file not found")
    if path.stat().st_size == 0:
        raise MediaError(path, "empty file")
    info = _ffprobe(path)
    streams = info.get("streams", [])
    video = [s for s in streams if s.get("codec_type") == "video" and not s.get("disposition", {}).get("attached_pic")]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if not video and not audio:
        raise MediaError(path, "not a media file: no audio or video stream")
    if require_audio and not audio:
        raise MediaError(path, "no audio stream (speech is needed for ASR)")
    if require_video and not video:
        raise MediaError(path, "no video stream")
    fmt = info.get("format", {})
    duration_s = float(fmt.get("duration") or 0.0)
    if duration_s <= 0:
        durations = [float(s.get("duration") or 0) for s in streams]
        duration_s = max(durations or [0.0])
    if duration_s <= 0:
        raise MediaError(path, "zero or unknown duration")

    fps = n_frames = width = height = codec = None
    vfr = False
    rotation = 0
    if video:
        v = video[0]
        codec = v.get("codec_name")
        try:
            avg = parse_fps(v.get("avg_frame_rate", "0/0")) if v.get("avg_frame_rate", "0/0") != "0/0" else None
            nominal = parse_fps(v.get("r_frame_rate", "0/0")) if v.get("r_frame_rate", "0/0") != "0/0" else None
        except ValueError:
            avg = nominal = None
        fps = avg or nominal
        if fps is None:
            raise MediaError(path, "video stream has no frame rate")
        vfr = bool(avg and nominal and abs(float(avg) - float(nominal)) > 0.01)
        n_frames = int(v["nb_frames"]) if str(v.get("nb_frames", "")).isdigit() else None
        rotation = _rotation(v)
        width, height = int(v.get("width", 0)), int(v.get("height", 0))
        if rotation in (90, 270):
            width, height = height, width
    audio_streams = tuple(
        AudioStream(
            index=int(s["index"]),
            codec=s.get("codec_name", "?"),
            sample_rate_hz=int(s.get("sample_rate", 0) or 0),
            channels=int(s.get("channels", 0) or 0),
            language=(s.get("tags") or {}).get("language"),
        )
        for s in audio
    )
    _check_decodes_to_end(path, duration_s, has_video=bool(video), has_audio=bool(audio))
    sha = sha256_file(path)
    return Source(
        source_id=sha[:16],
        path=str(path.resolve()),
        sha256=sha,
        episode=path.stem,
        duration_ms=seconds_to_ms(duration_s),
        has_video=bool(video),
        has_audio=bool(audio),
        fps=fps,
        variable_frame_rate=vfr,
        n_frames=n_frames,
        width=width,
        height=height,
        rotation_deg=rotation,
        video_codec=codec,
        audio_streams=audio_streams,
    )


def _check_decodes_to_end(path: Path, duration_s: float, *, has_video: bool, has_audio: bool) -> None:
    """Decode the last second of every stream; a truncated mp4 (moov present, mdat cut) fails here."""
    start = max(0.0, duration_s - 1.0)
    try:
        _, err = (
            ffmpeg.input(str(path), ss=start)
            .output("-", format="null")
            .global_args("-v", "error", "-xerror")
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as e:
        lines = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise MediaError(path, f"truncated or undecodable ({lines[-1] if lines else 'decode failed'})") from None
    # ffmpeg exits 0 on some truncations but reports them
    text = err.decode("utf-8", "replace")
    if "partial file" in text or "Invalid data found" in text:
        raise MediaError(path, f"truncated or undecodable ({text.strip().splitlines()[-1]})")


def extract_audio(
    path: str | Path, out_path: str | Path, *, sample_rate_hz: int | None = ASR_SAMPLE_RATE_HZ, mono: bool = True
) -> Path:
    """Decode the first audio stream of ``path`` to FLAC at ``out_path`` (atomic: temp name, then rename).

    Args:
        sample_rate_hz: target rate (Hz); None keeps the native rate.
        mono: downmix to one channel.

    Raises:
        MediaError: ffmpeg cannot decode the audio.
    """
    path, out_path = Path(path), Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out_path.stem}.", suffix=".flac", dir=out_path.parent)
    os.close(fd)
    kwargs: dict = {"map": "0:a:0", "acodec": "flac", "sample_fmt": "s16"}
    if sample_rate_hz:
        kwargs["ar"] = sample_rate_hz
    if mono:
        kwargs["ac"] = 1
    try:
        ffmpeg.input(str(path)).output(tmp, **kwargs).global_args("-v", "error").overwrite_output().run(
            capture_stdout=True, capture_stderr=True
        )
        os.replace(tmp, out_path)
    except ffmpeg.Error as e:
        Path(tmp).unlink(missing_ok=True)
        lines = (e.stderr or b"").decode("utf-8", "replace").strip().splitlines()
        raise MediaError(path, f"audio decode failed ({lines[-1] if lines else 'ffmpeg error'})") from None
    return out_path


def load_audio(path: str | Path, *, start_ms: int | None = None, end_ms: int | None = None) -> tuple[np.ndarray, int]:
    """Read a span of an audio file (FLAC/WAV) without decoding the rest.

    Returns:
        ``(samples, sample_rate_hz)``; samples are float32 in [-1, 1], shape ``(n_samples,)`` for mono or
        ``(n_samples, n_channels)`` otherwise.
    """
    info = sf.info(str(path))
    sr = info.samplerate
    start = 0 if start_ms is None else int(round(start_ms * sr / 1000))
    stop = None if end_ms is None else int(round(end_ms * sr / 1000))
    data, sr = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=False)
    return data, sr


def encode_flac(samples: np.ndarray, sample_rate_hz: int) -> bytes:
    """Encode float32 samples (``(n,)`` or ``(n, channels)``) as 16-bit FLAC bytes."""
    import io

    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate_hz, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def write_flac(path: str | Path, samples: np.ndarray, sample_rate_hz: int) -> Path:
    """Write float32 samples to a 16-bit FLAC file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".flac", dir=path.parent)
    os.close(fd)
    try:
        sf.write(tmp, samples, sample_rate_hz, format="FLAC", subtype="PCM_16")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def mux_video_audio(video: str | Path, audio: str | Path, out_path: str | Path) -> Path:
    """Mux the video stream of ``video`` with the audio of ``audio`` (video copied, audio AAC, shortest wins).

    Used for sources whose picture and sound come as separate files (``zh_tvdrama``).
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.stem}.tmp{out_path.suffix}")
    v = ffmpeg.input(str(video)).video
    a = ffmpeg.input(str(audio)).audio
    ffmpeg.output(v, a, str(tmp), vcodec="copy", acodec="aac", shortest=None).global_args("-v", "error").overwrite_output().run(
        capture_stdout=True, capture_stderr=True
    )
    os.replace(tmp, out_path)
    return out_path


__all__ = [
    "ASR_SAMPLE_RATE_HZ",
    "Fraction",
    "encode_flac",
    "extract_audio",
    "load_audio",
    "mux_video_audio",
    "probe",
    "sha256_file",
    "write_flac",
]
