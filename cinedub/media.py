"""Media ingest: probe a file, hash it, extract its audio once (ffmpeg-python over the ffmpeg CLI).

Everything here raises :class:`~cinedub.errors.MediaError` naming the file and the reason, so the flow can record
the failure and go on with the other inputs.
"""

from __future__ import annotations

import re
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

import ffmpeg
import numpy as np
import soundfile as sf

from cinedub.atomic import atomic_path
from cinedub.errors import MediaError
from cinedub.hashing import sha256_file
from cinedub.timebase import ms_to_sample, parse_fps, pick_frame_rate, seconds_to_ms
from cinedub.types import AudioStream, Source

ASR_SAMPLE_RATE_HZ = 16_000


def _ffmpeg_reason(path: Path, stderr: bytes | None, default: str) -> str:
    """ffmpeg's error lines, deduplicated, without the ``[demuxer @ 0x...]`` and ``<path>:`` prefixes."""
    out: list[str] = []
    for line in (stderr or b"").decode("utf-8", "replace").splitlines():
        line = re.sub(r"^\[[^\]]+ @ 0x[0-9a-f]+\]\s*", "", line.strip())
        if line.startswith(f"{path}:"):
            line = line[len(str(path)) + 1 :].strip()
        if line and line not in out:
            out.append(line)
    return "; ".join(out[-3:]) or default


def _looks_like_mp4(path: Path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8)[4:8] == b"ftyp"


def _ffprobe(path: Path) -> dict:
    try:
        return ffmpeg.probe(str(path), v="error")
    except ffmpeg.Error as e:
        detail = _ffmpeg_reason(path, e.stderr, "ffprobe failed")
        if "moov atom not found" in detail and _looks_like_mp4(path):
            # an MP4 whose index (written last by most muxers) is missing: cut short or still being written
            raise MediaError(path, f"truncated or unfinished MP4 ({detail})") from None
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


def probe(
    path: str | Path, *, require_video: bool = False, require_audio: bool = True, sha256: str | None = None
) -> Source:
    """Probe ``path`` and return its :class:`Source` record (content hash included).

    Args:
        path: a media file (any name, also one starting with ``-``: ffmpeg and ffprobe get the absolute path).
        require_video / require_audio: raise when that stream is missing.
        sha256: the file's SHA-256 when the caller already has it (a run hashes each source once); else computed.

    Raises:
        MediaError: missing file, not media, no usable stream, zero duration, or a truncated/undecodable file
            (the last audio and video packets are decoded to prove the file is whole; corrupt packets inside it
            are not an error: the stages decode through them as ffmpeg does, and count them).
    """
    path = Path(path).absolute()
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
        fps, vfr = pick_frame_rate(avg, nominal)
        if fps is None:
            raise MediaError(path, "video stream has no frame rate")
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
    start_s = float(fmt.get("start_time") or 0.0)
    _check_packets_to_end(path, start_s + duration_s, video[:1] + audio[:1])
    _check_decodes_to_end(path, duration_s, has_video=bool(video), has_audio=bool(audio))
    sha = sha256 or sha256_file(path)
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


_TAIL_S = 3.0  # seconds of packets read at the end of the file
_END_TOLERANCE_S = 0.5  # how far a stream's last packet may end before its declared end


