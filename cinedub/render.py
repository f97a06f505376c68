"""A picture of one clip for people: a contact sheet of source frames with the stored face data drawn on them.

Each tile is a source frame (decoded again from the source file) with, for every stored face of that frame: the box,
the lip landmarks, the track id and the ASD score (green when speaking, red when not); the bottom row shows the
stored face and lip crops as decoded from the shard. A person can see at a glance whether the boxes sit on the
faces, the lips on the mouths, the crops on the right frame, and the speaker on the speaking face.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pyarrow.compute as pc

from cinedub.errors import CineDubError
from cinedub.reader import ShardReader

TILE_W = 320


def find_source_path(out_dir: Path, source_id: str) -> Path | None:
    """The input file of ``source_id`` according to the run reports in ``out_dir/runs`` (newest first)."""
    for report in sorted((out_dir / "runs").glob("*.json"), reverse=True):
        for r in json.loads(report.read_text(encoding="utf-8")).get("inputs", []):
            if r.get("source_id") == source_id and Path(r["path"]).is_file():
                return Path(r["path"])
    return None


def _decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def _draw(image: np.ndarray, faces: list[dict[str, Any]], threshold: float) -> np.ndarray:
    img = image.copy()
    scale = max(1, round(img.shape[1] / TILE_W))
    for f in faces:
        score = f.get("asd_score")
        color = (0, 200, 0) if score is not None and score >= threshold else (0, 0, 230)
        x0, y0, x1, y1 = (int(round(v)) for v in f["box_xyxy"])
        cv2.rectangle(img, (x0, y0), (x1, y1), color, 2 * scale)
        lips = f.get("lip_landmarks_xy") or []
        for i in range(0, len(lips) - 1, 2):
            cv2.circle(img, (int(lips[i]), int(lips[i + 1])), scale, (255, 255, 0), -1)
        label = f"{f['track_id'].rsplit('-', 1)[-1]} asd={score:.2f}" if score is not None else f["track_id"]
        cv2.putText(img, label, (x0, max(12 * scale, y0 - 4 * scale)), cv2.FONT_HERSHEY_SIMPLEX, 0.45 * scale, color,
                    max(1, scale))
    return img


def _tile(img: np.ndarray, caption: str) -> np.ndarray:
    h = int(img.shape[0] * TILE_W / img.shape[1])
    t = cv2.resize(img, (TILE_W, h), interpolation=cv2.INTER_AREA)
    bar = np.full((18, TILE_W, 3), 30, np.uint8)
    cv2.putText(bar, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
    return np.vstack([bar, t])


def render_clip(out_dir: str | Path, clip_id: str, dest: str | Path, *, source: str | Path | None = None,
                n_tiles: int = 12, threshold: float = 0.5) -> Path:
    """Write a PNG contact sheet of clip ``clip_id`` (``n_tiles`` frames spread over the clip).

    Args:
        source: the source video; default: looked up in the run reports of ``out_dir``.
        threshold: ASD score drawn as speaking (green) at or above this.

    Raises:
        CineDubError: unknown clip, or the source video cannot be found.
    """
    from cinedub.vision.decode import iter_frames

    out_dir = Path(out_dir)
    reader = ShardReader(out_dir)
    table = reader.dataset().to_table(filter=pc.field("clip_id") == clip_id)
    if table.num_rows == 0:
        raise CineDubError(f"{out_dir}: no clip {clip_id}")
    row = table.to_pylist()[0]
    src = Path(source) if source else find_source_path(out_dir, row["source_id"])
    if src is None or not src.is_file():
        raise CineDubError(f"source of clip {clip_id} not found (pass --source)")
    faces_by_frame: dict[int, list[dict]] = {}
    for f in row["faces"] or []:
        faces_by_frame.setdefault(f["frame_index"], []).append(f)
    frames = list(iter_frames(src, [(row["start_ms"], row["end_ms"])]))
    if not frames:
        raise CineDubError(f"{src}: no frames between {row['start_ms']} and {row['end_ms']} ms")
    picks = np.linspace(0, len(frames) - 1, num=min(n_tiles, len(frames))).round().astype(int)
    tiles = []
    for i in picks:
        fr = frames[i]
        tiles.append(_tile(_draw(fr.image, faces_by_frame.get(fr.index, []), threshold), f"frame {fr.index}  {fr.pts_ms} ms"))
    cols = 4
    h = max(t.shape[0] for t in tiles)
    tiles = [np.vstack([t, np.zeros((h - t.shape[0], TILE_W, 3), np.uint8)]) for t in tiles]
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    sheet = np.vstack([np.hstack(tiles[r:r + cols]) for r in range(0, len(tiles), cols)])
    crops = []
    for f in (row["faces"] or [])[:: max(1, len(row["faces"] or []) // 8)][:8]:
        face = cv2.resize(_decode(f["face_crop"]["bytes"]), (112, 112))
        lip = cv2.resize(_decode(f["lip_crop"]["bytes"]), (112, 112))
        crops.append(np.vstack([face, lip]))
    if crops:
        strip = np.hstack(crops)
        strip = np.hstack([strip, np.zeros((strip.shape[0], sheet.shape[1] - strip.shape[1], 3), np.uint8)]) \
            if strip.shape[1] < sheet.shape[1] else strip[:, : sheet.shape[1]]
        sheet = np.vstack([sheet, strip])
    header = np.full((24, sheet.shape[1], 3), 0, np.uint8)
    text = f"{row['episode']} clip {row['clip_index']}  {row['start_ms']}-{row['end_ms']} ms  " + (row["text"] or "")[:90]
    cv2.putText(header, text, (6, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1)
    sheet = np.vstack([header, sheet])
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(dest), sheet):
        raise CineDubError(f"{dest}: could not write the image")
    return dest
