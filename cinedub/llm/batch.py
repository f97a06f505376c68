"""A batch of clips from an output folder through the correction pass, without Prefect.

:func:`load_batch` reads the latest shard version (light columns only: no audio unless it is to be sent),
:func:`correct_batch` corrects the clips on a thread pool (the client's limiter caps the requests in flight), and
:func:`correct_output` runs the whole non-interactive path: correct, apply what the auto-accept policy allows, record
guard failures, write a new version. Clips needing a human are left for :mod:`flows.review`.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cinedub.llm.cache import AnswerCache
from cinedub.llm.client import LlmClient
from cinedub.llm.config import LlmConfig
from cinedub.llm.correct import ClipContext, ClipCorrection, clip_contexts, correct_clip
from cinedub.llm.review import auto_accept, review_updates
from cinedub.llm.versions import read_rows, write_version

LIGHT_COLUMNS = [
    "clip_id", "source_id", "episode", "clip_index", "start_ms", "end_ms", "language", "text", "text_raw", "words",
    "turns", "shot_boundaries_ms", "scene_type_candidates", "provenance",
]


def default_cache_dir(out_dir: str | Path, cfg: LlmConfig) -> Path:
    """``cfg.cache_dir`` or ``<out>/.work/llm-cache``."""
    return Path(cfg.cache_dir) if cfg.cache_dir else Path(out_dir) / ".work" / "llm-cache"


@dataclass(frozen=True)
class Batch:
    """Clips to correct and what their requests need.

    Attributes:
        version: the shard version the rows were read from.
        rows: clip id -> row (light columns) for the clips of the batch.
        contexts: clip id -> neighbours' text and source speakers.
    """

    version: int
    rows: dict[str, dict[str, Any]]
    contexts: dict[str, ClipContext]


def load_batch(
    out_dir: str | Path,
    cfg: LlmConfig,
    *,
    clip_ids: Sequence[str] | None = None,
    source_id: str | None = None,
    limit: int | None = None,
    statuses: Sequence[str] = ("unreviewed",),
    version: int | None = None,
) -> Batch:
    """Pick clips from ``version`` (default: the latest): the given ``clip_ids`` (any status), else clips whose
    ``provenance.review_status`` is in ``statuses``, optionally of one source, in (source, clip index) order,
    at most ``limit``."""
    from cinedub.llm.versions import latest_version

    version = latest_version(out_dir) if version is None else version
    columns = LIGHT_COLUMNS + (["audio_vocals"] if cfg.send_audio else [])
    light = read_rows(out_dir, version=version, columns=[c for c in LIGHT_COLUMNS], source_ids=[source_id] if source_id else None)
    light.sort(key=lambda r: (r["source_id"], r["clip_index"]))
    if clip_ids:
        wanted = set(clip_ids)
        picked = [r for r in light if r["clip_id"] in wanted]
    else:
        picked = [r for r in light if (r.get("provenance") or {}).get("review_status", "unreviewed") in statuses]
    if limit is not None:
        picked = picked[:limit]
    sources = {r["source_id"] for r in picked}
    contexts = clip_contexts([r for r in light if r["source_id"] in sources], cfg.context_clips)
    rows = {r["clip_id"]: r for r in picked}
    if cfg.send_audio and rows:
        full = read_rows(out_dir, version=version, columns=columns, source_ids=sorted(sources))
        for r in full:
            if r["clip_id"] in rows:
                rows[r["clip_id"]]["audio_vocals"] = r.get("audio_vocals")
    return Batch(version, rows, {cid: contexts[cid] for cid in rows})


def make_client(out_dir: str | Path, cfg: LlmConfig, **kwargs: Any) -> LlmClient:
    """A client with the output folder's answer cache."""
    return LlmClient(cfg, cache=AnswerCache(default_cache_dir(out_dir, cfg)), **kwargs)


def correct_batch(batch: Batch, client: LlmClient, workers: int | None = None) -> dict[str, ClipCorrection]:
    """Correct every clip of ``batch`` (threads; the client's limiter bounds requests in flight)."""
    n = workers or max(1, client.cfg.max_in_flight)
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = {cid: pool.submit(correct_clip, row, batch.contexts[cid], client) for cid, row in batch.rows.items()}
        return {cid: f.result() for cid, f in futures.items()}


def correct_output(out_dir: str | Path, client: LlmClient, **select: Any) -> dict[str, Any]:
    """Correct a batch and write a new version with the auto-accepted clips applied and refusals recorded.

    Clips that need review are not written (they stay ``unreviewed`` for :mod:`flows.review`). Returns a summary:
    ``version`` written (None when nothing changed), ``auto_accepted``, ``needs_review``, ``guard_failed``,
    ``errors`` (clip ids) and ``usage``.
    """
    batch = load_batch(out_dir, client.cfg, **select)
    corrs = correct_batch(batch, client)
    auto = [cid for cid, c in corrs.items() if auto_accept(c, client.cfg.auto_accept)[0]]
    updates = review_updates(batch.rows, corrs, auto_accepted=auto, decisions=[], reviewer=None)
    version = write_version(out_dir, updates, meta={"kind": "auto"}) if updates else None
    return {
        "version": version,
        "auto_accepted": auto,
        "needs_review": [cid for cid, c in corrs.items() if c.ok and cid not in auto],
        "guard_failed": [cid for cid, c in corrs.items() if c.status == "guard_failed"],
        "errors": [cid for cid, c in corrs.items() if c.status == "error"],
        "usage": client.ledger.to_dict(),
    }
