"""Voices and faces over a whole source: links, merges, splits and cut hand-overs, then every piece's decision.

A voice (audio cluster) is linked to the face identity that speaks it by an assignment over the whole source
(Hungarian, ``scipy.optimize.linear_sum_assignment``, on each voice x identity pair's posterior-weighted speech), so
one clear shot decides the ambiguous ones. Voices change only on strong evidence: two voices merge through a face
they both confidently have when their embeddings are close; a voice splits when it is confidently spoken by two
identities seen at the same time; a short piece on a hard cut goes to the voice of the face that speaks it.
Thresholds: :class:`cinedub.ops.av_config.AvConfig`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from cinedub.ops.attribution import Piece, TurnAttribution, decide, identity_priors, with_local_posteriors
from cinedub.ops.av_config import AvConfig
from cinedub.types import Record


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


@dataclass(frozen=True)
class VoiceChange(Record):
    """A change of the audio clusters made through faces.

    Attributes:
        kind: "merge" (``speaker_ids[0]`` joins ``speaker_ids[1]``), "split" (pieces of ``speaker_ids[0]`` move
            to the new ``speaker_ids[1]``) or "cut_handover" (one short piece on a cut moves from ``speaker_ids[0]``
            to ``speaker_ids[1]``, the voice of the face speaking it: :func:`plan_cut_handovers`).
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
    seen on screen at the same time, each over ``split_min_turns`` pieces and ``split_min_speech_ms``, neither
    identity linked to another voice. The identity with more such speech keeps the voice (such a voice is often
    linked to neither: half its speech is the other person's). Returns each change with the indices (into
    ``pieces``) that move."""
    owner = {lk.identity_id: lk.speaker_id for lk in links if lk.linked}
    sure: dict[str, dict[str, list[int]]] = {}
    for i, p in enumerate(pieces):
        for c in p.candidates:
            if c.identity_id is not None and (c.posterior or 0.0) >= cfg.split_min_confidence:
                sure.setdefault(p.speaker_id, {}).setdefault(c.identity_id, []).append(i)
    out = []
    for v, by_ident in sorted(sure.items()):
        ok = {f: ix for f, ix in by_ident.items() if owner.get(f, v) == v and len(ix) >= cfg.split_min_turns
              and sum(pieces[i].duration_ms for i in ix) >= cfg.split_min_speech_ms}
        ranked = sorted(ok, key=lambda f: (-sum(pieces[i].duration_ms for i in ok[f]), f))
        if len(ranked) < 2:
            continue
        keep = ranked[0]
        for f2 in ranked[1:]:
            if frozenset((keep, f2)) not in co_visible:
                continue
            moved = ok[f2]
            conf = min((c.posterior or 0.0) for i in moved for c in pieces[i].candidates if c.identity_id == f2)
            out.append((VoiceChange("split", (v, ""), f2, round(conf, 4), len(moved)), moved))
    return out


def plan_cut_handovers(
    pieces: Sequence[Piece], links: Sequence[VoiceLink], cuts_ms: Sequence[int], cfg: AvConfig
) -> list[tuple[VoiceChange, int]]:
    """Speaker changes the diarization placed a little off a hard cut (its windows straddle the cut).

    A piece of at most ``cut_overlap_max_ms`` that touches a cut, whose voice's face is not in it while a face of
    the shot speaks it (in-piece LLR >= ``handover_min_llr``) and that face's identity is linked to the voice of the
    piece just before (or after, when the piece starts at the cut) within ``handover_max_gap_ms`` in the same shot,
    goes to that voice. Returns each change with the index of the piece that moves.
    """
    face_of = {lk.speaker_id: lk.identity_id for lk in links if lk.linked}
    voice_of = {lk.identity_id: lk.speaker_id for lk in links if lk.linked}
    cuts = set(cuts_ms)
    out = []
    for i, p in enumerate(pieces):
        at_end, at_start = p.end_ms in cuts, p.start_ms in cuts
        if p.duration_ms > cfg.cut_overlap_max_ms or not (at_end or at_start) or not p.candidates:
            continue
        if any(c.identity_id == face_of.get(p.speaker_id) for c in p.candidates):
            continue
        best = max(p.candidates, key=lambda c: c.local_llr)
        w = voice_of.get(best.identity_id or "")
        if w is None or w == p.speaker_id or best.local_llr < cfg.handover_min_llr:
            continue
        j = i - 1 if at_end else i + 1
        if not 0 <= j < len(pieces):
            continue
        q = pieces[j]
        gap = p.start_ms - q.end_ms if at_end else q.start_ms - p.end_ms
        if q.speaker_id == w and q.shot_index == p.shot_index and 0 <= gap <= cfg.handover_max_gap_ms:
            out.append((VoiceChange("cut_handover", (p.speaker_id, w), best.identity_id or "",
                                    round(1 / (1 + math.exp(-best.local_llr)), 4), 1), i))
    return out


def attribute(
    pieces: Sequence[Piece],
    cfg: AvConfig,
    *,
    voice_distance: dict[tuple[str, str], float] | None = None,
    co_visible: set[frozenset[str]] | None = None,
    new_speaker_id=None,
    cuts_ms: Sequence[int] = (),
) -> tuple[list[TurnAttribution], list[VoiceLink], list[VoiceChange]]:
    """Links over the whole source, merges and splits through faces, then the decision on every piece.

    Args:
        pieces: the pieces with their candidates' in-piece cues (``speaker_id`` is relabelled in place).
        voice_distance: cosine distance of speaker embeddings per voice pair (merges need it).
        co_visible: identity pairs seen on screen at the same time (splits need it).
        new_speaker_id: ``() -> str`` giving the id of a voice split off (no splits without it).
        cuts_ms: the hard cuts (speaker changes smeared across one are moved onto it).
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
    for change, i in plan_cut_handovers(pieces, links, cuts_ms, cfg):
        pieces[i].speaker_id = change.speaker_ids[1]
        changes.append(change)
    stats = link_stats(pieces)
    out = []
    for p in pieces:
        priors = identity_priors(p, links, stats, cfg)
        p.candidates = [replace(c, identity_llr=round(v, 3)) for c, v in zip(p.candidates, priors)]
        out.append(decide(p, cfg))
    return out, links, changes
