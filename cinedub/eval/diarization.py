"""Diarization error rate (DER) and Jaccard error rate (JER) with pyannote.metrics, plus a command line.

Conventions (stated in every report this module prints):

- ``collar_s`` is passed unchanged to pyannote.metrics as ``collar``: the **total** width of the no-score zone
  centred on every reference boundary, i.e. ``collar_s = 0.25`` forgives +-0.125 s. NIST md-eval's "collar 0.25"
  forgives +-0.25 s, which is ``collar_s = 0.5`` here.
- ``skip_overlap=False`` (default) scores overlapped speech: every reference speaker of an overlapped region must be
  found. True removes overlap regions from scoring (DIHARD "core" vs "full" style).
- Speakers are mapped one-to-one (Hungarian, pyannote's ``DiarizationErrorRate``), so speaker labels need not match.
- Without a UEM the scored extent is the union of reference and hypothesis (pyannote's approximation); pass
  ``uem_ms`` to fix it (e.g. the whole file).

Usage::

    python -m cinedub.eval.diarization REF.rttm HYP.rttm|HYP.json [--uri URI] [--collar 0.25] [--skip-overlap]
"""

from __future__ import annotations

import os

os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")  # pyannote telemetry is on by default

import argparse
import json
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cinedub.diarization.rttm import read_rttm
from cinedub.timebase import merge_spans
from cinedub.types import Turn

if TYPE_CHECKING:
    from pyannote.core import Annotation


@dataclass(frozen=True)
class DiarizationScores:
    """DER/JER and the DER components, all in seconds except the rates.

    Attributes:
        der: (missed + false_alarm + confusion) / total, in [0, inf).
        jer: Jaccard error rate in [0, 1].
        missed_s / false_alarm_s / confusion_s / total_s: DER components (total = scored reference speech).
        collar_s / skip_overlap: the scoring options (see the module docstring for the collar convention).
        ref_speakers / hyp_speakers: speaker counts.
    """

    der: float
    jer: float
    missed_s: float
    false_alarm_s: float
    confusion_s: float
    total_s: float
    collar_s: float
    skip_overlap: bool
    ref_speakers: int
    hyp_speakers: int

    def line(self) -> str:
        """One human-readable line."""
        return (
            f"DER {100 * self.der:.2f}% (miss {self.missed_s:.2f}s, FA {self.false_alarm_s:.2f}s, "
            f"confusion {self.confusion_s:.2f}s of {self.total_s:.2f}s) | JER {100 * self.jer:.2f}% | "
            f"speakers ref {self.ref_speakers} hyp {self.hyp_speakers} | collar {self.collar_s}s total "
            f"(+-{self.collar_s / 2:g}s), overlap {'skipped' if self.skip_overlap else 'scored'}"
        )


def to_annotation(turns: Iterable[Turn], uri: str = "file") -> "Annotation":
    """pyannote.core ``Annotation`` of ``turns`` (seconds), one track per turn."""
    from pyannote.core import Annotation, Segment

    ann = Annotation(uri=uri)
    for i, t in enumerate(turns):
        if t.end_ms > t.start_ms:
            ann[Segment(t.start_ms / 1000, t.end_ms / 1000), i] = t.speaker_id
    return ann


def load_reference(path: str | Path, uri: str | None = None) -> "Annotation":
    """Reference ``Annotation`` from an RTTM file (see :func:`cinedub.diarization.rttm.read_rttm` for ``uri``)."""
    turns = read_rttm(path, uri)
    return to_annotation(turns, uri or Path(path).stem)


def _as_annotation(x: "Annotation | Sequence[Turn]", uri: str) -> "Annotation":
    from pyannote.core import Annotation

    return x if isinstance(x, Annotation) else to_annotation(x, uri)


def _uem(uem_ms: tuple[int, int] | None):
    if uem_ms is None:
        return None
    from pyannote.core import Segment, Timeline

    return Timeline([Segment(uem_ms[0] / 1000, uem_ms[1] / 1000)])


def score(
    reference: "Annotation | Sequence[Turn]",
    hypothesis: "Annotation | Sequence[Turn]",
    *,
    collar_s: float = 0.25,
    skip_overlap: bool = False,
    uem_ms: tuple[int, int] | None = None,
) -> DiarizationScores:
    """DER and JER of ``hypothesis`` against ``reference`` (pyannote.metrics ``DiarizationErrorRate`` and
    ``JaccardErrorRate`` with the same collar / overlap options).

    Args:
        reference / hypothesis: annotations or turns (ms).
        collar_s: pyannote.metrics collar (total width, seconds).
        skip_overlap: leave overlapped reference speech out of scoring.
        uem_ms: scored extent ``(start_ms, end_ms)``; None = union of both (pyannote's approximation).
    """
    from pyannote.metrics.diarization import DiarizationErrorRate, JaccardErrorRate

    ref = _as_annotation(reference, "file")
    hyp = _as_annotation(hypothesis, ref.uri or "file")
    hyp.uri = ref.uri
    uem = _uem(uem_ms)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*'uem' was approximated.*")
        der_metric = DiarizationErrorRate(collar=collar_s, skip_overlap=skip_overlap)
        d = der_metric(ref, hyp, uem=uem, detailed=True)
        jer = JaccardErrorRate(collar=collar_s, skip_overlap=skip_overlap)(ref, hyp, uem=uem)
    return DiarizationScores(
        der=float(d["diarization error rate"]),
        jer=float(jer),
        missed_s=float(d["missed detection"]),
        false_alarm_s=float(d["false alarm"]),
        confusion_s=float(d["confusion"]),
        total_s=float(d["total"]),
        collar_s=collar_s,
        skip_overlap=skip_overlap,
        ref_speakers=len(ref.labels()),
        hyp_speakers=len(hyp.labels()),
    )


