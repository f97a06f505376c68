"""Ingest: probe one input file and extract its first audio stream once, on the source timeline.

Two FLAC files come out of one ffmpeg decode, in the step's artifacts folder (:func:`cinedub.media.extract_audio_tracks`):

- ``mix_16k.flac``: mono 16 kHz, the input of ASR, VAD and diarization (Whisper and pyannote both expect 16 kHz).
- ``mix_full.flac``: the native sample rate, stereo or mono as the source (more than two channels are downmixed
  to stereo with ffmpeg's standard matrix, centre channel included, because demucs only reads the first two
  channels and film dialogue lives in the centre of a 5.1 mix). Input of vocal separation and the shard's mix.

Both are padded with silence or trimmed to exactly ``round(duration_ms * rate / 1000)`` samples, and start at source
time 0 (an audio stream that starts late is padded at the start), so a sample index converts to source ms with
:func:`cinedub.timebase.sample_to_ms` alone.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

from cinedub.errors import MediaError
from cinedub.media import ASR_SAMPLE_RATE_HZ, extract_audio_tracks, probe
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.types import IngestResult, Record, Source

logger = logging.getLogger("cinedub.ingest")

MIX_16K_NAME = "mix_16k.flac"
MIX_FULL_NAME = "mix_full.flac"
MAX_MIX_CHANNELS = 2


class IngestStage(Stage):
    """Probe a media file and extract its audio (CPU, ffmpeg).

    Example::

        result = get_stage(IngestStage, cfg).ingest(Path("ep01.mp4"), work_dir)
    """

    name: ClassVar[str] = "ingest"
    version: ClassVar[str] = "2"  # v2: nominal frame rate of VFR sources, corrupt audio packets counted
    output: ClassVar[str] = "ingest"
    record: ClassVar[type[Record]] = IngestResult
    config_sections: ClassVar[tuple[str, ...]] = ()
    resources: ClassVar[Resources] = Resources(cpus=1)

    def process(self, ctx: StageContext) -> IngestResult:
        """Probe ``ctx.source_path`` (with the run's hash) and extract its audio into ``ctx.artifacts_dir``."""
        return self.ingest(ctx.source_path, ctx.artifacts_dir, require_video=True, sha256=ctx.sha256)

    def ingest(
        self,
        path: str | Path,
        work_dir: str | Path,
        *,
        require_video: bool = True,
        sha256: str | None = None,
        source: Source | None = None,
    ) -> IngestResult:
        """Probe ``path`` and write ``mix_16k.flac`` and ``mix_full.flac`` into ``work_dir`` (created if missing).

        Files are written under temporary names and renamed, so a failure leaves nothing half-written, and a
        rerun overwrites the same names.

        Args:
            path: the media file.
            work_dir: folder for the audio files.
            require_video: fail on audio-only inputs (the film/TV pipeline needs frames).
            sha256: the file's content hash when already known (skips a second read of the file).
            source: the :class:`Source` of an earlier :func:`cinedub.media.probe` of the same file (skips probing).

        Raises:
            MediaError: the file is not usable (message names the file and the reason).
        """
        path = Path(path)
        if source is None:
            source = probe(path, require_video=require_video, require_audio=True, sha256=sha256)
        elif require_video and not source.has_video:
            raise MediaError(path, "no video stream")
        if not source.audio_streams:
            raise MediaError(path, "no audio stream (speech is needed for ASR)")
        stream = source.audio_streams[0]
        if stream.sample_rate_hz <= 0 or stream.channels <= 0:
            raise MediaError(path, f"audio stream {stream.index} has no sample rate or channel count")
        channels = min(stream.channels, MAX_MIX_CHANNELS)
        work_dir = Path(work_dir)
        report: dict[str, int] = {}
        mix_16k, mix_full = extract_audio_tracks(
            path,
            [
                (work_dir / MIX_16K_NAME, ASR_SAMPLE_RATE_HZ, 1),
                (work_dir / MIX_FULL_NAME, stream.sample_rate_hz, channels),
            ],
            duration_ms=source.duration_ms,
            report=report,
        )
        if report.get("decode_errors"):
            logger.warning("%s: %d corrupt audio packets skipped (silence in their place)", path,
                           report["decode_errors"])
        return IngestResult(
            source=source,
            mix_16k=str(mix_16k),
            mix_full=str(mix_full),
            full_rate_hz=stream.sample_rate_hz,
            channels=channels,
            audio_decode_errors=report.get("decode_errors", 0),
        )
