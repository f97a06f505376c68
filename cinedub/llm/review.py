"""Human review of corrections: what a reviewer reads in the Prefect UI, the auto-accept policy, and decisions.

**What the reviewer reads.** Each clip is shown as a two-column before/after table (:func:`clip_table`): the ASR text
and the proposed text side by side in short aligned rows, changed words between ``‹`` and ``›``, each row starting
with its time on the source timeline; then one row per speaker change (who said it before, who says it after, when),
and the attributes the correction sets. Plain table cells are used instead of ``~~strike~~`` / ``**bold**`` markup,
which the two Prefect UIs render differently (the V1 UI does not strike Chinese text, the V2 UI showed ``**。**``);
rows are at most :data:`ROW_WIDTH` display columns wide because the V1 UI does not wrap table cells. Every text that
came from the model or the transcript is escaped (:func:`md_text`: each ASCII punctuation character
backslash-escaped, as CommonMark allows), so it is shown as data and can never become a link, an image, HTML or
markup.

A review page (:func:`page_markdown`) holds a few clips (the form's description); each clip has a link to hear it
(served on 127.0.0.1 by :mod:`cinedub.llm.listen`) and an inline player for the UI that renders HTML audio. The V1
UI squeezes a long description into a small scroll box above a long form, so each clip's section of the form also
carries a one-paragraph summary of its changes (:func:`clip_summary`: plain text, which both UIs show as is).

**Decisions.** :func:`page_decisions` turns a submitted page into :class:`ReviewDecision` s: a clip left
``undecided`` stays unreviewed; an ``edit`` needs text; text changed under any other decision is refused (the
reviewer meant ``edit``). :func:`review_updates` turns decisions into shard-row updates.
"""

from __future__ import annotations

import difflib
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from cinedub.llm.config import AutoAcceptPolicy
from cinedub.llm.correct import ClipCorrection
from cinedub.llm.rows import row_update
from cinedub.text import base_language, is_cjk
from cinedub.types import join_words

Action = Literal["approve", "reject", "edit"]
UNDECIDED = "undecided"
ROW_WIDTH = 34  # display columns per cell and row (CJK characters count 2)
OPEN, CLOSE = "‹", "›"
_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def auto_accept(corr: ClipCorrection, policy: AutoAcceptPolicy) -> tuple[bool, str]:
    """Whether ``corr`` is applied without review, and why not (see :class:`AutoAcceptPolicy`). A clip with a
    failed review check (instruction-like free text, out-of-vocabulary timbre, a confident ASR word changed, an
    inserted word) is never auto-accepted."""
    if not corr.ok:
        return False, f"status {corr.status}"
    if corr.review_reasons:
        return False, "; ".join(corr.review_reasons)
    if not policy.enabled:
        return False, "auto-accept disabled"
    if corr.confidence is None or corr.confidence < policy.min_confidence:
        return False, f"confidence {corr.confidence} < {policy.min_confidence}"
    if corr.edit_ratio is None or corr.edit_ratio > policy.max_edit_ratio:
        return False, f"edit ratio {corr.edit_ratio} > {policy.max_edit_ratio}"
    if corr.speaker_relabels > policy.max_speaker_relabels:
        return False, f"{corr.speaker_relabels} speaker relabels > {policy.max_speaker_relabels}"
    if policy.min_emotion_confidence and (corr.emotion_confidence or 0.0) < policy.min_emotion_confidence:
        return False, f"emotion confidence {corr.emotion_confidence} < {policy.min_emotion_confidence}"
    return True, "within the auto-accept policy"


def md_text(text: Any) -> str:
    """``text`` as inert Markdown: every ASCII punctuation character backslash-escaped (CommonMark: "any ASCII
    punctuation character may be backslash-escaped"), line breaks and tabs as spaces. Safe in a table cell."""
    out = []
    for ch in str("" if text is None else text):
        if ch in _ASCII_PUNCT:
            out.append("\\" + ch)
        elif ch in "\r\n\t":
            out.append(" ")
        else:
            out.append(ch)
    return "".join(out)


def display_width(text: str) -> int:
    """Columns ``text`` takes in a monospace-like layout: wide and full-width characters (CJK) count 2."""
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def short_speaker(speaker_id: str | None) -> str:
    """``<source_id>-VR1`` -> ``VR1`` for display (None -> ``?``)."""
    if speaker_id is None:
        return "?"
    return speaker_id.rsplit("-", 1)[-1] or speaker_id


