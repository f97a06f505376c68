"""Silero VAD block by block (``cinedub.diarization.vad.silero_chunks``) on real speech: exactly faster-whisper's
single pass up to a block, and nearly the same chunks when the audio is cut into blocks."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from cinedub.diarization.vad import SAMPLE_RATE_HZ, silero_chunks


@pytest.fixture(scope="module")
def dialogue(media_dir) -> np.ndarray:
    """dialogue_5shots' 30 s of talk, mono 16 kHz float32."""
    pcm = subprocess.run(["ffmpeg", "-v", "error", "-i", str(media_dir / "dialogue_5shots" / "dialogue_5shots.mp4"),
                          "-ac", "1", "-ar", str(SAMPLE_RATE_HZ), "-f", "f32le", "-"], capture_output=True,
                         check=True).stdout
    return np.frombuffer(pcm, np.float32).copy()


def _fine():  # short pauses split chunks (the diarization's settings are of this kind), so there are several
    from faster_whisper.vad import VadOptions

    return VadOptions(min_silence_duration_ms=100, speech_pad_ms=30)


def test_one_block_is_faster_whispers_own_pass(dialogue):
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    for opts in (VadOptions(), _fine()):
        ref = [{"start": int(c["start"]), "end": int(c["end"])} for c in get_speech_timestamps(dialogue, opts)]
        assert silero_chunks(dialogue, opts) == ref
    assert len(ref) >= 5


def test_blocks_give_nearly_the_same_speech(dialogue):
    """Cut into 7 s blocks (four edges inside the talk), the chunks cover the same speech within a second in all
    and never overlap; a chunk cut by an edge is joined again."""
    whole = silero_chunks(dialogue, _fine())
    blocks = silero_chunks(dialogue, _fine(), block_s=7)

    def mask(chunks) -> np.ndarray:
        m = np.zeros(len(dialogue), bool)
        for c in chunks:
            m[c["start"]:c["end"]] = True
        return m

    assert all(a["end"] < b["start"] for a, b in zip(blocks, blocks[1:]))
    differ = np.sum(mask(whole) != mask(blocks)) / SAMPLE_RATE_HZ
    print(f"\n{len(whole)} chunks in one pass, {len(blocks)} in 7 s blocks; {differ:.2f} s of 30 s labelled differently")
    assert differ <= 1.0
    assert abs(len(blocks) - len(whole)) <= 2
