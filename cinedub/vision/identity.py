"""Face identity across shots: a dlib ResNet descriptor per face track, tracks clustered into identities.

Model: dlib's ``dlib_face_recognition_resnet_model_v1`` (a 29-layer ResNet metric network, 128-d descriptors; King,
"dlib-models", public domain; 99.38 % on LFW) with the 68-point ``shape_predictor_68_face_landmarks`` to align the
150x150 face chip (``dlib.get_face_chip``, padding 0.25, as ``compute_face_descriptor`` does). The files come from
``<models_dir>/dlib/`` or, when absent, from the installed ``face-recognition-models`` 0.1.3 wheel, read by path
(the model registry, :mod:`cinedub.models`; that package is never imported: it needs the removed ``pkg_resources``). The shape predictor
was trained on iBUG 300-W, whose licence excludes commercial use.

Cost: about 0.14 s per descriptor on one core (dlib-bin has no BLAS), so only a few good frames of a track are
described (highest detector score times frontality from the eye and nose points, spread over the track), and not
at all where no other track could be the same person (:func:`needs_descriptor`).

Clustering: average-linkage agglomeration of the tracks' mean descriptors, stopped at ``identity_threshold``
(dlib's documented 0.6), never joining two tracks on screen at the same time (one person is one face at a time).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from cinedub.models import DLIB_RECOGNITION, DLIB_SHAPE
from cinedub.ops.av_config import AvConfig
from cinedub.vision.landmarks import decode_image
from cinedub.vision.records import FaceIdentityResult, FaceTrack, FaceTrackList, TrackIdentity

RECOGNITION_FILE = DLIB_RECOGNITION  # found through the model registry (cinedub.models: "face-identity")
SHAPE_FILE = DLIB_SHAPE
MODEL_NAME = "dlib:dlib_face_recognition_resnet_model_v1"
DESCRIPTOR_DIM = 128


class FaceDescriber:
    """dlib's 128-d face descriptor of a face crop (loads both models once and warms the network up: about 3 s)."""

    def __init__(self, recognition_path: str | Path, shape_path: str | Path):
        import dlib  # dlib-bin: a binary wheel, CPU

        self._dlib = dlib
        self.recognizer = dlib.face_recognition_model_v1(str(recognition_path))
        self.shapes = dlib.shape_predictor(str(shape_path))
        # the first descriptor costs about 0.6 s more (dlib sets its network up): pay it at load, not per source
        self.recognizer.compute_face_descriptor(np.full((150, 150, 3), 128, np.uint8))

    def describe(self, rgb: np.ndarray, box_xyxy: Sequence[float]) -> np.ndarray:
        """Descriptor ``(128,)`` float32 of the face inside ``box_xyxy`` (px) of an RGB uint8 image ``(h, w, 3)``."""
        x1, y1, x2, y2 = (int(round(v)) for v in box_xyxy)
        shape = self.shapes(rgb, self._dlib.rectangle(x1, y1, x2, y2))
        chip = self._dlib.get_face_chip(rgb, shape, size=150, padding=0.25)
        return np.asarray(self.recognizer.compute_face_descriptor(chip), np.float32)


def needs_descriptor(tracks: Sequence[FaceTrack]) -> set[str]:
    """Tracks that another track could be the same person as: some other track is not on screen at the same time.

    A track on screen together with every other track (all faces of a single group shot) is its own identity.
    """
    out = set()
    for t in tracks:
        if any(u.track_id != t.track_id and (u.end_ms <= t.start_ms or u.start_ms >= t.end_ms) for u in tracks):
            out.add(t.track_id)
    return out


def frontality(kps_xy: Sequence[float] | None) -> float:
    """1 for a frontal face, falling to 0 at a strong yaw: the nose's offset from the eyes' midpoint along the eye
    line, in eye distances (SCRFD's five points: eyes, nose, mouth corners), mapped ``1 - min(1, 2 * offset)``."""
    if not kps_xy or len(kps_xy) < 6:
        return 0.5
    k = np.asarray(kps_xy[:6], np.float64).reshape(3, 2)
    eye = k[1] - k[0]
    d = float(np.linalg.norm(eye))
    if d < 1e-3:
        return 0.0
    offset = abs(float(np.dot(k[2] - (k[0] + k[1]) / 2, eye / d))) / d
    return max(0.0, 1.0 - 2.0 * offset)


