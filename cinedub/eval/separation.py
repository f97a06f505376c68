"""How clean the separated vocals are: clean shared speech mixed with a real film score, enhanced, scored.

Method (issue 11; ``scripts/eval_separation.py`` prints the table, ``tests/stages/test_separation_dfn.py`` asserts it):

1. Clean speech: ``asr/jfk.flac`` (English, 11 s) and ``asr/aishell-BAC009S0724W0121.wav`` (Mandarin, 4.3 s), with
   their reference transcripts (``asr/transcripts.tsv``), downmixed to mono and resampled to 48 kHz.
2. Music bed: the stretches of ``en_film_titanic/test1.mp4`` where only the score plays (:data:`SCORE_ONLY_MS`),
   joined with raised-cosine cross-fades and repeated to the speech's length.
3. Mixes at a speech-to-music ratio of :data:`SNRS_DB` (power over the whole utterance), scaled together so the
   peak is at most 0.99.
4. Scores: SI-SDR (dB) of the mix and of the enhanced track against the clean speech (scale-invariant SDR, Le Roux,
   Wisdom, Erdogan & Hershey, "SDR - half-baked or well done?", ICASSP 2019), its improvement, and the error rate of
   Whisper (the ASR stage, language given) on the mix, the enhanced track and the clean speech: WER for English,
   CER for Mandarin (:mod:`cinedub.eval.asr`).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from cinedub.timebase import ms_to_sample

RATE_HZ = 48_000
SNRS_DB = (0.0, 5.0)
# Score-only stretches of en_film_titanic/test1.mp4 (ms): between "I trust you." (ends 5.26 s) and "Alright."
# (starts 15.46 s), whisper-base finds no word and Silero VAD (threshold 0.3) no speech.
SCORE_ONLY_MS = ((6_000, 15_000),)
CROSSFADE_MS = 100
SPEECH = (("jfk.flac", "en"), ("aishell-BAC009S0724W0121.wav", "zh"))


@dataclass(frozen=True)
class SeparationScore:
    """One utterance at one speech-to-music ratio.

    Attributes:
        item / language / snr_db: the clean speech file, its language and the mixing ratio (dB).
        si_sdr_mix_db / si_sdr_enhanced_db / si_sdr_improvement_db: SI-SDR against the clean speech (dB).
        metric: "wer" (English) or "cer" (Mandarin); error_mix / error_enhanced / error_clean: that rate (fraction)
            of Whisper on the mix, on the enhanced track and on the clean speech alone (None where not transcribed).
        text_mix / text_enhanced: what Whisper heard.
    """

    item: str
    language: str
    snr_db: float
    si_sdr_mix_db: float
    si_sdr_enhanced_db: float
    si_sdr_improvement_db: float
    metric: str
    error_mix: float | None
    error_enhanced: float | None
    error_clean: float | None
    text_mix: str | None
    text_enhanced: str | None

    def to_dict(self) -> dict:
        return asdict(self)


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio (dB) of ``estimate`` against ``reference`` (both ``(n,)``, same
    length and alignment; means removed), after Le Roux et al. 2019.

    Raises:
        ValueError: the lengths differ or the reference is silent.
    """
    est = np.asarray(estimate, np.float64) - np.mean(estimate)
    ref = np.asarray(reference, np.float64) - np.mean(reference)
    if est.shape != ref.shape:
        raise ValueError(f"lengths differ: {est.shape} vs {ref.shape}")
    energy = float(np.dot(ref, ref))
    if energy == 0:
        raise ValueError("silent reference")
    target = np.dot(est, ref) / energy * ref
    noise = est - target
    return float(10 * np.log10(np.dot(target, target) / max(float(np.dot(noise, noise)), 1e-20)))


