"""Scored audio-visual attribution: which visible face speaks each turn, and which face each voice has.

Pure logic on small arrays (no model). For each turn piece (an exclusive turn inside one shot) and each face track
of that shot present in it, the cues are combined as log-likelihood ratios (LLR) of "this face speaks this piece"
against "nobody visible speaks it" (naive-Bayes fusion, the cues are measured independently):

- **Light-ASD**: the mean log-odds over the piece's frames (clipped: the network is over-confident, and at chance
  when two faces move their lips). Frames vetoed by the SyncNet check (when its weights are present) count as
  not speaking, as before.
- **Synchrony**: :mod:`cinedub.vision.av_sync`'s z mapped to an LLR (``AvConfig.sync_*``).
- **Identity**: from the voice-identity links of the whole source, leaving the piece itself out, so one clear shot
  decides the ambiguous ones: a face of the identity linked to the piece's voice gains up to
  ``identity_llr_max``; a face of another identity (linked to another voice, or the voice has a different face)
  loses as much, and is given the piece only with strong synchrony (``listener_min_sync_llr``).

The posterior over {off screen, face 1..k} is the softmax of the LLRs (0 for off screen). A piece gets a face when
the best face's posterior and its margin over the runner-up are clear; it is off screen when "nobody visible"
is; otherwise ``on_screen`` stays None with the reason. The links over the whole source, and the merges and splits
of voices through faces, are in :mod:`cinedub.ops.voice_links`.

Thresholds live in :class:`cinedub.ops.av_config.AvConfig` with what they were chosen on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from cinedub.ops.av_config import AvConfig
from cinedub.types import Record

if TYPE_CHECKING:
    from cinedub.ops.voice_links import VoiceLink


@dataclass(frozen=True)
class Candidate(Record):
    """The evidence that one face track speaks one piece.

    Attributes:
        track_id / identity_id: the face track and its identity (None: not described).
        n_frames: the track's frames inside the piece; coverage: their share of the piece's frames.
        asd_logodds: mean Light-ASD log-odds over those frames (None: not scored); asd_margin: its lead over the
            best competing face in the frames both are present (None: no competitor).
        sync_r / sync_lag_ms / sync_z: synchrony of its lips with the audio (None: not enough landmarks).
        asd_llr / margin_llr / sync_llr / identity_llr: each cue's log-likelihood ratio; posterior: after fusion
            (softmax with "nobody visible speaks" as the alternative of LLR 0).
    """

    track_id: str
    identity_id: str | None
    n_frames: int
    coverage: float
    asd_logodds: float | None = None
    asd_margin: float | None = None
    sync_r: float | None = None
    sync_lag_ms: int | None = None
    sync_z: float | None = None
    asd_llr: float = 0.0
    margin_llr: float = 0.0
    sync_llr: float = 0.0
    identity_llr: float = 0.0
    posterior: float | None = None

    @property
    def local_llr(self) -> float:
        """LLR of the cues measured in the piece itself (Light-ASD, its margin, synchrony)."""
        return self.asd_llr + self.margin_llr + self.sync_llr

    @property
    def llr(self) -> float:
        return self.local_llr + self.identity_llr


@dataclass(frozen=True)
class TurnAttribution(Record):
    """The decision on one piece (an exclusive turn inside one shot).

    Attributes:
        speaker_id: the voice after fusion (merges and splits applied); source_speaker_id: the audio cluster.
        on_screen / face_track_id / face_identity_id / confidence / cue / reason: as the ``Turn`` fields.
        candidates: the evidence of every face considered.
    """

    start_ms: int
    end_ms: int
    speaker_id: str
    source_speaker_id: str
    shot_index: int | None
    on_screen: bool | None
    face_track_id: str | None = None
    face_identity_id: str | None = None
    confidence: float | None = None
    cue: str | None = None
    reason: str | None = None
    candidates: tuple[Candidate, ...] = ()

    _nested: ClassVar[dict[str, type]] = {"candidates": Candidate}


@dataclass
class Piece:
    """A working piece: an exclusive turn cut at the shot boundaries (mutable while deciding)."""

    start_ms: int
    end_ms: int
    speaker_id: str
    source_speaker_id: str
    shot_index: int | None
    n_frames: int
    candidates: list[Candidate] = field(default_factory=list)
    too_short: bool = False

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


def asd_llr(logodds: float | None, cfg: AvConfig) -> float:
    """Light-ASD's mean log-odds as an LLR, clipped to ``+-cfg.asd_llr_clip`` (0 when not scored)."""
    return 0.0 if logodds is None else float(np.clip(logodds, -cfg.asd_llr_clip, cfg.asd_llr_clip))


def margin_llr(margin: float | None, cfg: AvConfig) -> float:
    """Light-ASD's lead over the best competing face as an LLR: ``asd_margin_weight * margin``, clipped like the
    score (0 without a competitor)."""
    if margin is None:
        return 0.0
    return float(cfg.asd_margin_weight * np.clip(margin, -cfg.asd_llr_clip, cfg.asd_llr_clip))


def sync_llr(z: float | None, cfg: AvConfig) -> float:
    """The synchrony z as an LLR ``sync_llr_per_z * (z - sync_z_mid)``, clipped (0 when not measured)."""
    if z is None:
        return 0.0
    return float(np.clip(cfg.sync_llr_per_z * (z - cfg.sync_z_mid), cfg.sync_llr_min, cfg.sync_llr_max))


