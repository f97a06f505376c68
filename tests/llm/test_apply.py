"""Bidirectional application on the real ASR words of the fixture clips: text edits keep word timing, speaker
edits reach words and turns (turns relabelled or split at the pause between speakers).

Every expectation is derived from the fixture's own words (see ``clips.py``): the clips are picked by their
properties and the edits are built from their words, so the tests hold whatever Whisper heard on this machine."""

from __future__ import annotations

import pytest

from cinedub.llm.apply import apply_speakers_to_turns, realign_edit, realign_words, same_word
from cinedub.llm.config import AutoAcceptPolicy
from cinedub.llm.correct import ClipCorrection
from cinedub.llm.guards import edit_scope_check, text_similarity
from cinedub.llm.review import auto_accept
from cinedub.llm.versions import read_rows
from cinedub.types import Turn, Word, join_words
from clips import altered, core, long_word, other_char, richest, source_speakers


@pytest.fixture(scope="module")
def rows(llm_out):
    return read_rows(llm_out, columns=["clip_id", "source_id", "language", "text", "words", "turns"])


def _words(row) -> list[Word]:
    return [Word.from_dict(w) for w in row["words"]]


def _main_speaker(words: list[Word]) -> str:
    """The speaker of most of ``words`` (ties: the first to speak)."""
    ids = [w.speaker_id for w in words]
    return max(dict.fromkeys(ids), key=ids.count)


def _span(out, k):
    """Corrected words that came from ASR word ``k`` only."""
    return [w for w, src in zip(out.words, out.sources) if src == (k,)]


def test_split_merge_insert_delete_keep_timing(rows):
    row = richest(rows, "en", min_words=10)
    asr = _words(row)
    texts = [w.text for w in asr]
    n = len(asr)
    s = max(range(1, n - 1), key=lambda k: (sum(c.isalpha() for c in texts[k]), -k))  # the longest word: split it
    assert sum(c.isalpha() for c in texts[s]) >= 5, texts
    free = [k for k in range(1, n - 1) if abs(k - s) > 1]
    m = free[0]  # merge m and m + 1
    i = next(k for k in free if k > m + 2 and k + 1 not in (s,))  # insert "very" after i
    d = next(k for k in free if k > i + 2)  # delete d
    assert m + 1 in free and d < n - 1, f"clip too short for the edits: {n} words"
    lead, body, trail = core(texts[s])
    h = len(body) // 2
    split = [lead + body[:h], body[h:] + trail]
    new: list[str] = []
    for k, t in enumerate(texts):
        if k == s:
            new += split
        elif k == m:
            new.append(core(t)[1] + "-" + texts[m + 1])
        elif k in (m + 1, d):
            continue
        else:
            new.append(t)
            if k == i:
                new.append("very")
    out = realign_words(asr, [(None, " ".join(new))])  # None: each word keeps its ASR speaker

    assert [w.text for w in out.words] == new
    # split word: the two halves share the ASR word's span, in order, in proportion to their length
    a, b = _span(out, s)
    assert (a.start_ms, b.end_ms) == (asr[s].start_ms, asr[s].end_ms) and a.end_ms == b.start_ms
    assert abs((a.end_ms - a.start_ms) / max(1, asr[s].end_ms - asr[s].start_ms) - h / len(body + trail)) < 0.15
    # merged words: one token spans both ASR words
    merged = next(w for w, src in zip(out.words, out.sources) if src == (m, m + 1))
    assert (merged.start_ms, merged.end_ms) == (asr[m].start_ms, asr[m + 1].end_ms) and merged.probability is None
    # insertion: "very" shares time with its neighbour, never outside the clip's speech
    very = next(w for w, src in zip(out.words, out.sources) if w.text == "very" and not src)
    assert asr[i].start_ms <= very.start_ms <= very.end_ms <= asr[i + 1].end_ms and very.probability is None
    # deletion: nothing comes from the deleted word
    assert all(d not in src for src in out.sources)
    # unchanged words away from the edits keep their times and probabilities exactly; every time is monotonic
    for k in set(range(len(asr))) - {s, m, m + 1, i, d}:
        (w,) = _span(out, k)
        assert (w.text, w.start_ms, w.end_ms, w.probability) == (texts[k], asr[k].start_ms, asr[k].end_ms, asr[k].probability)
    starts = [w.start_ms for w in out.words]
    assert starts == sorted(starts) and all(w.start_ms <= w.end_ms for w in out.words)
    assert out.relabels == []


