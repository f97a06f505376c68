"""Issue 10's targets on the shared audio-visual dev set, measured on the real pipeline's records.

Tolerances are the issue's "done when" bounds; each test prints what it measured.
"""

from __future__ import annotations

import pytest

from cinedub.diarization.rttm import read_rttm
from cinedub.eval.av import evaluate, load_truth
from cinedub.eval.av_run import AV_CASES, HELDOUT_CASES, audio_only_scores, case_files, cue_cost

pytestmark = pytest.mark.slow

GROUPS = ["grp_c0", "grp_1e", "grp_0a"]
REACTIONS = ["react_12", "react_13"]


def _scores(av_case, media_dir, name, av_out):
    rec, fused, ident, cost = av_case(name)
    f = case_files(name, media_dir, av_out)
    ref = read_rttm(f.rttm) if f.rttm else None
    s = evaluate(load_truth(f.truth, f.key), fused.timeline, rec.faces, reference=ref) if f.truth else None
    return rec, fused, s


def test_twoshot_dev(av_case, media_dir, av_out):
    rec, fused, s = _scores(av_case, media_dir, "twoshot_dev", av_out)
    print(f"\ntwoshot_dev: {s.der_line}; face {s.accuracy:.1%}, shot 1 {s.shots[0].accuracy:.1%}")
    assert s.der <= 0.10
    assert fused.timeline.num_speakers == 2 and s.ref_speakers == 2
    assert s.shots[0].accuracy >= 0.90  # both faces move their lips there; only one is heard at a time
    for sp in s.speakers:  # VR2 in shots 1 and 3, VR3 in shots 1 and 2: one voice id and one face each
        assert sp.one_id and sp.one_face_identity, sp
        assert len(sp.speaker_ids) == 2


@pytest.mark.parametrize("name", HELDOUT_CASES)
def test_heldout_cases_generalise(av_case, media_dir, av_out, name):
    """The twoshot and reaction situations with other people, rooms, cameras and languages (en_monologue and
    vertical_hevc, edited at test time): no default was chosen on them, and they get the same bounds as the dev set."""
    rec, fused, s = _scores(av_case, media_dir, name, av_out)
    print(f"\n{name}: {s.der_line}; face {s.accuracy:.1%}; " + ", ".join(f"shot {x.shot + 1} {x.accuracy:.1%}"
                                                                         for x in s.shots))
    assert s.der <= 0.10
    assert fused.timeline.num_speakers == s.ref_speakers
    assert s.accuracy >= 0.90 and all(x.accuracy >= 0.90 for x in s.shots)
    for sp in s.speakers:  # each person keeps one voice id, and one face identity wherever they are seen
        assert sp.one_id and sp.one_face_identity, sp
    # a listener is never given the voice it does not speak
    truth = load_truth(case_files(name, media_dir, av_out).truth)
    silent_shots = [i for i, (a, b) in enumerate(truth.shots_ms) if all(p is None for (ts, te, _, p) in truth.turns
                                                                       if a <= ts < b)]
    for t in fused.timeline.exclusive_turns:
        if any(truth.shots_ms[i][0] <= t.start_ms < truth.shots_ms[i][1] for i in silent_shots):
            assert not t.face_track_id, t


@pytest.mark.parametrize("name", GROUPS)
def test_group_speaking_slot_gets_the_turns(av_case, media_dir, name, av_out):
    rec, fused, s = _scores(av_case, media_dir, name, av_out)
    attributed = [a for a in fused.attributions if a.on_screen]
    print(f"\n{name}: face on {s.accuracy:.1%} of speech frames; " +
          ", ".join(f"{a.start_ms}-{a.end_ms} {a.face_track_id} cue={a.cue} p={a.confidence}" for a in attributed))
    assert attributed and s.accuracy >= 0.90
    assert all(a.on_screen is not False for a in fused.attributions if a.end_ms - a.start_ms >= 1000)


@pytest.mark.parametrize("name", REACTIONS)
def test_reaction_listener_gets_no_turn(av_case, media_dir, name, av_out):
    rec, fused, s = _scores(av_case, media_dir, name, av_out)
    print(f"\n{name}: " + ", ".join(f"{a.start_ms}-{a.end_ms} on={a.on_screen} {a.cue or a.reason}"
                                    for a in fused.attributions))
    assert not any(t.face_track_id for t in (*fused.timeline.turns, *fused.timeline.exclusive_turns))
    assert s.accuracy == 1.0