def posteriors(llrs: Sequence[float]) -> tuple[np.ndarray, float]:
    """Softmax of ``[0 (off screen), llr_1..llr_k]``: ``(posterior of each face (k,), posterior of off screen)``."""
    z = np.concatenate([[0.0], np.asarray(llrs, np.float64)])
    p = np.exp(z - z.max())
    p /= p.sum()
    return p[1:], float(p[0])


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def with_local_posteriors(pieces: Sequence[Piece]) -> None:
    """Set each candidate's posterior from the in-piece cues only (Light-ASD + synchrony)."""
    for p in pieces:
        post, _ = posteriors([c.local_llr for c in p.candidates])
        p.candidates = [replace(c, posterior=round(float(q), 4)) for c, q in zip(p.candidates, post)]


def identity_priors(piece: Piece, links: Sequence["VoiceLink"], stats: dict, cfg: AvConfig) -> list[float]:
    """Identity LLR of each candidate of ``piece``, from the links of the whole source **without** this piece.

    The face of the identity linked to the piece's voice gains ``min(identity_llr_max, logit(confidence))``;
    a face of any other identity loses that much when the voice is linked, and a face whose identity is linked to
    another voice loses ``min(identity_llr_max, logit(that link's confidence))``.
    """
    own = next((lk for lk in links if lk.linked and lk.speaker_id == piece.speaker_id), None)
    own_llr = 0.0
    if own is not None:
        s, e, n = stats.get((own.speaker_id, own.identity_id), (0.0, 0.0, 0))
        here = next((c.posterior for c in piece.candidates if c.identity_id == own.identity_id), None)
        if here is not None:  # leave this piece out: it must not vote for itself
            s, e, n = s - (here or 0.0) * piece.duration_ms, e - piece.duration_ms, n - 1
        if e >= cfg.link_min_speech_ms and n >= cfg.link_min_turns and s / e > 0.5:
            own_llr = min(cfg.identity_llr_max, _logit(s / e))
    other = {lk.identity_id: lk for lk in links if lk.linked and lk.speaker_id != piece.speaker_id}
    out = []
    for c in piece.candidates:
        if c.identity_id is None:
            out.append(0.0)
        elif own is not None and c.identity_id == own.identity_id:
            out.append(own_llr)
        else:
            penalty = own_llr
            if c.identity_id in other:
                penalty = max(penalty, min(cfg.identity_llr_max, _logit(other[c.identity_id].confidence)))
            out.append(-penalty)
    return out


def _cue(best: Candidate, runner: Candidate | None, sign: float = 1.0) -> str:
    """The cue that contributes most to ``best`` beating ``runner`` (None = off screen; ``sign=-1``: off screen beats
    ``best``)."""
    parts = {
        "asd": best.asd_llr - (runner.asd_llr if runner else 0.0),
        "asd_margin": best.margin_llr - (runner.margin_llr if runner else 0.0),
        "sync": best.sync_llr - (runner.sync_llr if runner else 0.0),
        "identity": best.identity_llr - (runner.identity_llr if runner else 0.0),
    }
    return max(parts, key=lambda k: sign * parts[k])


def decide(piece: Piece, cfg: AvConfig) -> TurnAttribution:
    """The decision on one piece whose candidates carry all their LLRs.

    With ``L_k`` the summed LLR of face ``k`` against "nobody visible speaks": the best face gets the piece when it
    leads the other faces (``softmax_k(L) >= decide_min_posterior``) and is at least as likely to speak as not
    (``L_best >= 0``); the piece is off screen when ``sigmoid(L_best) <= 1 - offscreen_min_posterior``. The stored
    confidence is the posterior with "nobody visible" as an alternative (``softmax([0, L_1..L_k])``).
    """
    base = dict(start_ms=piece.start_ms, end_ms=piece.end_ms, speaker_id=piece.speaker_id,
                source_speaker_id=piece.source_speaker_id, shot_index=piece.shot_index)
    cands = piece.candidates
    if not cands:
        reason = "too_short" if piece.too_short else None
        return TurnAttribution(**base, on_screen=None if reason else False, cue=None if reason else "no_face",
                               reason=reason)
    if all(c.asd_logodds is None and c.sync_z is None for c in cands):
        return TurnAttribution(**base, on_screen=None, reason="unscored", candidates=tuple(cands))
    llr = np.array([c.llr for c in cands])
    post, p_off = posteriors(llr)
    cands = [replace(c, posterior=round(float(q), 4)) for c, q in zip(cands, post)]
    among = np.exp(llr - llr.max())
    among /= among.sum()
    order = np.argsort(-llr)
    k = int(order[0])
    best = cands[k]
    if among[k] >= cfg.decide_min_posterior and llr[k] >= 0:
        if best.identity_llr < 0 and best.sync_llr < cfg.listener_min_sync_llr:
            return TurnAttribution(**base, on_screen=None, reason="listener", candidates=tuple(cands))
        runner = cands[int(order[1])] if len(order) > 1 and llr[order[1]] > 0 else None
        return TurnAttribution(**base, on_screen=True, face_track_id=best.track_id, face_identity_id=best.identity_id,
                               confidence=round(float(post[k]), 4), cue=_cue(best, runner), candidates=tuple(cands))
    if 1 / (1 + math.exp(-llr[k])) <= 1 - cfg.offscreen_min_posterior:
        return TurnAttribution(**base, on_screen=False, confidence=round(p_off, 4), cue=_cue(best, None, -1.0),
                               candidates=tuple(cands))
    reason = "ambiguous" if among[k] < cfg.decide_min_posterior else "weak"
    return TurnAttribution(**base, on_screen=None, reason=reason, candidates=tuple(cands))
