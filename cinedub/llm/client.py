"""OpenAI-compatible chat-completions client for the correction pass (the ``openai`` package, any base URL).

What it adds to ``openai.OpenAI``:

- **Structured output with fallback.** ``structured_output="auto"`` first sends a JSON-schema ``response_format``
  (OpenAI structured outputs; llama.cpp and vLLM turn it into a grammar); a server that rejects it with 400/422 gets
  JSON mode (``{"type": "json_object"}``), then no ``response_format`` at all. The mode that worked is remembered for
  the client's lifetime. Whatever the mode, the reply is validated by :mod:`cinedub.llm.guards`.
- **A strict wire schema.** The HTTP body is read raw (``with_raw_response``) and validated by pydantic
  (:class:`ChatCompletionBody`): an HTML proxy page, an empty or truncated body, or JSON without ``choices`` is an
  :class:`LlmError` of kind ``bad_response`` for that clip, never an exception that ends the run.
- **Retries** with exponential backoff and jitter, only on 408, 429, 5xx and timeouts; a ``Retry-After`` (seconds
  or HTTP date) or ``retry-after-ms`` header replaces the computed delay. The ``openai`` client's own retries are off
  (``max_retries=0``) so that each attempt passes through the limiter and is counted.
- **A per-clip deadline** (:attr:`LlmConfig.clip_deadline_s`): every attempt, retry delay and ``Retry-After`` wait
  of one :meth:`LlmClient.complete` call fits in it. Each attempt runs in a daemon thread that is abandoned at the
  deadline, so even an endpoint that trickles bytes (which a read timeout never fires on) costs at most the deadline.
- **Limits**: every attempt holds a slot of :class:`~cinedub.llm.limits.CallLimiter` (rate and in-flight cap).
- **Cache and accounting**: an :class:`~cinedub.llm.cache.AnswerCache` hit returns without a request; usage
  (tokens, cost, retries) is added to a :class:`~cinedub.llm.cache.UsageLedger`.
- **Secrets**: the API key comes from the environment variable the configuration names, or from a secret store the
  caller injects (``secret_loader``: the flows pass Prefect ``Secret`` blocks). It is handed to the ``openai``
  client only and registered for redaction (:mod:`cinedub.llm.redact`). No response body or header is ever kept:
  an error is a short class (kind, HTTP status, exception type, attempts), and the reply text is redacted before it
  is cached or returned.
"""

from __future__ import annotations

import email.utils
import json
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import openai
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cinedub.errors import CineDubError
from cinedub.llm.cache import AnswerCache, UsageLedger
from cinedub.llm.config import LlmConfig
from cinedub.llm.limits import CallLimiter, SharedLimits, limiter_for
from cinedub.llm.redact import install_log_redaction, redact, register_secret
from cinedub.llm.schema import response_format

log = logging.getLogger("cinedub.llm")

_MODES = ("json_schema", "json_object", "none")
# Local servers (llama.cpp, vLLM) ignore the key but the openai client refuses to start without one.
NO_KEY = "sk-no-key-required"
# HTTP statuses worth another attempt: request timeout, too many requests, and server-side errors.
_RETRY_STATUS = frozenset({408, 429}) | frozenset(range(500, 600))
SecretLoader = Callable[[str], str]


class LlmError(CineDubError):
    """A request failed for good: retries or the clip's deadline exhausted, or an error that is not retried.

    The message is a short class built only from facts the client knows, never from the response body or headers
    (a gateway may echo the request's ``Authorization`` header into either):
    ``"LLM request failed: server_error (HTTP 503, InternalServerError) after 3 attempt(s)"``.

    Attributes:
        kind: "timeout", "deadline", "rate_limited", "server_error", "bad_request", "auth", "connection",
            "bad_response" (a 200 whose body is not a chat completion) or "other".
        status: the HTTP status of the last attempt (None when no response came).
        error_type: the exception class of the last attempt (e.g. "APITimeoutError", "InternalServerError").
        attempts: requests made (including the failed ones).
        detail: a fixed phrase about a bad body (e.g. "text/html body, not JSON"); never text from the body.
    """

    def __init__(self, kind: str, attempts: int, *, status: int | None = None, error_type: str = "",
                 detail: str = ""):
        self.kind = kind
        self.status = status
        self.error_type = error_type
        self.attempts = attempts
        self.detail = detail
        facts = ", ".join(x for x in (f"HTTP {status}" if status else "", error_type, detail) if x)
        super().__init__(f"LLM request failed: {kind}" + (f" ({facts})" if facts else "") + f" after {attempts} attempt(s)")


class _Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    content: str | None = None


