"""Time conversions and span unions (cinedub.timebase)."""

from __future__ import annotations

from fractions import Fraction

import pytest

from cinedub.timebase import merge_spans, parse_fps


def test_merge_spans_pads_clips_drops_and_joins():
    spans = [(5000, 6000), (0, 100), (90, 300), (700, 700), (350, 400)]
    assert merge_spans(spans) == [(0, 300), (350, 400), (5000, 6000)]  # (700, 700) is empty
    assert merge_spans(spans, gap_ms=50) == [(0, 400), (5000, 6000)]
    assert merge_spans(spans, pad_ms=200, end_ms=5500) == [(0, 900), (4800, 5500)]
    assert merge_spans([]) == []


@pytest.mark.parametrize("raw, want", [("30000/1001", Fraction(30000, 1001)), ("2997/125", Fraction(24000, 1001)),
                                       ("25/1", Fraction(25)), (29.97, Fraction(30000, 1001))])
def test_parse_fps_snaps_ntsc(raw, want):
    assert parse_fps(raw) == want