def fmt_ms(ms: int | None) -> str:
    """``17870`` -> ``00:17.8`` (minutes, seconds, tenths; empty for None)."""
    if ms is None:
        return ""
    s, ms_ = divmod(int(ms), 1000)
    m, s = divmod(s, 60)
    return f"{m:02d}:{s:02d}.{ms_ // 100}"


def _cjk(language: str | None, text: str) -> bool:
    return base_language(language) in {"zh", "yue", "ja"} or any(is_cjk(c) for c in text)


@dataclass(frozen=True)
class DiffRow:
    """One row of the before/after table: plain text with changed words between ``‹`` and ``›`` (not escaped),
    and the time (ms, source timeline) of the row's first word."""

    before: str
    after: str
    start_ms: int | None


def side_by_side(before: Sequence[dict[str, Any]], after: Sequence[dict[str, Any]], language: str | None,
                 width: int = ROW_WIDTH) -> list[DiffRow]:
    """The word-level diff of two word lists (schema dicts with ``text`` and ``start_ms``) as aligned rows.

    Words are compared exactly (a casing or punctuation change is shown); the alignment is
    :class:`difflib.SequenceMatcher`'s. A row holds equal words on both sides and whole changes; it is cut before
    either side would exceed ``width`` display columns. Chinese and Japanese are joined without spaces.
    """
    a = [str(w["text"]) for w in before]
    b = [str(w["text"]) for w in after]
    sep = "" if _cjk(language, "".join(a + b)) else " "
    join = "".join if sep == "" else join_words
    rows: list[DiffRow] = []
    cur_a: list[str] = []
    cur_b: list[str] = []
    start: list[int | None] = [None]

    def flush() -> None:
        if cur_a or cur_b:
            rows.append(DiffRow(join(cur_a), join(cur_b), start[0]))
        cur_a.clear()
        cur_b.clear()
        start[0] = None

    def add(pa: list[str], pb: list[str], t: int | None) -> None:
        wa = display_width(join(cur_a + pa))
        wb = display_width(join(cur_b + pb))
        if (cur_a or cur_b) and (wa > width or wb > width):
            flush()
        if start[0] is None:
            start[0] = t
        cur_a.extend(pa)
        cur_b.extend(pb)

    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            for i, j in zip(range(i1, i2), range(j1, j2)):
                add([a[i]], [b[j]], before[i].get("start_ms"))
        else:
            pa = [OPEN + join(a[i1:i2]) + CLOSE] if i2 > i1 else []
            pb = [OPEN + join(b[j1:j2]) + CLOSE] if j2 > j1 else []
            t = before[i1].get("start_ms") if i2 > i1 else (after[j1].get("start_ms") if j2 > j1 else None)
            add(pa, pb, t)
    flush()
    return rows


def _speaker_runs(corr: ClipCorrection) -> list[tuple[str, str, str, int, int]]:
    """Consecutive relabelled words with the same old and new speaker: (text, old, new, start_ms, end_ms)."""
    runs: list[list[Any]] = []
    for r in corr.relabels:
        if runs and runs[-1][1] == r["old"] and runs[-1][2] == r["new"]:
            runs[-1][0].append(r["text"])
            runs[-1][4] = r["end_ms"]
        else:
            runs.append([[r["text"]], r["old"], r["new"], r["start_ms"], r["end_ms"]])
    return [(" ".join(t), old, new, s, e) for t, old, new, s, e in runs]


