"""The review flow: correct a batch of clips with the LLM, post each diff to the Prefect UI, wait for a reviewer.

``review_flow(out_dir, ...)``:

1. reads a batch from the latest shard version of ``out_dir`` (unreviewed clips by default);
2. corrects each clip in a ``llm-correct`` task (:func:`cinedub.llm.correct.correct_clip`: per-clip answer cache,
   limits, retries, guards);
3. applies the auto-accept policy, then posts one markdown artifact per clip to review (key
   ``correction-<clip_id>``) and a batch table;
4. suspends with a typed form (:class:`ReviewForm`: reviewer name and approve / reject / edit per clip), which
   needs a deployment (``serve_review()`` or ``python -m flows.review``): the process exits and holds nothing while
   waiting;
5. on resume (UI "Resume" button, or ``prefect.flow_runs.resume_flow_run(id, run_input={...})``) the run
   re-executes from the top: the batch recorded at the first execution (clip ids and shard version, kept as a flow
   run input) is read again, every answer comes from the cache (no new request), the artifacts are not posted again,
   and ``suspend_flow_run`` returns the reviewer's input;
6. writes the decisions as a new shard version (:func:`cinedub.llm.versions.write_version`; nothing overwritten, once
   per flow run) and a result artifact. The new version starts from the latest one at write time, so reviews that
   finish in any order all land; when two reviews decided the same clip, the later write wins.

Decisions a reviewer gives for clips that were not up for review, or an edit without text, re-open the form with the
error shown (at most three rounds).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext
from prefect.flow_runs import suspend_flow_run
from prefect.input import RunInput
from prefect.input.actions import create_flow_run_input, read_flow_run_input
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel, Field

from cinedub.llm.batch import load_batch, make_client
from cinedub.llm.client import LlmClient
from cinedub.llm.config import LlmConfig
from cinedub.llm.correct import ClipContext, ClipCorrection, correct_clip
from cinedub.llm.review import ReviewDecision, auto_accept, clip_diff_markdown, form_description, review_updates
from cinedub.llm.versions import write_version
from cinedub.atomic import write_json_atomic

REVIEW_KEY = "review"
POSTED_KEY = "cinedub-review-posted"
BATCH_KEY = "cinedub-review-batch"
MAX_FORM_ROUNDS = 3


class ClipDecision(BaseModel):
    """One clip's decision in the review form."""

    clip_id: str = Field(description="clip id (see the clip's diff artifact)")
    decision: Literal["approve", "reject", "edit"] = Field("approve", description="approve: apply the correction; "
                                                           "reject: keep the ASR text; edit: use edited_text")
    edited_text: str = Field("", description="your text for the clip (only with decision 'edit')")
    note: str = Field("", description="optional note kept in the clip's correction provenance")


class ReviewForm(RunInput):
    """The form a suspended review run waits for."""

    reviewer: str = Field("", description="your name (recorded with every decision)")
    decisions: list[ClipDecision] = Field(default_factory=list)


def resolve_llm_config(llm: LlmConfig | None, config_path: str | None) -> LlmConfig:
    """``llm`` if given, else the ``llm`` section of the CineDub configuration (file/env), else defaults."""
    if llm is not None:
        return llm
    from cinedub.config import Config

    return getattr(Config.load(config_path), "llm", None) or LlmConfig()


_CLIENTS: dict[tuple[str, str, str], LlmClient] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(out_dir: str, llm: LlmConfig) -> LlmClient:
    """One client per flow run and configuration, shared by the run's task threads (one usage ledger)."""
    ctx = FlowRunContext.get()
    run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else ""
    key = (run_id, out_dir, llm.model_dump_json())
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = make_client(out_dir, llm)
        return _CLIENTS[key]


@task(name="llm-correct", task_run_name="correct-{clip_id}", cache_policy=NO_CACHE)
def correct_task(clip_id: str, row: dict[str, Any], context: ClipContext, client: LlmClient) -> ClipCorrection:
    """Correct one clip (answers come from the per-clip cache on re-execution)."""
    return correct_clip(row, context, client)


