"""OpenAI-compatible chat-completions client for the correction pass (the ``openai`` package, any base URL).

What it adds to ``openai.OpenAI``:

- **Structured output with fallback.** ``structured_output="auto"`` first sends a JSON-schema ``response_format``
  (OpenAI structured outputs; llama.cpp and vLLM turn it into a grammar); a server that rejects it with 400/422 gets
  JSON mode (``{"type": "json_object"}``), then no ``response_format`` at all. The mode that worked is remembered for
  the client's lifetime. Whatever the mode, the reply is validated by :mod:`cinedub.llm.guards`.
- **Retries** with exponential backoff and jitter, only on 429, 5xx and timeouts; a ``Retry-After`` (seconds or HTTP
  date) or ``retry-after-ms`` header replaces the computed delay. The ``openai`` client's own retries are off
  (``max_retries=0``) so that each attempt passes through the limiter and is counted.
- **Limits**: every attempt holds a slot of :class:`~cinedub.llm.limits.CallLimiter` (rate and in-flight cap).
- **Cache and accounting**: an :class:`~cinedub.llm.cache.AnswerCache` hit returns without a request; usage
  (tokens, cost, retries) is added to a :class:`~cinedub.llm.cache.UsageLedger`.
- **Secrets**: the API key comes from the environment variable or Prefect ``Secret`` block the configuration names
  (:func:`resolve_api_key`), is handed to the ``openai`` client only, and never appears in logs, cache or reports.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any

import openai

from cinedub.errors import CineDubError
from cinedub.llm.cache import AnswerCache, UsageLedger
from cinedub.llm.config import LlmConfig
from cinedub.llm.limits import CallLimiter, limiter_for
from cinedub.llm.schema import response_format

log = logging.getLogger("cinedub.llm")

_MODES = ("json_schema", "json_object", "none")
# Local servers (llama.cpp, vLLM) ignore the key but the openai client refuses to start without one.
NO_KEY = "sk-no-key-required"


class LlmError(CineDubError):
    """A request failed for good: retries exhausted on 429/5xx/timeouts, or an error that is not retried.

    Attributes:
        kind: "timeout", "rate_limited", "server_error", "bad_request", "auth", "connection" or "other".
        attempts: requests made (including the failed ones).
    """

    def __init__(self, kind: str, message: str, attempts: int):
        self.kind = kind
        self.attempts = attempts
        super().__init__(f"LLM request failed ({kind}, {attempts} attempt(s)): {message}")


@dataclass(frozen=True)
class LlmReply:
    """One answer: the message text plus what it cost.

    Attributes:
        content: the assistant message's text (expected to be the JSON answer).
        model: model name the server reported (or the configured one).
        mode: structured-output mode used ("json_schema", "json_object", "none").
        prompt_tokens / completion_tokens: usage reported by the server (0 if it reports none).
        finish_reason: "stop", "length" (truncated: the JSON will not parse), ...
        cached: True when served from the answer cache (no request made).
        attempts: requests made for this reply (0 when cached).
    """

    content: str
    model: str
    mode: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None
    cached: bool = False
    attempts: int = 0


def resolve_api_key(cfg: LlmConfig) -> str:
    """The API key: the Prefect ``Secret`` block ``cfg.secret_block`` if set, else ``$<cfg.api_key_env>``, else a
    placeholder for servers that need none. The key itself is never logged; only where it came from.

    Raises:
        ValueError: the named Secret block cannot be loaded (message names the block, not its value).
    """
    if cfg.secret_block:
        from prefect.blocks.system import Secret

        try:
            value = Secret.load(cfg.secret_block).get()
        except Exception as exc:  # noqa: BLE001 - re-raised with the block's name only
            raise ValueError(f"cannot load Prefect Secret block {cfg.secret_block!r}: {type(exc).__name__}") from None
        log.debug("LLM API key from Prefect Secret block %r", cfg.secret_block)
        return str(value)
    value = os.environ.get(cfg.api_key_env)
    if value:
        log.debug("LLM API key from environment variable %s", cfg.api_key_env)
        return value
    log.debug("no LLM API key (%s unset): using a placeholder", cfg.api_key_env)
    return NO_KEY


def retry_after_s(headers: Any) -> float | None:
    """Seconds a 429/503 asks to wait: ``retry-after-ms``, or ``Retry-After`` as seconds or an HTTP date."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


