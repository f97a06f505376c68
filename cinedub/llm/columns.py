"""Arrow type of the proposed ``correction`` shard column (schema 1.2.0), dependency-free so that
:mod:`cinedub.schema` can import it cheaply."""

from __future__ import annotations

import pyarrow as pa

GUARD_RESULT = pa.struct([("name", pa.string()), ("ok", pa.bool_()), ("detail", pa.string())])

CORRECTION = pa.struct(
    [
        ("status", pa.string()),  # ok | guard_failed | error
        ("decision", pa.string()),  # auto_accepted | approved | edited | rejected | guard_failed | error
        ("model", pa.string()),
        ("prompt_id", pa.string()),  # correction/v1/en@1a2b3c4d
        ("cache_key", pa.string()),
        ("guards", pa.list_(GUARD_RESULT)),
        ("error", pa.string()),
        ("similarity", pa.float32()),
        ("edit_ratio", pa.float32()),
        ("speaker_relabels", pa.int32()),
        ("confidence", pa.float32()),
        ("reasoning", pa.string()),
        ("text_before", pa.string()),
        ("text_proposed", pa.string()),
        ("reviewer", pa.string()),
        ("review_note", pa.string()),
        ("reviewed_at", pa.timestamp("ms", tz="UTC")),
        ("flow_run_id", pa.string()),
        ("prompt_tokens", pa.int32()),
        ("completion_tokens", pa.int32()),
    ]
)

CORRECTION_DESCRIPTION = (
    "since 1.2: LLM correction provenance: status (ok, guard_failed, error), decision (auto_accepted, approved, "
    "edited, rejected, guard_failed, error), model, prompt id (task/version/language@sha8), cache key, guard results "
    "(name, ok, detail), similarity and edit ratio to the ASR text, words relabelled, model confidence and reasoning, "
    "text before and as proposed, reviewer, note, review time (UTC), flow run id, tokens"
)
