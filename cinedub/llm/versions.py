"""Shard versions: every review writes a new, complete, immutable version; nothing is overwritten in place.

Layout (version 0 is the pipeline's own output)::

    out/
      manifest.json, shards/...          version 0 (written by the pipeline)
      versions/
        0001/
          shards/<source_id>-NNNNN.parquet   every shard of the version: rewritten sources as new files,
                                             unchanged ones as hard links to the parent's files (copies across
                                             file systems), so a version never changes when a later one is written
          manifest.json                      same format as out/manifest.json, paths relative to out/
          version.json                       parent, time, flow run, reviewer, clips changed
        LATEST                               "1": the newest complete version, replaced atomically last

A reader opens :func:`resolve_manifest` (``version="latest"`` by default) and resolves each entry's ``path`` against
``out/``, exactly as it does for version 0. A version folder without ``LATEST`` pointing at it (a crash while
writing) is never read and its number is reused.

Writers serialise on ``out/.versions.lock`` (``filelock``), and always start from the latest version at the time they
hold the lock, so two reviews finishing together produce versions N and N+1 with both sets of decisions.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.parquet as pq

from cinedub.config import ShardConfig
from cinedub.schema import SCHEMA_VERSION, clip_schema
from cinedub.shards import SHARD_DIR, read_manifest, shard_entry, write_source_shards
from cinedub.card import write_card
from cinedub.atomic import write_json_atomic

VERSIONS_DIR = "versions"
LATEST = "LATEST"


def version_dir(out_dir: str | Path, version: int) -> Path:
    return Path(out_dir) / VERSIONS_DIR / f"{version:04d}"


def latest_version(out_dir: str | Path) -> int:
    """Number of the newest complete version (0 = the pipeline's output, no review written yet)."""
    p = Path(out_dir) / VERSIONS_DIR / LATEST
    if not p.is_file():
        return 0
    return int(p.read_text(encoding="utf-8").strip() or 0)


def resolve_manifest(out_dir: str | Path, version: int | str | None = "latest") -> dict[str, Any]:
    """The manifest of ``version`` ("latest"/None, or a number; 0 = ``out/manifest.json``).

    Entry paths are relative to ``out_dir`` in every version. The result carries ``"version": n``.

    Raises:
        FileNotFoundError: no such version (or no manifest at all).
    """
    n = latest_version(out_dir) if version in (None, "latest") else int(version)
    if n == 0:
        manifest = read_manifest(out_dir)
    else:
        p = version_dir(out_dir, n) / "manifest.json"
        if not p.is_file() or n > latest_version(out_dir):
            raise FileNotFoundError(f"{p}: no shard version {n} in {out_dir}")
        manifest = json.loads(p.read_text(encoding="utf-8"))
    return {**manifest, "version": n}


def manifest_files(out_dir: str | Path, manifest: dict[str, Any], source_id: str | None = None) -> list[str]:
    """Absolute shard paths of ``manifest`` (only those holding ``source_id`` when given)."""
    return [
        str(Path(out_dir) / e["path"])
        for e in manifest["shards"]
        if source_id is None or source_id in e.get("source_ids", [])
    ]


def read_rows(
    out_dir: str | Path,
    *,
    version: int | str | None = "latest",
    source_ids: list[str] | None = None,
    columns: list[str] | None = None,
    clip_ids: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Rows of a version as dicts (media stays encoded), optionally only some sources, clips and columns."""
    manifest = resolve_manifest(out_dir, version)
    files = manifest_files(out_dir, manifest)
    if not files:
        return []
    dataset = ds.dataset(files, format="parquet")
    flt = ds.field("source_id").isin(source_ids) if source_ids else None
    if clip_ids:
        by_clip = ds.field("clip_id").isin(clip_ids)
        flt = by_clip if flt is None else flt & by_clip
    cols = [c for c in columns if c in dataset.schema.names] if columns else None
    return dataset.to_table(columns=cols, filter=flt).to_pylist()


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    from filelock import FileLock

    out_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out_dir / ".versions.lock")):
        yield


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def find_version(out_dir: str | Path, flow_run_id: str) -> int | None:
    """The version a given flow run wrote, if any (makes writing idempotent when a run is re-executed)."""
    for n in range(latest_version(out_dir), 0, -1):
        meta = version_dir(out_dir, n) / "version.json"
        if meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("flow_run_id") == flow_run_id:
            return n
    return None


def write_version(
    out_dir: str | Path,
    updates: dict[str, dict[str, Any]],
    *,
    meta: dict[str, Any] | None = None,
    flow_run_id: str | None = None,
    cfg: ShardConfig | None = None,
) -> int:
    """Write a new version where the rows of ``updates`` (clip id -> columns to replace) are changed.

    Sources holding an updated clip are rewritten whole (all their rows, from the latest version, audio included);
    every other shard is hard-linked. With ``flow_run_id`` already recorded in a version, that version is returned
    and nothing is written.

    The dataset card, statistics and plots (:func:`cinedub.card.write_card`) are regenerated from the new version,
    keeping the card's license.

    Returns:
        The new version's number.

    Raises:
        KeyError: a clip id in ``updates`` is not in the latest version.
    """
    out = Path(out_dir)
    with _locked(out):
        if flow_run_id:
            done = find_version(out, flow_run_id)
            if done is not None:
                return done
        parent = latest_version(out)
        parent_manifest = resolve_manifest(out, parent)
        n = parent + 1
        vdir = version_dir(out, n)
        if vdir.exists():
            shutil.rmtree(vdir)  # left by a crash before LATEST moved: never visible, safe to redo
        (vdir / SHARD_DIR).mkdir(parents=True)
        by_clip_source: dict[str, str] = {}
        clip_ids = list(updates)
        if clip_ids:
            table = ds.dataset(manifest_files(out, parent_manifest), format="parquet").to_table(
                columns=["clip_id", "source_id"], filter=ds.field("clip_id").isin(clip_ids)
            )
            by_clip_source = dict(zip(table.column("clip_id").to_pylist(), table.column("source_id").to_pylist()))
        missing = sorted(set(clip_ids) - set(by_clip_source))
        if missing:
            shutil.rmtree(vdir)
            raise KeyError(f"clips not in version {parent} of {out}: {missing[:5]}")
        touched = sorted(set(by_clip_source.values()))
        entries: list[dict[str, Any]] = []
        for e in parent_manifest["shards"]:
            if set(e.get("source_ids", [])) & set(touched):
                continue
            src = out / e["path"]
            dst = vdir / SHARD_DIR / src.name
            _link(src, dst)
            entries.append({**e, "path": dst.relative_to(out).as_posix(), "mtime_ns": dst.stat().st_mtime_ns})
        for source_id in touched:
            rows = pq.ParquetDataset(manifest_files(out, parent_manifest, source_id)).read().to_pylist()
            rows = [r for r in rows if r["source_id"] == source_id]
            rows.sort(key=lambda r: r["clip_index"])
            names = set(clip_schema().names)
            for r in rows:
                upd = updates.get(r["clip_id"])
                if upd:
                    r.update({k: v for k, v in upd.items() if k in names})
            for path in write_source_shards(rows, vdir, source_id, cfg):
                entry = shard_entry(path)
                entries.append({**entry, "path": path.relative_to(out).as_posix(), "mtime_ns": path.stat().st_mtime_ns})
        entries.sort(key=lambda e: e["path"])
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "shards": entries,
            "total_rows": sum(e["rows"] for e in entries),
            "total_bytes": sum(e["bytes"] for e in entries),
        }
        write_json_atomic(vdir / "manifest.json", manifest)
        write_json_atomic(
            vdir / "version.json",
            {
                "version": n,
                "parent": parent,
                "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "flow_run_id": flow_run_id,
                "sources_rewritten": touched,
                "clips_changed": sorted(clip_ids),
                **(meta or {}),
            },
        )
        tmp = out / VERSIONS_DIR / f".{LATEST}.tmp"
        tmp.write_text(str(n), encoding="utf-8")
        os.replace(tmp, out / VERSIONS_DIR / LATEST)
        # the dataset card maps the splits to the newest version: load_dataset(out) reads this version only
        write_card(out)
        return n
