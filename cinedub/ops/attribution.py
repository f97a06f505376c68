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
is; otherwise ``on_screen`` stays None with the reason. Links are an assignment over the whole source (Hungarian,
``scipy.optimize.linear_sum_assignment``, on the posterior-weighted speech of each voice x identity pair).

Thresholds live in :class:`cinedub.ops.av_config.AvConfig` with what they were chosen on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import ClassVar

import numpy as np

from cinedub.ops.av_config import AvConfig
from cinedub.types import Record


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


@dataclass(frozen=True)
class VoiceLink(Record):
    """How strongly a voice is tied to a face identity over the whole source.

    Attributes:
        confidence: speech-weighted mean posterior of the identity's faces over the voice's pieces where one is
            visible; n_turns / speech_ms: those pieces; linked: chosen by the assignment.
    """

    speaker_id: str
    identity_id: str
    confidence: float
    n_turns: int
    speech_ms: int
    linked: bool = False


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


def link_stats(pieces: Sequence[Piece]) -> dict[tuple[str, str], tuple[float, float, int]]:
    """``(speaker_id, identity_id) -> (posterior-weighted ms, exposed ms, pieces)`` over pieces where a face of the
    identity is a candidate (the best-scoring face of the identity in each piece)."""
    out: dict[tuple[str, str], list[float]] = {}
    for p in pieces:
        best: dict[str, float] = {}
        for c in p.candidates:
            if c.identity_id is not None and c.posterior is not None:
                best[c.identity_id] = max(best.get(c.identity_id, 0.0), c.posterior)
        for ident, post in best.items():
            acc = out.setdefault((p.speaker_id, ident), [0.0, 0.0, 0])
            acc[0] += post * p.duration_ms
            acc[1] += p.duration_ms
            acc[2] += 1
    return {k: (v[0], v[1], int(v[2])) for k, v in out.items()}


def assign_links(pieces: Sequence[Piece], cfg: AvConfig) -> list[VoiceLink]:
    """One face identity per voice (and one voice per identity) over the whole source.

    Pairs below ``link_min_confidence``, ``link_min_turns`` or ``link_min_speech_ms`` cannot be linked; among the
    rest the assignment maximises the posterior-weighted speech (Hungarian).
    """
    from scipy.optimize import linear_sum_assignment

    stats = link_stats(pieces)
    links = [VoiceLink(v, f, round(s / e, 4) if e else 0.0, n, int(e)) for (v, f), (s, e, n) in sorted(stats.items())]
    ok = [lk for lk in links if lk.confidence >= cfg.link_min_confidence and lk.n_turns >= cfg.link_min_turns
          and lk.speech_ms >= cfg.link_min_speech_ms]
    if not ok:
        return links
    voices = sorted({lk.speaker_id for lk in ok})
    idents = sorted({lk.identity_id for lk in ok})
    gain = np.zeros((len(voices), len(idents)))
    for lk in ok:
        gain[voices.index(lk.speaker_id), idents.index(lk.identity_id)] = stats[(lk.speaker_id, lk.identity_id)][0]
    rows, cols = linear_sum_assignment(-gain)
    chosen = {(voices[r], idents[c]) for r, c in zip(rows, cols) if gain[r, c] > 0}
    return [replace(lk, linked=(lk.speaker_id, lk.identity_id) in chosen) for lk in links]


def identity_priors(piece: Piece, links: Sequence[VoiceLink], stats: dict, cfg: AvConfig) -> list[float]:
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


@dataclass(frozen=True)
class VoiceChange(Record):
    """A change of the audio clusters made through faces.

    Attributes:
        kind: "merge" (``speaker_ids[0]`` joins ``speaker_ids[1]``) or "split" (pieces of ``speaker_ids[0]`` move
            to the new ``speaker_ids[1]``).
        identity_id: the face identity that carries the evidence; confidence / n_turns: the link's (merge) or the
            moved pieces' (split) evidence; voice_distance: cosine distance of the two speaker embeddings (merge).
    """

    kind: str
    speaker_ids: tuple[str, str]
    identity_id: str
    confidence: float
    n_turns: int
    voice_distance: float | None = None


