"""Packaging: turn one source's records and audio into clip rows and write its Parquet shards.

Each row follows :mod:`cinedub.schema`. Audio is cut from the vocal track (or the mix when separation is off) by
reading only the clip's span of the FLAC file, so memory stays bounded by one clip.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cinedub import __version__
from cinedub.media import encode_flac, load_audio_at
from cinedub.progress import Reporter, no_report
from cinedub.schema import SCHEMA_VERSION
from cinedub.shards import write_source_shards
from cinedub.stages.base import Resources, Stage, StageContext
from cinedub.types import AudioTracks, Clip, ClipList, IngestResult, ShardSet, Source, Transcript, Turn

if TYPE_CHECKING:
    from cinedub.diarization.records import DiarizationResult
    from cinedub.vision.records import AsdResult, FaceTrackList

# Fractions of sources (by content hash) that go to dev and test; the rest is train.
SPLIT_DEV_PERCENT = 5
SPLIT_TEST_PERCENT = 5


def split_for(source_sha256: str) -> str:
    """Reproducible, episode-disjoint split: a source always lands in the same split, whatever else is ingested."""
    bucket = int(hashlib.sha256(f"cinedub-split:{source_sha256}".encode()).hexdigest()[:8], 16) % 100
    if bucket < SPLIT_TEST_PERCENT:
        return "test"
    if bucket < SPLIT_TEST_PERCENT + SPLIT_DEV_PERCENT:
        return "dev"
    return "train"


def _clip_quality(clip: Clip, transcript: Transcript) -> dict[str, float | None]:
    probs = [w.probability for w in clip.words]
    segs = [s for s in transcript.segments if s.end_ms > clip.start_ms and s.start_ms < clip.end_ms]
    return {
        "asr_avg_logprob": float(np.mean([s.avg_logprob for s in segs])) if segs else None,
        "asr_min_word_probability": float(min(probs)) if probs else None,
        "asr_mean_word_probability": float(np.mean(probs)) if probs else None,
        "asr_no_speech_prob": float(max(s.no_speech_prob for s in segs)) if segs else None,
    }


def _audio_column(
    path: str | None, clip: Clip, name: str, rate_hz: int
) -> tuple[dict[str, Any] | None, int | None, int | None]:
    """``({"bytes": FLAC, "path"}, rate, source rate)`` of the clip's span of ``path`` at ``rate_hz``."""
    if not path:
        return None, None, None
    samples, sr, src = load_audio_at(path, clip.start_ms, clip.end_ms, rate_hz)
    return {"bytes": encode_flac(samples, sr), "path": f"{clip.clip_id}.{name}.flac"}, sr, src


