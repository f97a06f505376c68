"""Writing Parquet shards atomically, and the manifest that says which shards exist.

Layout of an output folder::

    out/
      shards/<source_id>-00000.parquet   one source's clips, split at ShardConfig.max_shard_mb
      manifest.json                      every shard with row count, bytes, SHA-256 and clip ids
      runs/<run>.json                    per-run report (ok / failed with reason per input)

A shard is written under a hidden temporary name (:func:`cinedub.atomic.atomic_path`, which ``pyarrow.dataset``
and ``datasets`` ignore) and renamed when complete, so readers never see a partial file. A source's shard set replaces the previous
set of that source as a whole, so a rerun never leaves duplicates. The manifest is rebuilt from the shards' own
footers (cheap: metadata only) under a file lock (``filelock``), so concurrent workers can add sources safely.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from filelock import FileLock

from cinedub.config import ShardConfig
from cinedub.schema import SCHEMA_VERSION, check_version, clip_schema
from cinedub.atomic import atomic_path, remove_stale_temporaries, write_json_atomic
from cinedub.hashing import sha256_file

SHARD_DIR = "shards"
MANIFEST = "manifest.json"
_MB = 1 << 20


def _row_bytes(row: dict[str, Any]) -> int:
    """Rough in-memory size of a row, dominated by its media bytes."""
    size = 512
    for v in row.values():
        if isinstance(v, (bytes, str)):
            size += len(v)
        elif isinstance(v, dict):
            size += sum(len(x) for x in v.values() if isinstance(x, (bytes, str)))
        elif isinstance(v, list):
            for item in v:
                if isinstance(item, dict):
                    for x in item.values():
                        if isinstance(x, dict):
                            size += sum(len(y) for y in x.values() if isinstance(y, (bytes, str)))
                        elif isinstance(x, (bytes, str)):
                            size += len(x)
                        else:
                            size += 8
                else:
                    size += 8
    return size


def write_source_shards(
    rows: Iterable[dict[str, Any]], out_dir: str | Path, source_id: str, cfg: ShardConfig | None = None
) -> list[Path]:
    """Write one source's clip rows as shards ``shards/<source_id>-NNNNN.parquet``, replacing its previous set.

    Rows are grouped into row groups of about ``cfg.row_group_mb`` and shards of about ``cfg.max_shard_mb``. All
    shards are first written under hidden temporary names, then renamed; older shards of the same source that the
    new set does not overwrite are removed last. A crash at any point leaves either the old set or the new one
    visible (plus hidden temporaries, removed by the next run).

    Returns:
        The shard paths, in order. An empty ``rows`` removes the source's shards and returns ``[]``.
    """
    cfg = cfg or ShardConfig()
    shard_dir = Path(out_dir) / SHARD_DIR
    shard_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(shard_dir, recursive=False, name_prefix=f"{source_id}-")  # one writer per source
    schema = clip_schema()
    finals: list[Path] = []
    writer: pq.ParquetWriter | None = None
    shard_bytes = 0
    group: list[dict[str, Any]] = []
    group_bytes = 0

    with ExitStack() as pending:  # every shard is renamed into place at the end, all or none
        def flush_group() -> None:
            nonlocal group, group_bytes, shard_bytes
            if group and writer is not None:
                writer.write_table(pa.Table.from_pylist(group, schema=schema), row_group_size=len(group))
                shard_bytes += group_bytes
            group, group_bytes = [], 0

        def open_shard() -> None:
            nonlocal writer, shard_bytes
            final = shard_dir / f"{source_id}-{len(finals):05d}.parquet"
            tmp = pending.enter_context(atomic_path(final, fsync=True))
            writer = pq.ParquetWriter(tmp, schema, compression=cfg.compression,
                                      use_dictionary=["language", "source_id", "episode"])
            pending.callback(writer.close)  # closed before its rename (callbacks unwind first)
            finals.append(final)
            shard_bytes = 0

        def close_shard() -> None:
            nonlocal writer
            flush_group()
            if writer is not None:
                writer.close()
                writer = None

        for row in rows:
            if writer is None:
                open_shard()
            size = _row_bytes(row)
            if group and group_bytes + size > cfg.row_group_mb * _MB:
                flush_group()
            if shard_bytes and shard_bytes + group_bytes + size > cfg.max_shard_mb * _MB:
                close_shard()
                open_shard()
            group.append(row)
            group_bytes += size
        close_shard()
    keep = {p.name for p in finals}
    for old in shard_dir.glob(f"{source_id}-*.parquet"):
        if old.name not in keep:
            old.unlink(missing_ok=True)
    return finals


def source_shards(out_dir: str | Path, source_id: str) -> list[Path]:
    """The visible shards of one source, in order."""
    return sorted((Path(out_dir) / SHARD_DIR).glob(f"{source_id}-*.parquet"))


def shard_entry(path: Path) -> dict[str, Any]:
    """Manifest entry of one shard, read from its footer (no data pages are read)."""
    pf = pq.ParquetFile(path)
    check_version(pf.schema_arrow, path)
    clip_ids = pf.read(columns=["clip_id"]).column("clip_id").to_pylist()
    source_ids = set(pf.read(columns=["source_id"]).column("source_id").to_pylist())
    splits = set(pf.read(columns=["split"]).column("split").to_pylist())
    return {
        "path": f"{SHARD_DIR}/{path.name}",
        "rows": pf.metadata.num_rows,
        "row_groups": pf.metadata.num_row_groups,
        "bytes": path.stat().st_size,
        "sha256": sha256_file(path),
        "source_ids": sorted(source_ids),
        "split": splits.pop() if len(splits) == 1 else None,  # a source's shards are in one split
        "schema_version": (pf.schema_arrow.metadata or {}).get(b"cinedub.schema_version", b"").decode(),
        "clip_ids": clip_ids,
    }


def build_manifest(out_dir: str | Path) -> dict[str, Any]:
    """Rebuild ``manifest.json`` from the visible shards (under a lock; written atomically) and return it.

    Entries of unchanged shards (same size and mtime as recorded) are reused, so the checksum of a large dataset is
    not recomputed for every new source.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with FileLock(str(out / ".manifest.lock")):
        previous: dict[str, dict[str, Any]] = {}
        mpath = out / MANIFEST
        if mpath.is_file():
            try:
                for e in json.loads(mpath.read_text(encoding="utf-8")).get("shards", []):
                    previous[e["path"]] = e
            except (json.JSONDecodeError, KeyError):
                previous = {}
        entries = []
        for path in sorted((out / SHARD_DIR).glob("*.parquet")):
            rel = f"{SHARD_DIR}/{path.name}"
            st = path.stat()
            old = previous.get(rel)
            if old and old.get("bytes") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
                entries.append(old)
                continue
            entry = shard_entry(path)
            entry["mtime_ns"] = st.st_mtime_ns
            entries.append(entry)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "shards": entries,
            "total_rows": sum(e["rows"] for e in entries),
            "total_bytes": sum(e["bytes"] for e in entries),
        }
        write_json_atomic(mpath, manifest)
        return manifest


def read_manifest(out_dir: str | Path) -> dict[str, Any]:
    """The manifest of an output folder.

    Raises:
        FileNotFoundError: no ``manifest.json`` (nothing was written there yet).
    """
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no manifest (is this a CineDub output folder?)")
    return json.loads(path.read_text(encoding="utf-8"))
