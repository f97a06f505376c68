"""Configuration: defaults, file form, environment overrides, validation; the model registry and `cinedub models`."""

from __future__ import annotations

import os
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pytest
from pydantic import ValidationError

from cinedub.config import Config
from cinedub.errors import ModelNotFoundError
from cinedub.models import model_status, resolve_model_dir
from cinedub.timebase import frame_to_ms, ms_to_frame, parse_fps

REPO = Path(__file__).resolve().parents[2]


def test_precedence_file_env_overrides(tmp_path, monkeypatch):
    f = tmp_path / "c.yaml"
    f.write_text("languages: [en]\nasr: {beam_size: 3, batch_size: 4}\nsegmentation: {max_clip_s: 20}\n")
    monkeypatch.setenv("CINEDUB_ASR__BEAM_SIZE", "2")
    cfg = Config.load(f)
    assert cfg.asr.beam_size == 2 and cfg.asr.batch_size == 4 and cfg.languages == ["en"]
    assert cfg.segmentation.max_clip_s == 20 and cfg.segmentation.min_clip_s == 2.0
    assert Config.load(f, languages="zh,en").languages == ["zh", "en"]
    t = tmp_path / "c.toml"
    t.write_text('device = "cpu"\n[shots]\ndetector = "content"\n')
    monkeypatch.delenv("CINEDUB_ASR__BEAM_SIZE")
    cfg = Config.load(t)
    assert cfg.shots.detector == "content" and cfg.device == "cpu"
    assert cfg.stage_hash("asr") == Config.load().stage_hash("asr")
    assert cfg.stage_hash("shots") != Config.load().stage_hash("shots")


def test_bad_config_is_refused(tmp_path):
    with pytest.raises(ValidationError, match="device"):
        Config.load(device="tpu")
    with pytest.raises(ValidationError, match="min_clip_s"):
        Config.load(segmentation={"min_clip_s": 40, "max_clip_s": 30})
    with pytest.raises(FileNotFoundError):
        Config.load(tmp_path / "missing.yaml")
    with pytest.raises(ValidationError):
        Config.load(asr={"beam_sise": 3})  # typo: unknown keys are errors, not silently ignored


def test_models_resolve_from_the_shared_pack(models_dir, tmp_path):
    cfg = Config.load(models_dir=models_dir)
    assert resolve_model_dir(cfg, "whisper") == models_dir / "whisper-base-ct2"
    status = {spec.key: missing for spec, _, missing in model_status(cfg)}
    assert status["whisper"] == [] and status["light-asd"] == [] and status["scrfd"] == []
    assert status["demucs"]  # no demucs weights exist on these machines
    with pytest.raises(ModelNotFoundError, match="demucs"):
        resolve_model_dir(cfg, "demucs")
    with pytest.raises(ModelNotFoundError, match="model.bin"):
        resolve_model_dir(Config.load(models_dir=tmp_path), "whisper")


def test_models_command_lists_present_and_missing(models_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "250"}
    proc = subprocess.run([sys.executable, "-m", "cinedub_cli", "models", "--models-dir", str(models_dir)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    # the default separation (auto) falls back to DeepFilterNet, whose files come with its wheel: nothing required
    # is missing, and demucs is listed as optional with how to get it
    assert proc.returncode == 0, proc.stdout
    assert "whisper" in proc.stdout and "present" in proc.stdout and "missing" in proc.stdout
    assert "htdemucs.yaml" in proc.stdout
    dfn = next(line for line in proc.stdout.splitlines() if "deepfilternet" in line)
    assert "separation" in dfn and "present" in dfn and "missing" not in dfn
    demucs = next(line for line in proc.stdout.splitlines() if line.strip("│ ").startswith("demucs"))
    assert "missing (optional)" in demucs


def test_timebase_exact_rates():
    assert parse_fps("2997/125") == Fraction(24000, 1001)
    assert parse_fps("30000/1001") == Fraction(30000, 1001)
    assert parse_fps("25/1") == 25
    fps = Fraction(24000, 1001)
    assert frame_to_ms(211, fps) == round(211 * 1001 / 24) and isinstance(frame_to_ms(211, fps), int)
    for f in (0, 1, 57, 58, 211, 481, 100_000):
        assert ms_to_frame(frame_to_ms(f, fps) + 0.5, fps) == f
    with pytest.raises(ValueError):
        parse_fps("0/0")