def _check_packets_to_end(path: Path, end_s: float, streams: list[dict]) -> None:
    """Demux (no decode) the last seconds and check each stream's packets reach its declared end.

    An MP4 whose index (moov) survived but whose media data (mdat) was cut declares the full duration, yet its
    last packets lie past the end of the file: the demuxer hits end-of-file silently when seeking there, so a
    decode of the last second alone succeeds on nothing. Comparing packet end times with the declared
    ``start_time + duration`` of each stream (or the container's end) catches it, for MKV too.

    Limits: a stream without a declared duration (common in MKV) is held to the container's end, so an MKV whose
    audio legitimately stops more than ``_END_TOLERANCE_S`` before its video is refused.

    Raises:
        MediaError: "truncated: <codec_type> stream <i> ends at X s of the declared Y s" (or "has no packets").
    """
    start = max(0.0, end_s - _TAIL_S)
    try:
        info = ffmpeg.probe(
            str(path),
            v="error",
            read_intervals=f"{start:.3f}%",
            show_entries="packet=stream_index,pts_time,dts_time,duration_time",
        )
    except ffmpeg.Error as e:
        raise MediaError(path, f"truncated or undecodable ({_ffmpeg_reason(path, e.stderr, 'demux failed')})") from None
    ends: dict[int, float] = {}
    for pkt in info.get("packets", []):
        t = pkt.get("pts_time", pkt.get("dts_time"))
        if t in (None, "N/A"):
            continue
        dur = pkt.get("duration_time")
        end = float(t) + (float(dur) if dur not in (None, "N/A") else 0.0)
        idx = int(pkt["stream_index"])
        ends[idx] = max(ends.get(idx, 0.0), end)
    for st in streams:
        idx = int(st["index"])
        declared = end_s
        if st.get("duration") not in (None, "N/A"):
            declared = float(st.get("start_time") or 0.0) + float(st["duration"])
        got = ends.get(idx)
        if got is None or got < declared - _END_TOLERANCE_S:
            reached = "has no packets in its last seconds" if got is None else f"ends at {got:.2f} s"
            raise MediaError(
                path, f"truncated: {st.get('codec_type')} stream {idx} {reached} of the declared {declared:.2f} s"
            )


