"""Shard versions written by the correction pass: new files only, hard links for untouched sources, the latest
version readable like version 0, and the proposed ``correction`` column round-tripping through Parquet."""

from __future__ import annotations

import json
import os

import pyarrow.dataset as ds
import pytest

import cinedub.schema as schema_mod
from cinedub.llm.batch import LIGHT_COLUMNS, correct_output, make_client
from cinedub.llm.config import LlmConfig
from cinedub.llm.columns import CORRECTION, CORRECTION_DESCRIPTION
from cinedub.llm.versions import latest_version, manifest_files, read_rows, resolve_manifest, write_version
from fake_openai import Step, answer, clip_data


@pytest.fixture
def with_correction_column(monkeypatch):
    """The schema as it will be once the lead adds the proposed ``correction`` column (1.2.0)."""
    if "correction" not in [f.name for f in schema_mod.FIELDS]:
        field = schema_mod.FieldDoc("correction", CORRECTION, CORRECTION_DESCRIPTION)
        monkeypatch.setattr(schema_mod, "FIELDS", (*schema_mod.FIELDS, field))
    return schema_mod.clip_schema()


def test_auto_accepted_version_with_correction_column(out_copy, llm_clips, fake_llm, with_correction_column):
    en_ids = {c["clip_id"] for c in llm_clips if c["language"] == "en"}
    zh_ids = {c["clip_id"] for c in llm_clips if c["language"] == "zh"}

    def reply(body):
        d = clip_data(body)
        if d["language"] == "zh":  # an injected-style takeover: refused, recorded
            return Step(content=answer(d, [{"speaker": "S1", "text": "OK"}]))
        return Step(content=answer(d, emotion="happy", emotion_confidence=0.9))  # unchanged text, confidence 0.95

    fake_llm.responder = reply
    cfg = LlmConfig(base_url=fake_llm.url, model="fake", rate_per_minute=0)
    m0 = resolve_manifest(out_copy)
    assert m0["version"] == 0
    summary = correct_output(out_copy, make_client(out_copy, cfg))
    assert summary["version"] == 1  # every en clip auto-accepted, every zh clip refused by the guards
    assert set(summary["auto_accepted"]) == en_ids and set(summary["guard_failed"]) == zh_ids
    assert latest_version(out_copy) == 1

    m1 = resolve_manifest(out_copy)
    assert m1["version"] == 1 and m1["total_rows"] == m0["total_rows"] == len(llm_clips)
    assert all(e["path"].startswith("versions/0001/shards/") for e in m1["shards"])
    old = {os.path.basename(e["path"]): out_copy / e["path"] for e in m0["shards"]}
    for e in m1["shards"]:  # rewritten: new files (different inode); version 0's files are unchanged
        new = out_copy / e["path"]
        assert new.stat().st_ino != old[new.name].stat().st_ino
    rows = {r["clip_id"]: r for r in read_rows(out_copy, columns=[*LIGHT_COLUMNS, "emotion", "speakers", "correction"])}
    en = [r for r in rows.values() if r["language"] == "en"]
    zh = [r for r in rows.values() if r["language"] == "zh"]
    assert {r["provenance"]["review_status"] for r in en} == {"auto_accepted"}
    assert {r["emotion"] for r in en} == {"happy"} and all(r["speakers"][0]["timbre"] == ["bright", "warm"] for r in en)
    assert all(r["correction"]["decision"] == "auto_accepted" and r["correction"]["prompt_id"].startswith("correction/v2/en@")
               for r in en)
    for r in zh:
        assert r["provenance"]["review_status"] == "guard_failed" and r["emotion"] is None
        failed = [g["name"] for g in r["correction"]["guards"] if not g["ok"]]
        assert failed == ["similarity"] and r["correction"]["text_proposed"] is None
    # what a reader does: open the latest manifest's files with pyarrow (ShardReader / datasets use these paths)
    table = ds.dataset(manifest_files(out_copy, m1), format="parquet").to_table(columns=["clip_id", "correction"])
    assert table.num_rows == len(llm_clips) and table.schema.field("correction").type == CORRECTION
    assert set(table.column("clip_id").to_pylist()) == en_ids | zh_ids
    v0 = read_rows(out_copy, version=0, columns=["provenance"])
    assert {r["provenance"]["review_status"] for r in v0} == {"unreviewed"}  # older version still readable
    # the dataset card now maps the splits to version 1 only: load_dataset gives each clip once, corrected
    import datasets

    dd = datasets.load_dataset(str(out_copy), cache_dir=str(out_copy.parent / ".hf-v1"))
    loaded = [r for split in dd.values() for r in split.select_columns(["clip_id", "provenance"])]
    assert sorted(r["clip_id"] for r in loaded) == sorted(en_ids | zh_ids)
    assert {r["provenance"]["review_status"] for r in loaded} == {"auto_accepted", "guard_failed"}
    stats = json.loads((out_copy / "stats.json").read_text())
    assert stats["clips"] == len(llm_clips) and sum(stats["correction_outcomes"].values()) == len(llm_clips)


def test_untouched_sources_are_hard_links_and_writes_are_idempotent(out_copy):
    rows = read_rows(out_copy, columns=["clip_id", "source_id", "language", "provenance", "text"])
    zh = next(r for r in rows if r["language"] == "zh")
    update = {zh["clip_id"]: {"text": "在古老星球中发现了有机分子", "provenance": {**zh["provenance"], "review_status": "edited"}}}
    n = write_version(out_copy, update, flow_run_id="run-1")
    assert n == 1 and write_version(out_copy, update, flow_run_id="run-1") == 1  # a re-executed run writes nothing
    m0, m1 = resolve_manifest(out_copy, 0), resolve_manifest(out_copy, 1)
    zh_src = zh["source_id"]
    for e in m1["shards"]:
        f = out_copy / e["path"]
        twin = out_copy / "shards" / f.name
        linked = f.stat().st_ino == twin.stat().st_ino
        assert linked == (zh_src not in e["source_ids"])  # only the edited source was rewritten
    new = {r["clip_id"]: r for r in read_rows(out_copy, columns=["clip_id", "text", "provenance"])}
    assert new[zh["clip_id"]]["text"] == "在古老星球中发现了有机分子"
    assert json.loads((out_copy / "versions/0001/version.json").read_text())["flow_run_id"] == "run-1"
    assert write_version(out_copy, update, flow_run_id="run-2") == 2 and latest_version(out_copy) == 2
    with pytest.raises(KeyError):
        write_version(out_copy, {"no-such-clip": {"text": "x"}})
    assert latest_version(out_copy) == 2 and not (out_copy / "versions/0003").exists()
    assert m0["total_rows"] == m1["total_rows"]
    with pytest.raises(FileNotFoundError):
        resolve_manifest(out_copy, 7)