def _artifact_key(clip_id: str) -> str:
    return f"correction-{clip_id}".lower()


@flow(name="cinedub-review", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=4))
def review_flow(
    out_dir: str,
    llm: LlmConfig | None = None,
    config_path: str | None = None,
    source_id: str | None = None,
    clip_ids: list[str] | None = None,
    limit: int = 20,
    review_timeout_s: int | None = None,
) -> dict[str, Any]:
    """Correct, post diffs, wait for a reviewer, write the decisions as a new shard version (see the module doc).

    Args:
        out_dir: a CineDub output folder (holding ``manifest.json``), as the flow run's machine sees it.
        llm: LLM settings (default: the ``llm`` section of the configuration at ``config_path`` / environment).
        source_id / clip_ids / limit: which clips (default: the first ``limit`` unreviewed clips).
        review_timeout_s: fail the run if nobody resumes it in time (None waits for ever).

    Returns:
        ``{"version", "auto_accepted", "reviewed", "guard_failed", "errors", "usage"}``.
    """
    logger = get_run_logger()
    cfg = resolve_llm_config(llm, config_path)
    out = str(Path(out_dir).resolve())
    ctx = FlowRunContext.get()
    run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else None
    saved = read_flow_run_input(BATCH_KEY)
    if saved:  # re-execution after resume: the same clips from the same version (hence the same cached answers)
        batch = load_batch(out, cfg, clip_ids=saved["clip_ids"], version=saved["version"])
    else:
        batch = load_batch(out, cfg, clip_ids=clip_ids, source_id=source_id, limit=limit)
        create_flow_run_input(BATCH_KEY, {"version": batch.version, "clip_ids": list(batch.rows)})
    logger.info("version %d: %d clip(s) to correct", batch.version, len(batch.rows))
    client = _client(out, cfg)
    futures = [correct_task.submit(cid, row, batch.contexts[cid], client) for cid, row in batch.rows.items()]
    corrs = {f.result().clip_id: f.result() for f in futures}
    verdicts = {cid: auto_accept(c, cfg.auto_accept) for cid, c in corrs.items()}
    auto = [cid for cid, (ok, _) in verdicts.items() if ok]
    to_review = [c for cid, c in corrs.items() if c.ok and cid not in auto]

    if read_flow_run_input(POSTED_KEY) is None:  # first execution (not a re-execution after resume)
        for c in corrs.values():
            if c.ok or c.status == "guard_failed":
                create_markdown_artifact(
                    clip_diff_markdown(batch.rows[c.clip_id], c, auto=verdicts[c.clip_id]),
                    key=_artifact_key(c.clip_id),
                    description=f"LLM correction of clip {c.clip_id[:8]} ({'review' if c in to_review else c.status})",
                )
        create_table_artifact(
            [
                {
                    "clip": c.clip_id[:8],
                    "status": c.status,
                    "auto_accept": "yes" if verdicts[c.clip_id][0] else verdicts[c.clip_id][1],
                    "similarity": None if c.similarity is None else round(c.similarity, 3),
                    "edit_ratio": c.edit_ratio,
                    "relabels": c.speaker_relabels,
                    "reasons": "; ".join(c.reasons),
                }
                for c in corrs.values()
            ],
            key="cinedub-review-batch",
            description=f"{len(corrs)} clips: {len(auto)} auto-accepted, {len(to_review)} to review",
        )
        create_table_artifact(
            [{**client.ledger.to_dict(), "prefect_limits_used": ", ".join(sorted(client.limiter.used_prefect))}],
            key="cinedub-llm-usage",
            description=f"LLM requests of this batch ({cfg.model})",
        )
        create_flow_run_input(POSTED_KEY, True)

    decisions: list[ReviewDecision] = []
    reviewer = None
    rows = batch.rows
    if to_review:
        initial = [ClipDecision(clip_id=c.clip_id) for c in to_review]
        description = form_description(rows, to_review, {c.clip_id: _artifact_key(c.clip_id) for c in to_review})
        for round_ in range(1, MAX_FORM_ROUNDS + 1):
            form = ReviewForm.with_initial_data(description=description, reviewer="", decisions=initial)
            answer = suspend_flow_run(wait_for_input=form, key=f"{REVIEW_KEY}-{round_}", timeout=review_timeout_s)
            decisions = [ReviewDecision(d.clip_id, d.decision, d.edited_text, d.note) for d in answer.decisions]
            reviewer = answer.reviewer.strip() or None
            try:
                if reviewer is None:
                    raise ValueError("the reviewer name is empty")
                updates = review_updates(rows, corrs, auto_accepted=auto, decisions=decisions, reviewer=reviewer,
                                         flow_run_id=run_id)
                break
            except ValueError as e:
                logger.warning("review input refused: %s", e)
                if round_ == MAX_FORM_ROUNDS:
                    raise
                description = f"**Your previous input was refused: {e}.** Please correct it.\n\n" + description
    else:
        updates = review_updates(rows, corrs, auto_accepted=auto, decisions=[], reviewer=None, flow_run_id=run_id)

    usage = _usage(corrs, cfg, client)
    clips = {cid: {"status": c.status, "decision": (updates.get(cid, {}).get("correction") or {}).get("decision"),
                   "reasons": c.reasons} for cid, c in corrs.items()}
    version = write_version(out, updates, flow_run_id=run_id, meta={"kind": "review", "reviewer": reviewer,
                                                                   "usage": usage}) if updates else None
    decided = {d.clip_id: d.action for d in decisions}
    create_table_artifact(
        [
            {"clip": cid[:8], "decision": (upd.get("correction") or {}).get("decision"),
             "review_status": (upd.get("provenance") or {}).get("review_status")}
            for cid, upd in updates.items()
        ],
        key="cinedub-review-result",
        description=f"version {version} written by {reviewer or 'auto-accept'}",
    )
    if run_id:
        write_json_atomic(Path(out) / "runs" / f"llm-review-{run_id}.json", {"flow_run_id": run_id, "version": version,
                                                                             "usage": usage, "decisions": decided,
                                                                             "reviewer": reviewer, "clips": clips})
    logger.info("version %s: %d auto-accepted, %d reviewed; %s", version, len(auto), len(decided), usage)
    return {
        "version": version,
        "auto_accepted": auto,
        "reviewed": decided,
        "guard_failed": [cid for cid, c in corrs.items() if c.status == "guard_failed"],
        "errors": [cid for cid, c in corrs.items() if c.status == "error"],
        "usage": usage,
    }


def _usage(corrs: dict[str, ClipCorrection], cfg: LlmConfig, client: LlmClient) -> dict[str, Any]:
    """Tokens and cost of the batch's answers (cached ones included: they were paid for once), plus this
    execution's requests, retries and cache hits."""
    pt = sum(c.prompt_tokens for c in corrs.values())
    ct = sum(c.completion_tokens for c in corrs.values())
    return {
        "batch_prompt_tokens": pt,
        "batch_completion_tokens": ct,
        "batch_cost_usd": round((pt * cfg.price_prompt_per_mtok + ct * cfg.price_completion_per_mtok) / 1e6, 6),
        "this_execution": client.ledger.to_dict(),
    }


def serve_review(name: str = "review", limit: int | None = None) -> None:
    """Serve the review flow as a deployment ``cinedub-review/<name>`` in this process (needs a Prefect server;
    blocks). Suspended runs are picked up again here when resumed."""
    from prefect import serve

    serve(review_flow.to_deployment(name=name), limit=limit)


if __name__ == "__main__":
    import sys

    serve_review(sys.argv[1] if len(sys.argv) > 1 else "review")
