"""DiarizationStage: config picks the back-end; diarize() returns the result, embeddings optionally in a .npy."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from cinedub.config import Config
from cinedub.diarization.config import DiarizationConfig
from cinedub.diarization.records import DiarizationResult
from cinedub.errors import MediaError, ModelNotFoundError
from cinedub.stages.diarization import DiarizationStage


def test_offline_stage_result_and_embeddings_file(cfg, media_dir: Path, tmp_path):
    dcfg = DiarizationConfig(num_threads=1, embeddings_npy=True)
    stage = DiarizationStage(cfg.model_copy(update={"diarization": dcfg}))
    out = tmp_path / "src" / "diarization.json"
    res = stage.diarize(media_dir / "en_2spk_audio" / "sample.wav", speaker_prefix="abc123", embeddings_dir=out.parent)
    res.to_json(out)
    assert res.num_speakers == 2 and res.speaker_ids == ("abc123-S00", "abc123-S01")
    assert res.method == "offline:silero-vad+ge2e+ahc"
    back = DiarizationResult.from_json(out)
    assert back.turns == res.turns and back.overlaps == res.overlaps
    emb = back.embedding_matrix(out.parent)
    assert emb.shape == (2, 256) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-3)
    assert (out.parent / "diarization.embeddings.npy").is_file()
    assert json.loads(out.read_text())["embeddings"][0]["vector"] == []
    assert DiarizationStage.cache_token(cfg).startswith(f"diarization/v{DiarizationStage.version}/")
    assert DiarizationStage.cache_token(cfg) != DiarizationStage.cache_token(
        cfg.model_copy(update={"diarization": DiarizationConfig(min_turn_ms=cfg.diarization.min_turn_ms + 10)}))


def test_stage_rejects_non_16k_audio_offline(cfg, media_dir: Path, tmp_path):
    stage = DiarizationStage(cfg, DiarizationConfig(num_threads=1))
    with pytest.raises(MediaError, match="16 kHz"):
        stage.diarize(media_dir / "asr" / "jfk.flac")  # 44.1 kHz stereo


def test_missing_models_are_reported(tmp_path):
    cfg = Config.load(models_dir=tmp_path, device="cpu")
    with pytest.raises(ModelNotFoundError, match="pretrained.pt"):
        DiarizationStage(cfg, DiarizationConfig()).setup()
    with pytest.raises(ModelNotFoundError, match="speaker-diarization-community-1"):
        DiarizationStage(cfg, DiarizationConfig(method="pyannote")).setup()


def test_pyannote_stage_from_models_dir(community1: Path, tmp_path, media_dir: Path):
    cfg = Config.load(models_dir=community1.parent, device="cpu")
    stage = DiarizationStage(cfg, DiarizationConfig(method="pyannote", num_threads=1))
    import soundfile as sf

    wav, sr = sf.read(str(media_dir / "en_2spk_audio" / "sample.wav"), start=16000 * 7, stop=16000 * 17, dtype="float32")
    clip = tmp_path / "clip.flac"
    sf.write(str(clip), wav, sr)
    res = stage.diarize(clip)
    assert res.method == "pyannote:speaker-diarization-community-1"
    res.to_json(tmp_path / "out.json")
    assert DiarizationResult.from_json(tmp_path / "out.json") == res


def test_bench_command_prints_scores_and_a_row(models_dir: Path, media_dir: Path, tmp_path, capsys):
    from cinedub.diarization.bench import main

    rows = tmp_path / "rows.jsonl"
    mp4 = media_dir / "dialogue_5shots" / "dialogue_5shots.mp4"  # reference found next to it: dialogue_5shots.rttm
    assert main([str(mp4), "--models-dir", str(models_dir), "--threads", "1", "--rows", str(rows)]) == 0
    out = capsys.readouterr().out
    assert "dialogue_5shots.mp4: DER" in out and "JER" in out
    row = json.loads(rows.read_text().splitlines()[0])
    assert row["stage"] == "diarization" and row["num_speakers"] == row["ref_speakers"] == 5
    assert row["der"] <= 0.10 and row["duration_s"] == pytest.approx(30.74, abs=0.05)
    assert row["process_s"] > 0 and row["rtf"] < 1.0
