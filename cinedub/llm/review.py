"""Human review of corrections: the per-clip diff shown in the Prefect UI, the auto-accept policy, decisions.

The diff is Markdown (Prefect markdown artifacts; no indentation, GFM tables and ``~~strikethrough~~``): the ASR and
corrected text with a word-level diff (character-level for Chinese/Japanese), the speaker relabels word by word, the
turns after correction, the attributes, the guard verdicts and the model's reasoning.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Literal

from cinedub.llm.config import AutoAcceptPolicy
from cinedub.llm.correct import ClipCorrection
from cinedub.llm.rows import row_update
from cinedub.text import base_language, is_cjk

Action = Literal["approve", "reject", "edit"]


def auto_accept(corr: ClipCorrection, policy: AutoAcceptPolicy) -> tuple[bool, str]:
    """Whether ``corr`` is applied without review, and why not (see :class:`AutoAcceptPolicy`)."""
    if not corr.ok:
        return False, f"status {corr.status}"
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


def _esc(text: Any) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text if text is not None else "").replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _by_char(text: str, language: str | None) -> bool:
    return base_language(language) in {"zh", "yue", "ja"} or any(is_cjk(c) for c in text)


def text_diff_markdown(before: str, after: str, language: str | None) -> str:
    """``before`` -> ``after`` as one Markdown line: deletions ``~~struck~~``, insertions **bold**."""
    if _by_char(before + after, language):
        a, b, sep = [c for c in before if not c.isspace()], [c for c in after if not c.isspace()], ""
    else:
        a, b, sep = before.split(), after.split(), " "
    out: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
        if tag == "equal":
            out.append(sep.join(a[i1:i2]))
            continue
        if i2 > i1:
            out.append(f"~~{sep.join(a[i1:i2])}~~")
        if j2 > j1:
            out.append(f"**{sep.join(b[j1:j2])}**")
    return _esc(sep.join(out))


def short_speaker(speaker_id: str | None) -> str:
    """``<source_id>--S03`` -> ``S03`` for display (None -> ``?``)."""
    if speaker_id is None:
        return "?"
    return speaker_id.rsplit("-", 1)[-1] or speaker_id


def _ms(ms: int | None) -> str:
    if ms is None:
        return ""
    s, ms_ = divmod(int(ms), 1000)
    m, s = divmod(s, 60)
    return f"{m:02d}:{s:02d}.{ms_ // 100}"


def clip_diff_markdown(row: dict[str, Any], corr: ClipCorrection, *, auto: tuple[bool, str] | None = None) -> str:
    """The readable diff of one clip's correction (what a reviewer needs to approve, reject or edit it)."""
    lang = row.get("language")
    lines = [
        f"### Clip `{corr.clip_id}`",
        "",
        f"{_esc(row.get('episode'))} #{row.get('clip_index')} · {_ms(row.get('start_ms'))}–{_ms(row.get('end_ms'))}"
        f" · language `{lang}` · model `{corr.model}` · prompt `{corr.prompt_id}`",
        "",
    ]
    if corr.ok:
        lines.append(
            f"**Guards passed** · similarity {corr.similarity:.3f} · edit ratio {corr.edit_ratio:.3f} · "
            f"{corr.speaker_relabels} word(s) relabelled · model confidence {corr.confidence:.2f}"
        )
    else:
        lines.append(f"**Correction refused ({corr.status}); the ASR result is kept.**")
        lines += [f"- {_esc(r)}" for r in corr.reasons]
    if auto is not None:
        lines.append(f"Auto-accept: {'yes' if auto[0] else 'no'} ({_esc(auto[1])})")
    lines += ["", "#### Text", "", "| | text |", "|---|---|", f"| ASR | {_esc(corr.text_before)} |"]
    if corr.ok and corr.text is not None:
        lines += [f"| corrected | {_esc(corr.text)} |", f"| diff | {text_diff_markdown(corr.text_before, corr.text, lang)} |"]
    if corr.ok:
        lines += ["", "#### Speaker relabels", ""]
        if corr.relabels:
            lines += ["| word | time | before | after |", "|---|---|---|---|"]
            lines += [
                f"| {_esc(r['text'])} | {_ms(r['start_ms'])}–{_ms(r['end_ms'])} | {short_speaker(r['old'])} | {short_speaker(r['new'])} |"
                for r in corr.relabels
            ]
        else:
            lines.append("none")
        before = row.get("turns") or []
        after = corr.turns or []
        lines += ["", "#### Turns", "", "| | speaker | start | end | on screen |", "|---|---|---|---|---|"]
        lines += [f"| before | {short_speaker(t['speaker_id'])} | {_ms(t['start_ms'])} | {_ms(t['end_ms'])} | {t.get('on_screen')} |" for t in before]
        lines += [f"| after | {short_speaker(t['speaker_id'])} | {_ms(t['start_ms'])} | {_ms(t['end_ms'])} | {t.get('on_screen')} |" for t in after]
        lines += [
            "",
            "#### Attributes",
            "",
            "| attribute | value |",
            "|---|---|",
            f"| emotion | {corr.emotion} ({corr.emotion_confidence:.2f}) |",
            f"| scene type | {corr.scene_type} |",
            f"| clue | {_esc(corr.clue)} |",
        ]
        for s in corr.speakers or []:
            lines.append(
                f"| speaker {short_speaker(s['speaker_id'])} | {s['gender']}, {s['age_group']}, "
                f"{_esc(', '.join(s['timbre']) or '-')} |"
            )
    if corr.reasoning:
        lines += ["", "#### Model reasoning", "", "> " + _esc(corr.reasoning)[:2000]]
    return "\n".join(lines) + "\n"