class _Visual:
    """Frame-level face data of one source, read per clip from the faces and ASD Parquet files."""

    def __init__(self, faces: "FaceTrackList", asd: "AsdResult | None"):
        import pyarrow.parquet as pq

        self.faces = faces
        self.tracks = {t.track_id: t for t in faces.tracks}
        self.status = {t.track_id: t for t in asd.tracks} if asd else {}
        self.scores: dict[tuple[str, int], float] = {}
        if asd is not None and Path(asd.scores_path).is_file():
            t = pq.read_table(asd.scores_path, columns=["track_id", "frame_index", "score"]).to_pydict()
            self.scores = {(a, b): c for a, b, c in zip(t["track_id"], t["frame_index"], t["score"])}

    def rows(self, clip: Clip, turns: Sequence[Turn]) -> tuple[list[dict], list[dict]]:
        """(frames, tracks) of the face tracks speaking in ``turns``, restricted to the clip's frames."""
        import pyarrow.parquet as pq

        speakers: dict[str, list[str]] = {}
        for t in turns:
            if t.face_track_id:
                speakers.setdefault(t.face_track_id, []).append(t.speaker_id)
        if not speakers or clip.start_frame is None:
            return [], []
        table = pq.read_table(
            self.faces.frames_path,
            columns=["track_id", "frame_index", "pts_ms", "box_xyxy", "lip_xy", "face_crop", "mouth_crop"],
            filters=[("track_id", "in", sorted(speakers)), ("frame_index", ">=", clip.start_frame),
                     ("frame_index", "<", clip.end_frame)],
        )
        ext = self.faces.image_format.lower()
        frames = [
            {
                "track_id": r["track_id"],
                "frame_index": r["frame_index"],
                "pts_ms": int(r["pts_ms"]),
                "box_xyxy": r["box_xyxy"],
                "lip_landmarks_xy": r["lip_xy"],
                "face_crop": {"bytes": r["face_crop"], "path": f"{r['track_id']}-{r['frame_index']}.face.{ext}"},
                "lip_crop": {"bytes": r["mouth_crop"], "path": f"{r['track_id']}-{r['frame_index']}.lip.{ext}"},
                "asd_score": self.scores.get((r["track_id"], r["frame_index"])),
            }
            for r in sorted(table.to_pylist(), key=lambda r: (r["track_id"], r["frame_index"]))
        ]
        tracks = []
        for tid, sids in sorted(speakers.items()):
            tr, st = self.tracks.get(tid), self.status.get(tid)
            tracks.append({
                "track_id": tid,
                "shot_index": tr.shot_index if tr else None,
                "start_frame": tr.start_frame if tr else None,
                "end_frame": tr.end_frame if tr else None,
                "speaker_id": Counter(sorted(sids)).most_common(1)[0][0],  # ties: the smallest id, never set order
                "asd_status": st.status if st else None,
                "speaking_fraction": st.speaking_fraction if st else None,
            })
        return frames, tracks


def clip_rows(
    source: Source,
    tracks: AudioTracks,
    transcript: Transcript,
    clips: Sequence[Clip],
    *,
    config_hash: str,
    models: Sequence[dict[str, str]],
    include_accompaniment: bool = True,
    sample_rate_hz: int = 24_000,
    timeline: "DiarizationResult | None" = None,
    faces: "FaceTrackList | None" = None,
    asd: "AsdResult | None" = None,
) -> Iterator[dict[str, Any]]:
    """Yield one schema row per clip (audio cut and encoded lazily, one clip at a time).

    Args:
        models: ``{"stage", "name", "version"}`` dicts for the provenance column.
        sample_rate_hz: rate of every audio column (0: the track's own).
        timeline: the fused diarization of the source (its overlaps go into the rows; turns come with the clips).

    Rows hold nothing that varies between runs (no run time, host or path): the same input and configuration give
    byte-identical shards. Run times are in the run report and the manifest.
        faces / asd: the visual stages' results (frame-level faces of the speaking tracks go into each row).
    """
    from cinedub.ops.fusion import scene_type_candidates

    visual = _Visual(faces, asd) if faces is not None else None
    vocal_path = tracks.vocals or tracks.mix_full
    split = split_for(source.sha256)
    for clip in clips:
        vocals, sr, src_sr = _audio_column(vocal_path, clip, "vocals", sample_rate_hz)
        accomp = (_audio_column(tracks.accompaniment, clip, "accompaniment", sample_rate_hz)[0]
                  if include_accompaniment else None)
        text = clip.text
        turns = list(clip.turns)
        overlaps = [
            {"start_ms": max(o.start_ms, clip.start_ms), "end_ms": min(o.end_ms, clip.end_ms), "speaker_ids": list(o.speaker_ids)}
            for o in (timeline.overlaps if timeline is not None else ())
            if o.end_ms > clip.start_ms and o.start_ms < clip.end_ms
        ]
        face_frames, face_tracks = visual.rows(clip, turns) if visual is not None else (None, None)
        yield {
            "clip_id": clip.clip_id,
            "source_id": source.source_id,
            "source_sha256": source.sha256,
            "episode": source.episode,
            "clip_index": clip.index,
            "split": split,
            "start_ms": clip.start_ms,
            "end_ms": clip.end_ms,
            "duration_ms": clip.duration_ms,
            "fps_num": source.fps.numerator if source.fps else None,
            "fps_den": source.fps.denominator if source.fps else None,
            "fps": float(source.fps) if source.fps else None,
            "variable_frame_rate": source.variable_frame_rate if source.has_video else None,
            "frame_width": source.width,
            "frame_height": source.height,
            "start_frame": clip.start_frame,
            "end_frame": clip.end_frame,
            "shot_boundaries_ms": list(clip.shot_boundaries_ms),
            "language": transcript.language,
            "language_probability": transcript.language_probability,
            "text": text,
            "text_raw": text,
            "words": [w.to_dict() for w in clip.words],
            "turns": [t.to_dict() for t in turns],
            "speakers": None,
            "emotion": None,
            "emotion_confidence": None,
            "clue": None,
            "scene_type": None,
            "scene_type_candidates": scene_type_candidates(turns) if timeline is not None else None,
            "sample_rate_hz": sr,
            "source_sample_rate_hz": src_sr,
            "audio_vocals": vocals,
            "audio_accompaniment": accomp,
            "faces": face_frames,
            "face_tracks": face_tracks,
            "overlaps": overlaps if timeline is not None else None,
            "quality": _clip_quality(clip, transcript),
            "provenance": {
                "pipeline_version": __version__,
                "schema_version": SCHEMA_VERSION,
                "config_hash": config_hash,
                "separation": tracks.separation,
                "models": list(models),
                "review_status": "unreviewed",
            },
        }


