"""Words to speakers, RTTM round trips and DER/JER scoring."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from cinedub.diarization.rttm import format_rttm, parse_rttm, read_rttm, write_rttm
from cinedub.eval.diarization import load_reference, main as eval_main, overlap_scores, score
from cinedub.ops.words_to_speakers import assign_word_speakers
from cinedub.types import Turn, Word


def test_word_gets_turn_with_largest_overlap():
    turns = [Turn(0, 1000, "A"), Turn(1000, 2000, "B"), Turn(3000, 4000, "A")]
    words = [
        Word("inside", 100, 200, 0.9),
        Word("mostly-B", 900, 1300, 0.9),
        Word("tie", 950, 1050, 0.9),  # 50 ms each side: the earlier turn wins
        Word("gap-near-B", 2200, 2400, 0.9),  # 200 ms after B, 600 ms before A
        Word("gap-near-A", 2600, 2700, 0.9),
        Word("far", 5000, 5100, 0.9),
        Word("instant", 1500, 1500, 0.9),
    ]
    got = {w.text: w.speaker_id for w in assign_word_speakers(words, turns, max_gap_ms=500)}
    assert got == {"inside": "A", "mostly-B": "B", "tie": "A", "gap-near-B": "B", "gap-near-A": "A", "far": None, "instant": "B"}
    assert assign_word_speakers(words[3:4], turns, max_gap_ms=0)[0].speaker_id is None
    assert assign_word_speakers(words, [])[0].speaker_id is None


def test_stm_utterances_get_the_right_speaker(media_dir: Path, en2_result):
    """The hand transcript's utterances, placed on the offline exclusive turns, mostly land on their speaker."""
    words, truth = [], []
    for line in (media_dir / "en_2spk_audio" / "sample.stm").read_text().splitlines():
        f = line.split(maxsplit=5)
        words.append(Word(f[5], int(float(f[3]) * 1000), int(float(f[4]) * 1000), 1.0))
        truth.append(f[2])
    got = [w.speaker_id for w in assign_word_speakers(words, en2_result.exclusive_turns)]
    pairs = Counter(zip(truth, got))
    mapping = {ref: max((h for r, h in pairs if r == ref), key=lambda h: pairs[(ref, h)]) for ref in set(truth)}
    assert len(set(mapping.values())) == 2  # the two speakers map to two different hypothesis speakers
    correct = sum(pairs[(r, h)] for r, h in mapping.items())
    assert correct >= 9, pairs  # measured 10 of 13 utterances (the fast "Hello?" exchange at 6.7-10 s is merged)


def test_rttm_round_trip(tmp_path):
    turns = [Turn(6690, 7120, "spk a"), Turn(7550, 8350, "B"), Turn(8320, 10020, "spk a")]
    path = write_rttm(tmp_path / "x.rttm", turns, "my file")
    text = path.read_text()
    assert text.splitlines()[0] == "SPEAKER my_file 1 6.690 0.430 <NA> <NA> spk_a <NA> <NA>"
    back = read_rttm(path)
    assert [(t.start_ms, t.end_ms, t.speaker_id) for t in back] == [(6690, 7120, "spk_a"), (7550, 8350, "B"), (8320, 10020, "spk_a")]
    assert parse_rttm(format_rttm(turns, "u") + format_rttm(turns[:1], "v")).keys() == {"u", "v"}
    with pytest.raises(ValueError, match="pass uri"):
        read_rttm(_two(tmp_path))
    with pytest.raises(ValueError, match="line 1"):
        parse_rttm("SPEAKER u 1 x 1.0 <NA> <NA> s")


def _two(tmp_path):
    p = tmp_path / "two.rttm"
    p.write_text(format_rttm([Turn(0, 10, "a")], "u") + format_rttm([Turn(0, 10, "a")], "v"))
    return p


def test_reference_rttm_matches_pyannote_reader(media_dir: Path):
    from pyannote.database.util import load_rttm

    path = media_dir / "en_2spk_audio" / "sample.rttm"
    theirs = load_rttm(str(path))["sample"]
    ours = load_reference(path)
    assert sorted(ours.labels()) == sorted(theirs.labels())
    for label in theirs.labels():
        assert abs(ours.label_duration(label) - theirs.label_duration(label)) < 0.002


def test_der_of_reference_against_itself_and_relabelled(media_dir: Path):
    ref = read_rttm(media_dir / "dialogue_5shots" / "dialogue_5shots.rttm")
    names = {s: f"hyp{i}" for i, s in enumerate(sorted({t.speaker_id for t in ref}, reverse=True))}
    relabelled = [Turn(t.start_ms, t.end_ms, names[t.speaker_id]) for t in ref]
    s = score(ref, relabelled, collar_s=0.0)
    assert s.der == 0.0 and s.jer == 0.0 and s.ref_speakers == s.hyp_speakers == 5


def test_der_counts_a_missing_speaker_as_missed_time(media_dir: Path):
    ref = read_rttm(media_dir / "dialogue_5shots" / "dialogue_5shots.rttm")
    without_ls3 = [t for t in ref if t.speaker_id != "LS3"]
    ls3_ms = sum(t.end_ms - t.start_ms for t in ref if t.speaker_id == "LS3")
    total_ms = sum(t.end_ms - t.start_ms for t in ref)
    s = score(ref, without_ls3, collar_s=0.0)
    assert s.der == pytest.approx(ls3_ms / total_ms, abs=1e-3)
    assert s.missed_s == pytest.approx(ls3_ms / 1000, abs=1e-3)
    assert s.jer == pytest.approx(1 / 5, abs=1e-3)  # one of five speakers entirely missed, the others perfect
    # a collar removes time around every reference boundary from scoring
    assert score(ref, without_ls3, collar_s=0.5).total_s < s.total_s


def test_overlap_scoring_and_skip_overlap(media_dir: Path):
    ref = read_rttm(media_dir / "en_2spk_audio" / "sample.rttm")
    ov = overlap_scores(ref, [])
    assert ov.reference_s == pytest.approx(1.89, abs=0.01) and ov.recall == 0.0
    single = [Turn(t.start_ms, t.end_ms, "one") for t in ref]  # everybody as one speaker
    assert score(ref, single, skip_overlap=True).der < score(ref, single, skip_overlap=False).der


def test_eval_command_prints_der_and_jer(media_dir: Path, tmp_path, capsys, en2_result):
    hyp = write_rttm(tmp_path / "hyp.rttm", en2_result.turns, "sample")
    assert eval_main([str(media_dir / "en_2spk_audio" / "sample.rttm"), str(hyp), "--collar", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "DER" in out and "JER" in out and "collar 0.25s total" in out and "overlap scored" in out
    js = tmp_path / "res.json"
    en2_result.to_json(js)
    assert eval_main([str(media_dir / "en_2spk_audio" / "sample.rttm"), str(js), "--json"]) == 0
    assert '"der":' in capsys.readouterr().out