class LlmClient:
    """Chat-completions calls for JSON answers, with fallback, retries, limits, cache and accounting.

    Args:
        cfg: endpoint, model, limits and retry settings.
        cache: answer cache (None: always ask).
        ledger: usage accumulator (a fresh one by default; read it from :attr:`ledger`).
        limiter: shared limiter (default: the process-wide one for ``cfg``).
        api_key: overrides :func:`resolve_api_key` (tests; never logged).
        sleep: the sleep function used between retries (tests may record delays).
    """

    def __init__(
        self,
        cfg: LlmConfig,
        *,
        cache: AnswerCache | None = None,
        ledger: UsageLedger | None = None,
        limiter: CallLimiter | None = None,
        api_key: str | None = None,
        sleep: Any = time.sleep,
    ):
        self.cfg = cfg
        self.cache = cache
        self.ledger = ledger or UsageLedger.for_config(cfg)
        self.limiter = limiter or limiter_for(cfg)
        self._api_key = api_key
        self._sleep = sleep
        self._client: openai.OpenAI | None = None
        self._lock = threading.Lock()
        self._mode_index = 0 if cfg.structured_output == "auto" else _MODES.index(cfg.structured_output)

    def __repr__(self) -> str:  # never show the key
        return f"LlmClient(base_url={self.cfg.base_url!r}, model={self.cfg.model!r})"

    @property
    def mode(self) -> str:
        """The structured-output mode the next request will use."""
        return _MODES[self._mode_index]

    def _openai(self) -> openai.OpenAI:
        with self._lock:
            if self._client is None:
                key = self._api_key if self._api_key is not None else resolve_api_key(self.cfg)
                self._client = openai.OpenAI(base_url=self.cfg.base_url, api_key=key, timeout=self.cfg.timeout_s, max_retries=0)
            return self._client

    def _backoff(self, attempt: int, exc: BaseException) -> float:
        response = getattr(exc, "response", None)
        hinted = retry_after_s(getattr(response, "headers", None))
        if hinted is not None:
            return min(hinted, self.cfg.max_retry_after_s)
        delay = min(self.cfg.max_backoff_s, self.cfg.backoff_s * (2**attempt))
        return delay * random.uniform(0.5, 1.0)  # "equal jitter" spreads clients that failed together

    def complete(self, messages: list[dict[str, Any]], *, key: str | None = None, meta: dict[str, Any] | None = None) -> LlmReply:
        """Send ``messages`` and return the reply (from the cache when ``key`` is cached).

        Args:
            messages: chat messages (system + user; user content may be a list of parts with audio).
            key: cache key (:func:`cinedub.llm.cache.cache_key`); None disables the cache for this call.
            meta: small JSON-able facts stored with the cache entry (clip id, prompt id).

        Raises:
            LlmError: the request failed after the allowed retries, or with an error that is not retried.
        """
        if key is not None and self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and "content" in hit:
                self.ledger.add(cache_hits=1)
                return LlmReply(
                    content=hit["content"],
                    model=hit.get("model", self.cfg.model),
                    mode=hit.get("mode", "json_schema"),
                    prompt_tokens=int(hit.get("usage", {}).get("prompt_tokens", 0)),
                    completion_tokens=int(hit.get("usage", {}).get("completion_tokens", 0)),
                    finish_reason=hit.get("finish_reason"),
                    cached=True,
                )
        reply = self._request(messages)
        if key is not None and self.cache is not None:
            self.cache.put(
                key,
                {
                    "content": reply.content,
                    "model": reply.model,
                    "mode": reply.mode,
                    "finish_reason": reply.finish_reason,
                    "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens},
                    "meta": meta or {},
                },
            )
        return reply

    def _request(self, messages: list[dict[str, Any]]) -> LlmReply:
        client = self._openai()
        attempt = 0  # retries used
        made = 0
        while True:
            mode = self.mode
            kwargs: dict[str, Any] = {"model": self.cfg.model, "messages": messages, "temperature": self.cfg.temperature,
                                      "max_tokens": self.cfg.max_tokens}
            if self.cfg.seed is not None:
                kwargs["seed"] = self.cfg.seed
            fmt = response_format(mode)
            if fmt is not None:
                kwargs["response_format"] = fmt
            made += 1
            self.ledger.add(requests=1)
            try:
                with self.limiter.slot():
                    resp = client.chat.completions.create(**kwargs)
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if self.cfg.structured_output == "auto" and self._mode_index < len(_MODES) - 1:
                    with self._lock:
                        if self.mode == mode:
                            self._mode_index += 1
                    log.info("server rejected response_format %s (%s): trying %s", mode, exc.status_code, self.mode)
                    continue
                self.ledger.add(failures=1)
                raise LlmError("bad_request", _short(exc), made) from None
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                self.ledger.add(failures=1)
                raise LlmError("auth", f"HTTP {exc.status_code}", made) from None  # the body might echo the key
            except (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError) as exc:
                kind = "timeout" if isinstance(exc, openai.APITimeoutError) else (
                    "rate_limited" if isinstance(exc, openai.RateLimitError) else "server_error")
                if attempt >= self.cfg.max_retries:
                    self.ledger.add(failures=1)
                    raise LlmError(kind, _short(exc), made) from None
                delay = self._backoff(attempt, exc)
                log.warning("LLM %s, retry %d/%d in %.2f s", kind, attempt + 1, self.cfg.max_retries, delay)
                attempt += 1
                self.ledger.add(retries=1)
                self._sleep(delay)
                continue
            except openai.APIStatusError as exc:
                if exc.status_code >= 500:  # 5xx the SDK has no class for (e.g. 501, 505)
                    if attempt < self.cfg.max_retries:
                        attempt += 1
                        self.ledger.add(retries=1)
                        self._sleep(self._backoff(attempt - 1, exc))
                        continue
                    self.ledger.add(failures=1)
                    raise LlmError("server_error", _short(exc), made) from None
                self.ledger.add(failures=1)
                raise LlmError("other", _short(exc), made) from None
            except openai.APIConnectionError as exc:
                self.ledger.add(failures=1)
                raise LlmError("connection", type(exc).__name__, made) from None
            choice = resp.choices[0] if resp.choices else None
            content = (choice.message.content if choice and choice.message else None) or ""
            usage = resp.usage
            pt = int(getattr(usage, "prompt_tokens", 0) or 0)
            ct = int(getattr(usage, "completion_tokens", 0) or 0)
            self.ledger.add(calls_ok=1, prompt_tokens=pt, completion_tokens=ct)
            return LlmReply(
                content=content,
                model=resp.model or self.cfg.model,
                mode=mode,
                prompt_tokens=pt,
                completion_tokens=ct,
                finish_reason=getattr(choice, "finish_reason", None),
                attempts=made,
            )


def _short(exc: BaseException) -> str:
    status = getattr(exc, "status_code", None)
    text = str(getattr(exc, "message", "") or exc)
    return (f"HTTP {status}: " if status else "") + text[:300]
