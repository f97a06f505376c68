"""The review flow: correct a batch of clips with the LLM, apply what needs no human, then show the rest to a reviewer
in pages of a few clips and write each page's decisions as a new shard version.

``review_flow(out_dir, ...)``:

1. reads a batch from the latest shard version of ``out_dir`` (unreviewed clips by default);
2. corrects each clip in a ``llm-correct`` task (:func:`cinedub.llm.correct.correct_clip`: per-clip answer cache,
   limits, retries, deadline, guards). The client gets its deployment-wide limits and its secret store from here
   (:class:`flows.resources.PrefectLimits`, :func:`flows.resources.prefect_secret`): the core imports no Prefect;
3. writes the auto-accepted clips, guard refusals and request errors as a version at once (nothing waits for a
   human), and posts one markdown artifact per clip (key ``correction-<clip_id>``), a batch table and the usage;
4. for each page of at most ``page_size`` clips, suspends with a form (:func:`review_page_form`): the page's
   description shows each clip's before/after table, its times, speaker changes and a link to hear it (the clip
   server of :mod:`cinedub.llm.listen`, started by ``cinedub review-serve`` / ``cinedub serve``); the form asks for
   the reviewer's name (required) and, per clip, a decision that starts **undecided** (untouched clips stay
   unreviewed), the text for ``edit`` (prefilled with the proposal) and a note. Suspending needs a deployment; the
   process exits and holds nothing while waiting;
5. on resume (UI "Resume", or ``prefect.flow_runs.resume_flow_run(id, run_input={...})``) the run re-executes from
   the top: the batch recorded at the first execution is read again, every answer comes from the cache (no new
   request), versions already written by this run are found by key and not written again, answered pages return
   their input at once, and the next page suspends. Each page's decisions are written as a version when the page
   is submitted (:func:`cinedub.llm.versions.write_version`, key ``<run id>:page-<n>``), so a reviewer who stops
   half way loses nothing.

A page whose input is refused (an ``edit`` without text, a changed text under another decision, an empty name)
re-opens with the reason shown (at most three rounds).
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
from pydantic import BaseModel, ConfigDict, Field, create_model

from cinedub.atomic import write_json_atomic
from cinedub.llm.batch import load_batch, make_client
from cinedub.llm.client import LlmClient
from cinedub.llm.config import LlmConfig
from cinedub.llm.correct import ClipContext, ClipCorrection, correct_clip
from cinedub.llm.listen import is_listening, listen_base_url, listen_url
from cinedub.llm.review import (
    UNDECIDED,
    auto_accept,
    automatic_updates,
    clip_diff_markdown,
    clip_heading,
    clip_summary,
    decision_updates,
    page_decisions,
    page_markdown,
)
from cinedub.llm.versions import write_version
from flows.resources import PREFECT_LIMITS, prefect_secret

REVIEW_KEY = "review"
POSTED_KEY = "cinedub-review-posted"
BATCH_KEY = "cinedub-review-batch"
MAX_FORM_ROUNDS = 3
DEFAULT_PAGE_SIZE = 5


class ClipDecision(BaseModel):
    """One clip's section of a review page. The decision starts ``undecided``: nothing is approved unseen."""

    decision: Literal["undecided", "approve", "reject", "edit"] = Field(
        UNDECIDED, title="Decision",
        description="approve · reject (keep the ASR text) · edit (use the text below) · undecided (leave it)")
    edited_text: str = Field(title="Text (used with 'edit'; prefilled with the proposal)")
    note: str = Field("", title="Note")


def review_page_form(headings: list[str], initial: list[dict[str, str]],
                     summaries: list[str] | None = None) -> type[RunInput]:
    """The form of one page: ``reviewer`` (required, non-blank) and ``clip_1`` ... ``clip_n``, each a
    :class:`ClipDecision` titled with the clip's heading, described by its change summary
    (:func:`cinedub.llm.review.clip_summary`: the V1 UI squeezes the page description above a long form, the
    fields' descriptions stay in view) and prefilled with ``initial`` (``edited_text``, and on a re-opened page the
    reviewer's own ``decision`` and ``note``). Both Prefect UIs show a nested field's title, one from the field, the
    other from its model, so both carry it. The defaults are set here rather than with
    ``RunInput.with_initial_data``, which drops the fields' titles."""
    fields: dict[str, Any] = {
        "reviewer": (str, Field(title="Reviewer name (required)", min_length=1, pattern=r"\S",
                                description="recorded with every decision of this page")),
    }
    summaries = summaries or [""] * len(headings)
    for k, (heading, values, summary) in enumerate(zip(headings, initial, summaries), 1):
        sub = type(f"Clip{k}Decision", (ClipDecision,), {"model_config": ConfigDict(title=heading),
                                                         "__module__": __name__})
        # pydantic drops a field title equal to its model's title, so the two differ
        fields[f"clip_{k}"] = (sub, Field(default=sub(**values), title=f"Decision on {heading}",
                                          description=summary or None))
    return create_model("ReviewPage", __base__=RunInput, **fields)