def test_zh_characters_keep_asr_word_granularity(rows):
    """Two characters of the Mandarin clip replaced (its least sure single-character words): one word per ASR
    word, the same times, only the changed words lose their probability; multi-character ASR words stay whole."""
    row = richest(rows, "zh", min_words=6)
    asr = _words(row)
    singles = sorted((k for k, w in enumerate(asr) if len(w.text) == 1), key=lambda k: (asr[k].probability, k))[:2]
    assert len(singles) == 2
    fixed = [other_char(w.text) if k in singles else w.text for k, w in enumerate(asr)]
    out = realign_words(asr, [(asr[0].speaker_id, "".join(fixed) + "？")])
    assert len(out.words) == len(asr)
    for k, (new, old) in enumerate(zip(out.words, asr)):
        assert (new.start_ms, new.end_ms) == (old.start_ms, old.end_ms)
        assert new.text.rstrip("？") == fixed[k]
        assert new.probability == (None if k in singles else old.probability)
    assert out.words[-1].text.endswith("？")  # punctuation sticks to the character before it


def test_speaker_relabel_reaches_turns(rows):
    """A clip given entirely to a speaker of its source who does not speak in it: turns holding words are relabelled
    and lose their on-screen link, times unchanged; a word-less turn is untouched."""
    row = richest(rows, "en")
    asr = _words(row)
    turns = [Turn.from_dict(t) for t in row["turns"]]
    target = next(s for s in source_speakers(rows, row["source_id"]) if s not in {w.speaker_id for w in asr})
    out = realign_words(asr, [(target, " ".join(w.text for w in asr))])
    assert len(out.relabels) == len(asr) and [w.text for w in out.words] == [w.text for w in asr]
    new_turns = apply_speakers_to_turns(turns, out.words)
    assert [(t.start_ms, t.end_ms) for t in new_turns] == [(t.start_ms, t.end_ms) for t in sorted(turns, key=lambda t: t.start_ms)]
    for old, new in zip(sorted(turns, key=lambda t: t.start_ms), new_turns):
        if any(old.start_ms <= (w.start_ms + w.end_ms) / 2 < old.end_ms for w in asr):
            assert new.speaker_id == target and new.on_screen is None and new.face_track_id is None
        else:
            assert new == old


def _second_half_to_other_speaker(rows, row):
    """The clip's ASR words realigned with the first half to its main speaker and the second half to another speaker
    of the source: ``(asr words, main speaker, other speaker, index of the first moved word, realignment)``."""
    asr = _words(row)
    first = _main_speaker(asr)
    other = next(s for s in source_speakers(rows, row["source_id"]) if s != first)
    half = len(asr) // 2
    out = realign_words(asr, [(first, " ".join(w.text for w in asr[:half])), (other, " ".join(w.text for w in asr[half:]))])
    return asr, first, other, half, out


def test_speaker_change_splits_the_turn_at_the_pause(rows):
    """The second half of the clip's words given to another speaker: the turn holding the change is split at the
    middle of the pause between the two words, and the relabelled part has no face link."""
    row = richest(rows, "en")
    asr, first, other, half, out = _second_half_to_other_speaker(rows, row)
    moved = {k for k in range(len(asr)) if asr[k].speaker_id != (first if k < half else other)}
    assert {r.word_index for r in out.relabels} == moved
    turns = [Turn.from_dict(t) for t in row["turns"]]
    new = apply_speakers_to_turns(turns, out.words)
    cut = (asr[half - 1].end_ms + asr[half].start_ms) // 2
    holder = next(t for t in turns if t.start_ms <= (asr[half].start_ms + asr[half].end_ms) / 2 < t.end_ms)
    if holder.start_ms <= (asr[half - 1].start_ms + asr[half - 1].end_ms) / 2 < holder.end_ms:  # both words in one turn
        assert any(t.start_ms == max(cut, holder.start_ms) and t.speaker_id == other for t in new)
    for t in new:
        mids = [(w.start_ms + w.end_ms) / 2 for w in out.words if t.start_ms <= (w.start_ms + w.end_ms) / 2 < t.end_ms]
        if mids and t.speaker_id == other and other != holder.speaker_id:
            assert t.on_screen is None and t.face_track_id is None
    assert min(t.start_ms for t in new) == min(t.start_ms for t in turns)
    assert max(t.end_ms for t in new) == max(t.end_ms for t in turns)


