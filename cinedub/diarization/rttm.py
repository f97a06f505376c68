"""RTTM (NIST Rich Transcription Time Marked) read/write for speaker turns (pure Python).

One line per turn: ``SPEAKER <uri> 1 <onset s> <duration s> <NA> <NA> <speaker> <NA> <NA>`` (NIST RT-09 spec,
as written by pyannote.core ``Annotation.write_rttm``). Times are written with 3 decimals (ms).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from cinedub.atomic import write_text_atomic
from cinedub.types import Turn


def format_rttm(turns: Iterable[Turn], uri: str) -> str:
    """RTTM text of ``turns`` for recording ``uri`` (spaces in ``uri`` / speaker ids become underscores)."""
    uri = uri.replace(" ", "_")
    lines = []
    for t in sorted(turns, key=lambda t: (t.start_ms, t.speaker_id)):
        if t.end_ms <= t.start_ms:
            continue
        lines.append(
            f"SPEAKER {uri} 1 {t.start_ms / 1000:.3f} {(t.end_ms - t.start_ms) / 1000:.3f} <NA> <NA> "
            f"{t.speaker_id.replace(' ', '_')} <NA> <NA>"
        )
    return "\n".join(lines) + ("\n" if lines else "")


def write_rttm(path: str | Path, turns: Iterable[Turn], uri: str) -> Path:
    """Write ``turns`` as RTTM to ``path`` atomically (temporary file, then rename)."""
    return write_text_atomic(path, format_rttm(turns, uri))


def parse_rttm(text: str) -> dict[str, list[Turn]]:
    """Parse RTTM text into ``{uri: turns}`` (only ``SPEAKER`` lines; times rounded to ms).

    Raises:
        ValueError: a ``SPEAKER`` line with fewer than 8 fields or unparsable times (the line number is given).
    """
    out: dict[str, list[Turn]] = {}
    for no, line in enumerate(text.splitlines(), 1):
        fields = line.split()
        if not fields or fields[0] != "SPEAKER":
            continue
        if len(fields) < 8:
            raise ValueError(f"RTTM line {no}: expected at least 8 fields, got {len(fields)}")
        try:
            onset, dur = float(fields[3]), float(fields[4])
        except ValueError:
            raise ValueError(f"RTTM line {no}: bad onset/duration {fields[3]!r} {fields[4]!r}") from None
        start = int(round(onset * 1000))
        end = int(round((onset + dur) * 1000))
        if end > start:
            out.setdefault(fields[1], []).append(Turn(start, end, fields[7]))
    for turns in out.values():
        turns.sort(key=lambda t: (t.start_ms, t.speaker_id))
    return out


def read_rttm(path: str | Path, uri: str | None = None) -> list[Turn]:
    """Turns of one recording from an RTTM file.

    Args:
        uri: which recording; None requires the file to hold exactly one.

    Raises:
        ValueError: ``uri`` absent, or several recordings and no ``uri`` given.
    """
    by_uri = parse_rttm(Path(path).read_text(encoding="utf-8"))
    if uri is None:
        if len(by_uri) > 1:
            raise ValueError(f"{path}: holds {len(by_uri)} recordings ({', '.join(by_uri)}); pass uri")
        return next(iter(by_uri.values()), [])
    if uri not in by_uri:
        raise ValueError(f"{path}: no recording {uri!r} (has {', '.join(by_uri) or 'none'})")
    return by_uri[uri]
