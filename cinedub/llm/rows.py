"""What a correction and its review decision change in a shard row, and the ``correction`` provenance column.

:func:`row_update` returns only the columns to replace; :func:`cinedub.llm.versions.write_version` merges them into
the full rows of the parent version. Decisions (``provenance.review_status`` afterwards):

- ``auto_accepted`` / ``approved``: the guarded correction is applied (text, words, turns, speakers, emotion,
  emotion_confidence, clue, scene_type).
- ``edited``: the reviewer's text replaces the corrected text, aligned onto the ASR words (timing from the ASR
  words, speakers from the model's correction, :func:`cinedub.llm.apply.realign_edit`); attributes as corrected.
- ``rejected``: nothing of the correction is applied: the clip keeps its ASR text, words, turns and attributes.
- ``guard_failed``: a guard refused the answer: the ASR result is kept and ``correction.guards`` says why.
- ``error`` (no answer, e.g. retries exhausted): only ``correction`` is written; ``review_status`` is unchanged, so
  the next review run asks again.

Every string of an update (text, reasoning, guard details, error) passes :func:`cinedub.llm.redact.redact_obj`
before it can reach a shard.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from cinedub.llm.apply import apply_speakers_to_turns, realign_edit
from cinedub.llm.columns import CORRECTION, CORRECTION_DESCRIPTION
from cinedub.llm.correct import ClipCorrection
from cinedub.llm.redact import redact_obj
from cinedub.types import Turn, Word, join_words

DECISIONS = ("auto_accepted", "approved", "edited", "rejected", "guard_failed", "error")
# review_status values a row can carry; "unreviewed" is the pipeline's.
REVIEW_STATUSES = ("unreviewed", "auto_accepted", "approved", "edited", "rejected", "guard_failed")
__all__ = ["CORRECTION", "CORRECTION_DESCRIPTION", "DECISIONS", "REVIEW_STATUSES", "correction_record", "row_update"]


def correction_record(
    corr: ClipCorrection,
    decision: str,
    *,
    reviewer: str | None = None,
    note: str | None = None,
    flow_run_id: str | None = None,
    reviewed_at: datetime | None = None,
) -> dict[str, Any]:
    """The ``correction`` struct value (Arrow type :data:`cinedub.llm.columns.CORRECTION`), redacted.

    Raises:
        ValueError: ``decision`` is not one of :data:`DECISIONS`.
    """
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, not {decision!r}")
    human = decision in ("approved", "edited", "rejected")
    return redact_obj({
        "status": corr.status,
        "decision": decision,
        "model": corr.model,
        "prompt_id": corr.prompt_id,
        "cache_key": corr.cache_key,
        "guards": [{"name": g["name"], "ok": bool(g["ok"]), "detail": g.get("detail", "")} for g in corr.guards],
        "error": corr.error,
        "similarity": corr.similarity,
        "edit_ratio": corr.edit_ratio,
        "speaker_relabels": corr.speaker_relabels,
        "confidence": corr.confidence,
        "reasoning": corr.reasoning,
        "text_before": corr.text_before,
        "text_proposed": corr.text,
        "reviewer": reviewer if human else None,
        "review_note": note or None,
        "reviewed_at": (reviewed_at or datetime.now(timezone.utc)) if human else None,
        "flow_run_id": flow_run_id,
        "prompt_tokens": corr.prompt_tokens,
        "completion_tokens": corr.completion_tokens,
    })


def _provenance(row: dict[str, Any], corr: ClipCorrection, status: str | None) -> dict[str, Any]:
    prov = dict(row.get("provenance") or {})
    if status is not None:
        prov["review_status"] = status
    models = [m for m in (prov.get("models") or []) if m.get("stage") != "llm"]
    models.append({"stage": "llm", "name": corr.model, "version": corr.prompt_id})
    prov["models"] = models
    return prov


def edited_words(corr: ClipCorrection, row: dict[str, Any], edited_text: str) -> tuple[list[Word], list[Turn]]:
    """A reviewer's text aligned onto the clip's ASR words (word timing kept), each word with the speaker of the
    model's corrected word it overlaps (:func:`cinedub.llm.apply.realign_edit`). Returns words and turns."""
    asr = [Word.from_dict(w) for w in row.get("words") or []]
    corrected = [Word.from_dict(w) for w in corr.words or []]
    words = realign_edit(asr, corrected, edited_text).words
    turns = apply_speakers_to_turns([Turn.from_dict(t) for t in row.get("turns") or []], words)
    return words, turns


def row_update(
    row: dict[str, Any],
    corr: ClipCorrection,
    decision: str,
    *,
    reviewer: str | None = None,
    note: str | None = None,
    edited_text: str | None = None,
    flow_run_id: str | None = None,
) -> dict[str, Any]:
    """Columns to replace in ``row`` for ``decision`` (see the module docstring).

    Raises:
        ValueError: an accepting decision on a correction whose guards did not pass, or ``edited`` without text.
    """
    record = correction_record(corr, decision, reviewer=reviewer, note=note, flow_run_id=flow_run_id)
    if decision == "error":
        return redact_obj({"correction": record, "provenance": _provenance(row, corr, None)})
    if decision in ("rejected", "guard_failed"):
        return redact_obj({"correction": record, "provenance": _provenance(row, corr, decision)})
    if not corr.ok:
        raise ValueError(f"clip {corr.clip_id}: cannot {decision} a correction with status {corr.status}")
    update: dict[str, Any] = {
        "speakers": corr.speakers,
        "emotion": corr.emotion,
        "emotion_confidence": corr.emotion_confidence,
        "clue": corr.clue,
        "scene_type": corr.scene_type,
        "correction": record,
        "provenance": _provenance(row, corr, decision),
    }
    if decision == "edited":
        if not edited_text or not edited_text.strip():
            raise ValueError(f"clip {corr.clip_id}: an edit needs the edited text")
        words, turns = edited_words(corr, row, edited_text)
        update.update(text=join_words([w.text for w in words]), words=[w.to_dict() for w in words],
                      turns=[t.to_dict() for t in turns])
    else:
        update.update(text=corr.text, words=corr.words, turns=corr.turns)
    return redact_obj(update)
