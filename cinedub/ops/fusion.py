"""Audio-visual fusion of speaker turns: the audio diarization plus the face evidence -> the timeline of the shards.

:func:`fuse_av` is the entry point (pure: it reads the records' Parquet/audio files and writes nothing):

1. **Hygiene** (:mod:`cinedub.ops.turn_hygiene`): turns under ``min_turn_ms`` are absorbed, one speaker's turns
   never overlap, a hand-over smeared across a hard cut is moved onto the cut, and turns are cut at the shots
   (a turn's face lies in its shot).
2. **Evidence** (:mod:`cinedub.ops.av_evidence`): per piece (exclusive turn inside one shot) and face track of that
   shot present in it: Light-ASD log-odds and margin, lip/audio synchrony (:mod:`cinedub.vision.av_sync`), the
   track's face identity (:mod:`cinedub.vision.identity`).
3. **Decision** (:mod:`cinedub.ops.attribution`): voices linked to identities over the whole source, merges and
   splits through faces only on strong evidence, then per piece a face, off screen, or None with the reason;
   every piece records its confidence and the deciding cue.

Speaker ids stay per source (``<source_id>-S00`` ...); a voice split off gets the next free number.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np

from cinedub.diarization.records import DiarizationResult
from cinedub.ops.attribution import TurnAttribution
from cinedub.ops.voice_links import VoiceChange, VoiceLink, attribute
from cinedub.ops.av_config import AvConfig
from cinedub.ops.av_evidence import (add_asd, add_sync, co_visible_identities, make_pieces, read_asd_logodds,
                                     read_presence, sync_windows)
from cinedub.ops.turn_hygiene import (absorb_short_turns, handover_at_cuts, overlap_regions, shot_index_at,
                                      split_at_cuts, union_same_speaker)
from cinedub.types import Record, ShotList, Turn
from cinedub.vision.records import AsdResult, FaceIdentityResult, FaceTrack, FaceTrackList


@dataclasses.dataclass(frozen=True)
class FusionResult(Record):
    """What :func:`fuse_av` returns.

    Attributes:
        timeline: the fused diarization (method gets ``+av``): turns and exclusive turns cut at the shots, with
            ``on_screen``, ``face_track_id``, ``face_identity_id`` and the attribution fields.
        attributions: the decision and evidence of every exclusive piece (same order as ``timeline.exclusive_turns``).
        links: voice x identity link statistics (``linked``: chosen by the whole-source assignment).
        changes: merges and splits of voices made through faces.
        cues: the cues that ran ("asd", "sync", "identity").
        sync_wall_s: seconds spent on synchrony (reading lips and audio, correlations).
    """

    timeline: DiarizationResult
    attributions: tuple[TurnAttribution, ...] = ()
    links: tuple[VoiceLink, ...] = ()
    changes: tuple[VoiceChange, ...] = ()
    cues: tuple[str, ...] = ()
    sync_wall_s: float = 0.0

    _nested: ClassVar[dict[str, type]] = {"timeline": DiarizationResult, "attributions": TurnAttribution,
                                          "links": VoiceLink, "changes": VoiceChange}


def _speaker_id(prefix: str, n: int) -> str:
    return f"{prefix}-S{n:02d}" if prefix else f"S{n:02d}"


def _voice_distances(diar: DiarizationResult, json_dir: str | Path | None) -> dict[tuple[str, str], float]:
    """Cosine distance of every pair of speaker embeddings (empty without embeddings)."""
    if not diar.embeddings:
        return {}
    try:
        m = diar.embedding_matrix(json_dir)
    except (OSError, ValueError):
        return {}
    m = m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)
    ids = [e.speaker_id for e in diar.embeddings]
    sim = m @ m.T
    return {(a, b): float(1 - sim[i, j]) for i, a in enumerate(ids) for j, b in enumerate(ids) if i != j}


def _with_attribution(t: Turn, a: TurnAttribution | None) -> Turn:
    if a is None:
        return t
    return dataclasses.replace(t, speaker_id=a.speaker_id, on_screen=a.on_screen, face_track_id=a.face_track_id,
                               face_identity_id=a.face_identity_id, attribution_confidence=a.confidence,
                               attribution_cue=a.cue, attribution_reason=a.reason)


def _full_turns(turns: Sequence[Turn], attributions: Sequence[TurnAttribution], into: dict[str, str]) -> list[Turn]:
    """Full (overlapping) turn pieces take the speaker and attribution of the exclusive piece of the same audio
    cluster they overlap most; overlapped stretches without one keep the (merged) speaker, ``reason="overlap"``."""
    by_src: dict[str, list[TurnAttribution]] = {}
    for a in attributions:
        by_src.setdefault(a.source_speaker_id, []).append(a)
    out = []
    for t in turns:
        best, best_ov = None, 0
        for a in by_src.get(t.speaker_id, ()):
            ov = min(a.end_ms, t.end_ms) - max(a.start_ms, t.start_ms)
            if ov > best_ov:
                best, best_ov = a, ov
        if best is not None:
            out.append(_with_attribution(t, best))
        else:
            sid = into.get(t.speaker_id, t.speaker_id)
            out.append(dataclasses.replace(t, speaker_id=sid, attribution_reason="overlap"))
    return out


def fuse_av(
    diar: DiarizationResult,
    faces: FaceTrackList | None = None,
    asd: AsdResult | None = None,
    shots: ShotList | None = None,
    identities: FaceIdentityResult | None = None,
    audio_16k: str | Path | None = None,
    *,
    speaker_prefix: str = "",
    cfg: AvConfig | None = None,
    frames_path: str | Path | None = None,
    scores_path: str | Path | None = None,
    diar_json_dir: str | Path | None = None,
) -> FusionResult:
    """Fuse the audio diarization of one source with its face evidence (see the module docstring).

    Args:
        diar: the audio diarization of the whole source (speaker embeddings, if any, allow merges).
        faces: the faces stage's tracks (None: no visual stage ran; only hygiene is applied, ``on_screen`` None).
        asd: the ASD stage's result (its ``scores_path`` Parquet gives the per-frame log-odds); None: no ASD cue.
        shots: the source's shots (turns are cut at them; a face must lie in its turn's shot).
        identities: face identity per track (None: no identity cue, no links across shots).
        audio_16k: mono 16 kHz audio on the source timeline (None: no synchrony cue).
        speaker_prefix: ids of voices split off are ``<prefix>-S<nn>``; pass the source id.
        frames_path / scores_path: override ``faces.frames_path`` / ``asd.scores_path`` (moved work folders).
        diar_json_dir: folder that relative embedding ``.npy`` paths of ``diar`` are relative to.

    Returns:
        The fused timeline with per-piece attributions, voice links and voice changes.

    Raises:
        ValueError: the audio is not 16 kHz (from the synchrony cue).
    """
    cfg = cfg or AvConfig()
    cuts = shots.cut_ms if shots is not None else []
    starts = [s.start_ms for s in shots.shots] if shots is not None else []
    excl = union_same_speaker(absorb_short_turns(diar.exclusive_turns, cfg.min_turn_ms), touching=False)
    full = union_same_speaker(absorb_short_turns(diar.turns, cfg.min_turn_ms))
    full, excl = handover_at_cuts(full, excl, cuts, cfg.cut_overlap_max_ms)
    excl = absorb_short_turns(split_at_cuts(excl, cuts), cfg.min_turn_ms, cuts)
    full = absorb_short_turns(split_at_cuts(full, cuts), cfg.min_turn_ms, cuts)
    cues: list[str] = []
    attributions: list[TurnAttribution] = []
    links: list[VoiceLink] = []
    changes: list[VoiceChange] = []
    sync_s = 0.0
    if faces is not None:
        tracks: list[FaceTrack] = list(faces.tracks)
        ident = identities.identity_of() if identities is not None else {}
        fpath = frames_path or faces.frames_path
        presence = read_presence(fpath, [t.track_id for t in tracks])
        shot_of = (lambda ms: shot_index_at(ms, starts)) if starts else (lambda ms: None)
        pieces = make_pieces(excl, tracks, presence, shot_of, ident, fps=float(faces.fps), cfg=cfg)
        if asd is not None:
            add_asd(pieces, read_asd_logodds(scores_path or asd.scores_path, cfg), cfg)
            cues.append("asd")
        if audio_16k is not None:
            from cinedub.vision.av_sync import track_sync

            t0 = time.perf_counter()
            add_sync(pieces, track_sync(fpath, audio_16k, sync_windows(pieces), fps=float(faces.fps), cfg=cfg), cfg)
            sync_s = time.perf_counter() - t0
            cues.append("sync")
        if identities is not None:
            cues.append("identity")
        taken = set(diar.speaker_ids)
        counter = [len(taken)]

        def new_id() -> str:
            while _speaker_id(speaker_prefix, counter[0]) in taken:
                counter[0] += 1
            sid = _speaker_id(speaker_prefix, counter[0])
            taken.add(sid)
            return sid

        attributions, links, changes = attribute(
            pieces, cfg, voice_distance=_voice_distances(diar, diar_json_dir),
            co_visible=co_visible_identities(tracks, ident), new_speaker_id=new_id, cuts_ms=cuts)
        excl = [_with_attribution(t, a) for t, a in zip(excl, attributions)]
        into = {c.speaker_ids[0]: c.speaker_ids[1] for c in changes if c.kind == "merge"}
        full = _full_turns(full, attributions, into)
    full = [t for t in split_at_cuts(union_same_speaker(full), cuts)]
    full, overlaps = overlap_regions(full)
    ids = list(dict.fromkeys(t.speaker_id for t in sorted([*full, *excl], key=lambda t: (t.start_ms, t.speaker_id))))
    timeline = dataclasses.replace(
        diar, method=f"{diar.method}+av", num_speakers=len(ids), speaker_ids=tuple(ids), turns=tuple(full),
        exclusive_turns=tuple(excl), overlaps=tuple(overlaps),
        embeddings=tuple(e for e in diar.embeddings if e.speaker_id in ids),
    )
    return FusionResult(timeline, tuple(attributions), tuple(links), tuple(changes), tuple(cues), round(sync_s, 3))


def scene_type_candidates(turns: Sequence[Turn]) -> list[str]:
    """Scene types a clip's turns allow: no face speaking at all -> narration; else by speaker count
    (1 monologue, 2 dialogue, 3+ multi-speaker)."""
    speakers = {t.speaker_id for t in turns}
    if not turns:
        return []
    out = []
    if all(t.on_screen is False for t in turns):
        out.append("narration")
    out.append("monologue" if len(speakers) == 1 else "dialogue" if len(speakers) == 2 else "multi-speaker")
    return out
