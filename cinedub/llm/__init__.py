"""LLM correction pass: chain-of-thought bidirectional correction of text and speakers, attributes, review.

Modules (all Prefect-free; :mod:`flows.review` is the Prefect layer):

- :mod:`cinedub.llm.config`: :class:`~cinedub.llm.config.LlmConfig` (endpoint, limits, guards, auto-accept policy).
- :mod:`cinedub.llm.prompts`: versioned templates from ``prompts/``.
- :mod:`cinedub.llm.schema`: the answer's JSON schema and closed label sets.
- :mod:`cinedub.llm.client`: OpenAI-compatible client (structured output, strict wire schema, retries, per-clip
  deadline, limits, cache, usage); :mod:`cinedub.llm.limits`: local limits, or deployment-wide ones injected by the
  caller; :mod:`cinedub.llm.redact`: secrets never written or logged.
- :mod:`cinedub.llm.guards`: checks run before anything is applied (blocking guards and review checks).
- :mod:`cinedub.llm.apply`: corrected text and speakers back onto timed words and turns.
- :mod:`cinedub.llm.correct`: one clip end to end; :mod:`cinedub.llm.batch`: many clips from an output folder.
- :mod:`cinedub.llm.review`: review pages (before/after tables), auto-accept, decisions; :mod:`cinedub.llm.listen`:
  the clip server on 127.0.0.1; :mod:`cinedub.llm.rows`: row updates and the ``correction`` column;
  :mod:`cinedub.llm.versions`: immutable shard versions.
"""

from cinedub.llm.config import AutoAcceptPolicy, LlmConfig

__all__ = ["AutoAcceptPolicy", "LlmConfig"]