def _check_decodes_to_end(path: Path, duration_s: float, *, has_video: bool, has_audio: bool) -> None:
    """Decode the last second of every stream: a file whose data stops early fails here.

    Corrupt packets are not an error (the ffmpeg CLI decodes through them, and so does every stage): only ffmpeg
    failing, or reporting a partial file, is. The decode starts at the keyframe before the last second, so damage
    anywhere in that group of pictures would have refused an otherwise good file under ``-xerror``.
    """
    start = max(0.0, duration_s - 1.0)
    try:
        _, err = (
            ffmpeg.input(str(path), ss=start)
            .output("-", format="null")
            .global_args("-v", "error")
            .run(capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as e:
        reason = _ffmpeg_reason(path, e.stderr, "decode failed")
        raise MediaError(path, f"truncated or undecodable ({reason})") from None
    # ffmpeg exits 0 on some truncations but reports them
    if "partial file" in err.decode("utf-8", "replace"):
        raise MediaError(path, f"truncated or undecodable ({_ffmpeg_reason(path, err, 'decode failed')})")


def extract_audio(
    path: str | Path,
    out_path: str | Path,
    *,
    sample_rate_hz: int | None = ASR_SAMPLE_RATE_HZ,
    mono: bool = True,
    duration_ms: int | None = None,
) -> Path:
    """Decode the first audio stream of ``path`` to FLAC at ``out_path`` (atomic: temp name, then rename).

    Args:
        sample_rate_hz: target rate (Hz); None keeps the native rate.
        mono: downmix to one channel.
        duration_ms: pad with silence / trim to exactly ``round(duration_ms * rate / 1000)`` samples (the source
            duration), so sample 0 is source time 0 and the file ends where the source ends.

    Raises:
        MediaError: ffmpeg cannot decode the audio.
    """
    return extract_audio_tracks(path, [(out_path, sample_rate_hz, 1 if mono else None)], duration_ms=duration_ms)[0]


def extract_audio_tracks(
    path: str | Path,
    outputs: Sequence[tuple[str | Path, int | None, int | None]],
    *,
    duration_ms: int | None = None,
    report: dict[str, int] | None = None,
) -> list[Path]:
    """Decode the first audio stream of ``path`` once and write it to several 16-bit FLAC files.

    Corrupt packets are skipped as the ffmpeg CLI does (their samples become silence on the timeline); their count
    goes to ``report["decode_errors"]`` (ffmpeg's "Error while decoding stream" lines).

    Every output is on the source timeline: ``aresample=async=1:first_pts=0`` pads the start with silence when
    the audio stream starts after the source (and fills timestamp gaps), and with ``duration_ms`` each output is
    padded/trimmed (``apad`` + ``atrim``) to exactly ``round(duration_ms * rate / 1000)`` samples.

    Args:
        outputs: ``(out_path, sample_rate_hz or None for native, channels or None for native)`` per file;
            downmixing uses ffmpeg's standard matrices (centre channel included).
        duration_ms: source duration (ms), or None to keep the decoded length.

    Returns:
        The output paths, in order. Written atomically: on failure none of them is left behind.

    Raises:
        MediaError: ffmpeg cannot decode the audio (or the file has no audio stream).
    """
    path = Path(path).absolute()  # a name starting with "-" is not an option
    if not outputs:
        return []
    native_rate: int | None = None
    if duration_ms is not None and any(rate is None for _, rate, _ in outputs):
        info = _ffprobe(path)
        audio = [s for s in info.get("streams", []) if s.get("codec_type") == "audio"]
        if not audio:
            raise MediaError(path, "no audio stream")
        native_rate = int(audio[0].get("sample_rate") or 0) or None
    stream = ffmpeg.input(str(path))["a:0"].filter("aresample", **{"async": 1, "first_pts": 0})
    branches = stream.filter_multi_output("asplit", len(outputs)) if len(outputs) > 1 else None
    nodes, finals = [], []
    with ExitStack() as temporaries:
        for i, (out_path, rate, channels) in enumerate(outputs):
            out_path = Path(out_path)
            tmp = temporaries.enter_context(atomic_path(out_path, keep_suffix=True))  # renamed when all succeed
            finals.append(out_path)
            node = branches[i] if branches is not None else stream
            if rate:
                node = node.filter("aresample", rate)
            n_rate = rate or native_rate
            if duration_ms is not None and n_rate:
                n = ms_to_sample(duration_ms, n_rate)
                node = node.filter("apad", whole_len=n).filter("atrim", end_sample=n)
            kwargs: dict = {"acodec": "flac", "sample_fmt": "s16"}
            if channels:
                kwargs["ac"] = channels
            nodes.append(ffmpeg.output(node, str(tmp), **kwargs))
        try:
            _, err = (
                ffmpeg.merge_outputs(*nodes)
                .global_args("-v", "error")
                .overwrite_output()
                .run(capture_stdout=True, capture_stderr=True)
            )
        except ffmpeg.Error as e:
            raise MediaError(path, f"audio decode failed ({_ffmpeg_reason(path, e.stderr, 'ffmpeg error')})") from None
        if report is not None:
            report["decode_errors"] = count_decode_errors(err)
        if b"partial file" in err:
            # ffmpeg exits 0 when the media data ends early (file cut after it was probed); padding would hide it
            raise MediaError(path, f"truncated during audio decode ({_ffmpeg_reason(path, err, 'partial file')})")
    return finals


def count_decode_errors(stderr: bytes | str | None) -> int:
    """Packets ffmpeg could not decode, from its stderr at ``-v error``: one "Error while decoding stream" line
    each (the ffmpeg CLI skips them and goes on)."""
    text = stderr.decode("utf-8", "replace") if isinstance(stderr, bytes) else (stderr or "")
    return sum(1 for line in text.splitlines() if "Error while decoding stream" in line)


def load_audio(path: str | Path, *, start_ms: int | None = None, end_ms: int | None = None) -> tuple[np.ndarray, int]:
    """Read a span of an audio file (FLAC/WAV) without decoding the rest.

    Returns:
        ``(samples, sample_rate_hz)``; samples are float32 in [-1, 1], shape ``(n_samples,)`` for mono or
        ``(n_samples, n_channels)`` otherwise.
    """
    info = sf.info(str(path))
    sr = info.samplerate
    start = 0 if start_ms is None else ms_to_sample(start_ms, sr)
    stop = None if end_ms is None else ms_to_sample(end_ms, sr)
    data, sr = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=False)
    return data, sr


RESAMPLE_PAD_MS = 50  # context read on each side of a span so the resampling filter has no edge ramp inside it


def load_audio_at(
    path: str | Path, start_ms: int, end_ms: int, sample_rate_hz: int
) -> tuple[np.ndarray, int, int]:
    """Read ``[start_ms, end_ms)`` of an audio file at ``sample_rate_hz`` (polyphase resampling, scipy's
    ``resample_poly`` with its Kaiser window, when the file's rate differs; ``sample_rate_hz`` 0 keeps it).

    ``RESAMPLE_PAD_MS`` of context is read each side and trimmed after resampling, so a clip cut from a long track
    sounds as the track does at its edges, and memory stays bounded by the span.

    Returns:
        ``(samples, rate_hz, source_rate_hz)``; samples float32 ``(n,)`` or ``(n, channels)``, exactly
        ``ms_to_sample(end_ms, rate) - ms_to_sample(start_ms, rate)`` long (zero-padded past the file's end).
    """
    from math import gcd

    info = sf.info(str(path))
    src = info.samplerate
    rate = sample_rate_hz or src
    n_out = ms_to_sample(end_ms, rate) - ms_to_sample(start_ms, rate)
    if rate == src:
        data, _ = load_audio(path, start_ms=start_ms, end_ms=end_ms)
    else:
        from scipy.signal import resample_poly

        pad_lo = min(RESAMPLE_PAD_MS, start_ms)
        raw, _ = load_audio(path, start_ms=start_ms - pad_lo, end_ms=end_ms + RESAMPLE_PAD_MS)
        g = gcd(rate, src)
        data = resample_poly(raw, rate // g, src // g, axis=0).astype(np.float32)
        lo = ms_to_sample(pad_lo, rate)
        data = data[lo : lo + n_out]
    if len(data) < n_out:
        data = np.pad(data, [(0, n_out - len(data))] + [(0, 0)] * (data.ndim - 1))
    return np.ascontiguousarray(data[:n_out], dtype=np.float32), rate, src


def encode_flac(samples: np.ndarray, sample_rate_hz: int) -> bytes:
    """Encode float32 samples (``(n,)`` or ``(n, channels)``) as 16-bit FLAC bytes."""
    import io

    buf = io.BytesIO()
    sf.write(buf, samples, sample_rate_hz, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def write_flac(path: str | Path, samples: np.ndarray, sample_rate_hz: int) -> Path:
    """Write float32 samples (``(n,)`` or ``(n, channels)``, clipped to [-1, 1]) to a 16-bit FLAC file atomically."""
    with atomic_path(path, keep_suffix=True) as tmp:
        sf.write(str(tmp), samples, sample_rate_hz, format="FLAC", subtype="PCM_16")
    return Path(path)


def mux_video_audio(video: str | Path, audio: str | Path, out_path: str | Path) -> Path:
    """Mux the video stream of ``video`` with the audio of ``audio`` (video copied, audio AAC, shortest wins).

    Used for sources whose picture and sound come as separate files (``zh_tvdrama``).

    Raises:
        MediaError: a file is missing or ffmpeg cannot read or write it (the reason names the file).
    """
    video, audio, out_path = Path(video).absolute(), Path(audio).absolute(), Path(out_path)
    for p in (video, audio):
        if not p.is_file():
            raise MediaError(p, "mux: file not found")
    with atomic_path(out_path, keep_suffix=True) as tmp:
        v = ffmpeg.input(str(video)).video
        a = ffmpeg.input(str(audio)).audio
        try:
            ffmpeg.output(v, a, str(tmp), vcodec="copy", acodec="aac", shortest=None).global_args(
                "-v", "error").overwrite_output().run(capture_stdout=True, capture_stderr=True)
        except ffmpeg.Error as e:
            raise MediaError(video, f"mux with {audio.name} failed ({_ffmpeg_reason(video, e.stderr, 'ffmpeg error')})") from None
    return out_path


__all__ = [
    "ASR_SAMPLE_RATE_HZ",
    "count_decode_errors",
    "encode_flac",
    "extract_audio",
    "extract_audio_tracks",
    "load_audio",
    "load_audio_at",
    "mux_video_audio",
    "probe",
    "write_flac",
]