def clip_table(row: dict[str, Any], corr: ClipCorrection) -> list[str]:
    """Markdown lines of one clip's two-column before/after table (see the module docstring)."""
    lang = row.get("language")
    lines = ["| before (ASR) | after (proposed) |", "|---|---|"]
    for r in side_by_side(row.get("words") or [], corr.words or [], lang):
        lines.append(f"| {fmt_ms(r.start_ms)} {md_text(r.before)} | {md_text(r.after)} |")
    for text, old, new, s, e in _speaker_runs(corr):
        lines.append(f"| {fmt_ms(s)}–{fmt_ms(e)} speaker {OPEN}{md_text(short_speaker(old))}{CLOSE}: {md_text(text)} "
                     f"| speaker {OPEN}{md_text(short_speaker(new))}{CLOSE}: {md_text(text)} |")

    def conf(x: float | None) -> str:
        return "" if x is None else f" ({x:.2f})"

    lines.append(f"| emotion: {md_text(row.get('emotion') or '—')}{conf(row.get('emotion_confidence'))} "
                 f"| emotion: {md_text(corr.emotion)}{conf(corr.emotion_confidence)} |")
    lines.append(f"| scene: {md_text(row.get('scene_type') or '—')} | scene: {md_text(corr.scene_type)} |")
    before_spk = {s["speaker_id"]: s for s in row.get("speakers") or []}
    for s in corr.speakers or []:
        old = before_spk.get(s["speaker_id"])
        desc_old = f"{old['gender']}, {old['age_group']}, {', '.join(old['timbre'] or []) or '—'}" if old else "—"
        desc_new = f"{s['gender']}, {s['age_group']}, {', '.join(s['timbre']) or '—'}"
        who = md_text(short_speaker(s["speaker_id"]))
        lines.append(f"| {who}: {md_text(desc_old)} | {who}: {md_text(desc_new)} |")
    clue_after = md_text(corr.clue_proposed or corr.clue or "—")
    if corr.clue_proposed and corr.clue is None:
        clue_after += " (flagged: not applied)"
    lines.append(f"| clue: {md_text(row.get('clue') or '—')} | clue: {clue_after} |")
    return lines


_FULL_WIDTH = {c: chr(ord(c) + 0xFEE0) for c in "\\`*_[]<>|~#!"}


def plain_text(text: Any) -> str:
    """``text`` for a place one UI renders as Markdown and the other as plain text (a form field's description):
    the ASCII characters that start Markdown or HTML constructs are replaced by their full-width forms (``[`` ->
    ``［``), so nothing becomes a link, markup or a tag and no escape backslash shows; line breaks become spaces."""
    return "".join(_FULL_WIDTH.get(c, " " if c in "\r\n\t" else c) for c in str("" if text is None else text))


def clip_summary(row: dict[str, Any], corr: ClipCorrection, context: int = 3, limit: int = 700,
                 listen_url: str | None = None) -> str:
    """One plain-text paragraph of what a correction changes: each changed stretch with ``context`` words around
    it, before -> after, with its time; speaker changes; the attributes (cut at ``limit`` characters); then the
    address to hear the clip (the V1 UI makes it a link)."""
    lang = row.get("language")
    a = [str(w["text"]) for w in row.get("words") or []]
    b = [str(w["text"]) for w in corr.words or []]
    sep = "" if _cjk(lang, "".join(a + b)) else " "
    join = "".join if sep == "" else join_words
    ctx = context * (3 if sep == "" else 1)
    parts: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            continue
        left, right = join(a[max(0, i1 - ctx):i1]), join(a[i2:i2 + ctx])
        before = sep.join(x for x in (left, OPEN + join(a[i1:i2]) + CLOSE, right) if x)
        after = sep.join(x for x in (left, OPEN + join(b[j1:j2]) + CLOSE, right) if x)
        t = (row.get("words") or [])[i1]["start_ms"] if i1 < len(a) else row.get("end_ms")
        parts.append(f"{fmt_ms(t)} “{before}” → “{after}”")
    if not parts:
        parts.append("text unchanged")
    for text, old, new, s_, e_ in _speaker_runs(corr):
        parts.append(f"{fmt_ms(s_)}–{fmt_ms(e_)} speaker {short_speaker(old)} → {short_speaker(new)}: “{text}”")
    parts.append(f"emotion {corr.emotion} ({corr.emotion_confidence or 0:.2f}), scene {corr.scene_type}")
    if corr.clue_proposed and corr.clue is None:
        parts.append(f"clue flagged, not applied: “{corr.clue_proposed}”")
    out = "Changes: " + " · ".join(parts)
    out = plain_text(out if len(out) <= limit else out[:limit - 1] + "…")
    return out + (f" · listen: {listen_url}" if listen_url else "")


def _why(corr: ClipCorrection, auto: tuple[bool, str] | None) -> str:
    reasons = corr.review_reasons or ([auto[1]] if auto and not auto[0] else [])
    return "; ".join(reasons)


def clip_heading(row: dict[str, Any], number: int | None = None) -> str:
    """``Clip 2 · dialogue_5shots #4 · 00:17.8–00:22.6 · en``: what a reviewer calls a clip (no UUID)."""
    head = f"Clip {number} · " if number is not None else ""
    return (f"{head}{row.get('episode') or row.get('source_id')} #{row.get('clip_index')} · "
            f"{fmt_ms(row.get('start_ms'))}–{fmt_ms(row.get('end_ms'))} · {row.get('language')}")


