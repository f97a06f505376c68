"""Typed result of audio diarization, shared by both back-ends (offline GE2E path and pyannote).

All times are integer ms on the timeline of the audio that was diarized (the source timeline when the input is the
source's ``AudioTracks.analysis_audio``). Speaker ids are ``"<prefix>-S00"``-style (``"S00"`` without a prefix), numbered by first
appearance, so they are stable for one source and one run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from cinedub.types import Record, Turn

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class OverlapRegion(Record):
    """A stretch where two or more speakers talk at once.

    Attributes:
        start_ms / end_ms: span (ms), ``start_ms < end_ms``.
        speaker_ids: the speakers active in it (at least two, sorted).
    """

    start_ms: int
    end_ms: int
    speaker_ids: tuple[str, ...]


@dataclass(frozen=True)
class SpeakerEmbedding(Record):
    """One speaker's voice embedding (the unit mean of its windows' or pyannote's centroid).

    Either ``vector`` holds the values inline, or ``npy_path`` names a ``(num_speakers, dim)`` float32 ``.npy``
    file whose row ``row`` it is (relative paths are relative to the JSON file's folder).

    Attributes:
        speaker_id: the speaker.
        model: embedding model ("ge2e:resemblyzer-ge2e", "pyannote:<folder>/embedding").
        dim: vector length (GE2E 256; WeSpeaker ResNet34 256).
        speech_ms: speech attributed to the speaker (ms), the evidence behind the vector.
    """

    speaker_id: str
    model: str
    dim: int
    speech_ms: int = 0
    vector: tuple[float, ...] = ()
    npy_path: str | None = None
    row: int | None = None


@dataclass(frozen=True)
class DiarizationResult(Record):
    """Who speaks when, from audio alone.

    Attributes:
        method: back-end and its parts, e.g. "offline:silero-vad+ge2e+ahc" or "pyannote:speaker-diarization-community-1".
        duration_ms: length of the diarized audio (ms).
        num_speakers: distinct speakers found (``len(speaker_ids)``).
        speaker_ids: in order of first appearance.
        turns: every speaker's speech, overlapping where speakers overlap (``Turn.overlap`` set on turns that share
            time with another speaker), sorted by (start, speaker).
        exclusive_turns: one speaker at a time (overlap given to the dominant speaker): what ASR words are assigned
            from (pyannote's ``exclusive_speaker_diarization``).
        overlaps: regions with two or more speakers.
        embeddings: one per speaker, in ``speaker_ids`` order (may be empty if the back-end gives none).
        speech_ms: total speech (union of turns, ms).
    """

    method: str
    duration_ms: int
    num_speakers: int
    speaker_ids: tuple[str, ...]
    turns: tuple[Turn, ...]
    exclusive_turns: tuple[Turn, ...]
    overlaps: tuple[OverlapRegion, ...] = ()
    embeddings: tuple[SpeakerEmbedding, ...] = ()
    speech_ms: int = 0

    _nested: ClassVar[dict[str, type]] = {
        "turns": Turn,
        "exclusive_turns": Turn,
        "overlaps": OverlapRegion,
        "embeddings": SpeakerEmbedding,
    }

    def __post_init__(self) -> None:
        from cinedub.validate import validate

        validate(self)

    @property
    def overlap_ms(self) -> int:
        """Total overlapped time (ms)."""
        return sum(o.end_ms - o.start_ms for o in self.overlaps)

    def turns_of(self, speaker_id: str, *, exclusive: bool = False) -> list[Turn]:
        """Turns of one speaker, in time order."""
        return [t for t in (self.exclusive_turns if exclusive else self.turns) if t.speaker_id == speaker_id]

    def embedding_matrix(self, json_dir: str | Path | None = None) -> "np.ndarray":
        """``(num_speakers, dim)`` float32 embeddings in ``speaker_ids`` order (inline values or the ``.npy`` rows).

        Args:
            json_dir: folder that relative ``npy_path`` values are relative to.

        Raises:
            ValueError: no embeddings recorded.
        """
        import numpy as np

        if not self.embeddings:
            raise ValueError("no speaker embeddings in this result")
        rows = []
        cache: dict[str, np.ndarray] = {}
        for e in self.embeddings:
            if e.vector:
                rows.append(np.asarray(e.vector, dtype=np.float32))
                continue
            path = Path(e.npy_path or "")
            if not path.is_absolute() and json_dir is not None:
                path = Path(json_dir) / path
            if str(path) not in cache:
                cache[str(path)] = np.load(path)
            rows.append(cache[str(path)][e.row or 0].astype(np.float32))
        return np.stack(rows)


def save_npy_atomic(path: str | Path, array: "np.ndarray") -> Path:
    """``np.save`` to ``path`` atomically (:func:`cinedub.atomic.atomic_path`)."""
    import numpy as np

    from cinedub.atomic import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, array)
    return Path(path)