def form_description(rows: dict[str, dict[str, Any]], corrs: list[ClipCorrection], artifact_keys: dict[str, str]) -> str:
    """Markdown shown above the review form: what to do, and one line per clip to review."""
    lines = [
        "## Review LLM corrections",
        "",
        "For each clip choose **approve** (apply the correction), **reject** (keep the ASR text) or **edit** "
        "(put your text in `edited_text`; timing and speakers are kept). Enter your name as reviewer. "
        "Each clip's full diff is in this run's Artifacts tab.",
        "",
        "| clip | artifact | diff |",
        "|---|---|---|",
    ]
    for c in corrs:
        lang = rows[c.clip_id].get("language")
        diff = text_diff_markdown(c.text_before, c.text or "", lang)
        lines.append(f"| `{c.clip_id[:8]}` | `{artifact_keys.get(c.clip_id, '')}` | {diff} |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class ReviewDecision:
    """A reviewer's decision on one clip (mirrors the form's ``ClipDecision``)."""

    clip_id: str
    action: Action
    edited_text: str = ""
    note: str = ""


def review_updates(
    rows: dict[str, dict[str, Any]],
    corrs: dict[str, ClipCorrection],
    *,
    auto_accepted: list[str],
    decisions: list[ReviewDecision],
    reviewer: str | None,
    flow_run_id: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Column updates per clip id for :func:`cinedub.llm.versions.write_version`.

    Auto-accepted clips are applied; guard failures and errors are recorded (ASR kept); each reviewer decision is
    applied to its clip (clips in the batch without a decision are left untouched, still unreviewed).

    Raises:
        ValueError: a decision names a clip that was not up for review, or an edit without text.
    """
    updates: dict[str, dict[str, Any]] = {}
    for cid, corr in corrs.items():
        if corr.status == "guard_failed":
            updates[cid] = row_update(rows[cid], corr, "guard_failed", flow_run_id=flow_run_id)
        elif corr.status == "error":
            updates[cid] = row_update(rows[cid], corr, "error", flow_run_id=flow_run_id)
    for cid in auto_accepted:
        updates[cid] = row_update(rows[cid], corrs[cid], "auto_accepted", flow_run_id=flow_run_id)
    for d in decisions:
        corr = corrs.get(d.clip_id)
        if corr is None or not corr.ok or d.clip_id in auto_accepted:
            raise ValueError(f"clip {d.clip_id} was not up for review in this batch")
        decision = {"approve": "approved", "reject": "rejected", "edit": "edited"}[d.action]
        updates[d.clip_id] = row_update(
            rows[d.clip_id], corr, decision, reviewer=reviewer, note=d.note, edited_text=d.edited_text or None,
            flow_run_id=flow_run_id,
        )
    return updates