class PackageStage(Stage):
    """Writes a source's clips as Parquet shards (``shards/<source_id>-NNNNN.parquet``)."""

    name = "package"
    version = "2"  # v2: no run time in the rows (byte-identical shards), turns from the clips
    inputs = ("ingest", "tracks", "transcript", "clips", "timeline", "faces", "asd")
    optional = frozenset({"timeline", "faces", "asd"})
    output = "package"
    record = ShardSet
    config_sections = ("shards",)
    resources = Resources(cpus=1)

    @classmethod
    def key_parts(cls, cfg, out_dir: Path) -> tuple[str, ...]:
        # the shards land in out_dir and every row records the config hash
        return (str(Path(out_dir).resolve()), cfg.config_hash())

    def setup(self) -> None:
        # what a worker loads once: the resampler and the shard schema (its Hugging Face features come from datasets)
        import scipy.signal  # noqa: F401

        from cinedub.schema import clip_schema

        clip_schema()

    def process(
        self,
        ctx: StageContext,
        ingest: IngestResult,
        tracks: AudioTracks,
        transcript: Transcript,
        clips: ClipList,
        timeline: "DiarizationResult | None",
        faces: "FaceTrackList | None",
        asd: "AsdResult | None",
    ) -> ShardSet:
        """Write the shards of one source into ``ctx.out_dir``, replacing any earlier set."""
        shards = self.write(ingest.source, tracks, transcript, clips, ctx.out_dir, models=ctx.provenance,
                            timeline=timeline, faces=faces, asd=asd, progress=ctx.progress)
        return ShardSet(ingest.source.source_id, tuple(str(p.resolve()) for p in shards), len(clips.clips))

    def write(
        self,
        source: Source,
        tracks: AudioTracks,
        transcript: Transcript,
        clips: ClipList,
        out_dir: str | Path,
        *,
        models: Sequence[dict[str, str]],
        timeline: "DiarizationResult | None" = None,
        faces: "FaceTrackList | None" = None,
        asd: "AsdResult | None" = None,
        progress: Reporter = no_report,
    ) -> list[Path]:
        """Write the shards of one source, replacing any earlier set; returns their paths."""
        n = len(clips.clips)

        def counted(rows: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
            for i, row in enumerate(rows, 1):
                yield row
                progress(i, n, "clips")

        rows = clip_rows(
            source,
            tracks,
            transcript,
            clips.clips,
            config_hash=self.cfg.config_hash(),
            models=models,
            include_accompaniment=self.cfg.shards.include_accompaniment,
            sample_rate_hz=self.cfg.shards.sample_rate_hz,
            timeline=timeline,
            faces=faces,
            asd=asd,
        )
        return write_source_shards(counted(rows), out_dir, source.source_id, self.cfg.shards)
