"""pyannote.audio 4.x speaker diarization from a local folder, converted to :class:`DiarizationResult`.

Production default where its weights are present: ``pyannote/speaker-diarization-community-1`` (powerset
segmentation + WeSpeaker ResNet34 embeddings + PLDA/VBx clustering; DER 11.2 % VoxConverse, 44.6 % AVA-AVD movies, per
its model card). ``Pipeline.from_pretrained(<folder>)`` resolves ``$model/<sub>`` entries of the folder's
``config.yaml`` to its sub-folders, so nothing is downloaded. The audio is passed in memory as
``{"waveform": (1, n) tensor, "sample_rate": sr}``, so the vocals are decoded once.

pyannote 4.x returns ``DiarizeOutput(speaker_diarization, exclusive_speaker_diarization, speaker_embeddings)``; an
older ``Annotation`` (``legacy=True`` or 3.x) is accepted too, and its exclusive turns are derived by
:func:`exclusive_from_turns`.
"""

from __future__ import annotations

import os

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # pyannote telemetry is on by default

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from cinedub.diarization.config import DiarizationConfig
from cinedub.diarization.records import DiarizationResult, OverlapRegion, SpeakerEmbedding
from cinedub.errors import ModelNotFoundError
from cinedub.types import Turn

REQUIRED_FILES = (
    "config.yaml",
    "segmentation/pytorch_model.bin",
    "embedding/pytorch_model.bin",
    "plda/xvec_transform.npz",
    "plda/plda.npz",
)


def check_folder(folder: str | Path) -> Path:
    """Raise :class:`ModelNotFoundError` naming the missing files unless ``folder`` has the community-1 layout."""
    folder = Path(folder)
    missing = [f for f in REQUIRED_FILES if not (folder / f).is_file()]
    if missing:
        raise ModelNotFoundError(
            f"pyannote pipeline folder {folder} lacks {', '.join(missing)}; download "
            "pyannote/speaker-diarization-community-1 (gated: accept its terms, then "
            f"`huggingface-cli download pyannote/speaker-diarization-community-1 --local-dir {folder}`)"
        )
    return folder


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def annotation_turns(annotation: Any) -> list[tuple[int, int, str]]:
    """``(start_ms, end_ms, label)`` of every track of a pyannote ``Annotation``, time-sorted."""
    out = [(_ms(seg.start), _ms(seg.end), str(label)) for seg, _, label in annotation.itertracks(yield_label=True)]
    return sorted((a, b, lab) for a, b, lab in out if b > a)


def overlap_regions(turns: list[Turn]) -> list[OverlapRegion]:
    """Regions where two or more speakers' turns intersect (ms sweep over turn boundaries)."""
    events = sorted({t.start_ms for t in turns} | {t.end_ms for t in turns})
    out: list[OverlapRegion] = []
    for a, b in zip(events, events[1:]):
        who = tuple(sorted({t.speaker_id for t in turns if t.start_ms < b and a < t.end_ms}))
        if len(who) >= 2:
            if out and out[-1].end_ms == a and out[-1].speaker_ids == who:
                out[-1] = OverlapRegion(out[-1].start_ms, b, who)
            else:
                out.append(OverlapRegion(a, b, who))
    return out


def mark_overlap(turns: list[Turn], overlaps: list[OverlapRegion]) -> list[Turn]:
    """Set ``Turn.overlap`` on turns that share time with an overlap region they take part in."""
    out = []
    for t in turns:
        hit = any(t.speaker_id in o.speaker_ids and o.start_ms < t.end_ms and t.start_ms < o.end_ms for o in overlaps)
        out.append(replace(t, overlap=hit))
    return out


def exclusive_from_turns(turns: list[Turn]) -> list[Turn]:
    """One speaker at a time: in overlapped time the speaker already talking keeps the floor (earliest turn start,
    then the longest turn). Used only when the back-end gives no exclusive diarization."""
    events = sorted({t.start_ms for t in turns} | {t.end_ms for t in turns})
    pieces: list[Turn] = []
    for a, b in zip(events, events[1:]):
        live = [t for t in turns if t.start_ms <= a and b <= t.end_ms]
        if not live:
            continue
        win = min(live, key=lambda t: (t.start_ms, -(t.end_ms - t.start_ms), t.speaker_id))
        if pieces and pieces[-1].speaker_id == win.speaker_id and pieces[-1].end_ms == a:
            pieces[-1] = Turn(pieces[-1].start_ms, b, win.speaker_id)
        else:
            pieces.append(Turn(a, b, win.speaker_id))
    return pieces


