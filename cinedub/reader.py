"""Reading CineDub shards, for trainers.

Three ways in, all over the same files:

- :class:`ShardReader` (this module): iterate clips with decoded audio and simple filters::

      for clip in ShardReader("out").iter_clips(language="en", max_duration_ms=20_000):
          clip["audio_vocals"]["array"]   # float32, shape (n_samples,) or (n_samples, channels)

- ``pyarrow.dataset.dataset(ShardReader("out").files(), format="parquet")`` for columnar scans;
- ``datasets.load_dataset("parquet", data_files=ShardReader("out").files())``: audio columns decode as ``Audio``.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import soundfile as sf

from cinedub.schema import check_version
from cinedub.llm.versions import resolve_manifest

AUDIO_COLUMNS = ("audio_vocals", "audio_accompaniment")


def decode_audio(media: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{"bytes": flac, "path": ...}`` -> ``{"array": float32 ndarray, "sampling_rate": Hz, "path": ...}``."""
    if not media or media.get("bytes") is None:
        return None
    data, sr = sf.read(io.BytesIO(media["bytes"]), dtype="float32", always_2d=False)
    return {"array": data, "sampling_rate": sr, "path": media.get("path")}


class ShardReader:
    """Clips of one CineDub output folder (the one holding ``manifest.json``).

    Only shards listed in the manifest are read, so files being written (hidden temporaries) are never seen.

    Raises:
        FileNotFoundError: no manifest in ``out_dir``.
        SchemaVersionError: a shard was written by a newer major schema version.
    """

    def __init__(self, out_dir: str | Path, version: int | str | None = "latest"):
        """``version``: "latest" (default: the newest reviewed version, else the pipeline's), or a number."""
        self.out_dir = Path(out_dir)
        self.manifest = resolve_manifest(self.out_dir, version)
        self.version = self.manifest.get("version")
        for path in self.files():
            check_version(pq.read_schema(path), path)

    def files(self) -> list[str]:
        """Absolute paths of the shards in the manifest."""
        return [str(self.out_dir / e["path"]) for e in self.manifest["shards"]]

    def dataset(self) -> ds.Dataset:
        """A ``pyarrow.dataset`` over the shards."""
        return ds.dataset(self.files(), format="parquet")

    def __len__(self) -> int:
        return int(self.manifest["total_rows"])

    def _filter(
        self,
        language: str | list[str] | None = None,
        min_duration_ms: int | None = None,
        max_duration_ms: int | None = None,
        source_id: str | None = None,
        split: str | None = None,
    ) -> ds.Expression | None:
        expr = None

        def add(e: ds.Expression) -> None:
            nonlocal expr
            expr = e if expr is None else expr & e

        if language is not None:
            add(pc.field("language").isin([language] if isinstance(language, str) else list(language)))
        if min_duration_ms is not None:
            add(pc.field("duration_ms") >= min_duration_ms)
        if max_duration_ms is not None:
            add(pc.field("duration_ms") <= max_duration_ms)
        if source_id is not None:
            add(pc.field("source_id") == source_id)
        if split is not None:
            add(pc.field("split") == split)
        return expr

    def table(self, columns: list[str] | None = None, **filters: Any) -> pa.Table:
        """Filtered rows as one Arrow table (see :meth:`iter_clips` for the filters; media stays encoded)."""
        speaker_id = filters.pop("speaker_id", None)
        table = self.dataset().to_table(columns=columns, filter=self._filter(**filters))
        if speaker_id is not None:
            table = table.filter(self._has_speaker(table, speaker_id))
        return table

    @staticmethod
    def _has_speaker(table: pa.Table, speaker_id: str) -> pa.Array:
        words = table.column("words").to_pylist() if "words" in table.column_names else [[]] * len(table)
        turns = table.column("turns").to_pylist() if "turns" in table.column_names else [[]] * len(table)
        mask = [
            any(t.get("speaker_id") == speaker_id for t in (tr or []))
            or any(w.get("speaker_id") == speaker_id for w in (wd or []))
            for tr, wd in zip(turns, words)
        ]
        return pa.array(mask, pa.bool_())

    def iter_clips(
        self,
        *,
        language: str | list[str] | None = None,
        min_duration_ms: int | None = None,
        max_duration_ms: int | None = None,
        speaker_id: str | None = None,
        source_id: str | None = None,
        split: str | None = None,
        columns: list[str] | None = None,
        decode: bool = True,
        batch_size: int = 16,
    ) -> Iterator[dict[str, Any]]:
        """Yield clips as dicts, one row group batch at a time (memory bounded by ``batch_size`` rows).

        Args:
            language: ISO 639-1 code(s) to keep.
            min_duration_ms / max_duration_ms: clip duration bounds (ms).
            speaker_id: keep clips where that speaker has a turn or a word.
            source_id / split: keep one source / one of train, dev, test.
            columns: columns to read (default all).
            decode: decode audio columns to ``{"array", "sampling_rate"}`` (float32).
        """
        cols = columns
        if speaker_id is not None and cols is not None:
            cols = list(dict.fromkeys([*cols, "turns", "words"]))
        scanner = self.dataset().scanner(
            columns=cols,
            filter=self._filter(language, min_duration_ms, max_duration_ms, source_id, split),
            batch_size=batch_size,
        )
        for batch in scanner.to_batches():
            if speaker_id is not None:
                batch = batch.filter(self._has_speaker(pa.Table.from_batches([batch]), speaker_id))
            for row in batch.to_pylist():
                if decode:
                    for col in AUDIO_COLUMNS:
                        if col in row:
                            row[col] = decode_audio(row[col])
                yield row


def audio_duration_ms(media: dict[str, Any]) -> float:
    """Duration in ms of an encoded audio column value (reads the FLAC header only)."""
    info = sf.info(io.BytesIO(media["bytes"]))
    return info.frames * 1000.0 / info.samplerate


__all__ = ["ShardReader", "audio_duration_ms", "decode_audio"]