def _listen_lines(url: str | None, number: int) -> list[str]:
    if not url:
        return ["*(no clip server: run `cinedub review-serve` to listen)*", ""]
    return [f"[▶ Listen to clip {number}]({url}) · "
            f'<audio controls preload="metadata" src="{url}&amp;audio=1"></audio>', ""]


def page_markdown(items: Sequence[tuple[dict[str, Any], ClipCorrection, tuple[bool, str] | None]], page: int,
                  pages: int, listen: Callable[[str], str | None] = lambda clip_id: None, note: str = "") -> str:
    """The description of one review page (the form's text): instructions, then for each clip its heading, a link
    to hear it, why it needs a reviewer and its before/after table.

    Args:
        items: (row, correction, auto-accept verdict) per clip, in form order (clip 1 is the form's ``clip_1``).
        page / pages: this page's number and the page count.
        listen: clip id -> URL of its listening page (None when no clip server is known).
        note: a line shown first (e.g. why the previous submission was refused).
    """
    lines = []
    if note:
        lines += [f"**{md_text(note)}**", ""]
    lines += [
        f"## Review page {page} of {pages}: {len(items)} clip(s)",
        "",
        "For each clip: read the before/after table (changed words between ‹ and ›), listen to it, then choose its "
        "decision below. **approve** applies the proposal, **reject** keeps the ASR text, **edit** applies the text "
        "in its box (prefilled with the proposal; word timing is kept). A clip left **undecided** stays "
        "unreviewed. Your name is required.",
        "",
    ]
    for k, (row, corr, auto) in enumerate(items, 1):
        lines += [f"### {md_text(clip_heading(row, k))}", ""]
        lines += _listen_lines(listen(corr.clip_id), k)
        why = _why(corr, auto)
        if why:
            lines += [f"Needs a reviewer: {md_text(why)}", ""]
        lines += clip_table(row, corr) + [""]
    return "\n".join(lines)


def clip_diff_markdown(row: dict[str, Any], corr: ClipCorrection, *, auto: tuple[bool, str] | None = None,
                       listen_url: str | None = None) -> str:
    """The full record of one clip's correction (the per-clip artifact): heading, verdicts, the before/after table,
    the turns before and after, the guard results and the model's reasoning (escaped: data only)."""
    lines = [f"### {md_text(clip_heading(row))}", "", f"clip id `{corr.clip_id}` · model {md_text(corr.model)} · "
             f"prompt {md_text(corr.prompt_id)}", ""]
    if listen_url:
        lines += [f"[▶ Listen]({listen_url})", ""]
    if corr.ok:
        lines.append(f"**Guards passed** · similarity {corr.similarity:.3f} · edit ratio {corr.edit_ratio:.3f} · "
                     f"{corr.speaker_relabels} word(s) relabelled · model confidence {corr.confidence:.2f}")
    else:
        lines.append(f"**Correction refused ({corr.status}); the ASR result is kept.**")
    if auto is not None:
        lines.append(f"Auto-accept: {'yes' if auto[0] else 'no'} ({md_text(auto[1])})")
    lines.append("")
    if corr.ok:
        lines += clip_table(row, corr)
        lines += ["", "| turns before | turns after |", "|---|---|"]
        before, after = row.get("turns") or [], corr.turns or []
        for i in range(max(len(before), len(after))):
            cells = []
            for turns in (before, after):
                t = turns[i] if i < len(turns) else None
                cells.append("" if t is None else f"{md_text(short_speaker(t['speaker_id']))} {fmt_ms(t['start_ms'])}–"
                             f"{fmt_ms(t['end_ms'])} on screen: {t.get('on_screen')}")
            lines.append(f"| {cells[0]} | {cells[1]} |")
    else:
        lines += ["| ASR text (kept) |", "|---|", f"| {md_text(corr.text_before)} |"]
    lines += ["", "| check | result |", "|---|---|"]
    lines += [f"| {md_text(g['name'])} | {'ok' if g['ok'] else 'failed'}: {md_text(g['detail'])} |" for g in corr.guards]
    if corr.error:
        lines.append(f"| request | {md_text(corr.error)} |")
    if corr.reasoning:
        lines += ["", "Model reasoning (data, never applied):", "", md_text(corr.reasoning)[:4000]]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ReviewDecision:
    """A reviewer's decision on one clip (from one clip section of a review page)."""

    clip_id: str
    action: Action
    edited_text: str = ""
    note: str = ""


