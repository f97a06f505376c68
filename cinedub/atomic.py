"""The one way CineDub writes a file: a hidden temporary name in the same folder, then ``os.replace``.

A reader (or a crash) never sees a half-written file: either the old content or the new one is visible. Temporary
names start with a dot and end in ``.tmp`` (or ``.tmp<suffix>`` where a writer needs the suffix to pick a format),
which ``pyarrow.dataset`` and ``datasets`` ignore; :func:`remove_stale_temporaries` removes the ones a killed
process left behind.

Every writer takes the same path: :func:`atomic_path` for libraries that write to a path themselves (pyarrow,
soundfile, numpy, ffmpeg), :func:`write_bytes_atomic` / :func:`write_text_atomic` / :func:`write_json_atomic` for
data in memory.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TMP_MARK = ".tmp"


def _tmp_name(path: Path, keep_suffix: bool) -> Path:
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    suffix = path.suffix if keep_suffix else ""
    return path.with_name(f".{path.name}.{tag}{TMP_MARK}{suffix}")


@contextmanager
def atomic_path(
    path: str | Path, *, keep_suffix: bool = False, mode: int = 0o644, fsync: bool = False
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it is renamed to ``path``, on an error removed.

    Args:
        path: the final file; its folder is created.
        keep_suffix: end the temporary name with ``path``'s suffix (for writers that choose the format from it,
            e.g. ``soundfile`` or ffmpeg).
        mode: permission bits of the final file (group/other readable by default: output folders are shared).
        fsync: flush the data to disk before the rename (for files that must survive a power cut once visible).

    Raises:
        Whatever the body raises (the temporary file is removed first).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path, keep_suffix)
    try:
        yield tmp
        if tmp.exists():
            os.chmod(tmp, mode)
            if fsync:
                with open(tmp, "rb") as fh:
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns ``path``."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write ``data`` (records are encoded with :func:`cinedub.types.encode`) as UTF-8 JSON atomically."""
    from cinedub.types import encode

    return write_text_atomic(path, json.dumps(encode(data), ensure_ascii=False, indent=1))


def remove_stale_temporaries(
    folder: str | Path, *, older_than_s: float = 0.0, recursive: bool = True, name_prefix: str = ""
) -> int:
    """Delete temporaries of :func:`atomic_path` under ``folder`` left by killed processes.

    Only files at least ``older_than_s`` old are removed, so a writer running concurrently in another process is
    not disturbed when a positive age is given; ``name_prefix`` limits it to temporaries of files whose name
    starts with it. Returns the count removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    now = time.time()
    n = 0
    pattern = f".{name_prefix}*"
    for p in folder.rglob(pattern) if recursive else folder.glob(pattern):
        if TMP_MARK in p.name and p.is_file():
            try:
                if now - p.stat().st_mtime >= older_than_s:
                    p.unlink()
                    n += 1
            except FileNotFoundError:
                pass
    return n