class _Choice(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message: _Message
    finish_reason: str | None = None


class _Usage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)


class ChatCompletionBody(BaseModel):
    """The part of an OpenAI ``chat.completion`` body CineDub reads (other fields are ignored): at least one choice
    with a message whose ``content`` is a string or null, an optional finish reason, model and usage."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    choices: list[_Choice] = Field(min_length=1)
    usage: _Usage | None = None


def parse_body(status: int, content_type: str, body: bytes) -> ChatCompletionBody:
    """Validate a 2xx chat-completions body.

    Raises:
        LlmError: kind ``bad_response``; ``detail`` says what was wrong in fixed words (never quoting the body).
    """
    ctype = (content_type or "").split(";")[0].strip().lower() or "no content type"

    def bad(detail: str) -> LlmError:
        return LlmError("bad_response", 1, status=status, error_type="ChatCompletionBody", detail=detail)

    if not body.strip():
        raise bad("empty body")
    if "json" not in ctype:
        raise bad(f"{ctype} body, not JSON")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise bad("body is not valid JSON (truncated?)") from None
    try:
        return ChatCompletionBody.model_validate(data)
    except ValidationError as e:
        where = ", ".join(".".join(str(x) for x in err["loc"]) or "body" for err in e.errors()[:3])
        raise bad(f"JSON is not a chat completion ({where})") from None


@dataclass(frozen=True)
class LlmReply:
    """One answer: the message text plus what it cost.

    Attributes:
        content: the assistant message's text (expected to be the JSON answer), redacted.
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


def resolve_api_key(cfg: LlmConfig, secret_loader: SecretLoader | None = None) -> str:
    """The API key: the secret ``cfg.secret_block`` read by ``secret_loader`` if set, else ``$<cfg.api_key_env>``,
    else a placeholder for servers that need none. The key is registered for redaction; only where it came from is
    logged.

    Raises:
        ValueError: ``cfg.secret_block`` is set but no ``secret_loader`` was given, or the loader failed (the
            message names the block and the error type, never a value).
    """
    if cfg.secret_block:
        if secret_loader is None:
            raise ValueError(f"llm.secret_block={cfg.secret_block!r} needs a secret store: run through the Prefect "
                             f"flows or the cinedub CLI, or set {cfg.api_key_env} instead")
        try:
            value = str(secret_loader(cfg.secret_block))
        except Exception as exc:  # noqa: BLE001 - re-raised with the block's name only
            raise ValueError(f"cannot load secret {cfg.secret_block!r}: {type(exc).__name__}") from None
        register_secret(value)
        log.debug("LLM API key from secret %r", cfg.secret_block)
        return value
    value = os.environ.get(cfg.api_key_env)
    if value:
        register_secret(value)
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


class _Deadline(Exception):
    """The clip's deadline passed while an attempt was still running."""


