"""Fixtures of the LLM correction tests: real shards built from real footage, and a scripted OpenAI-compatible server.

``llm_out`` (once per session, about 20 s on 2 cores): ``dialogue_5shots.mp4`` (English, five speakers, five shots)
and ``zh_narration/10.mp4`` (Mandarin voice-over) go through the real ingest, faster-whisper ASR (whisper-base) and
PySceneDetect stages and the real segmentation and packaging code; words and turns get their speakers from the
ground truth (``dialogue_5shots.rttm`` with the on-screen flags of ``dialogue_5shots.truth.json``; one off-screen
narrator for the Mandarin clip), so speaker corrections are checked against real speakers. The audio-visual
diarization stages are not run here (they would take minutes): the rows are those
:func:`cinedub.stages.package.clip_rows` writes for a source with known turns.

``llm_clips`` lists the clips the segmentation made for the fixture, so that tests derive clip counts and pick
clips from what was actually built instead of hard-coding the output of one version of the segmentation.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from fake_openai import FakeOpenAI


def _truth_turns(media_dir: Path, source_id: str):
    from cinedub.diarization.rttm import read_rttm
    from cinedub.types import Turn

    truth = json.loads((media_dir / "dialogue_5shots/dialogue_5shots.truth.json").read_text())
    on_screen = {(t["speaker"], round(t["start"] * 1000)): t["on_screen"] is not None for t in truth["turns"]}
    turns = []
    for t in read_rttm(media_dir / "dialogue_5shots/dialogue_5shots.rttm"):
        turns.append(Turn(t.start_ms, t.end_ms, f"{source_id}-{t.speaker_id}",
                          on_screen=on_screen.get((t.speaker_id, t.start_ms), True)))
    return turns


def _build_source(cfg, media: Path, work: Path, out: Path, turns_for) -> list[dict]:
    """Build and write the shards of one source; returns its clips as ``{clip_id, source_id, index, language,
    text}`` dicts in clip order. The declared pipeline runs up to the clips without diarization and visual stages;
    speakers come from ``turns_for(source, transcript)`` (ground truth) instead."""
    from cinedub.ops.segment import clip_turns
    from cinedub.ops.words_to_speakers import assign_word_speakers
    from cinedub.pipeline import run_source
    from cinedub.shards import write_source_shards
    from cinedub.stages.package import clip_rows

    run = run_source(media, work, cfg.model_copy(update={"run_diarization": False, "run_visual": False}),
                     until="clips")
    source, tracks, transcript = run["ingest"].source, run["tracks"], run["transcript"]
    turns = turns_for(source, transcript)
    words = assign_word_speakers(transcript.words, turns)
    it = iter(words)
    segments = tuple(replace(s, words=tuple(next(it) for _ in s.words)) for s in transcript.segments)
    transcript = replace(transcript, segments=segments)
    clips = [replace(c, words=tuple(assign_word_speakers(c.words, turns)),
                     turns=tuple(clip_turns(c.start_ms, c.end_ms, turns))) for c in run["clips"].clips]
    rows = clip_rows(source, tracks, transcript, clips, config_hash=cfg.config_hash(),
                     models=list(run.plan.provenance), include_accompaniment=False)
    write_source_shards(rows, out, source.source_id, cfg.shards)
    return [{"clip_id": c.clip_id, "source_id": source.source_id, "index": c.index, "language": transcript.language,
             "text": c.text} for c in clips]


@pytest.fixture(scope="session")
def llm_out(cfg, media_dir: Path, tmp_path_factory) -> Path:
    """A pristine output folder (version 0) with the English dialogue and the Mandarin narration; copy it before
    writing (see :func:`out_copy`)."""
    from cinedub.shards import build_manifest
    from cinedub.types import Turn

    root = tmp_path_factory.mktemp("llm-out")
    out = root / "out"
    clips = _build_source(cfg, media_dir / "dialogue_5shots/dialogue_5shots.mp4", root / "work-en", out,
                          lambda source, tr: _truth_turns(media_dir, source.source_id))

    def narrator(source, transcript):
        segs = transcript.segments
        return [Turn(s.start_ms, s.end_ms, f"{source.source_id}-N1", on_screen=False) for s in segs]

    clips += _build_source(cfg, media_dir / "zh_narration/10.mp4", root / "work-zh", out, narrator)
    build_manifest(out)
    (root / "clips.json").write_text(json.dumps(clips, ensure_ascii=False), encoding="utf-8")  # beside out/, not in it
    return out


@pytest.fixture(scope="session")
def llm_clips(llm_out: Path) -> list[dict]:
    """The clips segmented for :func:`llm_out`, English source first, each ``{clip_id, source_id, index, language,
    text}``. Both sources give clips (a fixture without them would make the count-derived checks vacuous)."""
    clips = json.loads((llm_out.parent / "clips.json").read_text(encoding="utf-8"))
    assert {c["language"] for c in clips} == {"en", "zh"}, clips
    return clips


@pytest.fixture
def out_copy(llm_out: Path, tmp_path: Path) -> Path:
    """A private copy of :func:`llm_out` for a test that writes versions or caches."""
    dst = tmp_path / "out"
    shutil.copytree(llm_out, dst)
    return dst


@pytest.fixture
def fake_llm():
    with FakeOpenAI() as server:
        yield server
