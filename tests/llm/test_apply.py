"""Bidirectional application on the real ASR words of the fixture clips: text edits keep word timing, speaker
edits reach words and turns (turns relabelled or split at the pause between speakers)."""

from __future__ import annotations

import pytest

from cinedub.llm.apply import apply_speakers_to_turns, realign_words
from cinedub.llm.guards import text_similarity
from cinedub.llm.review import auto_accept, text_diff_markdown
from cinedub.llm.config import AutoAcceptPolicy
from cinedub.llm.correct import ClipCorrection
from cinedub.llm.versions import read_rows
from cinedub.types import Turn, Word


@pytest.fixture(scope="module")
def rows(llm_out):
    return {r["text"][:12]: r for r in read_rows(llm_out, columns=["clip_id", "language", "text", "words", "turns"])}


def _words(row) -> list[Word]:
    return [Word.from_dict(w) for w in row["words"]]


def test_split_merge_insert_delete_keep_timing(rows):
    row = rows["In the heart"]  # "In the heart of my California congressional district, where I chased my own dreams, growing up."
    asr = _words(row)
    spk = asr[0].speaker_id
    text = "In the heart of my Cali fornia congressional-district, where I chased my very own dreams growing up."
    out = realign_words(asr, [(spk, text)])
    got = {w.text: w for w in out.words}
    t = {w.text: w for w in asr}
    # split word: the two halves share the ASR word's span, in order, in proportion to their length
    assert got["Cali"].start_ms == t["California"].start_ms and got["fornia"].end_ms == t["California"].end_ms
    assert got["Cali"].end_ms == got["fornia"].start_ms
    # merged words: one token spans both ASR words
    assert got["congressional-district,"].start_ms == t["congressional"].start_ms
    assert got["congressional-district,"].end_ms == t["district,"].end_ms
    # insertion: "very" shares time with a neighbour, never outside the clip's speech
    assert t["my"].start_ms <= got["very"].start_ms <= got["very"].end_ms <= t["dreams,"].end_ms
    # unchanged words keep their times and probabilities; every time is monotonic
    assert (got["chased"].start_ms, got["chased"].end_ms, got["chased"].probability) == (
        t["chased"].start_ms, t["chased"].end_ms, t["chased"].probability)
    starts = [w.start_ms for w in out.words]
    assert starts == sorted(starts) and all(w.start_ms <= w.end_ms for w in out.words)
    assert out.relabels == []


def test_zh_characters_keep_asr_word_granularity(rows):
    row = rows["在古老星期中发现了有机分"]
    asr = _words(row)
    out = realign_words(asr, [(asr[0].speaker_id, "在古老星球中发现了有机分子，我们离第三类接触还有多远？")])
    assert len(out.words) == len(asr)  # one word per ASR word: "我们", "第三", "还有" stay two-character words
    for new, old in zip(out.words, asr):
        assert (new.start_ms, new.end_ms) == (old.start_ms, old.end_ms)
    assert [w.text for w in out.words if w.probability is None] == ["球", "离"]  # only changed words lose it
    assert out.words[-1].text == "远？" and out.words[12].text == "子，"


def test_speaker_relabel_reaches_turns(rows):
    """The LS3 clip (its first turn is VR1's last 30 ms) given entirely to VR1: turns holding words are relabelled
    and lose their on-screen link, times unchanged; the word-less turn is untouched."""
    row = rows["for a long t"]
    asr = _words(row)
    turns = [Turn.from_dict(t) for t in row["turns"]]
    vr1 = turns[0].speaker_id
    assert vr1.endswith("VR1") and {w.speaker_id for w in asr} == {turns[1].speaker_id}
    out = realign_words(asr, [(vr1, " ".join(w.text for w in asr))])
    assert len(out.relabels) == len(asr) and [w.text for w in out.words] == [w.text for w in asr]
    new_turns = apply_speakers_to_turns(turns, out.words)
    assert [(t.start_ms, t.end_ms) for t in new_turns] == [(t.start_ms, t.end_ms) for t in turns]
    for old, new in zip(turns, new_turns):
        if any(old.start_ms <= (w.start_ms + w.end_ms) / 2 < old.end_ms for w in asr):
            assert new.speaker_id == vr1 and new.on_screen is None and new.face_track_id is None
        else:
            assert new == old


