"""The language policy of ASR (pure logic): detect over every language first, never translate.

Restricting Whisper's language token to the configured languages made it *translate* speech in another language
(a Russian vlog came out as English text labelled ``en`` with p=0.89). So the language is the most probable of all
Whisper's languages; speech in a language outside ``Config.languages`` is, by ``asr.other_languages``, either
skipped (the source ends with status ``skipped_language`` and the reason) or transcribed in its own language
(``language`` holds its real code). A source without speech ends as ``no_speech`` with language null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

OtherLanguages = Literal["skip", "transcribe"]


@dataclass(frozen=True)
class LanguageDecision:
    """What ASR does with a source.

    Attributes:
        language: ISO 639-1 code detected (over all languages), None without speech.
        probability: its averaged probability over the scanned speech (0 without speech).
        transcribe: whether to transcribe (in ``language``, never translated).
        status: "ok", "no_speech" or "skipped_language".
        reason: why it is not "ok" (empty otherwise).
    """

    language: str | None
    probability: float
    transcribe: bool
    status: str
    reason: str = ""


def decide_language(
    probs: Mapping[str, float], allowed: Sequence[str], other_languages: OtherLanguages
) -> LanguageDecision:
    """The decision for averaged language probabilities ``probs`` (empty: no speech was found).

    Args:
        probs: language code -> probability (Whisper's language-token softmax over all its languages).
        allowed: the configured languages (empty: any).
        other_languages: "skip" or "transcribe" a language outside ``allowed``.
    """
    if not probs:
        return LanguageDecision(None, 0.0, False, "no_speech", "no speech found by voice activity detection")
    lang = max(sorted(probs), key=probs.__getitem__)  # sorted: ties broken by code, not dict order
    p = float(probs[lang])
    if allowed and lang not in allowed:
        if other_languages == "skip":
            return LanguageDecision(lang, p, False, "skipped_language",
                                    f"language {lang} (p={p:.2f}) is not one of the configured {list(allowed)}")
        return LanguageDecision(lang, p, True, "ok")
    return LanguageDecision(lang, p, True, "ok")
