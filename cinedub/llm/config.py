"""Configuration of the LLM correction pass (to be hooked into :class:`cinedub.config.Config` as ``llm``).

The endpoint is any OpenAI-compatible ``/v1/chat/completions`` server (OpenAI, vLLM, llama.cpp ``llama-server``,
Ollama, LiteLLM...). Like every CineDub setting it is read from the configuration file or the environment
(``CINEDUB_LLM__BASE_URL``, ``CINEDUB_LLM__MODEL``, ...; the ``OPENAI_*`` variables of the ``openai`` package are not
used). The API key is never part of the configuration: it is read at call time from the environment variable named
by :attr:`LlmConfig.api_key_env` (``CINEDUB_LLM_API_KEY``) or from the Prefect ``Secret`` block named by
:attr:`LlmConfig.secret_block`, and is never logged, cached or written to a shard.

Only the options that change the answer (:meth:`LlmConfig.answer_hash`) enter the per-clip cache key; limits,
timeouts and retries do not.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class AutoAcceptPolicy(BaseModel):
    """When a guarded correction is applied without a human look (review status ``auto_accepted``).

    A clip is auto-accepted when the policy is enabled, every guard passed, the model's own ``confidence`` is at
    least ``min_confidence``, the normalised edit distance between ASR and corrected text is at most
    ``max_edit_ratio`` and no more than ``max_speaker_relabels`` words changed speaker. Defaults accept only
    near-untouched clips (typically punctuation or casing fixes): anything that rewrites words or moves speech
    between speakers goes to a reviewer.

    Attributes:
        enabled: False sends every corrected clip to review.
        min_confidence: model confidence in [0, 1] (the answer's ``confidence`` field).
        max_edit_ratio: Levenshtein distance / length of the longer normalised text, in [0, 1].
        max_speaker_relabels: words whose speaker changed.
        min_emotion_confidence: the emotion label must be at least this sure (0 disables the check).
    """

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    min_confidence: float = Field(0.9, ge=0.0, le=1.0)
    max_edit_ratio: float = Field(0.02, ge=0.0, le=1.0)
    max_speaker_relabels: int = Field(0, ge=0)
    min_emotion_confidence: float = Field(0.0, ge=0.0, le=1.0)


class LlmConfig(BaseModel):
    """The LLM correction pass: endpoint, model, limits, guards and review policy.

    Attributes:
        base_url: OpenAI-compatible API root including ``/v1`` (e.g. ``http://127.0.0.1:8080/v1``).
        model: model name sent in each request (part of the cache key and of each row's provenance).
        api_key_env: environment variable holding the API key (read at call time; local servers accept any key).
        secret_block: name of a Prefect ``Secret`` block holding the key; wins over ``api_key_env`` when set.
        temperature / max_tokens / seed: sampling settings (part of the cache key).
        timeout_s: per-request timeout (connect, and each read), seconds.
        clip_deadline_s: wall-clock bound of one clip's request, all attempts, retry delays and ``Retry-After``
            waits included, seconds; a hung or trickling endpoint costs a clip at most this (then an ``error``).
        max_retries: extra attempts after a 408, a 429, a 5xx or a timeout (other errors are not retried).
        backoff_s / max_backoff_s: exponential backoff ``backoff_s * 2**attempt`` (jittered), capped; a
            ``Retry-After`` (or ``retry-after-ms``) header replaces it, capped by ``max_retry_after_s``.
        rate_per_minute: request starts per minute (token bucket, burst ``rate_burst``); 0 disables.
        max_in_flight: requests in flight at once.
        prefect_concurrency_limit / prefect_rate_limit: names of Prefect global concurrency limits used instead
            of the in-process semaphore / token bucket when running inside a Prefect run. ``llm-inflight`` is the
            limit :func:`flows.resources.ensure_limits` creates (or ``prefect gcl create llm-inflight --limit 4``);
            a rate limit needs slot decay (``prefect gcl create llm-rate --limit 60 --slot-decay-per-second 1``).
            None, or a limit missing on the server, falls back to the in-process limiter (logged once).
        structured_output: "auto" tries a JSON-schema ``response_format``, then JSON mode, then plain text, each
            step taken only when the server rejects the previous one with 400/422; or force one mode.
        send_audio: also send the clip's vocals (WAV, base64 ``input_audio`` part) to audio-capable models.
        prompt_version: folder under ``prompts/correction/`` (``v1``...).
        prompts_dir: templates root (default: the repository's top-level ``prompts/``).
        context_clips: neighbouring clips' text given on each side for context.
        speaker_scope: speakers a relabel may use: those of the clip, or of the whole source.
        unsure_word_p: the edit guard's bound: a correction may change, split, merge or delete only ASR words whose
            probability is below this without going to a reviewer (Whisper word probabilities, the mean of the
            word's token probabilities). 0.7 is set from the shared footage with whisper-base: the known ASR errors
            of ``zh_narration/10`` (期 for 球, 临 for 离) have p <= 0.61, while on ``dialogue_5shots`` and
            ``zh_narration/10`` the median word has p 0.97 and 77 % of words p >= 0.85 (129 words).
        similarity_threshold: minimum similarity (1 - normalised Levenshtein distance of the normalised texts)
            of corrected to ASR text per language; key ``"*"`` is the fallback.
        price_prompt_per_mtok / price_completion_per_mtok: USD per million tokens, for the cost report.
        cache_dir: per-clip answer cache (default ``<out>/.work/llm-cache``).
        auto_accept: see :class:`AutoAcceptPolicy`.
    """

    model_config = ConfigDict(extra="forbid")

    base_url: str = "http://127.0.0.1:8080/v1"
    model: str = "gpt-4o-mini"
    api_key_env: str = "CINEDUB_LLM_API_KEY"
    secret_block: str | None = None
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    max_tokens: int = Field(2048, ge=64)
    seed: int | None = 0
    timeout_s: float = Field(90.0, gt=0)
    clip_deadline_s: float = Field(180.0, gt=0)
    max_retries: int = Field(4, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    max_backoff_s: float = Field(60.0, ge=0)
    max_retry_after_s: float = Field(300.0, ge=0)
    rate_per_minute: float = Field(60.0, ge=0)
    rate_burst: int = Field(1, ge=1)
    max_in_flight: int = Field(4, ge=1)
    prefect_concurrency_limit: str | None = "llm-inflight"
    prefect_rate_limit: str | None = None
    structured_output: Literal["auto", "json_schema", "json_object", "none"] = "auto"
    send_audio: bool = False
    prompt_version: str = "v2"
    prompts_dir: Path | None = None
    context_clips: int = Field(1, ge=0, le=5)
    speaker_scope: Literal["clip", "source"] = "source"
    unsure_word_p: float = Field(0.7, ge=0.0, le=1.0)
    similarity_threshold: dict[str, float] = Field(default_factory=lambda: {"en": 0.75, "zh": 0.6, "*": 0.7})
    price_prompt_per_mtok: float = Field(0.0, ge=0)
    price_completion_per_mtok: float = Field(0.0, ge=0)
    cache_dir: Path | None = None
    auto_accept: AutoAcceptPolicy = Field(default_factory=AutoAcceptPolicy)

    @field_validator("similarity_threshold")
    @classmethod
    def _thresholds(cls, v: dict[str, float]) -> dict[str, float]:
        for lang, t in v.items():
            if not 0.0 <= t <= 1.0:
                raise ValueError(f"similarity_threshold[{lang!r}] must be in [0, 1], not {t}")
        return {"*": 0.7, **v}

    @model_validator(mode="after")
    def _backoff(self) -> "LlmConfig":
        if self.max_backoff_s < self.backoff_s:
            raise ValueError("llm: max_backoff_s must be >= backoff_s")
        return self

    def threshold_for(self, language: str | None) -> float:
        """Similarity threshold of ``language`` ("zh-TW" uses "zh"; unknown languages use ``"*"``)."""
        from cinedub.text import base_language

        return self.similarity_threshold.get(base_language(language), self.similarity_threshold["*"])

    def answer_hash(self) -> str:
        """Hash of the settings that change the model's answer for the same clip (part of the cache key)."""
        picked = {
            "model": self.model,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "send_audio": self.send_audio,
            "context_clips": self.context_clips,
            "speaker_scope": self.speaker_scope,
        }
        return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]