def page_decisions(answers: Sequence[tuple[ClipCorrection, str, str, str]]) -> tuple[list[ReviewDecision], list[str]]:
    """Decisions of one submitted page, and what is wrong with it.

    Args:
        answers: per clip in form order, (correction, decision, text in its box, note); decision is
            ``undecided``, ``approve``, ``reject`` or ``edit``.

    Returns:
        The decisions of the decided clips, and one message per refused clip (``clip 2: ...``): an ``edit`` with an
        empty box, or a box changed under another decision (the reviewer meant ``edit``). An undecided clip is
        neither: it stays unreviewed.
    """
    decisions: list[ReviewDecision] = []
    errors: list[str] = []
    for k, (corr, decision, text, note) in enumerate(answers, 1):
        proposed = corr.text or ""
        changed = " ".join(text.split()) != " ".join(proposed.split())
        if decision == UNDECIDED:
            if changed:
                errors.append(f"clip {k}: its text was changed but its decision is 'undecided' (choose 'edit')")
            continue
        if decision == "edit" and not text.strip():
            errors.append(f"clip {k}: 'edit' needs the text in its box")
            continue
        if decision in ("approve", "reject") and changed:
            errors.append(f"clip {k}: its text was changed but its decision is '{decision}' (choose 'edit')")
            continue
        decisions.append(ReviewDecision(corr.clip_id, decision, text if decision == "edit" else "", note.strip()))  # type: ignore[arg-type]
    return decisions, errors


def automatic_updates(rows: dict[str, dict[str, Any]], corrs: dict[str, ClipCorrection], auto_accepted: Sequence[str],
                      flow_run_id: str | None = None) -> dict[str, dict[str, Any]]:
    """Updates that need no human: auto-accepted clips applied, guard failures and errors recorded (ASR kept)."""
    updates: dict[str, dict[str, Any]] = {}
    for cid, corr in corrs.items():
        if corr.status in ("guard_failed", "error"):
            updates[cid] = row_update(rows[cid], corr, corr.status, flow_run_id=flow_run_id)
    for cid in auto_accepted:
        updates[cid] = row_update(rows[cid], corrs[cid], "auto_accepted", flow_run_id=flow_run_id)
    return updates


def decision_updates(rows: dict[str, dict[str, Any]], corrs: dict[str, ClipCorrection],
                     decisions: Sequence[ReviewDecision], reviewer: str, flow_run_id: str | None = None,
                     not_for_review: Sequence[str] = ()) -> dict[str, dict[str, Any]]:
    """Updates of the reviewer's decisions.

    Raises:
        ValueError: a decision names a clip that was not up for review, or an edit without text.
    """
    updates: dict[str, dict[str, Any]] = {}
    for d in decisions:
        corr = corrs.get(d.clip_id)
        if corr is None or not corr.ok or d.clip_id in not_for_review:
            raise ValueError(f"clip {d.clip_id} was not up for review in this batch")
        decision = {"approve": "approved", "reject": "rejected", "edit": "edited"}[d.action]
        updates[d.clip_id] = row_update(
            rows[d.clip_id], corr, decision, reviewer=reviewer, note=d.note, edited_text=d.edited_text or None,
            flow_run_id=flow_run_id,
        )
    return updates


def review_updates(
    rows: dict[str, dict[str, Any]],
    corrs: dict[str, ClipCorrection],
    *,
    auto_accepted: list[str],
    decisions: list[ReviewDecision],
    reviewer: str | None,
    flow_run_id: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Column updates per clip id for :func:`cinedub.llm.versions.write_version`: :func:`automatic_updates` and
    :func:`decision_updates` together (clips in the batch without a decision are left untouched, still unreviewed).

    Raises:
        ValueError: a decision names a clip that was not up for review, an edit without text, or decisions without
            a reviewer name.
    """
    updates = automatic_updates(rows, corrs, auto_accepted, flow_run_id)
    if decisions:
        if not reviewer or not reviewer.strip():
            raise ValueError("decisions need the reviewer's name")
        updates.update(decision_updates(rows, corrs, decisions, reviewer.strip(), flow_run_id, auto_accepted))
    return updates