def plan_merges(
    pieces: Sequence[Piece], links: Sequence[VoiceLink], voice_distance: dict[tuple[str, str], float], cfg: AvConfig
) -> list[VoiceChange]:
    """Voices to merge through a face: both tied to the same identity with ``merge_min_confidence`` over
    ``merge_min_turns`` pieces each, neither linked to another identity, and speaker embeddings at most
    ``merge_max_voice_distance`` apart (no embeddings: no merge). The voice with less speech joins the other."""
    speech: dict[str, int] = {}
    for p in pieces:
        speech[p.speaker_id] = speech.get(p.speaker_id, 0) + p.duration_ms
    linked_to = {lk.speaker_id: lk.identity_id for lk in links if lk.linked}
    strong = [lk for lk in links if lk.confidence >= cfg.merge_min_confidence and lk.n_turns >= cfg.merge_min_turns]
    out, gone = [], set()
    for keep in (lk for lk in strong if lk.linked):
        for lk in strong:
            v = lk.speaker_id
            if lk.identity_id != keep.identity_id or v == keep.speaker_id or v in gone or v in linked_to:
                continue
            d = voice_distance.get((v, keep.speaker_id), voice_distance.get((keep.speaker_id, v)))
            if d is None or d > cfg.merge_max_voice_distance:
                continue
            small, big = sorted((v, keep.speaker_id), key=lambda x: (speech.get(x, 0), x))
            gone.add(small)
            out.append(VoiceChange("merge", (small, big), keep.identity_id, min(lk.confidence, keep.confidence),
                                   lk.n_turns + keep.n_turns, round(d, 4)))
    return out


def plan_splits(
    pieces: Sequence[Piece], links: Sequence[VoiceLink], co_visible: set[frozenset[str]], cfg: AvConfig
) -> list[tuple[VoiceChange, list[int]]]:
    """Voices that hold two people: pieces given with ``split_min_confidence`` (in-piece cues) to two identities
    seen on screen at the same time, each over ``split_min_turns`` pieces and ``split_min_speech_ms``, the second
    identity linked to no other voice. Returns each change with the indices (into ``pieces``) that move."""
    linked = {lk.speaker_id: lk.identity_id for lk in links if lk.linked}
    taken = set(linked.values())
    sure: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(pieces):
        for c in p.candidates:
            if c.identity_id is not None and (c.posterior or 0.0) >= cfg.split_min_confidence:
                sure.setdefault((p.speaker_id, c.identity_id), []).append(i)
    out = []
    for v, f1 in sorted(linked.items()):
        keep = sure.get((v, f1), [])
        for (v2, f2), moved in sorted(sure.items()):
            if v2 != v or f2 == f1 or f2 in taken or frozenset((f1, f2)) not in co_visible:
                continue
            enough = [len(ix) >= cfg.split_min_turns and sum(pieces[i].duration_ms for i in ix) >= cfg.split_min_speech_ms
                      for ix in (keep, moved)]
            if all(enough):
                conf = min((c.posterior or 0.0) for i in moved for c in pieces[i].candidates if c.identity_id == f2)
                out.append((VoiceChange("split", (v, ""), f2, round(conf, 4), len(moved)), moved))
                taken.add(f2)
    return out


def attribute(
    pieces: Sequence[Piece],
    cfg: AvConfig,
    *,
    voice_distance: dict[tuple[str, str], float] | None = None,
    co_visible: set[frozenset[str]] | None = None,
    new_speaker_id=None,
) -> tuple[list[TurnAttribution], list[VoiceLink], list[VoiceChange]]:
    """Links over the whole source, merges and splits through faces, then the decision on every piece.

    Args:
        pieces: the pieces with their candidates' in-piece cues (``speaker_id`` is relabelled in place).
        voice_distance: cosine distance of speaker embeddings per voice pair (merges need it).
        co_visible: identity pairs seen on screen at the same time (splits need it).
        new_speaker_id: ``() -> str`` giving the id of a voice split off (no splits without it).
    """
    with_local_posteriors(pieces)
    links = assign_links(pieces, cfg)
    changes = plan_merges(pieces, links, voice_distance or {}, cfg)
    into = {c.speaker_ids[0]: c.speaker_ids[1] for c in changes}
    if into:
        for p in pieces:
            while p.speaker_id in into:
                p.speaker_id = into[p.speaker_id]
        links = assign_links(pieces, cfg)
    if new_speaker_id is not None:
        for change, moved in plan_splits(pieces, links, co_visible or set(), cfg):
            new = new_speaker_id()
            for i in moved:
                pieces[i].speaker_id = new
            changes.append(replace(change, speaker_ids=(change.speaker_ids[0], new)))
        if any(c.kind == "split" for c in changes):
            links = assign_links(pieces, cfg)
    stats = link_stats(pieces)
    out = []
    for p in pieces:
        priors = identity_priors(p, links, stats, cfg)
        p.candidates = [replace(c, identity_llr=round(v, 3)) for c, v in zip(p.candidates, priors)]
        out.append(decide(p, cfg))
    return out, links, changes