def read_mono(path: str | Path, rate_hz: int = RATE_HZ, start_ms: int | None = None,
              end_ms: int | None = None) -> np.ndarray:
    """A file's span as mono float32 at ``rate_hz`` (channel mean; scipy polyphase resampling), shape ``(n,)``."""
    from math import gcd

    from scipy.signal import resample_poly

    info = sf.info(str(path))
    start = 0 if start_ms is None else ms_to_sample(start_ms, info.samplerate)
    stop = None if end_ms is None else ms_to_sample(end_ms, info.samplerate)
    x, sr = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != rate_hz:
        g = gcd(sr, rate_hz)
        x = resample_poly(x, rate_hz // g, sr // g).astype(np.float32)
    return x


def music_bed(score_path: str | Path, n: int, spans_ms=SCORE_ONLY_MS, rate_hz: int = RATE_HZ) -> np.ndarray:
    """``n`` samples of score: ``spans_ms`` of ``score_path`` (any media; decoded by ffmpeg) repeated, joined with
    :data:`CROSSFADE_MS` raised-cosine cross-fades (no click at the joins)."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "score.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(Path(score_path).absolute()), "-vn", "-ac", "1",
                        "-ar", str(rate_hz), str(wav)], check=True)
        pieces = [read_mono(wav, rate_hz, s, e) for s, e in spans_ms]
    xf = ms_to_sample(CROSSFADE_MS, rate_hz)
    fade_in = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, xf))).astype(np.float32)
    out = pieces[0].copy()
    k = 1
    while len(out) < n + xf:
        nxt = pieces[k % len(pieces)]
        k += 1
        out[-xf:] = out[-xf:] * fade_in[::-1] + nxt[:xf] * fade_in
        out = np.concatenate([out, nxt[xf:]])
    return out[:n]


def mix_at(speech: np.ndarray, bed: np.ndarray, snr_db: float) -> tuple[np.ndarray, np.ndarray]:
    """``(mix, speech)``: ``bed`` scaled to ``snr_db`` below the speech's power, both scaled so the mix peaks at
    0.99 at most (SI-SDR does not depend on that scale)."""
    gain = np.sqrt(np.mean(speech.astype(np.float64) ** 2) / np.mean(bed.astype(np.float64) ** 2) / 10 ** (snr_db / 10))
    mix = speech + gain * bed
    peak = float(np.max(np.abs(mix)))
    scale = min(1.0, 0.99 / peak) if peak > 0 else 1.0
    return (mix * scale).astype(np.float32), (speech * scale).astype(np.float32)


def references(media_dir: str | Path) -> dict[str, str]:
    """File name -> reference transcript, from ``asr/transcripts.tsv``."""
    with open(Path(media_dir) / "asr/transcripts.tsv", encoding="utf-8") as fh:
        return {r["file"]: r["transcript"] for r in csv.DictReader(fh, delimiter="\t")}


def evaluate(
    media_dir: str | Path,
    enhance: Callable[[np.ndarray], np.ndarray],
    transcribe: Callable[[np.ndarray, str], str],
    *,
    snrs_db=SNRS_DB,
    asr_snrs_db=SNRS_DB,
    score_clean: bool = True,
    items=SPEECH,
) -> list[SeparationScore]:
    """Score ``enhance`` (48 kHz mono float32 ``(n,)`` -> same length, aligned) on every item of ``items`` at every
    ratio of ``snrs_db``; ``transcribe(samples_16k, language) -> text`` at the ratios of ``asr_snrs_db`` (and the
    clean speech when ``score_clean``).

    Returns:
        One :class:`SeparationScore` per (item, ratio), items in order.
    """
    from math import gcd

    from scipy.signal import resample_poly

    from cinedub.eval.asr import cer, wer

    media_dir = Path(media_dir)
    refs = references(media_dir)

    def to16k(x: np.ndarray) -> np.ndarray:
        g = gcd(RATE_HZ, 16_000)
        return resample_poly(x, 16_000 // g, RATE_HZ // g).astype(np.float32)

    out = []
    for name, lang in items:
        clean = read_mono(media_dir / "asr" / name)
        bed = music_bed(media_dir / "en_film_titanic/test1.mp4", len(clean))
        score = cer if lang == "zh" else wer
        zh = {"zh_script": "simplified"} if lang == "zh" else {}
        err_clean = round(score(refs[name], transcribe(to16k(clean), lang), **zh), 3) if score_clean else None
        for snr in snrs_db:
            mix, ref = mix_at(clean, bed, snr)
            enhanced = enhance(mix)
            sdr_mix, sdr_enh = si_sdr(mix, ref), si_sdr(enhanced, ref)
            text_mix = text_enh = err_mix = err_enh = None
            if snr in asr_snrs_db:
                text_mix, text_enh = transcribe(to16k(mix), lang), transcribe(to16k(enhanced), lang)
                err_mix = round(score(refs[name], text_mix, **zh), 3)
                err_enh = round(score(refs[name], text_enh, **zh), 3)
            out.append(SeparationScore(
                item=name, language=lang, snr_db=snr, si_sdr_mix_db=round(sdr_mix, 2),
                si_sdr_enhanced_db=round(sdr_enh, 2), si_sdr_improvement_db=round(sdr_enh - sdr_mix, 2),
                metric="cer" if lang == "zh" else "wer", error_mix=err_mix, error_enhanced=err_enh,
                error_clean=err_clean, text_mix=text_mix, text_enhanced=text_enh,
            ))
    return out


def dfn_enhancer(cfg) -> Callable[[np.ndarray], np.ndarray]:
    """``enhance(mix_48k) -> vocals_48k`` with the pipeline's DeepFilterNet files and settings (``cfg``: a
    :class:`~cinedub.config.Config`); a fresh runtime state per call, as the stage uses one per source.

    Raises:
        ModelNotFoundError: DeepFilterNet's files are missing.
    """
    from cinedub.models import DFN_LIBRARY, DFN_MODEL, model_files
    from cinedub.separation.deepfilternet import DeepFilterNet

    files = model_files(cfg, "deepfilternet")
    sep = cfg.separation

    def enhance(x: np.ndarray) -> np.ndarray:
        dfn = DeepFilterNet(files[DFN_MODEL], files[DFN_LIBRARY], atten_lim_db=sep.dfn_atten_lim_db,
                            post_filter_beta=sep.dfn_post_filter_beta)
        try:
            return dfn.enhance(x)
        finally:
            dfn.close()

    return enhance


def whisper_transcriber(cfg) -> Callable[[np.ndarray, str], str]:
    """``transcribe(samples_16k, language) -> text`` through the pipeline's ASR stage (``cfg``'s Whisper model,
    VAD, guards, the language given rather than identified)."""
    import tempfile

    from cinedub.stages.asr import AsrStage

    stage = AsrStage(cfg)

    def transcribe(x: np.ndarray, language: str) -> str:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "x.flac"
            sf.write(str(path), np.clip(x, -1, 1), 16_000, format="FLAC", subtype="PCM_16")
            return stage.transcribe(path, language=language).text

    return transcribe