def select_frames(rows: Sequence[dict], n: int) -> list[dict]:
    """Up to ``n`` frames of one track to describe: detected (not interpolated) frames with lip landmarks, the best
    ``det_score * frontality`` in each of ``n`` equal stretches of the track (spread over it)."""
    good = [r for r in rows if not r["interpolated"] and r["landmarks_ok"] and r["det_score"] is not None]
    if not good:
        good = [r for r in rows if not r["interpolated"] and r["det_score"] is not None]
    if not good:
        return []
    good.sort(key=lambda r: r["frame_index"])
    parts = np.array_split(np.arange(len(good)), min(n, len(good)))
    return [max((good[i] for i in p), key=lambda r: r["det_score"] * frontality(r["kps_xy"])) for p in parts if len(p)]


def crop_box(row: dict) -> tuple[float, float, float, float]:
    """The detected face box mapped into the face crop (``face_affine`` maps frame px to crop px)."""
    a = np.asarray(row["face_affine"], np.float64).reshape(2, 3)
    x1, y1, x2, y2 = row["box_xyxy"]
    pts = np.array([[x1, y1, 1], [x2, y1, 1], [x1, y2, 1], [x2, y2, 1]]) @ a.T
    (bx1, by1), (bx2, by2) = pts.min(axis=0), pts.max(axis=0)
    return float(bx1), float(by1), float(bx2), float(by2)


def cluster_tracks(vectors: np.ndarray, cannot_link: np.ndarray, threshold: float) -> np.ndarray:
    """Average-linkage agglomeration of ``vectors`` ``(n, d)`` (Euclidean), stopped when the closest clusters are
    ``threshold`` apart; ``cannot_link`` ``(n, n)`` bool pairs never share a cluster. Returns ``(n,)`` int labels."""
    n = len(vectors)
    if n == 0:
        return np.zeros(0, int)
    dist = np.linalg.norm(vectors[:, None, :] - vectors[None, :, :], axis=2)
    dist[cannot_link] = np.inf
    np.fill_diagonal(dist, np.inf)
    size = np.ones(n)
    alive = np.ones(n, bool)
    labels = np.arange(n)
    while alive.sum() > 1:
        masked = np.where(alive[:, None] & alive[None, :], dist, np.inf)
        i, j = np.unravel_index(int(np.argmin(masked)), masked.shape)
        if not masked[i, j] < threshold:
            break
        # Lance-Williams update for average linkage; an infinite (cannot-link) side stays infinite
        dist[i] = (size[i] * dist[i] + size[j] * dist[j]) / (size[i] + size[j])
        dist[:, i] = dist[i]
        dist[i, i] = np.inf
        size[i] += size[j]
        alive[j] = False
        labels[labels == j] = i
    return labels


def _rows(frames_path: str | Path, track_ids: Sequence[str]) -> dict[str, list[dict]]:
    cols = ["track_id", "frame_index", "box_xyxy", "det_score", "interpolated", "kps_xy", "landmarks_ok"]
    table = pq.read_table(str(frames_path), columns=cols, filters=[("track_id", "in", sorted(track_ids))])
    out: dict[str, list[dict]] = {}
    for r in table.to_pylist():
        out.setdefault(r["track_id"], []).append(r)
    return out


def _describe_chosen(
    frames_path: str | Path, chosen: dict[str, list[dict]], describer: FaceDescriber
) -> dict[tuple[str, int], np.ndarray]:
    """Descriptor ``(128,)`` of each chosen ``(track_id, frame_index)`` whose crop decodes, reading the Parquet
    file one row group at a time: memory holds one row group of crops (the faces stage writes about 2000 rows per
    group) and the descriptors, whatever the source's length."""
    keys = {(t, r["frame_index"]) for t, rs in chosen.items() for r in rs}
    out: dict[tuple[str, int], np.ndarray] = {}
    if not keys:
        return out
    cols = ["track_id", "frame_index", "box_xyxy", "face_affine", "face_crop"]
    pf = pq.ParquetFile(str(frames_path))
    for batch in (pf.read_row_group(i, columns=cols) for i in range(pf.num_row_groups)):
        pairs = zip(batch.column("track_id").to_pylist(), batch.column("frame_index").to_pylist())
        take = [i for i, key in enumerate(pairs) if key in keys]
        for c in batch.take(take).to_pylist() if take else ():
            try:
                img = decode_image(c["face_crop"])
            except ValueError:  # an empty or undecodable crop: the frame is not described
                continue
            out[(c["track_id"], c["frame_index"])] = describer.describe(np.ascontiguousarray(img[:, :, ::-1]),
                                                                         crop_box(c))
    return out


