"""Errors raised by CineDub. Each names the file and the reason, so a failed input can be reported and skipped."""

from __future__ import annotations

from pathlib import Path


class CineDubError(Exception):
    """Base class of every error CineDub raises on purpose."""


class MediaError(CineDubError):
    """An input cannot be used: not media, truncated, undecodable, or missing a stream a stage needs.

    Args:
        path: the offending file.
        reason: a short human-readable reason ("no audio stream", "not a media file: ...").
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelNotFoundError(CineDubError):
    """A model is neither in the model directory nor allowed to come from the hub.

    The message says where it was looked for and how to get it.
    """


class SchemaVersionError(CineDubError):
    """A shard was written with a newer major schema version than this reader understands."""


class ServiceUnavailableError(CineDubError):
    """A service a command needs (the Prefect server, an LLM endpoint) does not answer; the message says how to
    start or configure it."""
