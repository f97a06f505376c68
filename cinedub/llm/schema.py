"""The fixed JSON answer of the correction model, its closed label sets, and the JSON schema sent to the server.

Field order matters: ``reasoning`` comes first so that a model decoding left to right (and a grammar-constrained
decoder following the schema) writes its step-by-step analysis before committing to the corrected text, speakers and
labels (chain-of-thought before the answer, Wei et al., 2022, "Chain-of-Thought Prompting Elicits Reasoning in Large
Language Models").

Two models describe the answer:

- the JSON schema of :func:`answer_json_schema` (closed sets as ``enum``), sent as ``response_format`` to servers
  that constrain decoding (OpenAI structured outputs, llama.cpp and vLLM grammars);
- :class:`RawAnswer`, a lenient pydantic model used to parse what actually came back: label fields are plain strings
  so that an out-of-set label is reported by the label guard (:mod:`cinedub.llm.guards`) by name and value, rather
  than as an opaque validation error.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

# Bump when the answer's fields or label sets change (part of the cache key).
ANSWER_SCHEMA_VERSION = "2"

# Ekman's six basic emotions plus neutral, the label set of most speech-emotion corpora (e.g. MELD, CREMA-D).
EMOTIONS: tuple[str, ...] = ("neutral", "happy", "sad", "angry", "fearful", "surprised", "disgusted")
GENDERS: tuple[str, ...] = ("male", "female", "unknown")
AGE_GROUPS: tuple[str, ...] = ("child", "teenager", "young_adult", "middle_aged", "elderly", "unknown")
SCENE_TYPES: tuple[str, ...] = ("monologue", "narration", "dialogue", "multi-speaker")
# Closed vocabulary of timbre words: common voice-quality descriptors (Laver, 1980, "The Phonetic Description of
# Voice Quality", and the style words of text-described TTS corpora such as PromptTTS and TextrolSpeech), kept small
# so that a free-text field cannot carry instructions. Chinese prompts use the same English words.
TIMBRES: tuple[str, ...] = (
    "bright", "dark", "warm", "cold", "deep", "high", "low", "thin", "full", "rich", "husky", "hoarse", "raspy",
    "gravelly", "breathy", "airy", "nasal", "smooth", "rough", "soft", "loud", "clear", "muffled", "resonant",
    "shrill", "sharp", "mellow", "crisp", "gentle", "harsh", "tense", "relaxed", "shaky", "steady", "whispery",
    "booming", "sweet", "magnetic", "youthful", "mature",
)
MAX_TIMBRE_WORDS = 4
# A clue is "one or two sentences on tone and delivery": 200 characters hold two sentences in English or Chinese.
MAX_CLUE_CHARS = 200
# The model's reasoning is stored as data (never applied, never rendered as markup); longer text is cut.
MAX_REASONING_CHARS = 4000
# The speaker alias the prompt uses for words no diarization labelled.
UNKNOWN_SPEAKER = "UNKNOWN"


class RawUtterance(BaseModel):
    """One stretch of corrected text and the speaker who says it (a corrected turn)."""

    model_config = ConfigDict(extra="ignore")

    speaker: str
    text: str


class RawSpeaker(BaseModel):
    """Attributes of one speaker of the clip, as the model judged them."""

    model_config = ConfigDict(extra="ignore")

    speaker: str
    gender: str
    age_group: str
    timbre: list[str] = Field(default_factory=list)


class RawAnswer(BaseModel):
    """The parsed answer (types checked; closed sets and ranges are checked by the guards).

    Attributes:
        reasoning: the model's step-by-step analysis (kept in the correction provenance, never applied).
        utterances: the whole corrected transcript of the clip in order, split where the speaker changes.
        emotion / emotion_confidence: clip emotion (closed set :data:`EMOTIONS`) and its confidence in [0, 1].
        speakers: gender (:data:`GENDERS`), age group (:data:`AGE_GROUPS`) and up to 4 timbre words per speaker
            (:data:`TIMBRES`).
        clue: one or two sentences on tone and delivery (at most :data:`MAX_CLUE_CHARS` characters).
        scene_type: one of :data:`SCENE_TYPES`.
        confidence: the model's confidence in [0, 1] that text and speakers are now right (auto-accept policy).
    """

    model_config = ConfigDict(extra="ignore")

    reasoning: str = ""
    utterances: list[RawUtterance]
    emotion: str
    emotion_confidence: float
    speakers: list[RawSpeaker] = Field(default_factory=list)
    clue: str = ""
    scene_type: str
    confidence: float

    @property
    def speaker_sequence(self) -> list[str]:
        return [u.speaker for u in self.utterances]


def answer_json_schema() -> dict[str, Any]:
    """JSON schema of the answer, in the subset accepted by OpenAI strict structured outputs.

    Every property is required and ``additionalProperties`` is false at every level; closed sets are ``enum``.
    Ranges (confidences in [0, 1], timbre count) are not expressible in that subset everywhere and are checked
    by the guards instead.
    """

    def obj(props: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}

    return obj(
        {
            "reasoning": {"type": "string", "description": "step-by-step analysis, written first"},
            "utterances": {
                "type": "array",
                "description": "the full corrected transcript in order, one item per speaker change",
                "items": obj({"speaker": {"type": "string"}, "text": {"type": "string"}}),
            },
            "emotion": {"type": "string", "enum": list(EMOTIONS)},
            "emotion_confidence": {"type": "number"},
            "speakers": {
                "type": "array",
                "items": obj(
                    {
                        "speaker": {"type": "string"},
                        "gender": {"type": "string", "enum": list(GENDERS)},
                        "age_group": {"type": "string", "enum": list(AGE_GROUPS)},
                        "timbre": {"type": "array", "items": {"type": "string", "enum": list(TIMBRES)}},
                    }
                ),
            },
            "clue": {"type": "string", "description": f"at most {MAX_CLUE_CHARS} characters"},
            "scene_type": {"type": "string", "enum": list(SCENE_TYPES)},
            "confidence": {"type": "number"},
        }
    )


def response_format(mode: str) -> dict[str, Any] | None:
    """The ``response_format`` request field for ``mode`` ("json_schema", "json_object" or "none" -> None)."""
    if mode == "json_schema":
        return {
            "type": "json_schema",
            "json_schema": {"name": "clip_correction", "strict": True, "schema": answer_json_schema()},
        }
    if mode == "json_object":
        return {"type": "json_object"}
    return None


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def extract_json(content: str) -> Any:
    """Parse the JSON object of a reply; a Markdown code fence around it (common without JSON mode) is removed.

    Raises:
        ValueError: no JSON object could be parsed (message says where parsing stopped).
    """
    text = content.strip()
    m = _FENCE.match(text)
    if m:
        text = m.group(1)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"malformed JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