def describe_tracks(
    faces: FaceTrackList, describer: FaceDescriber, track_ids: Sequence[str], cfg: AvConfig
) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Mean descriptor ``(128,)`` of each track in ``track_ids`` and how many frames it averages (tracks without a
    usable frame are absent)."""
    tracks = {t.track_id: t for t in faces.tracks}
    rows = _rows(faces.frames_path, track_ids) if track_ids else {}
    chosen = {}
    for tid in track_ids:
        t = tracks[tid]
        n = min(cfg.identity_max_frames_per_track,
                cfg.identity_frames_per_track + (t.end_ms - t.start_ms) // cfg.identity_ms_per_extra_frame)
        chosen[tid] = select_frames(rows.get(tid, []), int(n))
    described = _describe_chosen(faces.frames_path, chosen, describer)
    vectors, counts = {}, {}
    for tid, picks in chosen.items():
        descs = [described[(tid, r["frame_index"])] for r in picks if (tid, r["frame_index"]) in described]
        if descs:
            vectors[tid] = np.mean(descs, axis=0)
            counts[tid] = len(descs)
    return vectors, counts


def identify_faces(
    faces: FaceTrackList,
    describer: FaceDescriber,
    cfg: AvConfig | None = None,
    *,
    embeddings_npy: str | Path | None = None,
) -> FaceIdentityResult:
    """Face identities of one source's tracks.

    Args:
        faces: the faces stage's result (its ``frames_path`` Parquet holds the crops, boxes and key points).
        describer: the loaded dlib models.
        embeddings_npy: where to write the described tracks' mean descriptors (``(n, 128)`` float32, rows
            ``TrackIdentity.row``); None writes nothing.

    Returns:
        One :class:`TrackIdentity` per track; identities ``<source_id>-F<nn>`` by first appearance.
    """
    from cinedub.diarization.records import save_npy_atomic

    cfg = cfg or AvConfig()
    t0 = time.perf_counter()
    need = needs_descriptor(faces.tracks)
    vectors, counts = describe_tracks(faces, describer, sorted(need), cfg)
    described = sorted(vectors, key=lambda t: next(i for i, u in enumerate(faces.tracks) if u.track_id == t))
    by_id = {t.track_id: t for t in faces.tracks}
    cannot = np.array([[a != b and by_id[a].start_ms < by_id[b].end_ms and by_id[b].start_ms < by_id[a].end_ms
                        for b in described] for a in described], bool).reshape(len(described), len(described))
    labels = cluster_tracks(np.stack([vectors[t] for t in described]) if described else np.zeros((0, 128)), cannot,
                            cfg.identity_threshold)
    groups: dict[object, list[str]] = {}
    for tid, lab in zip(described, labels):
        groups.setdefault(("c", int(lab)), []).append(tid)
    for t in faces.tracks:
        if t.track_id not in need:
            groups[("alone", t.track_id)] = [t.track_id]
    order = sorted(groups.values(), key=lambda g: min((by_id[t].start_ms, t) for t in g))
    ident = {t: f"{faces.source_id}-F{i:02d}" for i, g in enumerate(order) for t in g}
    rows = {t: i for i, t in enumerate(described)}
    out = []
    for t in faces.tracks:
        tid = t.track_id
        if tid not in need:
            out.append(TrackIdentity(tid, ident[tid], reason="alone"))
        elif tid in vectors:
            out.append(TrackIdentity(tid, ident[tid], counts[tid], rows[tid] if embeddings_npy else None))
        else:
            out.append(TrackIdentity(tid, None, reason="no_usable_frame"))
    npy = None
    if embeddings_npy is not None and described:
        npy = str(save_npy_atomic(embeddings_npy, np.stack([vectors[t] for t in described]).astype(np.float32)))
    return FaceIdentityResult(
        source_id=faces.source_id, model=MODEL_NAME, threshold=cfg.identity_threshold,
        identity_ids=tuple(f"{faces.source_id}-F{i:02d}" for i in range(len(order))), tracks=tuple(out),
        embeddings_path=npy, n_descriptors=int(sum(counts.values())), wall_s=round(time.perf_counter() - t0, 3),
    )
