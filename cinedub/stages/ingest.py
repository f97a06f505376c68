"""Ingest: probe one input file and extract its first audio stream once, on the source timeline.

Two FLAC files come out of one ffmpeg decode (:func:`cinedub.media.extract_audio_tracks`):

- ``mix_16k.flac``: mono 16 kHz, the input of ASR, VAD and diarization (Whisper and pyannote both expect 16 kHz).
- ``mix_full.flac``: the native sample rate, stereo or mono as the source (more than two channels are downmixed
  to stereo with ffmpeg's standard matrix, centre channel included, because demucs only reads the first two
  channels and film dialogue lives in the centre of a 5.1 mix). Input of vocal separation and the shard's mix.

Both are padded with silence or trimmed to exactly ``round(duration_ms * rate / 1000)`` samples, and start at source
time 0 (an audio stream that starts late is padded at the start), so a sample index converts to source ms with
:func:`cinedub.timebase.sample_to_ms` alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cinedub.errors import MediaError
from cinedub.media import ASR_SAMPLE_RATE_HZ, extract_audio_tracks, probe
from cinedub.stages.base import Resources, Stage
from cinedub.types import AudioTracks, Record, Source

MIX_16K_NAME = "mix_16k.flac"
MIX_FULL_NAME = "mix_full.flac"
SOURCE_JSON_NAME = "source.json"
MAX_MIX_CHANNELS = 2


@dataclass(frozen=True)
class IngestResult(Record):
    """What ingest produced for one source.

    Attributes:
        source: the probed :class:`Source` (content hash, duration, fps, streams).
        mix_16k: path of the mono 16 kHz FLAC, ``round(duration_ms * 16)`` samples long.
        mix_full: path of the FLAC at ``full_rate_hz`` with ``channels`` channels.
        full_rate_hz: native sample rate of the first audio stream (Hz).
        channels: channels in ``mix_full`` (the source's, at most 2).
    """

    source: Source
    mix_16k: str
    mix_full: str
    full_rate_hz: int
    channels: int

    _nested: ClassVar[dict[str, type]] = {"source": Source}

    def unseparated_tracks(self) -> AudioTracks:
        """The :class:`AudioTracks` of a source that is not separated: the mix stands in for the vocals."""
        return AudioTracks(
            mix_16k=self.mix_16k,
            mix_full=self.mix_full,
            vocals_16k=self.mix_16k,
            separation="none",
            full_rate_hz=self.full_rate_hz,
        )


def write_source_json(source: Source, work_dir: str | Path) -> Path:
    """Write ``source`` to ``<work_dir>/source.json`` atomically; read it back with ``Source.from_json``."""
    return source.to_json(Path(work_dir) / SOURCE_JSON_NAME)


class IngestStage(Stage):
    """Probe a media file and extract its audio (CPU, ffmpeg).

    Example::

        stage = get_stage(IngestStage, cfg)
        result = stage.process(Path("ep01.mp4"), source_work_dir(cfg, out_dir, source_id))
    """

    name: ClassVar[str] = "ingest"
    version: ClassVar[str] = "1"
    config_sections: ClassVar[tuple[str, ...]] = ()
    resources: ClassVar[Resources] = Resources(cpus=1)

    def probe(self, path: str | Path, *, require_video: bool = True) -> Source:
        """Probe and hash ``path`` (see :func:`cinedub.media.probe`); audio is always required.

        Raises:
            MediaError: not media, truncated, no audio stream, or no video stream when ``require_video``.
        """
        return probe(path, require_video=require_video, require_audio=True)

    def process(
        self,
        path: str | Path,
        work_dir: str | Path,
        *,
        require_video: bool = True,
        source: Source | None = None,
    ) -> IngestResult:
        """Probe ``path`` (unless ``source`` is given) and write ``mix_16k.flac``, ``mix_full.flac`` and
        ``source.json`` into ``work_dir`` (this source's folder, e.g. :func:`cinedub.stages.base.source_work_dir`).

        Files are written under temporary names and renamed, so a failure leaves nothing half-written, and a
        rerun overwrites the same names.

        Args:
            path: the media file.
            work_dir: this source's intermediate folder (created if missing).
            require_video: fail on audio-only inputs (the film/TV pipeline needs frames).
            source: the :class:`Source` from an earlier :meth:`probe` of the same file (skips a second hash).

        Raises:
            MediaError: the file is not usable (message names the file and the reason).
        """
        path = Path(path)
        if source is None:
            source = self.probe(path, require_video=require_video)
        elif require_video and not source.has_video:
            raise MediaError(path, "no video stream")
        if not source.audio_streams:
            raise MediaError(path, "no audio stream (speech is needed for ASR)")
        stream = source.audio_streams[0]
        if stream.sample_rate_hz <= 0 or stream.channels <= 0:
            raise MediaError(path, f"audio stream {stream.index} has no sample rate or channel count")
        channels = min(stream.channels, MAX_MIX_CHANNELS)
        work_dir = Path(work_dir)
        mix_16k, mix_full = extract_audio_tracks(
            path,
            [
                (work_dir / MIX_16K_NAME, ASR_SAMPLE_RATE_HZ, 1),
                (work_dir / MIX_FULL_NAME, stream.sample_rate_hz, channels),
            ],
            duration_ms=source.duration_ms,
        )
        write_source_json(source, work_dir)
        return IngestResult(
            source=source,
            mix_16k=str(mix_16k),
            mix_full=str(mix_full),
            full_rate_hz=stream.sample_rate_hz,
            channels=channels,
        )