def der(reference, hypothesis, *, collar_s: float = 0.25, skip_overlap: bool = False, uem_ms=None) -> float:
    """DER only (see :func:`score`)."""
    return score(reference, hypothesis, collar_s=collar_s, skip_overlap=skip_overlap, uem_ms=uem_ms).der


def jer(reference, hypothesis, *, collar_s: float = 0.25, skip_overlap: bool = False, uem_ms=None) -> float:
    """JER only (see :func:`score`)."""
    return score(reference, hypothesis, collar_s=collar_s, skip_overlap=skip_overlap, uem_ms=uem_ms).jer


@dataclass(frozen=True)
class OverlapScores:
    """How well detected overlap matches the reference's (seconds; no collar).

    Attributes:
        reference_s: reference time with two or more speakers.
        detected_s: time the hypothesis marks as overlapped.
        hit_s: intersection of both.
    """

    reference_s: float
    detected_s: float
    hit_s: float

    @property
    def recall(self) -> float:
        return self.hit_s / self.reference_s if self.reference_s else 0.0

    @property
    def precision(self) -> float:
        return self.hit_s / self.detected_s if self.detected_s else 0.0


def overlap_spans(turns: Sequence[Turn]) -> list[tuple[int, int]]:
    """Spans (ms) where turns of two or more different speakers intersect."""
    pairs = []
    for i, t in enumerate(turns):
        for u in turns[i + 1 :]:
            if t.speaker_id != u.speaker_id and max(t.start_ms, u.start_ms) < min(t.end_ms, u.end_ms):
                pairs.append((max(t.start_ms, u.start_ms), min(t.end_ms, u.end_ms)))
    return merge_spans(pairs)


def intersection_ms(x: Iterable[tuple[int, int]], y: Iterable[tuple[int, int]]) -> int:
    """Length (ms) of the intersection of two span sets."""
    xs, ys = merge_spans(x), merge_spans(y)
    total, j = 0, 0
    for a, b in xs:
        while j < len(ys) and ys[j][1] <= a:
            j += 1
        k = j
        while k < len(ys) and ys[k][0] < b:
            total += min(b, ys[k][1]) - max(a, ys[k][0])
            k += 1
    return total


def overlap_scores(reference: Sequence[Turn], detected: Iterable[tuple[int, int]]) -> OverlapScores:
    """Compare detected overlap spans (e.g. ``[(o.start_ms, o.end_ms) for o in result.overlaps]``) with the
    reference turns' overlap."""
    ref = overlap_spans(reference)
    det = merge_spans(detected)
    return OverlapScores(
        reference_s=sum(b - a for a, b in ref) / 1000,
        detected_s=sum(b - a for a, b in det) / 1000,
        hit_s=intersection_ms(ref, det) / 1000,
    )


def load_hypothesis(path: str | Path, uri: str | None = None) -> list[Turn]:
    """Hypothesis turns from an RTTM file or a :class:`~cinedub.diarization.records.DiarizationResult` JSON."""
    path = Path(path)
    if path.suffix == ".json":
        from cinedub.diarization.records import DiarizationResult

        return list(DiarizationResult.from_json(path).turns)
    return read_rttm(path, uri)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m cinedub.eval.diarization", description="DER/JER of a diarization against an RTTM reference."
    )
    p.add_argument("reference", help="reference RTTM")
    p.add_argument("hypothesis", help="hypothesis RTTM or DiarizationResult JSON")
    p.add_argument("--uri", default=None, help="recording id inside the RTTM files (needed when they hold several)")
    p.add_argument(
        "--collar", type=float, default=0.25, help="pyannote.metrics collar, total width in s (default 0.25 = +-0.125 s)"
    )
    p.add_argument("--skip-overlap", action="store_true", help="do not score overlapped speech")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    a = p.parse_args(argv)
    ref = read_rttm(a.reference, a.uri)
    hyp = load_hypothesis(a.hypothesis, a.uri)
    s = score(ref, hyp, collar_s=a.collar, skip_overlap=a.skip_overlap)
    print(json.dumps(asdict(s)) if a.json else s.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
