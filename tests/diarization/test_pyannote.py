"""pyannote.audio 4.x path: a random-weight folder in the community-1 layout loads offline and runs end to end.

Random weights prove the loading path and the conversion, not quality (the real weights are not on these machines).
"""

from __future__ import annotations

import socket

import numpy as np
import pytest

from cinedub.diarization.config import DiarizationConfig
from cinedub.diarization.pyannote_backend import (
    REQUIRED_FILES,
    PyannoteDiarizer,
    check_folder,
    exclusive_from_turns,
    overlap_regions,
    result_from_pyannote,
)
from cinedub.errors import ModelNotFoundError
from cinedub.types import Turn


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_folder_has_the_community1_layout(community1):
    import yaml

    assert check_folder(community1) == community1
    for rel in REQUIRED_FILES:
        assert (community1 / rel).stat().st_size > 0
    cfg = yaml.safe_load((community1 / "config.yaml").read_text())
    assert cfg["pipeline"]["name"] == "pyannote.audio.pipelines.SpeakerDiarization"
    assert cfg["pipeline"]["params"]["embedding"] == "$model/embedding"
    assert cfg["pipeline"]["params"]["plda"] == "$model/plda"


def test_checkpoints_load_as_the_production_classes(community1, no_network):
    from pyannote.audio import Model
    from pyannote.audio.models.embedding import WeSpeakerResNet34
    from pyannote.audio.models.segmentation import PyanNet

    seg = Model.from_pretrained(community1 / "segmentation" / "pytorch_model.bin")
    emb = Model.from_pretrained(community1 / "embedding" / "pytorch_model.bin")
    assert isinstance(seg, PyanNet) and seg.specifications.powerset and seg.specifications.duration == 10.0
    assert isinstance(emb, WeSpeakerResNet34) and emb.dimension == 256


def test_missing_file_is_named(tmp_path):
    (tmp_path / "config.yaml").write_text("pipeline: {}")
    with pytest.raises(ModelNotFoundError, match="segmentation/pytorch_model.bin"):
        check_folder(tmp_path)


def test_pipeline_runs_end_to_end_on_a_real_clip(community1, en2, no_network):
    wav, sr, _ = en2
    excerpt = wav[6 * sr : 16 * sr]  # 10 s (one segmentation chunk): keeps the random-weight run to seconds
    diarizer = PyannoteDiarizer(community1, DiarizationConfig(num_threads=1))
    res = diarizer.diarize(excerpt, sr, speaker_prefix="src")
    assert res.method == "pyannote:speaker-diarization-community-1"
    assert res.duration_ms == 10_000
    assert res.num_speakers == len(res.speaker_ids) >= 1
    assert all(s.startswith("src-S") for s in res.speaker_ids)
    assert all(0 <= t.start_ms < t.end_ms <= res.duration_ms + 50 for t in res.turns)
    ex = sorted(res.exclusive_turns, key=lambda t: t.start_ms)
    assert ex and all(a.end_ms <= b.start_ms for a, b in zip(ex, ex[1:]))
    assert all(e.dim == 256 and e.speaker_id in res.speaker_ids for e in res.embeddings)


def _ann(tracks):
    from pyannote.core import Annotation, Segment

    ann = Annotation(uri="u")
    for i, (a, b, lab) in enumerate(tracks):
        ann[Segment(a, b), i] = lab
    return ann


def test_conversion_of_a_4x_output():
    from pyannote.audio.pipelines.speaker_diarization import DiarizeOutput

    diar = _ann([(0.0, 2.0, "SPEAKER_01"), (1.5, 3.0, "SPEAKER_00"), (4.0, 5.0, "SPEAKER_01")])
    excl = _ann([(0.0, 1.75, "SPEAKER_01"), (1.75, 3.0, "SPEAKER_00"), (4.0, 5.0, "SPEAKER_01")])
    vectors = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)  # rows in labels() order: SPEAKER_00, SPEAKER_01
    res = result_from_pyannote(DiarizeOutput(diar, excl, vectors), duration_ms=5000, method="pyannote:x")
    assert res.speaker_ids == ("S00", "S01")  # by first appearance: SPEAKER_01 talks first
    assert [(o.start_ms, o.end_ms, o.speaker_ids) for o in res.overlaps] == [(1500, 2000, ("S00", "S01"))]
    assert [(t.start_ms, t.end_ms, t.speaker_id) for t in res.exclusive_turns] == [
        (0, 1750, "S00"), (1750, 3000, "S01"), (4000, 5000, "S00")
    ]
    assert [t.overlap for t in res.turns] == [True, True, False]
    assert res.embeddings[0].vector == (1.0, 0.0) and res.embeddings[1].vector == (0.0, 1.0)
    assert res.speech_ms == 4000


def test_conversion_of_a_legacy_annotation_derives_exclusive_turns():
    res = result_from_pyannote(_ann([(0.0, 2.0, "A"), (1.5, 3.0, "B")]), duration_ms=3000, method="pyannote:legacy")
    assert [(t.start_ms, t.end_ms, t.speaker_id) for t in res.exclusive_turns] == [(0, 2000, "S00"), (2000, 3000, "S01")]
    assert res.embeddings == ()


def test_overlap_helpers():
    turns = [Turn(0, 1000, "A"), Turn(500, 1500, "B"), Turn(700, 800, "C")]
    regions = overlap_regions(turns)
    assert [(o.start_ms, o.end_ms, o.speaker_ids) for o in regions] == [
        (500, 700, ("A", "B")), (700, 800, ("A", "B", "C")), (800, 1000, ("A", "B"))
    ]
    assert [(t.start_ms, t.end_ms, t.speaker_id) for t in exclusive_from_turns(turns)] == [(0, 1000, "A"), (1000, 1500, "B")]