def resolve_llm_config(llm: LlmConfig | None, config_path: str | None) -> LlmConfig:
    """``llm`` if given, else the ``llm`` section of the CineDub configuration (file/env), else defaults."""
    if llm is not None:
        return llm
    from cinedub.config import Config

    return getattr(Config.load(config_path), "llm", None) or LlmConfig()


_CLIENTS: dict[tuple[str, str, str], LlmClient] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(out_dir: str, llm: LlmConfig) -> LlmClient:
    """One client per flow run and configuration, shared by the run's task threads (one usage ledger), with the
    Prefect limits and secret store injected."""
    ctx = FlowRunContext.get()
    run_id = str(ctx.flow_run.id) if ctx and ctx.flow_run else ""
    key = (run_id, out_dir, llm.model_dump_json())
    with _CLIENTS_LOCK:
        if key not in _CLIENTS:
            _CLIENTS[key] = make_client(out_dir, llm, shared_limits=PREFECT_LIMITS, secret_loader=prefect_secret)
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
    page_size: int = DEFAULT_PAGE_SIZE,
    listen_base: str | None = None,
    review_timeout_s: int | None = None,
) -> dict[str, Any]:
    """Correct, apply what needs no human, show the rest page by page, write each page as a version (see the
    module doc).

    Args:
        out_dir: a CineDub output folder (holding ``manifest.json``), as the flow run's machine sees it.
        llm: LLM settings (default: the ``llm`` section of the configuration at ``config_path`` / environment).
        source_id / clip_ids / limit: which clips (default: the first ``limit`` unreviewed clips).
        page_size: clips per review page (1 to 10).
        listen_base: root URL of the clip server (default :func:`cinedub.llm.listen.listen_base_url`).
        review_timeout_s: fail the run if a page is not submitted in time (None waits for ever).

    Returns:
        ``{"versions", "auto_accepted", "reviewed", "undecided", "guard_failed", "errors", "usage"}``.
    """
    logger = get_run_logger()
    cfg = resolve_llm_config(llm, config_path)
    page_size = max(1, min(10, page_size))
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
    rows = batch.rows

    base = listen_base or listen_base_url()
    listening = is_listening(base)
    if not listening:
        logger.warning("no clip server at %s: the review pages cannot play clips (start `cinedub review-serve`)", base)

    def listen(clip_id: str) -> str | None:
        return listen_url(base, out, clip_id) if listening else None

    if read_flow_run_input(POSTED_KEY) is None:  # first execution (not a re-execution after resume)
        for c in corrs.values():
            create_markdown_artifact(
                clip_diff_markdown(rows[c.clip_id], c, auto=verdicts[c.clip_id], listen_url=listen(c.clip_id)),
                key=_artifact_key(c.clip_id),
                description=f"LLM correction of {clip_heading(rows[c.clip_id])} "
                            f"({'review' if c in to_review else c.status})",
            )
        create_table_artifact(
            [
                {
                    "clip": clip_heading(rows[c.clip_id]),
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
            [{**client.ledger.to_dict(), "prefect_limits_used": ", ".join(sorted(client.limiter.used_shared))}],
            key="cinedub-llm-usage",
            description=f"LLM requests of this batch ({cfg.model})",
        )
        create_flow_run_input(POSTED_KEY, True)

    usage = _usage(corrs, cfg, client)
    versions: list[int] = []
    auto_updates = automatic_updates(rows, corrs, auto, flow_run_id=run_id)
    if auto_updates:
        versions.append(write_version(out, auto_updates, flow_run_id=f"{run_id}:auto" if run_id else None,
                                      meta={"kind": "auto", "usage": usage}))

    decided: dict[str, str] = {}
    reviewers: set[str] = set()
    pages = [to_review[i:i + page_size] for i in range(0, len(to_review), page_size)]
    for p, page in enumerate(pages, 1):
        headings = [clip_heading(rows[c.clip_id], k) for k, c in enumerate(page, 1)]
        summaries = [clip_summary(rows[c.clip_id], c, listen_url=listen(c.clip_id)) for c in page]
        initial = [{"edited_text": c.text or ""} for c in page]
        items = [(rows[c.clip_id], c, verdicts[c.clip_id]) for c in page]
        note = ""
        for round_ in range(1, MAX_FORM_ROUNDS + 1):
            description = page_markdown(items, p, len(pages), listen, note=note)
            form = review_page_form(headings, initial, summaries).with_initial_data(description=description)
            answer = suspend_flow_run(wait_for_input=form, key=f"{REVIEW_KEY}-p{p}-r{round_}", timeout=review_timeout_s)
            reviewer = (answer.reviewer or "").strip()
            sections = [getattr(answer, f"clip_{k}") for k in range(1, len(page) + 1)]
            decisions, errors = page_decisions([(c, s.decision, s.edited_text, s.note) for c, s in zip(page, sections)])
            if not reviewer:
                errors.insert(0, "the reviewer name is empty")
            if not errors:
                break
            logger.warning("review page %d input refused: %s", p, "; ".join(errors))
            if round_ == MAX_FORM_ROUNDS:
                raise ValueError(f"review page {p} refused {MAX_FORM_ROUNDS} times: {'; '.join(errors)}")
            note = "Your previous input was refused: " + "; ".join(errors) + ". Please correct it."
            initial = [{"decision": s.decision, "edited_text": s.edited_text, "note": s.note} for s in sections]
        if decisions:
            updates = decision_updates(rows, corrs, decisions, reviewer, flow_run_id=run_id, not_for_review=auto)
            versions.append(write_version(out, updates, flow_run_id=f"{run_id}:page-{p}" if run_id else None,
                                          meta={"kind": "review", "page": p, "reviewer": reviewer}))
            reviewers.add(reviewer)
        decided.update({d.clip_id: d.action for d in decisions})
        logger.info("review page %d of %d: %d decided, %d undecided", p, len(pages), len(decisions),
                    len(page) - len(decisions))

    undecided = [c.clip_id for c in to_review if c.clip_id not in decided]
    clips = {cid: {"status": c.status, "decision": decided.get(cid) or ("auto_accepted" if cid in auto else None),
                   "reasons": c.reasons} for cid, c in corrs.items()}
    create_table_artifact(
        [{"clip": clip_heading(rows[cid]), "decision": v["decision"] or "unreviewed", "status": v["status"]}
         for cid, v in clips.items()],
        key="cinedub-review-result",
        description=f"versions {versions or 'none'}; reviewed by {', '.join(sorted(reviewers)) or 'nobody'}",
    )
    if run_id:
        write_json_atomic(Path(out) / "runs" / f"llm-review-{run_id}.json",
                          {"flow_run_id": run_id, "versions": versions, "usage": usage, "decisions": decided,
                           "undecided": undecided, "reviewers": sorted(reviewers), "clips": clips})
    logger.info("versions %s: %d auto-accepted, %d reviewed, %d undecided", versions, len(auto), len(decided),
                len(undecided))
    return {
        "versions": versions,
        "auto_accepted": auto,
        "reviewed": decided,
        "undecided": undecided,
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


def serve_review(name: str = "review", limit: int | None = None, listen_port: int | None = None) -> None:
    """Serve the review flow as a deployment ``cinedub-review/<name>`` in this process, with the clip server on
    127.0.0.1 (blocks). Suspended runs are resumed here, so it runs on a real Prefect server (``PREFECT_API_URL``,
    else the local one ``cinedub serve`` starts), never on Prefect's throwaway ephemeral one.

    Args:
        listen_port: port of the clip server (default :func:`cinedub.llm.listen.listen_base_url`'s); a port in use
            is taken to be another clip server and left alone.

    Raises:
        ServiceUnavailableError: no Prefect server answers (the message says how to start one).
    """
    import os

    from prefect import serve
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from cinedub.llm.listen import listen_port as default_listen_port
    from cinedub.llm.listen import start_listener
    from flows.local import require_server

    api = require_server()
    os.environ["PREFECT_API_URL"] = api  # the flow-run processes the runner starts

    port = listen_port or default_listen_port()
    listener = start_listener(port)
    if listener is not None:
        os.environ.setdefault("CINEDUB_LISTEN_URL", listener.url)
        print(f"cinedub review-serve: clips served on {listener.url}", flush=True)
    else:
        print(f"cinedub review-serve: port {port} in use: using the clip server there", flush=True)
    try:
        with temporary_settings(updates={PREFECT_API_URL: api}):  # settings are read at import, not from the env
            serve(review_flow.to_deployment(name=name), limit=limit)
    finally:
        if listener is not None:
            listener.stop()


if __name__ == "__main__":
    import sys

    serve_review(sys.argv[1] if len(sys.argv) > 1 else "review")
