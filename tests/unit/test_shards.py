"""Shard writer, manifest and reader on rows holding real audio (cut from asr/jfk.flac)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from cinedub import schema as schema_mod
from cinedub.config import ShardConfig
from cinedub.errors import SchemaVersionError
from cinedub.media import encode_flac, load_audio
from cinedub.reader import ShardReader, audio_duration_ms
from cinedub.schema import check_version, clip_schema, schema_files
from cinedub.shards import build_manifest, read_manifest, source_shards, write_source_shards

REPO = Path(__file__).resolve().parents[2]


def test_schemas_folder_is_generated_from_code():
    for name, content in schema_files().items():
        assert (REPO / "schemas" / name).read_text(encoding="utf-8") == content, f"schemas/{name} is stale"


def _rows(media_dir: Path, source_id: str, n: int, clip_ms: int = 1000):
    samples, sr = load_audio(media_dir / "asr" / "jfk.flac")
    rows = []
    for i in range(n):
        start = (i * clip_ms) % 9000
        seg = samples[int(start * sr / 1000) : int((start + clip_ms) * sr / 1000)]
        row = {f.name: None for f in schema_mod.FIELDS}
        row.update(
            clip_id=f"{source_id}-{i}",
            source_id=source_id,
            source_sha256=source_id * 4,
            clip_index=i,
            start_ms=start,
            end_ms=start + clip_ms,
            duration_ms=clip_ms,
            language="en",
            text=f"clip {i}",
            words=[{"text": "x", "start_ms": start, "end_ms": start + 10, "probability": 0.5, "speaker_id": None}],
            sample_rate_hz=sr,
            audio_vocals={"bytes": encode_flac(seg, sr), "path": f"{i}.flac"},
        )
        rows.append(row)
    return rows


def test_shards_bounded_atomic_and_replaced(tmp_path, media_dir):
    cfg = ShardConfig(max_shard_mb=1, row_group_mb=1)
    rows = _rows(media_dir, "a" * 16, 30, clip_ms=3000)  # ~30 x 150 KB of FLAC -> several shards
    paths = write_source_shards(rows, tmp_path, "a" * 16, cfg)
    assert len(paths) >= 3
    for p in paths:
        pf = pq.ParquetFile(p)
        assert pf.schema_arrow.equals(clip_schema(), check_metadata=False)
        assert p.stat().st_size < 2 * (1 << 20)
    assert not list((tmp_path / "shards").glob(".*")), "temporary files left behind"
    ids = [r for p in paths for r in pq.read_table(p, columns=["clip_id"]).column(0).to_pylist()]
    assert ids == [r["clip_id"] for r in rows]

    # a rerun with fewer clips replaces the whole set: no stale shard stays visible
    paths2 = write_source_shards(rows[:2], tmp_path, "a" * 16, cfg)
    assert len(paths2) == 1 and source_shards(tmp_path, "a" * 16) == paths2


def test_failed_write_leaves_previous_set(tmp_path, media_dir):
    rows = _rows(media_dir, "b" * 16, 3)
    first = write_source_shards(rows, tmp_path, "b" * 16)
    before = first[0].read_bytes()

    def broken():
        yield rows[0]
        raise RuntimeError("stage crashed mid-write")

    with pytest.raises(RuntimeError):
        write_source_shards(broken(), tmp_path, "b" * 16)
    assert first[0].read_bytes() == before
    assert not list((tmp_path / "shards").glob(".*"))


def test_manifest_and_reader(tmp_path, media_dir):
    write_source_shards(_rows(media_dir, "c" * 16, 4), tmp_path, "c" * 16)
    write_source_shards(_rows(media_dir, "d" * 16, 3, clip_ms=2500), tmp_path, "d" * 16)
    m = build_manifest(tmp_path)
    assert m["total_rows"] == 7 and len(m["shards"]) == 2
    assert read_manifest(tmp_path) == json.loads((tmp_path / "manifest.json").read_text())
    all_ids = [c for e in m["shards"] for c in e["clip_ids"]]
    assert len(all_ids) == len(set(all_ids)) == 7

    reader = ShardReader(tmp_path)
    clips = list(reader.iter_clips(min_duration_ms=2000))
    assert [c["source_id"] for c in clips] == ["d" * 16] * 3
    for c in clips:
        audio = c["audio_vocals"]
        assert audio["sampling_rate"] == 44100
        assert abs(len(audio["array"]) / audio["sampling_rate"] * 1000 - c["duration_ms"]) < 1
    t = reader.table(columns=["audio_vocals", "duration_ms"])
    for media, dur in zip(t.column("audio_vocals").to_pylist(), t.column("duration_ms").to_pylist()):
        assert abs(audio_duration_ms(media) - dur) < 1
    assert len(list(reader.iter_clips(language="zh"))) == 0


def test_newer_major_version_is_refused(tmp_path):
    schema = clip_schema()
    meta = dict(schema.metadata)
    meta[schema_mod.META_VERSION_KEY] = b"99.0.0"
    with pytest.raises(SchemaVersionError, match="99.0.0"):
        check_version(schema.with_metadata(meta), tmp_path / "x.parquet")
    meta[schema_mod.META_VERSION_KEY] = b"1.7.0"  # a newer minor only adds fields: still readable
    assert check_version(schema.with_metadata(meta)) == "1.7.0"


def test_audio_roundtrip_is_lossless_16bit(media_dir):
    samples, sr = load_audio(media_dir / "asr" / "jfk.flac", start_ms=1000, end_ms=2000)
    import io

    import soundfile as sf

    back, sr2 = sf.read(io.BytesIO(encode_flac(samples, sr)), dtype="float32")
    assert sr2 == sr and back.shape == samples.shape
    assert np.max(np.abs(back - samples)) < 1e-4