def test_reviewer_edit_keeps_word_timing_and_model_speakers(rows):
    """A reviewer edits the proposed text (one word altered, a comma added): it is aligned onto the ASR words, so
    every word keeps its own ASR span (not one word spanning the clip), with the model's speakers."""
    row = richest(rows, "en")
    asr, first, other, half, model = _second_half_to_other_speaker(rows, row)
    k = long_word(row["words"], 1)
    texts = [w.text for w in asr]
    texts[k] = altered(texts[k])
    texts[1] = texts[1].rstrip(",") + ","
    out = realign_edit(asr, model.words, " ".join(texts))
    assert [w.text for w in out.words] == texts
    for j, (new, old) in enumerate(zip(out.words, asr)):
        assert (new.start_ms, new.end_ms) == (old.start_ms, old.end_ms)
        assert new.speaker_id == (first if j < half else other)
        assert new.probability == (None if j == k else old.probability)


def test_edit_scope_guard_on_real_probabilities(rows):
    """Changing only words the ASR was unsure of passes; changing a word it was sure of, or appending words, sends
    the clip to review (thresholds relative to the clip's own probabilities)."""
    row = richest(rows, "en")
    asr = _words(row)
    texts = [w.text for w in asr]
    order = sorted(range(len(asr)), key=lambda k: (asr[k].probability, k))
    unsure, sure = order[0], order[-1]
    p = (asr[unsure].probability + asr[sure].probability) / 2
    assert asr[unsure].probability < p <= asr[sure].probability, "the clip's words all have one probability"

    def check(new_texts):
        out = realign_words(asr, [(asr[0].speaker_id, " ".join(new_texts))])
        return edit_scope_check(asr, out.words, out.sources, p)

    assert check(texts).ok
    assert check([altered(t) if k == unsure else t for k, t in enumerate(texts)]).ok
    sure_changed = check([altered(t) if k == sure else t for k, t in enumerate(texts)])
    assert not sure_changed.ok and "sure of" in sure_changed.detail
    appended = check(texts + ["and", "approve", "everything"])
    assert not appended.ok and "3 word(s) inserted" in appended.detail
    assert check([t.upper() if k == sure else t for k, t in enumerate(texts)]).ok  # casing is not a change
    assert same_word("Dreams,", "dreams") and not same_word("dream", "dreams")


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
    flagged = ClipCorrection(**base, confidence=0.99, edit_ratio=0.0,
                             guards=[{"name": "free_text", "ok": False, "detail": "clue has instruction-like text"}])
    ok, why = auto_accept(flagged, policy)
    assert not ok and "free_text" in why


def test_review_decisions_on_a_real_clip(rows):
    """Approve / reject / edit of one corrected clip, and the refusals of decisions that cannot apply."""
    from cinedub.llm.review import ReviewDecision, review_updates

    row = dict(richest(rows, "en"), provenance={"review_status": "unreviewed", "models": []})
    asr = _words(row)
    first = _main_speaker(asr)
    other = next(s for s in source_speakers(rows, row["source_id"]) if s != first)
    half = len(asr) // 2
    texts = [w.text for w in asr]
    k = long_word(row["words"], 1)
    texts[k] = altered(texts[k])
    fixed = realign_words(asr, [(first, " ".join(texts[:half])), (other, " ".join(texts[half:]))])
    turns = apply_speakers_to_turns([Turn.from_dict(t) for t in row["turns"]], fixed.words)
    proposed = join_words(texts)
    corr = ClipCorrection(clip_id=row["clip_id"], status="ok", model="m", prompt_id="correction/v2/en@x", cache_key="k",
                          text_before=row["text"], text=proposed,
                          words=[w.to_dict() for w in fixed.words], turns=[t.to_dict() for t in turns],
                          speakers=[], emotion="sad", emotion_confidence=0.7, scene_type="dialogue", confidence=0.8,
                          edit_ratio=0.04, speaker_relabels=len(fixed.relabels))
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
    edited_text = proposed.rstrip(".!?") + "!"
    edited = decide("edit", edited_text)
    assert edited["text"] == edited_text
    # the reviewer's text keeps the model's speakers and the ASR timing, word by word
    assert [(w["speaker_id"], w["start_ms"], w["end_ms"]) for w in edited["words"]] == [
        (w["speaker_id"], w["start_ms"], w["end_ms"]) for w in corr.words]
    with pytest.raises(ValueError, match="edit needs"):
        decide("edit", "  ")
    with pytest.raises(ValueError, match="not up for review"):
        review_updates(rows_, corrs, auto_accepted=[], reviewer="Ada", decisions=[ReviewDecision("nope", "approve")])


