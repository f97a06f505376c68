"""ASR error rates (jiwer 4) after the shared scoring normalisation of :mod:`cinedub.text`.

- :func:`wer`: word error rate; CJK characters count as words (the "mixed error rate" used for Mandarin and
  Mandarin-English code switching, since Chinese is written without spaces).
- :func:`cer`: character error rate; spaces next to CJK characters are ignored, spaces between Latin words count.

Both normalise reference and hypothesis identically (NFKC, lower case, punctuation removed, whitespace collapsed)
and, when ``zh_script`` is given, convert Chinese on both sides to that script first (OpenCC), so a Traditional
hypothesis is not penalised against a Simplified reference.
"""

from __future__ import annotations

import jiwer

from cinedub.text import ZhScript, normalize_for_scoring, normalize_script, remove_cjk_spaces


def _prepare(text: str, zh_script: ZhScript | None, *, split_cjk: bool) -> str:
    if zh_script is not None:
        text = normalize_script(text, "zh", zh_script)
    return normalize_for_scoring(text, split_cjk=split_cjk)


def _check(reference: str, hypothesis: str) -> float | None:
    """0.0 when both are empty; raises when only the reference is (an error rate over no words is undefined)."""
    if reference:
        return None
    if not hypothesis:
        return 0.0
    raise ValueError("reference is empty after normalisation: an error rate needs at least one reference token")


def wer(reference: str, hypothesis: str, *, zh_script: ZhScript | None = None) -> float:
    """Word error rate ``(S + D + I) / N`` of ``hypothesis`` against ``reference`` (jiwer 4, Levenshtein on words).

    Args:
        reference: ground-truth text.
        hypothesis: ASR output text.
        zh_script: convert Chinese on both sides to "simplified"/"traditional" before scoring (None: leave as is).

    Returns:
        The rate as a fraction (0.05 = 5 %); it can exceed 1.0 when the hypothesis has many insertions.
        Each CJK character is one word.

    Raises:
        ValueError: the reference is empty after normalisation while the hypothesis is not.
    """
    ref = _prepare(reference, zh_script, split_cjk=True)
    hyp = _prepare(hypothesis, zh_script, split_cjk=True)
    trivial = _check(ref, hyp)
    if trivial is not None:
        return trivial
    if not hyp:
        return 1.0  # every reference word deleted (jiwer rejects an empty hypothesis string)
    return float(jiwer.wer(ref, hyp))


def cer(reference: str, hypothesis: str, *, zh_script: ZhScript | None = None) -> float:
    """Character error rate ``(S + D + I) / N`` over characters (jiwer 4), the usual metric for Mandarin ASR.

    Args:
        reference: ground-truth text.
        hypothesis: ASR output text.
        zh_script: convert Chinese on both sides to "simplified"/"traditional" before scoring (None: leave as is).

    Returns:
        The rate as a fraction; whitespace next to CJK characters is removed on both sides first, the spaces
        between Latin words count as characters (jiwer's convention).

    Raises:
        ValueError: the reference is empty after normalisation while the hypothesis is not.
    """
    ref = remove_cjk_spaces(_prepare(reference, zh_script, split_cjk=False))
    hyp = remove_cjk_spaces(_prepare(hypothesis, zh_script, split_cjk=False))
    trivial = _check(ref, hyp)
    if trivial is not None:
        return trivial
    if not hyp:
        return 1.0
    return float(jiwer.cer(ref, hyp))
