"""The single source of the shard layout: one Parquet row per clip.

``schemas/`` is generated from this module (``python -m cinedub.schema --write``) and a test checks it is current.
Bump :data:`SCHEMA_VERSION` whenever a field changes: the minor for added fields (old readers still work), the
major for anything else (old readers refuse the shard with :class:`~cinedub.errors.SchemaVersionError`).

Media columns use the Hugging Face ``datasets`` convention ``struct<bytes: binary, path: string>`` and the schema
carries ``datasets`` features in the Arrow metadata key ``huggingface``, so ``datasets.load_dataset("parquet", ...)``
decodes audio and images as ``Audio`` / ``Image`` without a loading script.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from cinedub.errors import SchemaVersionError
from cinedub.llm.columns import CORRECTION, CORRECTION_DESCRIPTION

SCHEMA_VERSION = "2.0.0"
SCHEMA_NAME = "cinedub.clip"
META_VERSION_KEY = b"cinedub.schema_version"
META_NAME_KEY = b"cinedub.schema_name"

MEDIA = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

WORD = pa.struct(
    [
        ("text", pa.string()),
        ("start_ms", pa.int64()),
        ("end_ms", pa.int64()),
        ("probability", pa.float32()),
        ("speaker_id", pa.string()),
    ]
)
TURN = pa.struct(
    [
        ("start_ms", pa.int64()),
        ("end_ms", pa.int64()),
        ("speaker_id", pa.string()),
        ("on_screen", pa.bool_()),
        ("face_track_id", pa.string()),
        ("overlap", pa.bool_()),
        ("face_identity_id", pa.string()),
        ("attribution_confidence", pa.float32()),
        ("attribution_cue", pa.string()),
        ("attribution_reason", pa.string()),
    ]
)
SPEAKER = pa.struct(
    [
        ("speaker_id", pa.string()),
        ("gender", pa.string()),
        ("age_group", pa.string()),
        ("timbre", pa.list_(pa.string())),
        ("face_track_ids", pa.list_(pa.string())),
    ]
)
FACE_FRAME = pa.struct(
    [
        ("track_id", pa.string()),
        ("frame_index", pa.int64()),
        ("pts_ms", pa.int64()),
        ("box_xyxy", pa.list_(pa.float32(), 4)),
        ("lip_landmarks_xy", pa.list_(pa.float32())),
        ("face_crop", MEDIA),
        ("lip_crop", MEDIA),
        ("asd_score", pa.float32()),
    ]
)
FACE_TRACK = pa.struct(
    [
        ("track_id", pa.string()),
        ("shot_index", pa.int32()),
        ("start_frame", pa.int64()),
        ("end_frame", pa.int64()),
        ("speaker_id", pa.string()),
        ("asd_status", pa.string()),
        ("speaking_fraction", pa.float32()),
    ]
)
OVERLAP = pa.struct([("start_ms", pa.int64()), ("end_ms", pa.int64()), ("speaker_ids", pa.list_(pa.string()))])
MODEL_REF = pa.struct([("stage", pa.string()), ("name", pa.string()), ("version", pa.string())])
QUALITY = pa.struct(
    [
        ("asr_avg_logprob", pa.float32()),
        ("asr_min_word_probability", pa.float32()),
        ("asr_mean_word_probability", pa.float32()),
        ("asr_no_speech_prob", pa.float32()),
    ]
)
PROVENANCE = pa.struct(
    [
        ("pipeline_version", pa.string()),
        ("schema_version", pa.string()),
        ("config_hash", pa.string()),
        ("separation", pa.string()),
        ("models", pa.list_(MODEL_REF)),
        ("review_status", pa.string()),
    ]
)


@dataclass(frozen=True)
class FieldDoc:
    """One column: name, Arrow type, nullable, unit and a description for people."""

    name: str
    type: pa.DataType
    description: str
    unit: str = ""
    nullable: bool = True


FIELDS: tuple[FieldDoc, ...] = (
    FieldDoc("clip_id", pa.string(), "uuid5 of (source sha256, start_ms, end_ms): stable across reruns", nullable=False),
    FieldDoc("source_id", pa.string(), "first 16 hex digits of the source file's SHA-256", nullable=False),
    FieldDoc("source_sha256", pa.string(), "SHA-256 of the source file's bytes", nullable=False),
    FieldDoc("episode", pa.string(), "human label of the source (file stem unless given)"),
    FieldDoc("clip_index", pa.int32(), "position of the clip among its source's clips (0-based)", nullable=False),
    FieldDoc("split", pa.string(), "train/dev/test, from a hash of the source: reproducible and episode-disjoint"),
    FieldDoc("start_ms", pa.int64(), "clip start in the source timeline", "ms", nullable=False),
    FieldDoc("end_ms", pa.int64(), "clip end (exclusive) in the source timeline", "ms", nullable=False),
    FieldDoc("duration_ms", pa.int64(), "end_ms - start_ms", "ms", nullable=False),
    FieldDoc("fps_num", pa.int32(), "exact nominal video frame rate numerator (24000 for 23.976 fps, also with dropped frames); null for audio-only"),
    FieldDoc("fps_den", pa.int32(), "exact video frame rate denominator (1001 for 23.976 fps)"),
    FieldDoc("fps", pa.float64(), "fps_num / fps_den, for convenience", "frames/s"),
    FieldDoc("variable_frame_rate", pa.bool_(), "the source's frames are not evenly spaced: use faces[].pts_ms, never frame / fps"),
    FieldDoc("frame_width", pa.int32(), "width of the upright video frame that boxes and landmarks refer to", "px"),
    FieldDoc("frame_height", pa.int32(), "height of the upright video frame", "px"),
    FieldDoc("start_frame", pa.int64(), "first video frame of the clip (frame index in the source)", "frames"),
    FieldDoc("end_frame", pa.int64(), "frame after the clip's last frame", "frames"),
    FieldDoc("shot_boundaries_ms", pa.list_(pa.int64()), "cuts strictly inside the clip (first frame of the new shot)", "ms"),
    FieldDoc("language", pa.string(), "ISO 639-1 language of the clip (restricted to the configured languages)"),
    FieldDoc("language_probability", pa.float32(), "language identification probability"),
    FieldDoc("text", pa.string(), "transcript after correction (equals text_raw until the LLM stage runs)"),
    FieldDoc("text_raw", pa.string(), "raw ASR transcript of the clip's words"),
    FieldDoc("words", pa.list_(WORD), "ASR words: text, start/end in the source timeline (ms), probability, speaker", "ms"),
    FieldDoc("turns", pa.list_(TURN), "speaker turns inside the clip (source timeline ms), cut at the shots; speaker ids stable per source; since 1.3: face_identity_id (the face across shots, stable per source), attribution_confidence (posterior of the audio-visual decision behind on_screen), attribution_cue (asd, asd_margin, sync, identity or no_face: what decided it), attribution_reason (why on_screen is null: ambiguous, weak, listener, unscored, too_short, overlap)", "ms"),
    FieldDoc("speakers", pa.list_(SPEAKER), "per speaker in the clip: gender, age group, timbre words, face tracks"),
    FieldDoc("emotion", pa.string(), "clip emotion from a closed label set"),
    FieldDoc("emotion_confidence", pa.float32(), "confidence of the emotion label in [0, 1]"),
    FieldDoc("clue", pa.string(), "free-text description of tone and acting"),
    FieldDoc("scene_type", pa.string(), "monologue, narration, dialogue or multi-speaker"),
    FieldDoc("scene_type_candidates", pa.list_(pa.string()), "scene types the visual/audio stages allow (e.g. narration when no face speaks)"),
    FieldDoc("sample_rate_hz", pa.int32(), "sample rate of the audio columns: one rate for the whole dataset (shards.sample_rate_hz)", "Hz"),
    FieldDoc("source_sample_rate_hz", pa.int32(), "rate of the audio the clip was cut from (below sample_rate_hz: band-limited, upsampled)", "Hz"),
    FieldDoc("audio_vocals", MEDIA, "FLAC of the clean vocal track: demucs vocals or DeepFilterNet-enhanced speech, as provenance.separation says (the mix when it is 'none')"),
    FieldDoc("audio_accompaniment", MEDIA, "FLAC of the accompaniment (music and effects; with DeepFilterNet the mix minus the vocals); null without separation"),
    FieldDoc("faces", pa.list_(FACE_FRAME), "frame-level data of the speaking faces: frame index, pts (integer ms from source start, decoded), box (px of the frame_width x frame_height frame), lip landmarks (px, x,y interleaved), face and lip crops (encoded images), ASD score"),
    FieldDoc("face_tracks", pa.list_(FACE_TRACK), "since 1.1: the face tracks whose frames are in `faces` (one face inside one shot, frames [start, end)), the speaker each speaks for, Light-ASD status (scored, too_short, no_face, no_audio) and fraction of frames scored speaking", "frames"),
    FieldDoc("overlaps", pa.list_(OVERLAP), "since 1.1: regions inside the clip where two or more speakers talk at once (labelled, not dropped)", "ms"),
    FieldDoc("quality", QUALITY, "quality scores of the clip (ASR confidence)"),
    FieldDoc("provenance", PROVENANCE, "pipeline and schema version, config hash, separation used, models, review status (no run time: identical runs give identical bytes)"),
    FieldDoc("correction", CORRECTION, CORRECTION_DESCRIPTION),
)

_AUDIO_COLUMNS = ("audio_vocals", "audio_accompaniment")


def _hf_features_json(schema: pa.Schema) -> str:
    """``datasets`` features for the schema: media structs become ``Audio`` (decode lazily) / ``Image``."""
    from datasets import Audio, Features, Image, List

    features = Features.from_arrow_schema(schema)
    for col in _AUDIO_COLUMNS:
        features[col] = Audio()
    faces = features["faces"]
    inner = dict(faces.feature) if isinstance(faces, List) else dict(faces[0])
    inner["face_crop"] = Image()
    inner["lip_crop"] = Image()
    features["faces"] = List(inner)
    return json.dumps({"info": {"features": features.to_dict()}})


def clip_schema() -> pa.Schema:
    """The Arrow schema of a clip shard, with version and ``datasets`` features in its metadata."""
    base = pa.schema([pa.field(f.name, f.type, nullable=f.nullable) for f in FIELDS])
    meta = {
        META_NAME_KEY: SCHEMA_NAME.encode(),
        META_VERSION_KEY: SCHEMA_VERSION.encode(),
        b"huggingface": _hf_features_json(base).encode(),
    }
    return base.with_metadata(meta)


def check_version(schema: pa.Schema, where: str | Path = "shard") -> str:
    """Return the schema version of ``schema``; raise if its major version is newer than this reader's.

    Raises:
        SchemaVersionError: not a CineDub shard, or written by a newer major schema version.
    """
    meta = schema.metadata or {}
    if META_VERSION_KEY not in meta:
        raise SchemaVersionError(f"{where}: not a CineDub shard (no {META_VERSION_KEY.decode()} in its metadata)")
    version = meta[META_VERSION_KEY].decode()
    if int(version.split(".")[0]) > int(SCHEMA_VERSION.split(".")[0]):
        raise SchemaVersionError(
            f"{where}: written with schema {version}, this reader understands {SCHEMA_VERSION.split('.')[0]}.x; "
            "upgrade cinedub to read it"
        )
    return version


def _type_str(t: pa.DataType) -> str:
    return str(t).replace("\n", " ")


def schema_description() -> str:
    """Markdown description of every field (generated into ``schemas/``)."""
    lines = [
        f"# CineDub clip shard schema {SCHEMA_VERSION}",
        "",
        "One row per clip. Generated by `python -m cinedub.schema --write` from `cinedub/schema.py`; do not edit.",
        "Times are integer milliseconds in the **source timeline** (0 = start of the source file) unless noted.",
        "Media columns are `struct<bytes: binary, path: string>` (Hugging Face `datasets` Audio/Image convention).",
        "",
        "| field | type | unit | nullable | description |",
        "|---|---|---|---|---|",
    ]
    for f in FIELDS:
        lines.append(f"| `{f.name}` | `{_type_str(f.type)}` | {f.unit} | {'yes' if f.nullable else 'no'} | {f.description} |")
    lines += ["", "Arrow metadata keys: `cinedub.schema_name`, `cinedub.schema_version`, `huggingface` (datasets features).", ""]
    return "\n".join(lines)


def schema_json() -> str:
    """Machine-readable schema: field names, Arrow types, nullability, units, descriptions."""
    return json.dumps(
        {
            "name": SCHEMA_NAME,
            "version": SCHEMA_VERSION,
            "fields": [
                {"name": f.name, "type": _type_str(f.type), "nullable": f.nullable, "unit": f.unit, "description": f.description}
                for f in FIELDS
            ],
        },
        indent=1,
        ensure_ascii=False,
    )


def schema_files() -> dict[str, str]:
    """File name -> content of everything in ``schemas/``."""
    major = SCHEMA_VERSION.split(".")[0]
    return {f"clip-v{major}.json": schema_json() + "\n", f"clip-v{major}.md": schema_description()}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(description="Write or check the generated files in schemas/.")
    p.add_argument("--write", action="store_true", help="write schemas/ (default: check it is current)")
    p.add_argument("--dir", default=str(Path(__file__).resolve().parents[1] / "schemas"))
    args = p.parse_args(argv)
    d = Path(args.dir)
    stale = []
    for name, content in schema_files().items():
        path = d / name
        if args.write:
            d.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
        elif not path.is_file() or path.read_text(encoding="utf-8") != content:
            stale.append(name)
    if stale:
        print(f"schemas/ is stale: {', '.join(stale)} (run python -m cinedub.schema --write)")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
