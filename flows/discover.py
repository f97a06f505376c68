"""Finding sources for the ingest flow: a folder glob, an object-store prefix (any fsspec URL), or a list.

Pure functions (no Prefect). Local files are keyed by their content SHA-256, the hash the pipeline itself uses for
``source_id`` (the ledger remembers it by path, size and mtime, so a file is hashed once). Object-store files are
keyed without downloading them: SHA-256 of ``"<uri>\\n<size>\\n<ETag or mtime>"``; the per-source run downloads the
object into the work folder and the pipeline hashes the content then.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cinedub.atomic import atomic_path

MEDIA_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mxf")
_LOCAL = {"file", "local"}


@dataclass(frozen=True)
class Candidate:
    """A file the ingest flow found. ``uri`` is an absolute path for local files, a URL otherwise; ``mtime_ns`` is
    the modification time in ns (0 when the store does not say); ``etag`` is the store's version tag if any."""

    uri: str
    name: str
    size: int
    mtime_ns: int
    local: bool
    etag: str = ""

    def identity_key(self) -> str:
        """Key of a remote object from its metadata (see module doc)."""
        tag = self.etag or str(self.mtime_ns)
        return hashlib.sha256(f"{self.uri}\n{self.size}\n{tag}".encode()).hexdigest()


def _fs(url: str) -> tuple[Any, str]:
    import fsspec.core

    return fsspec.core.url_to_fs(url)


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in _LOCAL


def _mtime_ns(info: dict[str, Any]) -> int:
    v = info.get("mtime") or info.get("LastModified") or info.get("last_modified") or info.get("created")
    if v is None:
        return 0
    if hasattr(v, "timestamp"):
        return int(v.timestamp() * 1e9)
    try:
        return int(float(v) * 1e9)
    except (TypeError, ValueError):
        return 0


def _candidate(fs: Any, path: str, info: dict[str, Any]) -> Candidate:
    local = _is_local(fs)
    if local:
        st = os.stat(path)
        return Candidate(uri=os.path.abspath(path), name=Path(path).name, size=st.st_size,
                         mtime_ns=st.st_mtime_ns, local=True)
    uri = fs.unstrip_protocol(path)
    etag = str(info.get("ETag") or info.get("etag") or info.get("md5Hash") or info.get("checksum") or "").strip('"')
    return Candidate(uri=uri, name=path.rsplit("/", 1)[-1], size=int(info.get("size") or 0),
                     mtime_ns=_mtime_ns(info), local=False, etag=etag)


def _is_file(fs: Any, path: str, info: dict[str, Any]) -> bool:
    """A file, or (local) a symlink to one: landing areas are often links into the archive."""
    kind = info.get("type", "file")
    return kind == "file" or (kind == "other" and _is_local(fs) and os.path.isfile(path))


def _media(path: str, suffixes: Iterable[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return not name.startswith(".") and any(name.lower().endswith(s) for s in suffixes)


def discover(glob: str | None = None, prefix: str | None = None, sources: Iterable[str] = (),
             suffixes: Iterable[str] = MEDIA_SUFFIXES) -> list[Candidate]:
    """Every media file named by a glob (``/landing/**/*.mp4``, ``s3://bucket/x/*.mkv``), found under a prefix or
    folder (``s3://bucket/landing/``, ``/landing``), or listed in ``sources`` (files, folders or URLs).

    Hidden files (a name starting with ``.``, e.g. an upload in progress) are skipped. The result is sorted by URI
    and has no duplicates.

    Raises:
        FileNotFoundError: a listed source does not exist.
    """
    suffixes = tuple(s.lower() for s in suffixes)
    found: dict[str, Candidate] = {}

    def add_listing(fs, listing: dict) -> None:
        for path, info in sorted(listing.items()):
            if _is_file(fs, path, info) and _media(path, suffixes):
                c = _candidate(fs, path, info)
                found.setdefault(c.uri, c)

    def add_tree(url: str) -> None:
        fs, root = _fs(url)
        add_listing(fs, fs.find(root, detail=True))

    if glob:
        fs, pattern = _fs(glob)
        add_listing(fs, fs.glob(pattern, detail=True))
    if prefix:
        add_tree(prefix)
    for src in sources:
        fs, path = _fs(src)
        if not fs.exists(path):
            raise FileNotFoundError(f"source not found: {src}")
        if fs.isdir(path):
            add_tree(src)
        else:  # listed explicitly: taken whatever its suffix (the pipeline reports non-media as failed)
            c = _candidate(fs, path, fs.info(path))
            found.setdefault(c.uri, c)
    return [found[k] for k in sorted(found)]


def content_sha256(path: str | Path) -> str:
    """SHA-256 of a local file (the pipeline's own source hash)."""
    from cinedub.hashing import sha256_file

    return sha256_file(path)


def fetch(uri: str, dest_dir: str | Path) -> Path:
    """Copy a remote object into ``dest_dir`` (kept between attempts; written under a hidden name, then renamed).

    Returns:
        The local path. A local ``uri`` is returned as it is.
    """
    fs, path = _fs(uri)
    if _is_local(fs):
        return Path(path)
    dest = Path(dest_dir) / path.rsplit("/", 1)[-1]
    size = int(fs.info(path).get("size") or 0)
    if dest.is_file() and dest.stat().st_size == size:
        return dest
    with atomic_path(dest, keep_suffix=True) as tmp, fs.open(path, "rb") as src, open(tmp, "wb") as out:
        shutil.copyfileobj(src, out, 8 << 20)
    return dest
