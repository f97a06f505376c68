"""Per-clip answer cache on disk, and token/cost accounting of one run.

The cache stores the model's raw reply (not the applied correction) under a key that hashes everything that shapes
the answer: the clip's content (the exact data block sent, plus the audio's hash when audio is sent), the model and
sampling settings, the prompt id (version + template hash) and the answer schema version. Guards and application run
again on a cached reply, so improving them never requires asking the model again, and a resumed or repeated run
never asks twice for a clip it has an answer for. Transport failures are not cached (the next run asks again).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cinedub.llm.config import LlmConfig
from cinedub.llm.schema import ANSWER_SCHEMA_VERSION
from cinedub.atomic import write_json_atomic


def cache_key(clip_content_sha256: str, cfg: LlmConfig, prompt_id: str) -> str:
    """SHA-256 hex of (clip content hash, model and sampling settings, prompt id, answer schema version)."""
    parts = {
        "clip": clip_content_sha256,
        "answer_cfg": cfg.answer_hash(),
        "prompt": prompt_id,
        "schema": ANSWER_SCHEMA_VERSION,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class AnswerCache:
    """Replies on disk, one JSON file per key: ``<root>/<key[:2]>/<key>.json`` (written atomically)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The stored entry (``content``, ``usage``, ``model``, ``prompt_id``, ...) or None."""
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is a miss; the next write replaces it

    def put(self, key: str, entry: dict[str, Any]) -> Path:
        entry = {**entry, "key": key, "stored_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        return write_json_atomic(self.path(key), entry)


@dataclass
class UsageLedger:
    """Calls, cache hits, retries and tokens of one run; cost from the configured prices (USD per million tokens).

    Thread-safe. ``to_dict`` is what run reports and the review flow's usage artifact show.
    """

    price_prompt_per_mtok: float = 0.0
    price_completion_per_mtok: float = 0.0
    requests: int = 0
    calls_ok: int = 0
    cache_hits: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def for_config(cls, cfg: LlmConfig) -> "UsageLedger":
        return cls(price_prompt_per_mtok=cfg.price_prompt_per_mtok, price_completion_per_mtok=cfg.price_completion_per_mtok)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, n in counts.items():
                setattr(self, name, getattr(self, name) + int(n))

    @property
    def cost_usd(self) -> float:
        return (self.prompt_tokens * self.price_prompt_per_mtok + self.completion_tokens * self.price_completion_per_mtok) / 1e6

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "calls_ok": self.calls_ok,
                "cache_hits": self.cache_hits,
                "retries": self.retries,
                "failures": self.failures,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 6),
            }