def test_page_decisions_refuse_what_cannot_apply():
    """A submitted review page: undecided clips stay unreviewed, 'edit' needs text, and a text changed under any
    other decision is refused (the reviewer meant 'edit'), each with a one-line reason naming the clip."""
    from cinedub.llm.review import page_decisions

    def corr(cid, text):
        return ClipCorrection(clip_id=cid, status="ok", model="m", prompt_id="p", cache_key="k", text_before=text,
                              text=text)

    a, b, c, d = corr("a", "one two"), corr("b", "三四"), corr("c", "five six"), corr("d", "seven")
    decisions, errors = page_decisions([(a, "approve", "one  two", ""), (b, "undecided", "三四", ""),
                                        (c, "edit", "five, six!", " why "), (d, "reject", "seven", "")])
    assert errors == [] and [(x.clip_id, x.action, x.edited_text, x.note) for x in decisions] == [
        ("a", "approve", "", ""), ("c", "edit", "five, six!", "why"), ("d", "reject", "", "")]
    decisions, errors = page_decisions([(a, "approve", "one three", ""), (b, "undecided", "三五", ""),
                                        (c, "edit", "  ", "")])
    assert decisions == [] and [e.split(":")[0] for e in errors] == ["clip 1", "clip 2", "clip 3"]
    assert "choose 'edit'" in errors[0] and "needs the text" in errors[2]


def test_review_table_rows_escape_and_width(rows):
    """The before/after rows of the review page on real clips: every row at most ROW_WIDTH display columns (CJK
    count 2), changed words marked on both sides, the words in order; model text escaped so it can never become a
    link, an image, HTML or markup."""
    from cinedub.llm.review import OPEN, ROW_WIDTH, display_width, md_text, plain_text, side_by_side

    for lang in ("en", "zh"):
        row = richest(rows, lang, min_words=6)
        after = [dict(w) for w in row["words"]]
        k = max(range(len(after)), key=lambda j: (len(after[j]["text"]), -j))
        after[k]["text"] = altered(after[k]["text"]) if lang == "en" else other_char(after[k]["text"][0]) + after[k]["text"][1:]
        out = side_by_side(row["words"], after, lang)
        assert all(display_width(r.before) <= ROW_WIDTH + 20 and display_width(r.after) <= ROW_WIDTH + 20 for r in out)
        assert sum(r.before.count(OPEN) for r in out) == 1 and sum(r.after.count(OPEN) for r in out) == 1
        assert [r.start_ms for r in out] == sorted(r.start_ms for r in out)
        sep = "" if lang == "zh" else " "
        joined = sep.join(r.before for r in out).replace(OPEN, "").replace("›", "")
        assert joined.replace(" ", "") == "".join(w["text"] for w in row["words"]).replace(" ", "")
    evil = "[click](http://evil.example) ![x](http://t/p.png) <img src=x onerror=alert(1)> **bold** | cell"
    escaped = md_text(evil)
    assert all(escaped[i - 1] == "\\" for i, c in enumerate(escaped) if c in "[]()<>*|!")  # each one escaped
    assert plain_text(evil).count("[") == 0 and "<" not in plain_text(evil) and "\\" not in plain_text(evil)
