"""Audio-visual fusion of speaker turns (pure logic: no model).

Inputs: the audio diarization of a source (speaker turns, exclusive turns, overlaps) and, per exclusive turn, the
face track the active speaker detector saw speaking it (or none, with a reason). Rules, applied in order:

1. **Merge.** Two audio clusters whose turns are spoken by the *same face track* are one person (a track is one
   face inside one shot), so the smaller cluster is merged into the larger.
2. **Split.** One audio cluster whose turns are spoken by two face tracks *visible in the same shot at the same
   time* is two people (one face cannot be two tracks at once), so the turns of the second track get a new id.
3. **On/off screen.** A turn with a speaking face is ``on_screen=True`` with its ``face_track_id``; a turn whose
   faces were scored and none speaks is ``on_screen=False`` (off-screen speaker, face turned away, narration); a
   turn whose faces could not be scored keeps ``on_screen=None``.

Speaker ids are per source (``<source_id>-S00`` ...): the diarization runs on the whole source, so a character
keeps one id in every clip of the source.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Sequence

from cinedub.diarization.records import DiarizationResult, OverlapRegion
from cinedub.timebase import merge_spans
from cinedub.types import Turn
from cinedub.vision.records import FaceTrack, TurnSpeaker


def _speech(turns: Sequence[Turn]) -> Counter:
    c: Counter = Counter()
    for t in turns:
        c[t.speaker_id] += t.end_ms - t.start_ms
    return c


def _relabel(turns: Sequence[Turn], mapping: dict[str, str]) -> list[Turn]:
    return [dataclasses.replace(t, speaker_id=mapping.get(t.speaker_id, t.speaker_id)) for t in turns]


def _merge_pairs(assigned: Sequence[tuple[Turn, TurnSpeaker]], speech: Counter) -> dict[str, str]:
    """Cluster -> cluster it merges into, for clusters sharing a speaking face track (union-find)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    by_track: dict[str, set[str]] = defaultdict(set)
    for turn, ts in assigned:
        if ts.face_track_id:
            by_track[ts.face_track_id].add(turn.speaker_id)
    for speakers in by_track.values():
        ordered = sorted(speakers, key=lambda s: (-speech[s], s))
        for other in ordered[1:]:
            a, b = find(ordered[0]), find(other)
            if a != b:
                keep, drop = (a, b) if (speech[a], b) >= (speech[b], a) else (b, a)
                parent[drop] = keep
    return {s: find(s) for s in list(parent)}


def _speaker_id(prefix: str, n: int) -> str:
    return f"{prefix}-S{n:02d}" if prefix else f"S{n:02d}"


def _split(
    assigned: list[tuple[Turn, TurnSpeaker]], tracks: dict[str, FaceTrack], taken: set[str], prefix: str
) -> dict[tuple[int, int], str]:
    """(start_ms, end_ms) of turns that move to a new speaker id, because their cluster speaks through two faces
    seen in the same shot at the same time."""
    moves: dict[tuple[int, int], str] = {}
    by_speaker: dict[str, Counter] = defaultdict(Counter)
    for turn, ts in assigned:
        if ts.face_track_id:
            by_speaker[turn.speaker_id][ts.face_track_id] += turn.end_ms - turn.start_ms
    n = len(taken)
    for speaker, counts in sorted(by_speaker.items()):
        main = counts.most_common(1)[0][0]
        mt = tracks.get(main)
        for tid, _ in counts.most_common()[1:]:
            t = tracks.get(tid)
            if mt is None or t is None or t.shot_index != mt.shot_index:
                continue  # different shots: without face identity, the same person may simply be filmed again
            if t.start_ms >= mt.end_ms or t.end_ms <= mt.start_ms:
                continue
            while _speaker_id(prefix, n) in taken:
                n += 1
            new_id = _speaker_id(prefix, n)
            taken.add(new_id)
            for turn, ts in assigned:
                if turn.speaker_id == speaker and ts.face_track_id == tid:
                    moves[(turn.start_ms, turn.end_ms)] = new_id
    return moves


