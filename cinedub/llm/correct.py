"""One clip through the correction pass: build the request, ask (or hit the cache), guard, apply.

Prefect-free: :mod:`flows.review` wraps :func:`correct_clip` in a task. Input is a shard row (a dict following
:mod:`cinedub.schema`; audio columns are only read when ``send_audio`` is on) plus its :class:`ClipContext`.

What the model sees (the ``<clip_data>`` JSON block of the prompt): the clip's ASR words with times (ms, source
timeline), probabilities and speakers, its diarization turns with on-screen flags, the shot cuts inside it, its
language, the scene types the audio-visual stages allow, the neighbouring clips' text, and the speaker ids it may use.
Speaker ids are shortened to aliases (``S1``, ``S2``...; ``UNKNOWN`` for unlabelled words) and mapped back after the
guards, which saves tokens and keeps long source-prefixed ids away from small models.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cinedub.llm.apply import apply_speakers_to_turns, realign_words
from cinedub.llm.cache import cache_key
from cinedub.llm.client import LlmClient, LlmError
from cinedub.llm.config import LlmConfig
from cinedub.llm.guards import REVIEW_CHECKS, edit_scope_check, run_guards, text_similarity
from cinedub.llm.prompts import data_block_json, load_prompt
from cinedub.llm.redact import redact
from cinedub.llm.schema import MAX_REASONING_CHARS, MAX_TIMBRE_WORDS, TIMBRES, UNKNOWN_SPEAKER
from cinedub.types import Turn, Word, join_words

log = logging.getLogger("cinedub.llm")


@dataclass(frozen=True)
class ClipContext:
    """What a clip's request needs beyond its own row.

    Attributes:
        previous_text / next_text: text of the neighbouring clips of the same source (joined when several).
        source_speakers: every speaker id of the clip's source (used with ``speaker_scope="source"``).
    """

    previous_text: str = ""
    next_text: str = ""
    source_speakers: tuple[str, ...] = ()


@dataclass(frozen=True)
class ClipCorrection:
    """The outcome for one clip: guard verdicts and, when they passed, the corrected values to write.

    Attributes:
        status: "ok" (every blocking guard passed), "guard_failed" (ASR result kept) or "error" (no usable answer:
            the request failed, or the clip could not be processed; asked again next run).
        guards: ``{"name", "ok", "detail"}`` per guard; a failed review check (``free_text``, ``edit_scope``) leaves
            the status "ok" but rules out auto-accept (:attr:`review_reasons`).
        error: the error class when status is "error" (e.g. "LLM request failed: timeout (HTTP ...) after 2
            attempt(s)"); never text from a response.
        similarity / edit_ratio: corrected-vs-ASR similarity and 1 - similarity (after application).
        speaker_relabels: words whose speaker changed; relabels: ``{"text", "start_ms", "end_ms", "old", "new"}``.
        confidence / reasoning: the model's own confidence and step-by-step analysis.
        text_before / text / words / turns: the clip before and after (words and turns as schema dicts).
        speakers / emotion / emotion_confidence / clue / scene_type: attributes in schema form (speakers: only those
            who speak in the clip after correction; timbre words from the vocabulary; a clue that failed the
            ``free_text`` check is None and kept in ``clue_proposed`` for the reviewer).
        model / prompt_id / cache_key / prompt_tokens / completion_tokens / cached: provenance and cost.
    """

    clip_id: str
    status: str
    model: str
    prompt_id: str
    cache_key: str
    text_before: str
    guards: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    similarity: float | None = None
    edit_ratio: float | None = None
    speaker_relabels: int = 0
    relabels: list[dict[str, Any]] = field(default_factory=list)
    confidence: float | None = None
    reasoning: str = ""
    text: str | None = None
    words: list[dict[str, Any]] | None = None
    turns: list[dict[str, Any]] | None = None
    speakers: list[dict[str, Any]] | None = None
    emotion: str | None = None
    emotion_confidence: float | None = None
    clue: str | None = None
    clue_proposed: str | None = None
    scene_type: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def reasons(self) -> list[str]:
        out = [f"{g['name']}: {g['detail']}" for g in self.guards if not g["ok"]]
        return out + ([self.error] if self.error else [])

    @property
    def review_reasons(self) -> list[str]:
        """Failed review checks: why a clip whose blocking guards passed still needs a human."""
        return [f"{g['name']}: {g['detail']}" for g in self.guards if not g["ok"] and g["name"] in REVIEW_CHECKS]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClipCorrection":
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class ClipRequest:
    """A built request: messages, the data block, content hash and the speaker alias map (alias -> real id)."""

    messages: list[dict[str, Any]]
    data: dict[str, Any]
    content_sha256: str
    aliases: dict[str, str | None]
    prompt_id: str


def _speaker_aliases(words: Sequence[dict[str, Any]], turns: Sequence[dict[str, Any]], extra: Sequence[str]) -> dict[str | None, str]:
    order: list[str | None] = []
    for item in [*words, *turns]:
        s = item.get("speaker_id")
        if s not in order:
            order.append(s)
    for s in sorted(extra):
        if s not in order:
            order.append(s)
    out: dict[str | None, str] = {}
    n = 0
    for s in order:
        if s is None:
            out[None] = UNKNOWN_SPEAKER
        else:
            n += 1
            out[s] = f"S{n}"
    return out


def _wav_base64(media: dict[str, Any] | None) -> tuple[str, str] | None:
    """FLAC bytes of an audio column -> (base64 WAV, sha256 of the FLAC bytes); chat ``input_audio`` takes wav/mp3."""
    if not media or not media.get("bytes"):
        return None
    import soundfile as sf

    data, sr = sf.read(io.BytesIO(media["bytes"]), dtype="int16", always_2d=False)
    buf = io.BytesIO()
    sf.write(buf, data, sr, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode(), hashlib.sha256(media["bytes"]).hexdigest()


def build_request(row: dict[str, Any], context: ClipContext, cfg: LlmConfig) -> ClipRequest:
    """The chat messages for one clip (see the module docstring for what the data block holds).

    Raises:
        FileNotFoundError: no prompt template for the configured version.
    """
    language = row.get("language") or "en"
    prompt = load_prompt(language, cfg.prompt_version, root=cfg.prompts_dir)
    words = list(row.get("words") or [])
    turns = list(row.get("turns") or [])
    extra = context.source_speakers if cfg.speaker_scope == "source" else ()
    alias = _speaker_aliases(words, turns, extra)
    data = {
        "clip_id": row["clip_id"],
        "language": language,
        "start_ms": row.get("start_ms"),
        "end_ms": row.get("end_ms"),
        "asr_text": row.get("text") or "",
        "words": [
            {
                "i": i,
                "text": w["text"],
                "start_ms": w["start_ms"],
                "end_ms": w["end_ms"],
                "p": None if w.get("probability") is None else round(float(w["probability"]), 2),
                "speaker": alias[w.get("speaker_id")],
            }
            for i, w in enumerate(words)
        ],
        "turns": [
            {"speaker": alias[t.get("speaker_id")], "start_ms": t["start_ms"], "end_ms": t["end_ms"], "on_screen": t.get("on_screen")}
            for t in turns
        ],
        "shot_cuts_ms": list(row.get("shot_boundaries_ms") or []),
        "scene_type_candidates": list(row.get("scene_type_candidates") or []),
        "speakers": list(alias.values()),
        "previous_text": context.previous_text,
        "next_text": context.next_text,
    }
    messages = prompt.render(data, language)
    digest = hashlib.sha256(data_block_json(data).encode())
    if cfg.send_audio:
        audio = _wav_base64(row.get("audio_vocals"))
        if audio is not None:
            b64, audio_sha = audio
            digest.update(audio_sha.encode())
            messages[1] = {
                "role": "user",
                "content": [
                    {"type": "text", "text": messages[1]["content"]},
                    {"type": "input_audio", "input_audio": {"data": b64, "format": "wav"}},
                ],
            }
    return ClipRequest(messages, data, digest.hexdigest(), {v: k for k, v in alias.items()}, prompt.prompt_id)


def correct_clip(row: dict[str, Any], context: ClipContext, client: LlmClient) -> ClipCorrection:
    """Ask for (or reuse) the correction of one clip, guard it and, if every blocking guard passes, apply it.

    Never raises for a bad or missing answer, nor for a failure while guarding or applying it: the outcome says
    what happened (``status`` and ``guards`` / ``error``); the row itself is not modified. Only a configuration
    error (no prompt template) raises, from :func:`build_request`.
    """
    cfg = client.cfg
    req = build_request(row, context, cfg)
    key = cache_key(req.content_sha256, cfg, req.prompt_id)
    text_before = row.get("text") or ""
    base = {"clip_id": row["clip_id"], "model": cfg.model, "prompt_id": req.prompt_id, "cache_key": key, "text_before": text_before}
    try:
        reply = client.complete(req.messages, key=key, meta={"clip_id": row["clip_id"], "prompt_id": req.prompt_id})
    except LlmError as e:
        return ClipCorrection(status="error", error=str(e), **base)
    base.update(model=redact(reply.model)[:100], prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens, cached=reply.cached)
    try:
        return _guard_and_apply(row, req, reply.content, reply.finish_reason, cfg, base)
    except Exception as e:  # noqa: BLE001 - one clip's failure is recorded; the batch goes on
        log.warning("clip %s: correction could not be applied (%s)", row["clip_id"], type(e).__name__, exc_info=True)
        return ClipCorrection(status="error", error=f"correction could not be applied ({type(e).__name__})", **base)


def _guard_and_apply(row: dict[str, Any], req: ClipRequest, content: str, finish_reason: str | None, cfg: LlmConfig,
                     base: dict[str, Any]) -> ClipCorrection:
    text_before = base["text_before"]
    language = row.get("language")
    report = run_guards(
        content,
        asr_text=text_before,
        language=language,
        allowed_speakers=list(req.aliases),
        threshold=cfg.threshold_for(language),
        finish_reason=finish_reason,
    )
    guards = [c.to_dict() for c in report.checks]
    answer = report.answer
    reasoning = answer.reasoning[:MAX_REASONING_CHARS] if answer else ""
    if not report.passed or answer is None:
        return ClipCorrection(status="guard_failed", guards=guards, similarity=report.similarity, reasoning=reasoning,
                              **base)
    asr_words = [Word.from_dict(w) for w in row.get("words") or []]
    real = req.aliases
    utterances = [(real[u.speaker], u.text) for u in answer.utterances if u.text.strip()]
    realigned = realign_words(asr_words, utterances)
    guards.append(edit_scope_check(asr_words, realigned.words, realigned.sources, cfg.unsure_word_p).to_dict())
    turns = apply_speakers_to_turns([Turn.from_dict(t) for t in row.get("turns") or []], realigned.words)
    text = join_words([w.text for w in realigned.words])
    face_tracks: dict[str | None, list[str]] = {}
    for t in turns:
        if t.face_track_id and t.face_track_id not in face_tracks.setdefault(t.speaker_id, []):
            face_tracks[t.speaker_id].append(t.face_track_id)
    # attributes only for speakers of the clip: those who say a word of it after correction
    in_clip = {w.speaker_id for w in realigned.words if w.speaker_id}
    rejected = report.rejected_timbre or {}
    vocabulary = set(TIMBRES)
    speakers = []
    for s in answer.speakers:
        sid = real[s.speaker]
        if sid not in in_clip:
            continue
        timbre = [w.strip().lower() for w in s.timbre if w.strip()]
        timbre = [w for w in timbre if w in vocabulary and w not in rejected.get(s.speaker, [])][:MAX_TIMBRE_WORDS]
        speakers.append({"speaker_id": sid, "gender": s.gender, "age_group": s.age_group, "timbre": timbre,
                         "face_track_ids": face_tracks.get(sid, [])})
    dropped = sorted({real[s.speaker] or UNKNOWN_SPEAKER for s in answer.speakers} - in_clip - {None})
    if dropped:
        for g in guards:
            if g["name"] == "speakers":
                g["detail"] = f"attributes of {len(dropped)} speaker(s) not in the clip not applied"
    clue = answer.clue.strip() or None
    sim = text_similarity(text_before, text, language)
    return ClipCorrection(
        status="ok",
        guards=guards,
        similarity=report.similarity,
        edit_ratio=round(1.0 - sim, 4),
        speaker_relabels=len(realigned.relabels),
        relabels=[
            {"text": r.text, "start_ms": r.start_ms, "end_ms": r.end_ms, "old": r.old_speaker, "new": r.new_speaker}
            for r in realigned.relabels
        ],
        confidence=answer.confidence,
        reasoning=reasoning,
        text=text,
        words=[w.to_dict() for w in realigned.words],
        turns=[t.to_dict() for t in turns],
        speakers=speakers,
        emotion=answer.emotion,
        emotion_confidence=answer.emotion_confidence,
        clue=None if report.clue_rejected else clue,
        clue_proposed=clue,
        scene_type=answer.scene_type,
        **base,
    )


def clip_contexts(rows: Sequence[dict[str, Any]], n_context: int = 1) -> dict[str, ClipContext]:
    """Context of every clip in ``rows`` (all clips of their sources, any order): neighbours by ``clip_index``
    within the source, and the source's speaker ids (from words and turns)."""
    by_source: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by_source.setdefault(r["source_id"], []).append(r)
    out: dict[str, ClipContext] = {}
    for clips in by_source.values():
        clips.sort(key=lambda r: r["clip_index"])
        speakers: set[str] = set()
        for r in clips:
            speakers |= {w["speaker_id"] for w in r.get("words") or [] if w.get("speaker_id")}
            speakers |= {t["speaker_id"] for t in r.get("turns") or [] if t.get("speaker_id")}
        for i, r in enumerate(clips):
            prev = [c.get("text") or "" for c in clips[max(0, i - n_context) : i]]
            nxt = [c.get("text") or "" for c in clips[i + 1 : i + 1 + n_context]]
            out[r["clip_id"]] = ClipContext(" ".join(prev).strip(), " ".join(nxt).strip(), tuple(sorted(speakers)))
    return out