def test_dialogue_5shots(av_case, media_dir, av_out):
    rec, fused, s = _scores(av_case, media_dir, "dialogue_5shots", av_out)
    print(f"\ndialogue_5shots: {s.der_line}; " + ", ".join(f"shot {x.shot + 1} {x.accuracy:.1%}" for x in s.shots))
    assert s.der <= 0.05
    assert fused.timeline.num_speakers == 5
    for shot in s.shots[:4]:
        assert shot.accuracy >= 0.90, shot
    assert all(sp.one_id for sp in s.speakers)


@pytest.mark.xfail(strict=True, reason="Documented limit (issue 3, issue 10): an off-screen man over a visibly talking "
                   "woman. Light-ASD scores her speaking, lip/audio synchrony does not separate her from real speakers "
                   "(z 1.2-1.6, speakers 0.6-5), and her face and his voice appear nowhere else to link.")
def test_dialogue_5shots_offscreen_shot(av_case, media_dir, av_out):
    rec, fused, s = _scores(av_case, media_dir, "dialogue_5shots", av_out)
    assert s.shots[4].accuracy >= 0.90


def test_zh_tvdrama_keeps_two_speakers(av_case, media_dir, av_out):
    rec, fused, s = _scores(av_case, media_dir, "zh_tvdrama", av_out)
    print(f"\nzh_tvdrama: changes {fused.changes}; links {[l for l in fused.links if l.linked]}")
    # the same face is on screen in both shots: it must not merge the two voices (cosine distance 0.48 apart)
    assert rec.diarization.num_speakers == 2 and fused.timeline.num_speakers == 2
    assert not [c for c in fused.changes if c.kind == "merge"]


def test_en_2spk_audio_no_regression(media_dir, models_dir):
    before, after = audio_only_scores(media_dir, models_dir)
    print(f"\nen_2spk_audio: audio {before.line()}\n fused {after.line()}")
    assert after.der <= 0.11 and after.der <= before.der + 0.005
    assert after.hyp_speakers == 2


@pytest.mark.parametrize("name", list(AV_CASES))
def test_fused_timeline_hygiene(av_case, name):
    rec, fused, ident, cost = av_case(name)
    tl = fused.timeline
    tracks = {t.track_id: t for t in rec.faces.tracks}
    shots = rec.shots.shots
    for t in (*tl.turns, *tl.exclusive_turns):
        assert t.end_ms - t.start_ms >= 200, t  # minimum turn length, also for pieces cut at a shot
        nxt = [s.start_ms for s in shots[1:]] + [10**12]  # the audio may outlast the last frame
        inside = [s.index for s, e in zip(shots, nxt) if s.start_ms <= t.start_ms and t.end_ms <= e]
        assert inside, f"{t} crosses a cut"
        if t.face_track_id:  # the face lies in the turn's shot and overlaps the turn in time
            tr = tracks[t.face_track_id]
            assert tr.shot_index == inside[0] and tr.start_ms < t.end_ms and tr.end_ms > t.start_ms, (t, tr)
            assert t.on_screen is True and t.attribution_cue and t.attribution_confidence is not None
        if t.on_screen is None:  # undecided: always with the reason
            assert t.attribution_reason and not t.face_track_id, t
        if t.on_screen is False:
            assert t.attribution_cue, t
    by = {}
    for t in tl.turns:  # no two overlapping turns of one speaker
        for u in by.get(t.speaker_id, []):
            assert u.end_ms <= t.start_ms or t.end_ms <= u.start_ms, (u, t)
        by.setdefault(t.speaker_id, []).append(t)
    for o in tl.overlaps:  # no overlap region made of a hand-over smeared across a cut
        assert not any(o.start_ms < s.start_ms < o.end_ms for s in shots[1:]) or o.end_ms - o.start_ms > 600, o


def test_cost_of_identity_and_synchrony(av_case):
    """Identity + synchrony (+ the decisions) add <= 0.05 real-time factor (CPU time, model load excluded)."""
    cpu = dur = 0.0
    for name in AV_CASES:
        rec, fused, ident, run = av_case(name)
        cost = cue_cost(run)
        cpu += cost.identity_cpu_s + cost.fuse_cpu_s
        dur += rec.source.duration_ms / 1000
        print(f"\n{name}: identity {cost.identity_cpu_s:.2f} s CPU ({cost.n_descriptors} descriptors), "
              f"fuse {cost.fuse_cpu_s:.2f} s CPU (sync {cost.sync_wall_s:.2f} s wall), RTF {cost.rtf(rec.source.duration_ms):.3f}")
    print(f"all: RTF {cpu / dur:.3f}")
    assert cpu / dur <= 0.05
