"""Secrets never leave the process: redaction of key- and token-like text before anything is written or logged.

Two layers, both applied by :func:`redact`:

1. **Known secrets.** Every API key the LLM client resolves is registered (:func:`register_secret`); any occurrence
   of it, whatever it looks like, is replaced.
2. **Shapes of secrets.** Text that looks like a credential is replaced even when it was never registered (a gateway
   that echoes another header, a key pasted into a prompt): ``Bearer``/``Basic``/``token`` followed by a token,
   OpenAI-style keys (``sk-…``, ``sk-proj-…``), ``api_key=…``/``Authorization: …``/``password=…`` assignments,
   JSON Web Tokens, AWS access key ids and GitHub / Hugging Face / Slack tokens. The patterns follow the formats
   documented by those vendors and the rules of secret scanners such as gitleaks (``config/gitleaks.toml``).

Where it is applied: the model's reply before it is cached, guarded or applied (:mod:`cinedub.llm.client`), every
string of a correction before it reaches a shard row (:mod:`cinedub.llm.rows`), and every log record of the process
once a client exists (:func:`install_log_redaction`: a log-record factory, so records of every logger, Prefect's
run loggers included, are redacted when created, before any handler sends them to a file, a terminal or the Prefect
API). Errors are never formatted from response bodies in the first place (:class:`cinedub.llm.client.LlmError`).
"""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

REDACTED = "[REDACTED]"
_MIN_SECRET_CHARS = 6

# Token characters: never a quote, backslash or whitespace, so a redaction inside a JSON string keeps it valid JSON.
_TOK = r"[A-Za-z0-9._~+/=:\-]"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"(?i)\b(bearer|basic|token)(\s+){_TOK}{{8,}}"), rf"\1\2{REDACTED}"),
    (re.compile(r"\b(?:sk|rk|pk)-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_\-]{8,}"), REDACTED),
    (
        re.compile(
            r"(?i)\b(api[_\-]?key|x-api-key|authorization|access[_\-]?token|auth[_\-]?token|secret|password|passwd)"
            r"(\s*[\"']?\s*[:=]\s*[\"']?\s*)(?!\[REDACTED\])[^\s\"',;&}]{6,}"
        ),
        rf"\1\2{REDACTED}",
    ),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{4,}"), REDACTED),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"\b(?:ghp|gho|ghs|ghu|github_pat|hf|xox[abprs])_[A-Za-z0-9_]{10,}"), REDACTED),
)

_known: set[str] = set()
_known_re: re.Pattern[str] | None = None
_lock = threading.Lock()


def register_secret(value: str | None) -> None:
    """Redact every later occurrence of ``value`` (a resolved API key). Values shorter than 6 characters and
    placeholders are ignored (they would redact ordinary words)."""
    if not value or len(value) < _MIN_SECRET_CHARS:
        return
    global _known_re
    with _lock:
        if value in _known:
            return
        _known.add(value)
        alternatives = sorted(_known, key=len, reverse=True)
        _known_re = re.compile("|".join(re.escape(v) for v in alternatives))


def redact(text: str) -> str:
    """``text`` with registered secrets and secret-shaped tokens replaced by ``[REDACTED]`` (see the module doc)."""
    if not text:
        return text
    known = _known_re
    if known is not None:
        text = known.sub(REDACTED, text)
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


def redact_obj(obj: Any) -> Any:
    """:func:`redact` applied to every string inside dicts, lists and tuples (keys included); other values as is."""
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, dict):
        return {redact_obj(k): redact_obj(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact_obj(v) for v in obj)
    return obj


_installed = False


def install_log_redaction() -> None:
    """Redact every log record of this process when it is created (idempotent).

    Wraps :func:`logging.getLogRecordFactory`: the record's message is formatted once and redacted, so no handler
    (file, terminal, Prefect's API log handler) ever sees a registered key or a token-shaped string. Exception
    tracebacks attached to records are not rewritten; CineDub's LLM errors carry no response text.
    """
    global _installed
    with _lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            try:
                message = record.getMessage()
            except Exception:  # noqa: BLE001 - a malformed log call is the logging module's to report
                return record
            clean = redact(message)
            if clean != message:
                record.msg, record.args = clean, ()
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