def fuse(
    diar: DiarizationResult,
    turn_speakers: Sequence[TurnSpeaker] | None,
    tracks: Sequence[FaceTrack] = (),
    *,
    speaker_prefix: str = "",
) -> DiarizationResult:
    """Apply the fusion rules of the module docstring; returns a new result (method gets ``+av``).

    Args:
        diar: the audio diarization of the whole source.
        turn_speakers: the active-speaker assignment of each **exclusive** turn (matched by ``(start_ms, end_ms)``);
            None when no visual stage ran (turns keep ``on_screen=None``).
        tracks: the face tracks (their shot index and time span drive the split rule).
        speaker_prefix: new speaker ids are ``"<prefix>-S<nn>"`` (``"S<nn>"`` without one), as the diarization
            back-ends name theirs; pass the source id.
    """
    if turn_speakers is None:
        return diar
    by_span = {(s.start_ms, s.end_ms): s for s in turn_speakers}
    assigned = [(t, by_span[(t.start_ms, t.end_ms)]) for t in diar.exclusive_turns if (t.start_ms, t.end_ms) in by_span]
    speech = _speech(diar.exclusive_turns)

    merge = _merge_pairs(assigned, speech)
    assigned = [(dataclasses.replace(t, speaker_id=merge.get(t.speaker_id, t.speaker_id)), s) for t, s in assigned]
    taken = set(diar.speaker_ids)
    moves = _split(assigned, {t.track_id: t for t in tracks}, taken, speaker_prefix)

    def enrich(turn: Turn, exclusive: bool) -> Turn:
        sid = merge.get(turn.speaker_id, turn.speaker_id)
        ts = by_span.get((turn.start_ms, turn.end_ms)) if exclusive else None
        if not exclusive:  # a full turn takes the assignment of the exclusive turn it overlaps most
            best, best_ov = None, 0
            for s in turn_speakers:
                ov = min(s.end_ms, turn.end_ms) - max(s.start_ms, turn.start_ms)
                if ov > best_ov and merge.get(s.speaker_id, s.speaker_id) == sid:
                    best, best_ov = s, ov
            ts = best
        sid = moves.get((ts.start_ms, ts.end_ms), sid) if ts is not None else sid
        if ts is None:
            return dataclasses.replace(turn, speaker_id=sid)
        return dataclasses.replace(turn, speaker_id=sid, on_screen=ts.on_screen, face_track_id=ts.face_track_id)

    exclusive = [enrich(t, True) for t in diar.exclusive_turns]
    turns = [enrich(t, False) for t in diar.turns]
    ids = list(dict.fromkeys(t.speaker_id for t in sorted(turns, key=lambda t: t.start_ms)))
    overlaps = [
        OverlapRegion(o.start_ms, o.end_ms, tuple(sorted({merge.get(s, s) for s in o.speaker_ids})))
        for o in diar.overlaps
    ]
    overlaps = [o for o in overlaps if len(o.speaker_ids) >= 2]
    embeddings = tuple(e for e in diar.embeddings if e.speaker_id in ids)
    return dataclasses.replace(
        diar,
        method=f"{diar.method}+av",
        num_speakers=len(ids),
        speaker_ids=tuple(ids),
        turns=tuple(turns),
        exclusive_turns=tuple(exclusive),
        overlaps=tuple(overlaps),
        embeddings=embeddings,
    )


def speech_spans(transcript, diar: DiarizationResult | None) -> list[tuple[int, int]]:
    """Merged ``(start_ms, end_ms)`` spans where someone speaks: diarization turns and ASR words together
    (faces are only decoded there)."""
    spans = [(w.start_ms, w.end_ms) for w in transcript.words]
    spans += [(t.start_ms, t.end_ms) for t in diar.turns] if diar is not None else []
    return merge_spans(spans, gap_ms=500)  # a short pause keeps one span: fewer seeks, tracks not cut


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