def result_from_pyannote(
    output: Any, *, duration_ms: int, method: str, embedding_model: str = "", speaker_prefix: str = ""
) -> DiarizationResult:
    """Convert a pyannote ``DiarizeOutput`` (4.x) or a bare ``Annotation`` into a :class:`DiarizationResult`.

    Speaker labels ("SPEAKER_00", ...) become ``"<prefix>-S00"`` ids in order of first appearance; embeddings
    (rows in ``speaker_diarization.labels()`` order) follow the same mapping.
    """
    diar = getattr(output, "speaker_diarization", output)
    excl = getattr(output, "exclusive_speaker_diarization", None)
    vectors = getattr(output, "speaker_embeddings", None)
    raw = annotation_turns(diar)
    order: list[str] = []
    for _, _, lab in raw:
        if lab not in order:
            order.append(lab)
    ids = {lab: (f"{speaker_prefix}-S{i:02d}" if speaker_prefix else f"S{i:02d}") for i, lab in enumerate(order)}
    turns = [Turn(a, b, ids[lab]) for a, b, lab in raw]
    overlaps = overlap_regions(turns)
    turns = mark_overlap(turns, overlaps)
    if excl is not None:
        exclusive = [Turn(a, b, ids[lab]) for a, b, lab in annotation_turns(excl) if lab in ids]
    else:
        exclusive = exclusive_from_turns(turns)
    speech = _union_ms([(t.start_ms, t.end_ms) for t in turns])
    embeddings: list[SpeakerEmbedding] = []
    if vectors is not None and len(vectors):
        labels = [str(x) for x in diar.labels()]
        for lab in order:
            row = np.asarray(vectors[labels.index(lab)], dtype=np.float32)
            if not np.all(np.isfinite(row)):
                continue  # pyannote pads speakers without a centroid with zeros/NaN
            embeddings.append(
                SpeakerEmbedding(
                    speaker_id=ids[lab],
                    model=embedding_model,
                    dim=int(row.shape[0]),
                    speech_ms=_union_ms([(t.start_ms, t.end_ms) for t in turns if t.speaker_id == ids[lab]]),
                    vector=tuple(round(float(x), 6) for x in row),
                )
            )
    return DiarizationResult(
        method=method,
        duration_ms=duration_ms,
        num_speakers=len(order),
        speaker_ids=tuple(ids[lab] for lab in order),
        turns=tuple(sorted(turns, key=lambda t: (t.start_ms, t.speaker_id))),
        exclusive_turns=tuple(exclusive),
        overlaps=tuple(overlaps),
        embeddings=tuple(embeddings),
        speech_ms=speech,
    )


def _union_ms(spans: list[tuple[int, int]]) -> int:
    total, cur_a, cur_b = 0, None, None
    for a, b in sorted(spans):
        if cur_b is None or a > cur_b:
            if cur_b is not None:
                total += cur_b - cur_a
            cur_a, cur_b = a, b
        else:
            cur_b = max(cur_b, b)
    if cur_b is not None:
        total += cur_b - cur_a
    return total


class PyannoteDiarizer:
    """pyannote.audio ``SpeakerDiarization`` loaded once from a local folder.

    Args:
        folder: laid out like ``pyannote/speaker-diarization-community-1`` (see :data:`REQUIRED_FILES`).
        cfg: diarization configuration (batch sizes, speaker bounds).
        device: "cpu" or "cuda[:N]".

    Raises:
        ModelNotFoundError: a required file is missing.
    """

    def __init__(self, folder: str | Path, cfg: DiarizationConfig | None = None, device: str = "cpu"):
        import torch
        from pyannote.audio import Pipeline

        self.cfg = cfg or DiarizationConfig()
        self.folder = check_folder(folder)
        pipeline = Pipeline.from_pretrained(self.folder)
        if pipeline is None:
            raise ModelNotFoundError(f"pyannote could not load a pipeline from {self.folder}")
        pc = self.cfg.pyannote
        if pc.segmentation_batch_size:
            pipeline.segmentation_batch_size = pc.segmentation_batch_size
        if pc.embedding_batch_size:
            pipeline.embedding_batch_size = pc.embedding_batch_size
        pipeline.to(torch.device(device))
        self.pipeline = pipeline
        self.method = f"pyannote:{self.folder.name}"

    def diarize(self, wav: np.ndarray, sample_rate_hz: int, *, speaker_prefix: str = "") -> DiarizationResult:
        """Diarize a mono recording held in memory (``(n_samples,)`` float32; pyannote resamples if needed)."""
        import torch

        from cinedub.diarization.offline import torch_threads

        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim != 1:
            raise ValueError(f"pyannote diarization needs mono audio, got shape {wav.shape}")
        lo, hi = self.cfg.speaker_bounds()
        kwargs: dict[str, int] = {}
        if self.cfg.num_speakers is not None:
            kwargs["num_speakers"] = self.cfg.num_speakers
        else:
            if self.cfg.min_speakers is not None:
                kwargs["min_speakers"] = lo
            if self.cfg.max_speakers is not None:
                kwargs["max_speakers"] = hi
        with torch_threads(self.cfg.num_threads):
            output = self.pipeline({"waveform": torch.from_numpy(wav)[None], "sample_rate": sample_rate_hz}, **kwargs)
        return result_from_pyannote(
            output,
            duration_ms=int(round(len(wav) * 1000 / sample_rate_hz)),
            method=self.method,
            embedding_model=f"pyannote:{self.folder.name}/embedding",
            speaker_prefix=speaker_prefix,
        )
