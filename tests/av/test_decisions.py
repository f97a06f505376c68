"""The decision logic of the attribution and the turn hygiene, on small hand-made records (pure functions).

The real-footage behaviour is in test_cases.py; these pin the rules that footage rarely shows in isolation: one clear
shot decides an ambiguous one, a listener's face does not steal a voice, merges and splits need strong evidence.
"""

from __future__ import annotations

from cinedub.ops.attribution import Candidate, Piece, decide
from cinedub.ops.av_config import AvConfig
from cinedub.ops.turn_hygiene import (absorb_short_turns, handover_at_cuts, overlap_regions, split_at_cuts,
                                      union_same_speaker)
from cinedub.ops.voice_links import attribute
from cinedub.types import Turn

CFG = AvConfig()


def cand(track, ident, asd, z=None, margin=None):
    from cinedub.ops.attribution import asd_llr, margin_llr, sync_llr

    return Candidate(track, ident, 50, 1.0, asd_logodds=asd, asd_margin=margin, sync_z=z, asd_llr=asd_llr(asd, CFG),
                     margin_llr=margin_llr(margin, CFG), sync_llr=sync_llr(z, CFG))


def piece(a, b, voice, shot, *cands):
    return Piece(a, b, voice, voice, shot, (b - a) // 40, list(cands))


def test_one_clear_shot_decides_the_ambiguous_one():
    two_faces = piece(0, 2000, "A", 0, cand("t0", "X", 3.8, 2.1, 0.3), cand("t1", "Y", 3.5, 2.0, -0.3))
    alone_x = piece(10000, 14000, "A", 2, cand("t3", "X", 4.0, 3.5))
    alone_y = piece(5000, 9000, "B", 1, cand("t2", "Y", 3.2, 3.5))
    assert decide(piece(0, 2000, "A", 0, *two_faces.candidates), CFG).reason == "ambiguous"  # alone: no verdict
    out, links, changes = attribute([two_faces, alone_y, alone_x], CFG)
    first = out[0]
    assert first.on_screen and first.face_track_id == "t0" and first.cue == "identity"
    assert {(lk.speaker_id, lk.identity_id) for lk in links if lk.linked} == {("A", "X"), ("B", "Y")}
    assert not changes


def test_listener_of_another_voice_does_not_steal_the_turn():
    # Y is linked to voice B by two clear shots; voice A speaks over Y's face (a reaction shot), Y's lips move
    b1 = piece(0, 3000, "B", 0, cand("t0", "Y", 3.5, 3.5))
    b2 = piece(4000, 7000, "B", 1, cand("t1", "Y", 3.5, 3.5))
    react = piece(8000, 11000, "A", 2, cand("t2", "Y", 2.5, 1.5))
    out, _, _ = attribute([b1, b2, react], CFG)
    assert out[2].on_screen is not True and out[2].face_track_id is None
    # ... unless the synchrony evidence is strong (then the face really speaks it)
    react = piece(8000, 11000, "A", 2, cand("t2", "Y", 3.0, 5.5))
    out, _, _ = attribute([b1, b2, react], CFG)
    assert out[2].on_screen is True and out[2].face_track_id == "t2"


def test_still_listener_is_off_screen_and_unscored_is_unknown():
    off = decide(piece(0, 3000, "A", 0, cand("t0", "X", -3.0, 0.5)), CFG)
    assert off.on_screen is False and off.confidence >= CFG.offscreen_min_posterior and off.cue == "asd"
    unscored = decide(piece(0, 3000, "A", 0, Candidate("t0", "X", 50, 1.0)), CFG)
    assert unscored.on_screen is None and unscored.reason == "unscored"
    nobody = decide(piece(0, 3000, "A", 0), CFG)
    assert nobody.on_screen is False and nobody.cue == "no_face"


def test_merge_through_a_face_needs_close_voices():
    pieces = lambda: [piece(0, 3000, "A", 0, cand("t0", "X", 3.5, 3.0)), piece(3500, 6000, "A", 0, cand("t0", "X", 3.5, 3.0)),  # noqa: E731
                      piece(7000, 9000, "B", 1, cand("t1", "X", 3.5, 3.0)), piece(9500, 12000, "B", 1, cand("t1", "X", 3.5, 3.0))]
    _, _, changes = attribute(pieces(), CFG, voice_distance={("A", "B"): 0.2})
    assert [(c.kind, c.speaker_ids) for c in changes] == [("merge", ("B", "A"))]
    _, _, changes = attribute(pieces(), CFG, voice_distance={("A", "B"): 0.48})  # zh_tvdrama's two voices
    assert not changes
    _, _, changes = attribute(pieces(), CFG)  # no speaker embeddings: never
    assert not changes


def test_split_only_on_two_people_seen_together():
    def pieces():
        return [piece(0, 2500, "A", 0, cand("t0", "X", 4.0, 4.0, 3.0), cand("t1", "Y", -3.0, 0.0, -3.0)),
                piece(3000, 5500, "A", 0, cand("t0", "X", 4.0, 4.0, 3.0), cand("t1", "Y", -3.0, 0.0, -3.0)),
                piece(6000, 8500, "A", 0, cand("t1", "Y", 4.0, 4.0, 3.0), cand("t0", "X", -3.0, 0.0, -3.0)),
                piece(9000, 11500, "A", 0, cand("t1", "Y", 4.0, 4.0, 3.0), cand("t0", "X", -3.0, 0.0, -3.0))]

    ids = iter(["S09"])
    out, _, changes = attribute(pieces(), CFG, co_visible={frozenset(("X", "Y"))}, new_speaker_id=lambda: next(ids))
    assert [c.kind for c in changes] == ["split"] and {o.speaker_id for o in out} == {"A", "S09"}
    _, _, changes = attribute(pieces(), CFG, co_visible=set(), new_speaker_id=lambda: "S09")
    assert not changes  # two identities never seen together may be one person (face clustering can split one)


def test_hygiene_short_turns_same_speaker_overlap_and_cuts():
    turns = [Turn(0, 1000, "A"), Turn(1000, 1030, "B"), Turn(5000, 5040, "B"), Turn(900, 2000, "A")]
    out = union_same_speaker(absorb_short_turns(turns, 200))
    assert out == [Turn(0, 2000, "A")]  # 30 ms blip absorbed, isolated 40 ms dropped, A's two turns one
    # a hand-over smeared over a cut at 3000 ms: A 0-3200 and B 2800-6000 overlap 400 ms around it
    full, excl = handover_at_cuts([Turn(0, 3200, "A"), Turn(2800, 6000, "B")],
                                  [Turn(0, 3100, "A"), Turn(3100, 6000, "B")], [3000], 600)
    assert full == [Turn(0, 3000, "A"), Turn(3000, 6000, "B")] and excl == full
    _, regions = overlap_regions(full)
    assert not regions
    # real crosstalk away from a cut is kept
    flagged, regions = overlap_regions([Turn(0, 3200, "A"), Turn(2800, 6000, "B")])
    assert [(r.start_ms, r.end_ms) for r in regions] == [(2800, 3200)] and all(t.overlap for t in flagged)
    pieces = absorb_short_turns(split_at_cuts([Turn(0, 3050, "A"), Turn(3300, 4000, "A")], [3000]), 200, [3000])
    assert pieces == [Turn(0, 3000, "A"), Turn(3300, 4000, "A")]  # the 50 ms past the cut is not a turn
