"""Typed records of the CineDub domain: small, frozen, on integer milliseconds of the source timeline.

Linked by id, in the spirit of Lhotse (Recording / Supervision / Cut) and pyannote (Segment / Annotation):

- :class:`Source`: one input media file (an episode), identified by the SHA-256 of its content.
- :class:`Word` / :class:`AsrSegment` / :class:`Transcript`: what faster-whisper heard, with word times.
- :class:`Shot`: a run of frames between two cuts (PySceneDetect), in frames and ms.
- :class:`Turn`: a stretch of one speaker's speech (diarization), optionally tied to a face track.
- :class:`Clip`: the window a trainer reads, 2-30 s of speech cut from one source.

Every record round-trips through plain dicts (``to_dict`` / ``from_dict``) so stages can exchange small JSON files
(never arrays) between Prefect tasks.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar, TypeVar, get_type_hints

T = TypeVar("T", bound="Record")


def encode(value: Any) -> Any:
    """Plain JSON-able form of ``value``: records as dicts, fractions as ``"num/den"``, tuples as lists."""
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, Fraction):
        return f"{value.numerator}/{value.denominator}"
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


class Record:
    """Mixin: dict and JSON round-trips for the frozen dataclasses below."""

    # nested record fields: name -> record class (lists of records are declared the same way)
    _nested: ClassVar[dict[str, type]] = {}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: encode(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        kwargs: dict[str, Any] = {}
        hints = get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        for key, value in data.items():
            if key not in names:
                continue  # forward compatible: unknown keys from newer writers are ignored
            sub = cls._nested.get(key)
            if sub is not None and value is not None:
                value = [sub.from_dict(v) for v in value] if isinstance(value, list) else sub.from_dict(value)
                if isinstance(value, list):
                    value = tuple(value)
            elif "Fraction" in str(hints.get(key, "")) and isinstance(value, str):
                num, den = value.split("/")
                value = Fraction(int(num), int(den))
            elif isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
            kwargs[key] = value
        return cls(**kwargs)

    def outcome(self) -> tuple[str, str] | None:
        """``(status, reason)`` when this record ends its source's run early (e.g. no speech), else None: the
        runner then skips the remaining stages and reports the status."""
        return None

    def to_json(self, path: str | Path) -> Path:
        """Write the record as JSON atomically (:func:`cinedub.atomic.write_json_atomic`)."""
        from cinedub.atomic import write_json_atomic

        return write_json_atomic(path, self.to_dict())

    @classmethod
    def from_json(cls: type[T], path: str | Path) -> T:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


@dataclass(frozen=True)
class AudioStream(Record):
    """One audio stream of a media file as ffprobe reports it.

    Attributes:
        index: stream index in the container.
        codec: codec name ("aac", "flac", ...).
        sample_rate_hz: native sample rate (Hz).
        channels: channel count.
        language: ISO 639 tag from the container, if any.
    """

    index: int
    codec: str
    sample_rate_hz: int
    channels: int
    language: str | None = None


@dataclass(frozen=True)
class Source(Record):
    """One input media file (an episode or film), probed.

    Attributes:
        source_id: first 16 hex digits of ``sha256`` (stable across machines and renames).
        path: where it was read from (informational; the content hash is the identity).
        sha256: SHA-256 of the file's bytes.
        episode: a human label (defaults to the file stem).
        duration_ms: container duration (ms).
        has_video / has_audio: stream presence.
        fps: exact nominal video frame rate (e.g. ``Fraction(24000, 1001)``, also for a 23.976 fps film with
            dropped frames: :func:`cinedub.timebase.pick_frame_rate`); None without video.
        variable_frame_rate: True when the container's nominal and average rates disagree (VFR source): frame times
            then come from decoded timestamps (``ShotList.frame_pts_ms``), never from ``index / fps``.
        n_frames: video frame count if known.
        width / height: display size in pixels **after** rotation.
        rotation_deg: display rotation from the container side data (0, 90, 180, 270).
        video_codec: e.g. "h264", "hevc".
        audio_streams: every audio stream; the first is used.
    """

    source_id: str
    path: str
    sha256: str
    episode: str
    duration_ms: int
    has_video: bool
    has_audio: bool
    fps: Fraction | None = None
    variable_frame_rate: bool = False
    n_frames: int | None = None
    width: int | None = None
    height: int | None = None
    rotation_deg: int = 0
    video_codec: str | None = None
    audio_streams: tuple[AudioStream, ...] = ()

    _nested: ClassVar[dict[str, type]] = {"audio_streams": AudioStream}


@dataclass(frozen=True)
class AudioTracks(Record):
    """Audio files extracted or separated from one source (all FLAC, all in the source timeline).

    Attributes:
        mix_16k: mono 16 kHz mix (input of ASR/VAD/diarization).
        mix_full: the first audio stream at its native rate (channels kept).
        vocals / accompaniment: separated stems at ``separated_rate_hz``; with ``separation == "none"`` both are
            None and consumers use the mix. demucs: its vocals stem and the sum of the others (model channels);
            DeepFilterNet: the enhanced speech (mono, 48 kHz) and the mix minus it (the mix's channels).
        vocals_16k: mono 16 kHz vocals (or the mix when not separated).
        separation: the back-end's provenance name ("demucs:<model>", "deepfilternet:DeepFilterNet3@<sha>") or
            "none".
        analysis_16k: the mono 16 kHz track the analysis stages listen to (ASR, VAD, diarization, ASD, lip/audio
            synchrony): ``vocals_16k`` or ``mix_16k`` per ``separation.analysis_audio``; empty in records written
            before it existed (then ``vocals_16k``). Read it through :attr:`analysis_audio`.
    """

    mix_16k: str
    mix_full: str
    vocals_16k: str
    separation: str
    vocals: str | None = None
    accompaniment: str | None = None
    separated_rate_hz: int | None = None
    full_rate_hz: int | None = None
    analysis_16k: str = ""

    @property
    def analysis_audio(self) -> str:
        """Path of the 16 kHz mono track ASR, diarization, ASD and synchrony use."""
        return self.analysis_16k or self.vocals_16k


@dataclass(frozen=True)
class IngestResult(Record):
    """What ingest produced for one source.

    Attributes:
        source: the probed :class:`Source` (content hash, duration, fps, streams).
        mix_16k: path of the mono 16 kHz FLAC, ``round(duration_ms * 16)`` samples long.
        mix_full: path of the FLAC at ``full_rate_hz`` with ``channels`` channels.
        full_rate_hz: native sample rate of the first audio stream (Hz).
        channels: channels in ``mix_full`` (the source's, at most 2).
        audio_decode_errors: corrupt audio packets ffmpeg skipped while extracting (silence in their place).
    """

    source: Source
    mix_16k: str
    mix_full: str
    full_rate_hz: int
    channels: int
    audio_decode_errors: int = 0

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


@dataclass(frozen=True)
class Word(Record):
    """One recognised word.

    Attributes:
        text: the word as written (leading space removed; Chinese normalised to the configured script).
        start_ms / end_ms: source timeline (ms), ``start_ms <= end_ms``.
        probability: faster-whisper's word probability in [0, 1].
        speaker_id: episode-wide speaker id, once diarization has run.
    """

    text: str
    start_ms: int
    end_ms: int
    probability: float
    speaker_id: str | None = None


@dataclass(frozen=True)
class AsrSegment(Record):
    """One faster-whisper segment (roughly a sentence) with its words and quality signals.

    Attributes:
        avg_logprob: mean token log-probability; no_speech_prob: Whisper's no-speech probability;
        compression_ratio: gzip ratio of the text (high values flag repetition loops).
        temperature: the decoding temperature that produced it (0 = beam search; above 0 = Whisper's fallback
            sampling, used when the beam result failed the compression-ratio or log-probability threshold).
    """

    text: str
    start_ms: int
    end_ms: int
    words: tuple[Word, ...]
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    temperature: float = 0.0

    _nested: ClassVar[dict[str, type]] = {"words": Word}


@dataclass(frozen=True)
class DecodingSettings(Record):
    """How ASR decoded, recorded so a transcript can be reproduced and audited.

    Attributes:
        beam_size: beam width at temperature 0.
        temperatures: the fallback schedule (OpenAI Whisper's ``transcribe``: 0.0, 0.2, ..., 1.0).
        seed: the sampling seed of the fallback (CTranslate2's ``set_random_seed``), derived from the source's
            content hash unless configured, so the same input decodes the same on every run of a machine.
        batch_size: 1 = sequential decoding (with fallback); >1 = faster-whisper's batched pipeline (no fallback).
        cpu_threads: intra-op threads (CPU float reductions depend on the count).
        compute_type: CTranslate2 compute type ("int8", "float16", ...).
        fallback_segments: segments decoded at a temperature above 0.
    """

    beam_size: int
    temperatures: tuple[float, ...]
    seed: int
    batch_size: int
    cpu_threads: int
    compute_type: str
    fallback_segments: int = 0


@dataclass(frozen=True)
class Transcript(Record):
    """ASR output for one source.

    Attributes:
        language: ISO 639-1 code detected over all of Whisper's languages (never a translation target); None
            without speech.
        language_probability: the detector's averaged probability of that language.
        segments: in time order.
        model: model name/folder; dropped: human-readable notes on segments removed by hallucination guards.
        decoding: the decoding settings used (None in transcripts written before they were recorded).
        status / status_reason: "ok", or "no_speech" / "skipped_language" (see :mod:`cinedub.ops.language`) and why.
        speech_ms: ``(start_ms, end_ms)`` spans of detected speech in the transcribed audio (Silero VAD, 30 ms of
            padding, pauses of 100 ms split: :func:`cinedub.diarization.vad.speech_regions`), sorted and disjoint;
            clip edges and the speech-coverage report come from them.
        guarded_ms: ``(start_ms, end_ms)`` of each segment the hallucination guards dropped (``dropped`` says why).
    """

    language: str | None
    language_probability: float
    segments: tuple[AsrSegment, ...]
    model: str = ""
    dropped: tuple[str, ...] = ()
    decoding: DecodingSettings | None = None
    status: str = "ok"
    status_reason: str = ""
    speech_ms: tuple[tuple[int, int], ...] = ()
    guarded_ms: tuple[tuple[int, int], ...] = ()

    _nested: ClassVar[dict[str, type]] = {"segments": AsrSegment, "decoding": DecodingSettings}

    def outcome(self) -> tuple[str, str] | None:
        """("no_speech" | "skipped_language", reason) when the source has nothing to transcribe or is skipped."""
        if self.status != "ok":
            return self.status, self.status_reason
        if not any(s.words for s in self.segments):
            why = f"{len(self.dropped)} segment(s) dropped by the hallucination guards" if self.dropped else \
                "no words recognised"
            return "no_speech", why
        return None

    @property
    def words(self) -> list[Word]:
        return [w for s in self.segments for w in s.words]

    @property
    def text(self) -> str:
        sep = "" if self.language in {"zh", "ja", "yue"} else " "
        return sep.join(s.text.strip() for s in self.segments).strip()


@dataclass(frozen=True)
class Shot(Record):
    """Frames ``[start_frame, end_frame)`` between two cuts; ``start_ms``/``end_ms`` are their presentation times.

    Follows PySceneDetect's convention that a cut's timecode is the **first frame of the new shot**.
    """

    index: int
    start_frame: int
    end_frame: int
    start_ms: int
    end_ms: int


@dataclass(frozen=True)
class ShotList(Record):
    """All shots of a source plus the detector used. ``cuts`` = start frames of every shot but the first.

    Attributes:
        fps: the source's nominal rate; n_frames: frames decoded (0-based decode order indexes them).
        frame_pts_ms: presentation time (integer ms, increasing) of every decoded frame, recorded when the frames
            are not evenly spaced at ``fps`` (variable frame rate, frames dropped or lost to corrupt data); empty
            when ``frame_to_ms(i, fps)`` gives every frame's time (within 1 ms). Frame spans of clips and face
            indices come from it (:func:`cinedub.timebase.frame_span_pts`).
        frames_lost: frames the container declares (``Source.n_frames``) that could not be decoded (0 when the
            container does not say how many it holds).
    """

    fps: Fraction
    n_frames: int
    shots: tuple[Shot, ...]
    detector: str = "adaptive"
    frame_pts_ms: tuple[int, ...] = ()
    frames_lost: int = 0

    _nested: ClassVar[dict[str, type]] = {"shots": Shot}

    @property
    def cut_frames(self) -> list[int]:
        return [s.start_frame for s in self.shots[1:]]

    @property
    def cut_ms(self) -> list[int]:
        return [s.start_ms for s in self.shots[1:]]


@dataclass(frozen=True)
class Turn(Record):
    """A stretch of speech by one speaker (diarization), in ms of the source timeline.

    Attributes:
        speaker_id: stable across the whole source ("<source_id>-S00" style).
        on_screen: True if a visible face speaks it, False if off screen, None if unknown (no visual stage).
        face_track_id: the speaking face track, if any.
        overlap: True if another speaker talks at the same time for part of the turn.
        face_identity_id: the face identity of ``face_track_id`` across shots ("<source_id>-F00" style), if known.
        attribution_confidence: posterior (0..1) of the audio-visual decision behind ``on_screen``: that the face
            speaks (True) or that no visible face does (False); None when no decision was made.
        attribution_cue: the cue that decided ``on_screen`` ("asd", "sync", "identity", "no_face"), None if undecided.
        attribution_reason: why ``on_screen`` is None ("ambiguous", "weak", "listener", "unscored", "too_short",
            "overlap"); None when decided (:mod:`cinedub.ops.attribution`).
    """

    start_ms: int
    end_ms: int
    speaker_id: str
    on_screen: bool | None = None
    face_track_id: str | None = None
    overlap: bool = False
    face_identity_id: str | None = None
    attribution_confidence: float | None = None
    attribution_cue: str | None = None
    attribution_reason: str | None = None


@dataclass(frozen=True)
class Clip(Record):
    """A training example's window: ``[start_ms, end_ms)`` of one source, never cutting a word.

    Attributes:
        clip_id: deterministic ``uuid5`` of (source sha256, start_ms, end_ms), so a rerun yields the same ids.
        source_id: the :class:`Source` it comes from.
        index: position among the source's clips.
        words: the words inside, times in the **source** timeline.
        shot_boundaries_ms: cut times strictly inside the clip (source timeline, ms).
        start_frame / end_frame: the video frames on screen during the clip (``[start, end)``, 0-based decode order,
            half a millisecond of rounding allowed at each edge: see :func:`cinedub.ops.segment.frame_span`), None for
            audio-only sources.
        cut_reason: why the clip ends where it does: the merits of the gap it ends in, joined by "+" in the order
            "sentence", "pause", "speaker", "shot" / "near_shot" (e.g. "sentence+pause+shot"); "max_length" for a gap
            with none, cut only because the clip would be too long; "silence" when it closes a stretch of speech
            followed by 5 s or more of silence; "end" when it closes the source's last stretch of speech.
    """

    clip_id: str
    source_id: str
    index: int
    start_ms: int
    end_ms: int
    words: tuple[Word, ...]
    shot_boundaries_ms: tuple[int, ...] = ()
    start_frame: int | None = None
    end_frame: int | None = None
    cut_reason: str = ""
    turns: tuple[Turn, ...] = field(default_factory=tuple)

    _nested: ClassVar[dict[str, type]] = {"words": Word, "turns": Turn}

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    @property
    def text(self) -> str:
        return join_words([w.text for w in self.words])


@dataclass(frozen=True)
class SkippedSpeech(Record):
    """Speech the segmentation left out of every clip, and why (reported per source, never silently lost).

    Attributes:
        start_ms / end_ms: the span (source timeline, ms).
        n_words: ASR words in it.
        reason: "short", "long", "overlap", "after_end" (see :class:`cinedub.ops.segment.DroppedSpan`); for detected
            speech outside every clip also "guard" and "no_words" (:mod:`cinedub.ops.coverage`).
    """

    start_ms: int
    end_ms: int
    n_words: int
    reason: str


@dataclass(frozen=True)
class ClipList(Record):
    """The clips of one source, in time order, and the speech left out of them.

    Attributes:
        dropped: word spans the segmentation could not put into any clip, with the reason.
        speech_ms / speech_in_clips_ms / speech_reported_ms: detected speech (``Transcript.speech_ms``), the part of
            it inside clips, and the part outside listed in ``uncovered`` (:mod:`cinedub.ops.coverage`).
        uncovered: stretches of detected speech outside every clip, each with its reason.
    """

    source_id: str
    clips: tuple[Clip, ...]
    dropped: tuple[SkippedSpeech, ...] = ()
    speech_ms: int = 0
    speech_in_clips_ms: int = 0
    speech_reported_ms: int = 0
    uncovered: tuple[SkippedSpeech, ...] = ()

    _nested: ClassVar[dict[str, type]] = {"clips": Clip, "dropped": SkippedSpeech, "uncovered": SkippedSpeech}

    def speech_report(self) -> dict:
        """Per-source summary for the run report: the shares (0..1) of detected speech in clips and in clips or
        reported, and the uncovered stretches with their reasons."""
        total = self.speech_ms
        return {
            "detected_ms": total,
            "in_clips": round(self.speech_in_clips_ms / total, 4) if total else None,
            "in_clips_or_reported": round((self.speech_in_clips_ms + self.speech_reported_ms) / total, 4)
            if total else None,
            "uncovered": [u.to_dict() for u in self.uncovered],
        }


@dataclass(frozen=True)
class ShardSet(Record):
    """The Parquet shards one source's clips were written to (paths absolute), and how many rows."""

    source_id: str
    shards: tuple[str, ...]
    rows: int = 0


def join_words(words: list[str]) -> str:
    """Join word texts: no separator between CJK characters, a space elsewhere."""
    out = ""
    for w in words:
        w = w.strip()
        if not w:
            continue
        if out and not (_is_cjk(out[-1]) or _is_cjk(w[0])) and w[0] not in ",.!?;:%)'\"":
            out += " "
        out += w
    return out


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3000 <= code <= 0x30FF
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xF900 <= code <= 0xFAFF
        or 0xFF00 <= code <= 0xFFEF
    )