def test_similarity_and_auto_accept_policy():
    assert text_similarity("My biggest weaknesses is", "my biggest weakness is.", "en") > 0.9
    assert text_similarity("在古老星期中", "在古老星球中，", "zh") == pytest.approx(5 / 6)
    assert text_similarity("", "", "en") == 1.0
    base = dict(clip_id="c", status="ok", model="m", prompt_id="p", cache_key="k", text_before="a")
    policy = AutoAcceptPolicy()
    assert auto_accept(ClipCorrection(**base, confidence=0.95, edit_ratio=0.0), policy)[0]
    assert not auto_accept(ClipCorrection(**base, confidence=0.95, edit_ratio=0.1), policy)[0]
    assert not auto_accept(ClipCorrection(**base, confidence=0.95, edit_ratio=0.0, speaker_relabels=1), policy)[0]
    assert not auto_accept(ClipCorrection(**base, confidence=0.5, edit_ratio=0.0), policy)[0]
    assert not auto_accept(ClipCorrection(**{**base, "status": "guard_failed"}), policy)[0]
    assert not auto_accept(ClipCorrection(**base, confidence=0.95, edit_ratio=0.0), AutoAcceptPolicy(enabled=False))[0]
    assert text_diff_markdown("a b | c", "a x | c", "en") == "a ~~b~~ **x** \\| c"


def test_review_decisions_on_a_real_clip(rows):
    """Approve / reject / edit of one corrected clip, and the refusals of decisions that cannot apply."""
    from cinedub.llm.review import ReviewDecision, review_updates

    row = dict(rows["My biggest w"], provenance={"review_status": "unreviewed", "models": []})
    asr = _words(row)
    vr1, aoc = asr[0].speaker_id, row["turns"][0]["speaker_id"]
    fixed = realign_words(asr, [(vr1, "My biggest weakness is asking for help"), (aoc, "when I need it.")])
    turns = apply_speakers_to_turns([Turn.from_dict(t) for t in row["turns"]], fixed.words)
    corr = ClipCorrection(clip_id=row["clip_id"], status="ok", model="m", prompt_id="correction/v1/en@x", cache_key="k",
                          text_before=row["text"], text="My biggest weakness is asking for help when I need it.",
                          words=[w.to_dict() for w in fixed.words], turns=[t.to_dict() for t in turns],
                          speakers=[], emotion="sad", emotion_confidence=0.7, scene_type="dialogue", confidence=0.8,
                          edit_ratio=0.04, speaker_relabels=4)
    rows_ = {row["clip_id"]: row}
    corrs = {row["clip_id"]: corr}

    def decide(action, text=""):
        return review_updates(rows_, corrs, auto_accepted=[], reviewer="Ada",
                              decisions=[ReviewDecision(row["clip_id"], action, text)])[row["clip_id"]]

    approved = decide("approve")
    assert approved["words"] == corr.words and approved["provenance"]["review_status"] == "approved"
    assert approved["correction"]["reviewer"] == "Ada" and approved["provenance"]["models"][0]["stage"] == "llm"
    rejected = decide("reject")
    assert "words" not in rejected and "text" not in rejected and rejected["provenance"]["review_status"] == "rejected"
    edited = decide("edit", "My biggest weakness is asking for help, when I need it!")
    assert edited["text"] == "My biggest weakness is asking for help, when I need it!"
    # the reviewer's text keeps the model's speakers and the ASR timing
    assert [(w["speaker_id"], w["start_ms"]) for w in edited["words"]] == [(w["speaker_id"], w["start_ms"]) for w in corr.words]
    with pytest.raises(ValueError, match="edit needs"):
        decide("edit", "  ")
    with pytest.raises(ValueError, match="not up for review"):
        review_updates(rows_, corrs, auto_accepted=[], reviewer="Ada", decisions=[ReviewDecision("nope", "approve")])
