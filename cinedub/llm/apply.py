"""Applying a correction to the timeline: corrected text and speakers back onto timed words, then onto turns.

**Words.** The corrected transcript (utterances: speaker + text) is aligned to the ASR words in two levels of
Levenshtein edit operations (``rapidfuzz.distance.Levenshtein.opcodes``; case, Unicode width and punctuation
ignored): first word by word (Chinese/Japanese: character by character), so an unchanged or a lightly edited word maps
to exactly the word it replaces; then, inside each run of changes that is not a one-to-one substitution of similar
words (split, merged, inserted, deleted or rewritten words), character by character. Every corrected token (a
whitespace-separated word; for Chinese/Japanese, a run of characters that maps to one ASR word) thus learns which ASR
words it came from. Tokens sharing an ASR word form one group, whose time span (first
start to last end of its ASR words) is divided among its tokens in proportion to their length; a token that came from
exactly one ASR word alone keeps that word's times exactly. Inserted tokens (no ASR characters) join the group before
them (or after, at the start). Timing therefore always comes from the ASR words: nothing is re-timed from audio.
An unchanged word keeps its ASR probability; a changed or inserted one gets None (no acoustic score exists for it).

**Speakers.** Each token takes its utterance's speaker (or, for a reviewer's plain-text edit, the majority speaker
of its ASR words). A turn whose words now belong to another speaker is relabelled; a turn whose words belong to
several speakers is split at the middle of the pause between the last word of one speaker and the first of the next
(e.g. a question and its answer diarized as one voice become two turns). Pieces keep the turn's on-screen flag and
face track only while their speaker is the turn's original one; a relabelled piece's face link is unknown (None).
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rapidfuzz.distance import Levenshtein

from cinedub.text import is_cjk
from cinedub.types import Turn, Word


@dataclass(frozen=True)
class Relabel:
    """A corrected word whose speaker differs from the speaker its ASR word(s) had."""

    word_index: int
    text: str
    start_ms: int
    end_ms: int
    old_speaker: str | None
    new_speaker: str | None


@dataclass(frozen=True)
class Realigned:
    """Result of :func:`realign_words`.

    Attributes:
        words: the corrected words, timed from the ASR words (source timeline, ms).
        sources: for each corrected word, the indices of the ASR words it came from (empty for an insertion).
        relabels: corrected words whose speaker changed.
    """

    words: list[Word]
    sources: list[tuple[int, ...]]
    relabels: list[Relabel]


@dataclass
class _Token:
    text: str
    speaker: str | None
    chunk: int  # whitespace-separated chunk the token came from
    words: set[int]  # ASR word indices


def _key(ch: str) -> str:
    c = unicodedata.normalize("NFKC", ch).lower()
    return c if len(c) == 1 else ch


def _unit_key(text: str) -> str:
    """Comparison key of a word or character: NFKC, lower case, punctuation dropped (kept if nothing else is left)."""
    norm = unicodedata.normalize("NFKC", text).lower()
    key = "".join(c for c in norm if not unicodedata.category(c).startswith("P") and not c.isspace())
    return key or norm


def same_word(a: str, b: str) -> bool:
    """True when two words are the same up to case, Unicode width and punctuation ("Dreams," and "dreams")."""
    return _unit_key(a) == _unit_key(b)


def _tokens(utterances: Sequence[tuple[str | None, str]]) -> list[_Token]:
    """Split utterances into provisional tokens: whitespace words, and one token per CJK character (punctuation and
    Latin letters inside a CJK run stick to the character before them)."""
    tokens: list[_Token] = []
    n_chunk = 0
    for speaker, text in utterances:
        for chunk in text.split():
            n_chunk += 1
            if any(is_cjk(c) for c in chunk):
                cur: _Token | None = None
                for c in chunk:
                    if cur is None or is_cjk(c):
                        cur = _Token("", speaker, n_chunk, set())
                        tokens.append(cur)
                    cur.text += c
            else:
                tokens.append(_Token(chunk, speaker, n_chunk, set()))
    return tokens


def _asr_units(asr_words: Sequence[Word]) -> tuple[list[str], list[int]]:
    """ASR words as alignment units (CJK words split into characters, as :func:`_tokens` does) and their word index."""
    units: list[str] = []
    owner: list[int] = []
    for k, w in enumerate(asr_words):
        for piece in _tokens([(None, w.text)]):
            units.append(piece.text)
            owner.append(k)
    return units, owner


def _char_map(asr: str, corrected: str) -> list[int | None]:
    """For each corrected character, the index of the ASR character it aligns to (None for an insertion)."""
    a = "".join(_key(c) for c in asr)
    b = "".join(_key(c) for c in corrected)
    out: list[int | None] = [None] * len(b)
    for op in Levenshtein.opcodes(a, b):
        if op.tag == "equal":
            for k in range(op.dest_end - op.dest_start):
                out[op.dest_start + k] = op.src_start + k
        elif op.tag == "replace":
            n_src, n_dst = op.src_end - op.src_start, op.dest_end - op.dest_start
            for k in range(n_dst):
                out[op.dest_start + k] = op.src_start + (k * n_src) // n_dst
    return out


def _unit_map(asr_units: list[str], tokens: list[_Token]) -> list[set[int]]:
    """ASR unit indices each token comes from: unit-level edit operations first (an edited word maps 1:1 to the
    similar word it replaces: normalised similarity >= 0.5), then character-level alignment inside every other
    changed block (split, merged, inserted or deleted words)."""
    out: list[set[int]] = [set() for _ in tokens]
    a = [_unit_key(u) for u in asr_units]
    b = [_unit_key(t.text) for t in tokens]
    for tag, s0, s1, d0, d1 in _blocks(a, b):
        one_to_one = tag == "equal" or (
            tag == "replace"
            and s1 - s0 == d1 - d0
            and all(Levenshtein.normalized_similarity(a[s0 + k], b[d0 + k]) >= 0.5 for k in range(d1 - d0))
        )
        if one_to_one:
            for k in range(d1 - d0):
                out[d0 + k].add(s0 + k)
        elif s1 > s0 and d1 > d0:
            src_chars: list[int] = []
            for i in range(s0, s1):
                src_chars += [i] * len(asr_units[i])
            dst_chars: list[int] = []
            for j in range(d0, d1):
                dst_chars += [j] * len(tokens[j].text)
            cmap = _char_map("".join(asr_units[s0:s1]), "".join(t.text for t in tokens[d0:d1]))
            for c, src in enumerate(cmap):
                if src is not None:
                    out[dst_chars[c]].add(src_chars[src])
    return out


def _blocks(a: list[str], b: list[str]) -> list[tuple[str, int, int, int, int]]:
    """Levenshtein opcodes of two unit lists with runs of adjacent insert/delete/replace merged into one block, so
    that a word split or merged by the correction is aligned character by character as a whole. Tags: "equal",
    "replace" (substitutions only: units map one to one) or "change" (anything else)."""
    out: list[tuple[str, int, int, int, int]] = []
    for op in Levenshtein.opcodes(a, b):
        if op.tag != "equal" and out and out[-1][0] != "equal":
            _, s0, _, d0, _ = out[-1]
            out[-1] = ("change", s0, op.src_end, d0, op.dest_end)
        else:
            tag = op.tag if op.tag in ("equal", "replace") else "change"
            out.append((tag, op.src_start, op.src_end, op.dest_start, op.dest_end))
    return out


def _merge_cjk(tokens: list[_Token]) -> list[_Token]:
    """Merge consecutive single-character CJK tokens of one utterance that come from the same ASR word."""
    out: list[_Token] = []
    for t in tokens:
        prev = out[-1] if out else None
        cjk = bool(t.text) and is_cjk(t.text[0])
        if (
            prev is not None
            and cjk
            and prev.text
            and is_cjk(prev.text[0])
            and prev.speaker == t.speaker
            and prev.chunk == t.chunk
            and (not t.words or not prev.words or t.words & prev.words)
            and (t.words or prev.words)
        ):
            prev.text += t.text
            prev.words |= t.words
        else:
            out.append(t)
    return out


def _groups(tokens: list[_Token]) -> list[list[int]]:
    """Token index groups sharing ASR words; insertions join the group before them (the next one at the start)."""
    groups: list[list[int]] = []
    gwords: list[set[int]] = []
    pending: list[int] = []  # insertions before the first anchored token
    for i, t in enumerate(tokens):
        if not t.words:
            if groups:
                groups[-1].append(i)
            else:
                pending.append(i)
            continue
        if groups and gwords[-1] & t.words:
            groups[-1].append(i)
            gwords[-1] |= t.words
        else:
            groups.append(pending + [i])
            gwords.append(set(t.words))
            pending = []
    if pending:
        groups.append(pending)
    return groups


def realign_words(
    asr_words: Sequence[Word], utterances: Sequence[tuple[str | None, str]]
) -> Realigned:
    """Corrected words timed from ``asr_words`` (see the module docstring for the method).

    Args:
        asr_words: the clip's words before correction, in time order (source timeline, ms).
        utterances: ``(speaker_id, text)`` in order; a None speaker inherits the majority speaker of the ASR words
            each token came from.

    Returns:
        :class:`Realigned`; with no ASR words, or no corrected text, the words are returned unchanged / empty.
    """
    if not asr_words:
        return Realigned([], [], [])
    units, owner = _asr_units(asr_words)
    tokens = _tokens(utterances)
    if not tokens:
        return Realigned([], [], [])
    for t, src in zip(tokens, _unit_map(units, tokens)):
        t.words = {owner[i] for i in src}
    tokens = _merge_cjk(tokens)
    groups = _groups(tokens)
    times: list[tuple[int, int]] = [(0, 0)] * len(tokens)
    for g in groups:
        ws = set().union(*(tokens[i].words for i in g))
        if not ws:  # nothing aligned at all: spread over the whole clip's speech
            ws = set(range(len(asr_words)))
        start = min(asr_words[k].start_ms for k in ws)
        end = max(asr_words[k].end_ms for k in ws)
        lengths = [max(1, len(tokens[i].text)) for i in g]
        total = sum(lengths)
        cum = 0
        for i, n in zip(g, lengths):
            a = start + round((end - start) * cum / total)
            cum += n
            b = start + round((end - start) * cum / total)
            times[i] = (a, b)
    words: list[Word] = []
    sources: list[tuple[int, ...]] = []
    relabels: list[Relabel] = []
    for t, (a, b) in zip(tokens, times):
        src = tuple(sorted(t.words))
        old = Counter(asr_words[k].speaker_id for k in src).most_common(1)[0][0] if src else None
        speaker = t.speaker if t.speaker is not None else old
        unchanged = len(src) == 1 and _unit_key(t.text) == _unit_key(asr_words[src[0]].text)
        prob = asr_words[src[0]].probability if unchanged else None
        words.append(Word(text=t.text, start_ms=a, end_ms=b, probability=prob, speaker_id=speaker))  # type: ignore[arg-type]
        sources.append(src)
        if src and speaker != old:
            relabels.append(Relabel(len(words) - 1, t.text, a, b, old, speaker))
    return Realigned(words, sources, relabels)


def realign_edit(asr_words: Sequence[Word], corrected: Sequence[Word], text: str) -> Realigned:
    """A reviewer's free text timed from the ASR words, with the speakers of the correction.

    The text is aligned onto ``asr_words`` exactly like a model's correction (:func:`realign_words`), so every word
    the reviewer left as the ASR heard it keeps that word's times and probability, and a split, merged, inserted or
    deleted word is timed inside the span of the ASR words it came from. Each word then takes the speaker of the
    corrected word (``corrected``, the model's words: they carry its speaker relabels) that overlaps it most in time,
    or its ASR words' majority speaker when none overlaps. Relabels are counted against the ASR speakers.
    """
    base = realign_words(asr_words, [(None, text)])
    if not corrected:
        return base
    words: list[Word] = []
    relabels: list[Relabel] = []
    for i, (w, src) in enumerate(zip(base.words, base.sources)):
        best, overlap = None, -1
        for c in corrected:
            o = min(w.end_ms, c.end_ms) - max(w.start_ms, c.start_ms)
            if o > overlap or (o == overlap and best is not None and abs(c.start_ms - w.start_ms) < abs(best.start_ms - w.start_ms)):
                best, overlap = c, o
        speaker = best.speaker_id if best is not None and overlap >= 0 and best.speaker_id else w.speaker_id
        words.append(replace(w, speaker_id=speaker))
        old = Counter(asr_words[k].speaker_id for k in src).most_common(1)[0][0] if src else None
        if src and speaker != old:
            relabels.append(Relabel(i, w.text, w.start_ms, w.end_ms, old, speaker))
    return Realigned(words, base.sources, relabels)


def _mid(w: Word) -> float:
    return (w.start_ms + w.end_ms) / 2


def apply_speakers_to_turns(turns: Sequence[Turn], words: Sequence[Word]) -> list[Turn]:
    """Relabel or split ``turns`` so they agree with the speakers of ``words`` (see the module docstring).

    A word belongs to the turn containing its midpoint; words without a speaker, and turns without words, change
    nothing. Returns new turns in time order (source timeline, ms).
    """
    out: list[Turn] = []
    for turn in sorted(turns, key=lambda t: (t.start_ms, t.end_ms)):
        inside = [w for w in words if turn.start_ms <= _mid(w) < turn.end_ms and w.speaker_id is not None]
        runs: list[list[Word]] = []
        for w in inside:
            if runs and runs[-1][-1].speaker_id == w.speaker_id:
                runs[-1].append(w)
            else:
                runs.append([w])
        if not runs:
            out.append(turn)
            continue
        cuts = [turn.start_ms]
        for prev, nxt in zip(runs, runs[1:]):
            cut = (prev[-1].end_ms + nxt[0].start_ms) // 2
            cuts.append(min(max(cut, cuts[-1]), turn.end_ms))
        cuts.append(turn.end_ms)
        for run, a, b in zip(runs, cuts, cuts[1:]):
            spk = run[0].speaker_id
            same = spk == turn.speaker_id
            out.append(
                replace(
                    turn,
                    start_ms=a,
                    end_ms=b,
                    speaker_id=spk,  # type: ignore[arg-type]
                    on_screen=turn.on_screen if same else None,
                    face_track_id=turn.face_track_id if same else None,
                )
            )
    return [t for t in out if t.end_ms > t.start_ms]
