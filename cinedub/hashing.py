"""The one stable hash of data and the one file hash.

:func:`stable_hash` is the SHA-256 of a canonical JSON encoding (sorted keys, no whitespace, records and fractions
encoded as in :mod:`cinedub.types`), so the same value hashes the same in any process, on any machine and in any
Python (no ``hash()``, no ``PYTHONHASHSEED``). Cache keys, configuration hashes, LLM answer caches and
deterministic seeds all use it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CHUNK = 1 << 20


def canonical_json(value: Any) -> str:
    """``value`` as canonical JSON: sorted keys, compact separators, non-ASCII kept."""
    from cinedub.types import encode

    return json.dumps(encode(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def stable_hash(value: Any, length: int = 64) -> str:
    """First ``length`` hex digits of the SHA-256 of :func:`canonical_json` of ``value``."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:length]


def stable_seed(*parts: Any) -> int:
    """A 31-bit seed derived from ``parts`` (e.g. the source hash and a stage name): deterministic per input."""
    return int(stable_hash(list(parts), 8), 16) & 0x7FFFFFFF


def sha256_file(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes, read in 1 MiB chunks.

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()