def _bounded(fn: Callable[[], Any], seconds: float) -> Any:
    """``fn()`` in a daemon thread; raises :class:`_Deadline` when it has not returned after ``seconds`` (the thread
    is abandoned: it ends with its own socket timeout, and never keeps the process alive)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            box["error"] = exc

    t = threading.Thread(target=target, name="cinedub-llm-request", daemon=True)
    t.start()
    t.join(max(0.0, seconds))
    if t.is_alive():
        raise _Deadline()
    if "error" in box:
        raise box["error"]
    return box["value"]


class LlmClient:
    """Chat-completions calls for JSON answers, with fallback, retries, deadline, limits, cache and accounting.

    Args:
        cfg: endpoint, model, limits, retry and deadline settings.
        cache: answer cache (None: always ask).
        ledger: usage accumulator (a fresh one by default; read it from :attr:`ledger`).
        limiter: shared limiter (default: the process-wide one for ``cfg`` and ``shared_limits``).
        shared_limits: deployment-wide limits injected by the orchestration layer (see :mod:`cinedub.llm.limits`).
        secret_loader: reads a named secret (``cfg.secret_block``); the flows pass Prefect ``Secret`` blocks.
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
        shared_limits: SharedLimits | None = None,
        secret_loader: SecretLoader | None = None,
        api_key: str | None = None,
        sleep: Any = time.sleep,
    ):
        install_log_redaction()
        self.cfg = cfg
        self.cache = cache
        self.ledger = ledger or UsageLedger.for_config(cfg)
        self.limiter = limiter or limiter_for(cfg, shared_limits)
        self._secret_loader = secret_loader
        self._api_key = api_key
        if api_key:
            register_secret(api_key)
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
                key = self._api_key if self._api_key is not None else resolve_api_key(self.cfg, self._secret_loader)
                self._client = openai.OpenAI(base_url=self.cfg.base_url, api_key=key, timeout=self.cfg.timeout_s,
                                             max_retries=0)
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
            LlmError: the request failed after the allowed retries or at the clip's deadline, with an error that is
                not retried, or with a body that is not a chat completion.
        """
        if key is not None and self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None and isinstance(hit.get("content"), str):
                self.ledger.add(cache_hits=1)
                usage = hit.get("usage") or {}
                return LlmReply(
                    content=redact(hit["content"]),
                    model=hit.get("model", self.cfg.model),
                    mode=hit.get("mode", "json_schema"),
                    prompt_tokens=int(usage.get("prompt_tokens", 0)),
                    completion_tokens=int(usage.get("completion_tokens", 0)),
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

    def _fail(self, kind: str, made: int, exc: BaseException | None = None, **kw: Any) -> LlmError:
        self.ledger.add(failures=1)
        status = kw.pop("status", getattr(exc, "status_code", None))
        error_type = kw.pop("error_type", type(exc).__name__ if exc is not None else "")
        err = LlmError(kind, made, status=status, error_type=error_type, **kw)
        log.warning("%s", err)
        return err

    def _request(self, messages: list[dict[str, Any]]) -> LlmReply:
        client = self._openai()
        deadline = time.monotonic() + self.cfg.clip_deadline_s
        attempt = 0  # retries used
        made = 0
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._fail("deadline", made, error_type="ClipDeadline")
            mode = self.mode
            kwargs: dict[str, Any] = {"model": self.cfg.model, "messages": messages, "temperature": self.cfg.temperature,
                                      "max_tokens": self.cfg.max_tokens, "timeout": min(self.cfg.timeout_s, remaining)}
            if self.cfg.seed is not None:
                kwargs["seed"] = self.cfg.seed
            fmt = response_format(mode)
            if fmt is not None:
                kwargs["response_format"] = fmt
            made += 1
            self.ledger.add(requests=1)
            try:
                with self.limiter.slot():
                    raw = _bounded(lambda: client.chat.completions.with_raw_response.create(**kwargs),
                                   deadline - time.monotonic())
                    status, ctype, body = raw.status_code, raw.headers.get("content-type", ""), raw.content
            except _Deadline:
                raise self._fail("deadline", made, error_type="ClipDeadline") from None
            except (openai.BadRequestError, openai.UnprocessableEntityError) as exc:
                if self.cfg.structured_output == "auto" and self._mode_index < len(_MODES) - 1:
                    with self._lock:
                        if self.mode == mode:
                            self._mode_index += 1
                    log.info("server rejected response_format %s (HTTP %s): trying %s", mode, exc.status_code, self.mode)
                    continue
                raise self._fail("bad_request", made, exc) from None
            except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
                raise self._fail("auth", made, exc) from None
            except (openai.APIStatusError, openai.APITimeoutError) as exc:
                status = getattr(exc, "status_code", None)
                if isinstance(exc, openai.APITimeoutError):
                    kind = "timeout"
                elif status == 429:
                    kind = "rate_limited"
                elif status is not None and status >= 500:
                    kind = "server_error"
                else:
                    kind = "other"
                if kind == "other" and status not in _RETRY_STATUS:
                    raise self._fail(kind, made, exc) from None
                if attempt >= self.cfg.max_retries:
                    raise self._fail(kind, made, exc) from None
                delay = self._backoff(attempt, exc)
                if time.monotonic() + delay >= deadline:
                    raise self._fail(kind, made, exc, detail="no time left before the clip deadline") from None
                log.warning("LLM %s (HTTP %s), retry %d/%d in %.2f s", kind, status, attempt + 1,
                            self.cfg.max_retries, delay)
                attempt += 1
                self.ledger.add(retries=1)
                self._sleep(delay)
                continue
            except openai.APIConnectionError as exc:
                raise self._fail("connection", made, exc) from None
            except Exception as exc:  # noqa: BLE001 - anything else the transport raises is one clip's error
                raise self._fail("other", made, exc) from None
            try:
                parsed = parse_body(status, ctype, body)
            except LlmError as e:
                raise self._fail("bad_response", made, status=e.status, error_type=e.error_type, detail=e.detail) from None
            choice = parsed.choices[0]
            usage = parsed.usage or _Usage()
            self.ledger.add(calls_ok=1, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens)
            return LlmReply(
                content=redact(choice.message.content or ""),
                model=parsed.model or self.cfg.model,
                mode=mode,
                prompt_tokens=usage.prompt_tokens,
                completion_tokens=usage.completion_tokens,
                finish_reason=choice.finish_reason,
                attempts=made,
            )
