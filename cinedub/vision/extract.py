"""Faces pipeline core (no Prefect, no torch): decode once -> detect in batches -> track within shots -> face
crop, lip landmarks and mouth crop per tracked frame -> one Parquet file.

Streaming with a bounded lag: a tracked frame is cropped as soon as its smoothed geometry is final (the track
has a detection ``h`` frames later, ``h`` = half the smoothing window, or the track has ended), so only the frames
between the oldest pending crop and the current frame are held in memory (about ``max_gap + h`` frames), never a
whole shot. Rows of a track are written when the track ends and passes the length/size filters.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cinedub.errors import MediaError
from cinedub.progress import Reporter, no_report
from cinedub.timebase import merge_spans, ms_to_frames
from cinedub.types import ShotList
from cinedub.vision.config import VisionConfig
from cinedub.vision.cuts import CutFinder
from cinedub.vision.decode import DecodedFrame, DecodeStats, iter_frames, video_info
from cinedub.vision.detect import FaceDetector
from cinedub.vision.landmarks import (
    LipLandmarker,
    encode_image,
    face_affine,
    landmark_affine,
    mouth_affine,
    roll_from_eyes,
    warp,
)
from cinedub.vision.records import FaceFrame, FaceTrack, FaceTrackList
from cinedub.vision.track import FaceTracker, RawTrack, iou_matrix, keep_track

if TYPE_CHECKING:
    from cinedub.config import ShotConfig

log = logging.getLogger(__name__)

FRAMES_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("shot_index", pa.int32()),
        ("frame_index", pa.int32()),
        ("pts_ms", pa.int64()),
        ("box_xyxy", pa.list_(pa.float32(), 4)),
        ("det_score", pa.float32()),
        ("interpolated", pa.bool_()),
        ("kps_xy", pa.list_(pa.float32(), 10)),
        ("roll_deg", pa.float32()),
        ("lip_xy", pa.list_(pa.float32())),
        ("landmarks_ok", pa.bool_()),
        ("face_affine", pa.list_(pa.float32(), 6)),
        ("mouth_affine", pa.list_(pa.float32(), 6)),
        ("face_crop", pa.binary()),
        ("mouth_crop", pa.binary()),
    ]
)
# Rows are written in row groups of at most this many rows or this many bytes of encoded crops (about 14 kB a row
# at the defaults): the rows waiting, and their Arrow copy while written, stay a few MB whatever the source's length.
_FLUSH_ROWS = 2000
_FLUSH_BYTES = 8 << 20
# Rows a track being cropped holds in memory (about 3.5 MB); more go to its spill file.
_SPILL_ROWS = 256


@dataclass
class ExtractStats:
    """Timing of one run (s), throughput (decoded frames per second of wall time) and the most frames held in
    memory at once (bounded by the gap tolerance + smoothing window, not by shot length). ``n_detected_frames``
    counts keyframes; ``n_reduced_frames`` of them ran on the reduced canvas only (``track_det_size``; anchors,
    detected on both, are not counted), and ``n_redetected_frames`` of those ran again at full size because the
    reduced canvas did not find the run's faces (one lost or new)."""

    n_frames: int = 0
    n_frames_all: int = 0
    n_detected_frames: int = 0
    n_reduced_frames: int = 0
    n_redetected_frames: int = 0
    max_buffered_frames: int = 0
    decode_s: float = 0.0
    detect_s: float = 0.0
    crop_s: float = 0.0
    total_s: float = 0.0

    @property
    def fps(self) -> float:
        return self.n_frames / self.total_s if self.total_s else 0.0


@dataclass(eq=False)  # hashed by identity: emitters live in a set
class _Emitter:
    track: RawTrack
    next_pos: int = 0  # positions before it are handed to the crop worker (main thread's cursor)
    rows: list[dict] = field(default_factory=list)  # filled by the crop worker
    # rows of a long track written ahead to a file of their own until the track ends (kept or dropped), so a shot
    # of many minutes holds at most _SPILL_ROWS rows in memory
    spill: pq.ParquetWriter | None = None
    spill_path: Path | None = None
    first_pts_ms: int | None = None  # of the track's first and last cropped frames
    last_pts_ms: int = 0


# Frame crops (a frame counts once per face tracked in it) handed to the crop worker and not done yet, at most: one
# detection window (``det_batch_size`` keyframes and the frames between them) and one keyframe period more, so the
# crop thread has the last window's frames to work on while the calling thread decodes and detects the next one
# (with 16 it idled through most of each detection batch; the 4 benchmark sources, whole videos, 2 cores, 10 pairs:
# 0.94-0.96x the wall time, peak +100 MB). Fewer when the window's frames would pass _WINDOW_BYTES_IN_FLIGHT of BGR
# pixels (about 20 frames at 1080p), but never fewer than _MIN_FRAMES_IN_FLIGHT (the bound before, about 400 MB of
# pixels at 4K); a job larger than the bound waits for the ones before it. Either way a bound that holds whatever
# the source's length, like the decode buffer's (about max_gap + smoothing window frames).
_WINDOW_BYTES_IN_FLIGHT = 128 << 20
_MIN_FRAMES_IN_FLIGHT = 16

# Smallest face side (px on the detector's canvas) trusted to a reduced-size keyframe: twice SCRFD's smallest
# anchor (16 px at stride 8, InsightFace's SCRFD configs), so a tracked face stays well inside what the reduced
# canvas detects.
MIN_REDUCED_FACE_PX = 32


class _CropWorker:
    """One background thread that runs the crop/lip jobs in submission order, while the calling thread decodes and
    detects (the landmark network, warps and JPEG encoding release the GIL, so the two overlap on two cores). Jobs
    of one track stay in order and a track's rows are final when its finish job has run. At most ``max_frames``
    frames wait in jobs; :meth:`submit` blocks beyond that. A job's exception is raised by a later :meth:`submit` or
    by :meth:`drain`."""

    def __init__(self, max_frames: int):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="faces-crops")
        self._jobs: deque[tuple[Future, int]] = deque()
        self._frames = 0
        self._max_frames = max_frames

    def submit(self, fn, *args, frames: int = 0) -> None:
        while self._jobs and (self._jobs[0][0].done() or self._frames + frames > self._max_frames):
            self._pop()
        self._jobs.append((self._pool.submit(fn, *args), frames))
        self._frames += frames

    def _pop(self) -> None:
        job, n = self._jobs.popleft()
        self._frames -= n
        job.result()

    def drain(self) -> None:
        """Wait for every job (re-raising the first failure)."""
        while self._jobs:
            self._pop()

    def close(self) -> None:
        """Cancel the jobs not started, wait for the running one."""
        self._pool.shutdown(wait=True, cancel_futures=True)


class _SpanTest:
    """``pts_ms -> bool``: inside one of the sorted, merged spans (None: everything); calls must not go back in
    time."""

    def __init__(self, spans: Sequence[tuple[int, int]] | None):
        self.spans = list(spans) if spans is not None else None
        self.k = 0

    def __call__(self, pts_ms: int) -> bool:
        if self.spans is None:
            return True
        while self.k < len(self.spans) and pts_ms >= self.spans[self.k][1]:
            self.k += 1
        return self.k < len(self.spans) and pts_ms >= self.spans[self.k][0]


def extract_faces(
    video_path: str | Path,
    out_path: str | Path,
    *,
    source_id: str,
    speech_spans_ms: Sequence[tuple[int, int]] | None,
    shots: ShotList | None,
    vcfg: VisionConfig,
    detector: FaceDetector,
    detector_name: str = "",
    shot_cfg: ShotConfig | None = None,
    progress: Reporter = no_report,
    end_limit_ms: int | None = None,
    declared_frames: int | None = None,
    landmarker: LipLandmarker | None = None,
) -> tuple[FaceTrackList, ExtractStats]:
    """Find, track and crop the faces of ``video_path`` inside the (padded) speech spans.

    Args:
        video_path: the source video.
        out_path: Parquet file to write (atomically); one row per (track, frame), schema :data:`FRAMES_SCHEMA`.
        source_id: prefix of the track ids.
        speech_spans_ms: ``[start_ms, end_ms)`` spans of speech; None = the whole video.
        shots: shot boundaries (a track never spans two shots); None = one shot, unless ``shot_cfg`` is given.
        vcfg: thresholds, crop sizes, encoding.
        detector: a :class:`cinedub.vision.detect.FaceDetector`.
        detector_name: the detector's provenance name, recorded in the track list.
        shot_cfg: the ``shots`` section: find the shots in this same decoding pass (every frame is decoded and fed
            to :class:`cinedub.vision.cuts.CutFinder`) and return them in the record; needs ``shots`` None.
        progress: ``progress(done, total, "frames")`` per decoded frame while the shots are found.
        end_limit_ms: the source's duration: no track (and no shot) ends after it.
        declared_frames: frames the container declares (``Source.n_frames``): the progress total, and to count
            frames lost to corrupt data.
        landmarker: the lip landmark network (used on the crop thread only); needed when ``vcfg.landmarks``.

    Frame indices are the decode order. With ``shot_cfg`` every frame is decoded in sequence (corrupt packets
    skipped as ffmpeg does and counted in ``FaceTrackList.bad_packets``), so indices count the frames decoded; with
    given ``shots`` whose ``frame_pts_ms`` is set (variable frame rate, lost frames) they are positions in it, so
    they match the shots' and clips' frame numbers on any source.

    Returns:
        The :class:`FaceTrackList` (tracks sorted by start frame) and timing statistics.

    Raises:
        MediaError: the video cannot be decoded.
        ValueError: ``vcfg.landmarks`` without a ``landmarker``.
    """
    if vcfg.landmarks and landmarker is None:
        raise ValueError("faces: vision.landmarks is on but no lip landmarker was given")
    lips_net = landmarker if vcfg.landmarks else None
    t_start = time.perf_counter()
    stats = ExtractStats()
    decode_stats = DecodeStats()
    info = video_info(video_path)
    fps = info.fps
    spans = None if speech_spans_ms is None else merge_spans(speech_spans_ms, pad_ms=vcfg.speech_pad_ms)
    half = ms_to_frames(vcfg.smooth_ms, fps) // 2
    tracker = FaceTracker(iou_threshold=vcfg.track_iou_threshold, max_gap_frames=ms_to_frames(vcfg.max_gap_ms, fps))
    min_frames = ms_to_frames(vcfg.min_track_ms, fps)
    shot_starts = [s.start_frame for s in shots.shots] if shots and shots.shots else [0]
    frame_ms = 1000 / float(fps)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    writer = pq.ParquetWriter(str(tmp), FRAMES_SCHEMA, compression="zstd")
    pending_rows: list[dict] = []
    pending_bytes = 0  # encoded crop bytes in pending_rows
    buffer: dict[int, DecodedFrame] = {}
    emitters: dict[int, _Emitter] = {}
    started: set[_Emitter] = set()  # emitters of unfinished tracks, to delete their spill files if the run fails
    kept: list[FaceTrack] = []
    face_frames: set[int] = set()

    def emit(em: _Emitter, upto: int) -> None:
        """Hand positions ``next_pos..upto`` of a track (their frames) to the crop worker."""
        if em.next_pos >= upto:
            return
        frames = [buffer[em.track.frames[p]] for p in range(em.next_pos, upto)]
        crops.submit(crop_job, em, em.next_pos, frames, frames=len(frames))
        em.next_pos = upto

    def crop_job(em: _Emitter, start: int, frames: list[DecodedFrame]) -> None:  # on the crop worker
        t0 = time.perf_counter()
        for pos, frame in enumerate(frames, start):
            em.rows.append(_crop_row(em, pos, frame, half, vcfg, lips_net))
        if em.first_pts_ms is None and em.rows:
            em.first_pts_ms = em.rows[0]["pts_ms"]
        if em.rows:
            em.last_pts_ms = em.rows[-1]["pts_ms"]
        if len(em.rows) >= _SPILL_ROWS:
            if em.spill is None:
                em.spill_path = tmp.with_name(f"{tmp.name}.T{em.track.track_no:05d}")
                em.spill = pq.ParquetWriter(str(em.spill_path), FRAMES_SCHEMA, compression="none")
            for row in em.rows:
                row["track_id"] = track_id_of(em.track)
            em.spill.write_table(pa.Table.from_pylist(em.rows, schema=FRAMES_SCHEMA))
            em.rows = []
        stats.crop_s += time.perf_counter() - t0

    def track_id_of(track: RawTrack) -> str:
        return f"{source_id}-T{track.track_no:05d}"

    def close_spill(em: _Emitter, copy: bool) -> None:
        """Close a track's spill file, copy its rows to the output first when ``copy``, and delete it."""
        if em.spill is None:
            return
        em.spill.close()
        if copy:
            for batch in pq.ParquetFile(str(em.spill_path)).iter_batches(batch_size=_SPILL_ROWS):
                writer.write_table(pa.Table.from_batches([batch], schema=FRAMES_SCHEMA))
        em.spill_path.unlink(missing_ok=True)
        em.spill = em.spill_path = None

    def write_pending() -> None:
        nonlocal pending_bytes
        if pending_rows:
            writer.write_table(pa.Table.from_pylist(pending_rows, schema=FRAMES_SCHEMA))
            pending_rows.clear()
        pending_bytes = 0

    def finish(track: RawTrack) -> None:
        em = emitters.pop(track.track_no)
        keep = keep_track(track, min_frames=min_frames, min_face_px=vcfg.min_track_face_px)
        if keep:
            emit(em, len(track.frames))
        crops.submit(finish_job, em, keep)

    def finish_job(em: _Emitter, keep: bool) -> None:  # on the crop worker, after the track's crop jobs
        nonlocal pending_bytes
        track = em.track
        if keep:
            track_id = track_id_of(track)
            for row in em.rows:
                row["track_id"] = track_id
            if em.spill is not None:  # the file keeps tracks in the order they end: earlier ones first
                write_pending()
                close_spill(em, copy=True)
            pending_rows.extend(em.rows)
            pending_bytes += sum(len(r["face_crop"]) + len(r["mouth_crop"]) for r in em.rows)
            face_frames.update(track.frames)
            scores = np.asarray(track.scores, np.float64)
            kept.append(
                FaceTrack(
                    track_id=track_id,
                    shot_index=track.shot_index,
                    start_frame=track.frames[0],
                    end_frame=track.frames[-1] + 1,
                    start_ms=em.first_pts_ms,
                    end_ms=min(int(round(em.last_pts_ms + frame_ms)), end_limit_ms or 1 << 62),
                    n_frames=len(track.frames),
                    n_detected=track.n_detected,
                    median_face_px=round(track.median_size_px(), 1),
                    mean_det_score=round(float(np.nanmean(scores)), 4),
                )
            )
        close_spill(em, copy=False)  # a dropped track's (a kept one's is closed above)
        em.rows = []  # handed on (or dropped): a finished track holds no crops, so memory does not grow with length
        started.discard(em)
        if len(pending_rows) >= _FLUSH_ROWS or pending_bytes >= _FLUSH_BYTES:
            write_pending()

    def step(frame: DecodedFrame, shot: int, dets: np.ndarray) -> None:
        buffer[frame.index] = frame
        for t in tracker.update(frame.index, shot, dets):
            finish(t)
        for t in tracker.active:
            em = emitters.get(t.track_no)
            if em is None:
                em = emitters[t.track_no] = _Emitter(t)
                started.add(em)
            emit(em, len(t.frames) - half)  # positions whose smoothing window is complete
        oldest = frame.index + 1
        for t in tracker.active:
            em = emitters[t.track_no]
            nxt = t.frames[em.next_pos] if em.next_pos < len(t.frames) else (t.pending[0] if t.pending else oldest)
            oldest = min(oldest, nxt)
        stats.max_buffered_frames = max(stats.max_buffered_frames, len(buffer))
        for idx in [i for i in buffer if i < oldest]:
            del buffer[idx]

    # Detection schedule: a frame is a keyframe at a shot start, after a gap in decoding, when detect_every_ms
    # passed since the last keyframe, and at the end of every run of consecutive frames (so a face is tracked to the
    # end of a span or shot instead of until the previous detection); other frames go to the tracker with no
    # detections and are interpolated between the keyframes around them. Frames wait in ``pending`` until their
    # shot is final (the cut finder reports a cut a few frames late) and their successor is known.
    # With a reduced canvas (track_det_size), an anchor keyframe (a run's first, then every full_detect_every_ms)
    # is detected on both canvases; when the reduced one finds the same faces and all are large enough there, the
    # keyframes up to the next anchor run on the reduced canvas only, their boxes moved onto the full canvas's
    # geometry (see :class:`_ReducedCanvas`).
    cuts = CutFinder(shot_cfg, fps, (info.width, info.height)) if shot_cfg is not None else None
    # prev: (index, shot) of the last frame scheduled; the times (ms) of the last keyframe and the last anchor
    sched = {"prev": None, "last_key_ms": None, "last_anchor_ms": None}
    per_key = max(1, ms_to_frames(vcfg.detect_every_ms, fps)) if vcfg.detect_every_ms > 0 else 1
    window_frames = detector.batch_size * per_key
    crops = _CropWorker(max(_MIN_FRAMES_IN_FLIGHT, min(window_frames + per_key,
                                                       _WINDOW_BYTES_IN_FLIGHT // max(1, 3 * info.width * info.height))))
    empty = np.zeros((0, 15), np.float32)
    pending: list[DecodedFrame] = []
    reduced = _ReducedCanvas.for_source(vcfg, info.width, info.height, detector)

    def shot_of(index: int, starts: list[int]) -> int:
        return bisect.bisect_right(starts, index) - 1

    def flush(final: bool) -> None:
        starts = cuts.shot_starts() if cuts is not None else shot_starts
        settled = cuts.settled() if cuts is not None and not final else 1 << 62
        n = 0
        while n < len(pending) and pending[n].index < settled:
            n += 1
        if not final:
            n = min(n, len(pending) - 1)  # the last one's successor is not known yet
        if n <= 0:
            return
        window = []
        for i in range(n):
            f = pending[i]
            shot = shot_of(f.index, starts)
            prev, nxt = sched["prev"], pending[i + 1] if i + 1 < len(pending) else None
            new_run = prev is None or prev[1] != shot or prev[0] + 1 != f.index
            end_run = nxt is None or nxt.index != f.index + 1 or shot_of(nxt.index, starts) != shot
            last = sched["last_key_ms"]
            key = (vcfg.detect_every_ms <= 0 or new_run or end_run or last is None
                   or f.pts_ms - last >= vcfg.detect_every_ms - frame_ms / 2)
            anchor: str | bool = False
            if key:
                sched["last_key_ms"] = f.pts_ms
                last_anchor = sched["last_anchor_ms"]
                if new_run or last_anchor is None:
                    anchor = "first"
                elif f.pts_ms - last_anchor >= vcfg.full_detect_every_ms - frame_ms / 2:
                    anchor = "again"  # continues the consecutive frames of the last anchor
                if anchor:
                    sched["last_anchor_ms"] = f.pts_ms
            sched["prev"] = (f.index, shot)
            window.append([f, shot, key, anchor])
        del pending[:n]
        _run_window(window, detector, step, stats, empty, reduced)

    try:
        t0 = time.perf_counter()
        in_span = _SpanTest(spans)
        if cuts is not None:
            frames = iter_frames(video_path, sequential=True, stats=decode_stats)
        else:
            frame_pts = shots.frame_pts_ms if shots is not None and shots.frame_pts_ms else None
            frames = iter_frames(video_path, spans, frame_pts_ms=frame_pts, stats=decode_stats)
        for frame in frames:
            stats.n_frames_all += 1
            if cuts is not None:
                cuts.push(frame.index, frame.pts_ms, frame.small(cuts.size))
                progress(stats.n_frames_all, declared_frames, "frames")
                if not in_span(frame.pts_ms):
                    continue
            stats.n_frames += 1
            pending.append(frame)
            if len(pending) > window_frames + (cuts.max_behind + 1 if cuts is not None else 0):
                stats.decode_s += time.perf_counter() - t0
                flush(False)
                t0 = time.perf_counter()
        stats.decode_s += time.perf_counter() - t0
        if cuts is not None:
            if cuts.n_frames == 0:
                raise MediaError(video_path, "no video frame could be decoded")
            found = cuts.finish(source_duration_ms=end_limit_ms, declared_frames=declared_frames)
        flush(True)
        for t in tracker.flush():
            finish(t)
        crops.drain()
        crops.close()
        write_pending()
        writer.close()
        os.replace(tmp, out_path)
    except BaseException:
        crops.close()
        writer.close()
        tmp.unlink(missing_ok=True)
        for em in started:
            close_spill(em, copy=False)
        raise
    stats.total_s = time.perf_counter() - t_start
    kept.sort(key=lambda t: (t.start_frame, t.track_id))
    result = FaceTrackList(
        source_id=source_id,
        fps=fps,
        frames_path=str(out_path),
        tracks=tuple(kept),
        n_frames_decoded=stats.n_frames,
        n_frames_with_face=len(face_frames),
        detector=detector_name or getattr(detector, "name", "?"),
        image_format=vcfg.image_format,
        face_crop_size=vcfg.face_crop_size,
        mouth_crop_size=vcfg.mouth_crop_size,
        variable_frame_rate=info.variable_frame_rate,
        shots=found if cuts is not None else None,
        bad_packets=decode_stats.bad_packets,
    )
    if decode_stats.bad_packets:
        log.warning("%s: %d corrupt video packets skipped (%s)", Path(video_path).name, decode_stats.bad_packets,
                    "; ".join(decode_stats.errors))
    log.info(
        "faces: %d frames (%d with detection, %d of them reduced, %d again at full size), %d tracks, %.1f fps "
        "(decode %.1fs, detect %.1fs, crops %.1fs)", stats.n_frames, stats.n_detected_frames, stats.n_reduced_frames,
        stats.n_redetected_frames, len(kept), stats.fps, stats.decode_s, stats.detect_s, stats.crop_s,
    )
    return result, stats


class _Run:
    """One anchor's run on the reduced canvas: per face of the anchor, the offset that maps its reduced-canvas box
    onto its full-canvas box, and the reduced box last seen for it (chained from keyframe to keyframe, 200 ms apart,
    so a moving face keeps its own offset).

    Attributes:
        first: ``(n, 4)`` float64 xyxy, the faces' reduced-canvas boxes at the anchor (source px).
        last: ``(n, 4)`` float64 xyxy, the faces' last reduced-canvas boxes (source px).
        offset: ``(n, 4)`` float64, per face ``(dcx / w, dcy / h, log(w_full / w), log(h_full / h))`` of the
            reduced box ``(w, h)``: the centre shift in box sides and the log size ratio; averaged with the same
            face's offset at the anchors before (``before``, at most :data:`_POOLED_ANCHORS` in all).
        n: ``(n,)`` how many anchors each face's offset averages.
        same_face_iou: overlap with a face's box at the keyframe before (200 ms earlier) to continue it, and with its
            box at the anchor before to average their offsets: the tracker's threshold
            (``VisionConfig.track_iou_threshold``).
    """

    def __init__(self, full: np.ndarray, small: np.ndarray, pair: np.ndarray, same_face_iou: float,
                 before: "_Run | None" = None):
        f, s = full[pair, :4].astype(np.float64), small[:, :4].astype(np.float64)
        sw, sh = np.maximum(s[:, 2] - s[:, 0], 1e-3), np.maximum(s[:, 3] - s[:, 1], 1e-3)
        fw, fh = f[:, 2] - f[:, 0], f[:, 3] - f[:, 1]
        self.first, self.last = s, s.copy()
        self.offset = np.stack([((f[:, 0] + f[:, 2]) - (s[:, 0] + s[:, 2])) / 2 / sw,
                                ((f[:, 1] + f[:, 3]) - (s[:, 1] + s[:, 3])) / 2 / sh,
                                np.log(fw / sw), np.log(fh / sh)], axis=1)
        self.n = np.ones(len(s))
        self.same_face_iou = same_face_iou
        if before is not None and len(s) and len(before.first):
            # the same face at the run's previous anchor (its boxes there, not the chained ones: those depend on
            # how keyframes were batched): average the offsets, one anchor's is noisy (about 1 % of the side)
            iou = iou_matrix(s, before.first)
            prev = iou.argmax(axis=1)
            for i, j in enumerate(prev):
                if iou[i, j] >= same_face_iou and np.sum(prev == j) == 1:
                    k = min(before.n[j], _POOLED_ANCHORS - 1)
                    self.offset[i] = (before.offset[j] * k + self.offset[i]) / (k + 1)
                    self.n[i] = k + 1

    def follow(self, small: np.ndarray) -> np.ndarray | None:
        """``small`` (a reduced keyframe's detections) moved onto the full canvas, face by face with the offset of
        the run's face it continues (IoU >= ``same_face_iou`` with that face's last box, one to one); None when
        the faces are not the run's (one lost, one new, or ambiguous): the keyframe is then detected at full size."""
        if len(small) != len(self.last):
            return None
        if not len(small):
            return small
        iou = iou_matrix(small[:, :4].astype(np.float64), self.last)
        pair = iou.argmax(axis=1)
        if len(set(pair.tolist())) != len(pair) or iou[np.arange(len(pair)), pair].min() < self.same_face_iou:
            return None
        self.last[pair] = small[:, :4]
        o = self.offset[pair]
        d = small.astype(np.float64)
        w, h = d[:, 2] - d[:, 0], d[:, 3] - d[:, 1]
        cx, cy = (d[:, 0] + d[:, 2]) / 2, (d[:, 1] + d[:, 3]) / 2
        sx, sy = np.exp(o[:, 2]), np.exp(o[:, 3])
        ncx, ncy = cx + o[:, 0] * w, cy + o[:, 1] * h
        out = d.copy()
        out[:, 0], out[:, 2] = ncx - w * sx / 2, ncx + w * sx / 2
        out[:, 1], out[:, 3] = ncy - h * sy / 2, ncy + h * sy / 2
        out[:, 5:15:2] = ncx[:, None] + (d[:, 5:15:2] - cx[:, None]) * sx[:, None]
        out[:, 6:15:2] = ncy[:, None] + (d[:, 6:15:2] - cy[:, None]) * sy[:, None]
        return out.astype(small.dtype)


# A face's canvas offset is the mean over at most this many consecutive anchors (5 s at the default period): the
# noise of one anchor's offset drops by about its square root, and a face that grows or shrinks on screen still
# updates it within seconds.
_POOLED_ANCHORS = 5


class _ReducedCanvas:
    """Which keyframes run on the reduced canvas (``track_det_size``), decided from the detections alone, in
    frame order, so that the result does not depend on how frames are batched.

    An anchor keyframe is detected on both canvases. The reduced canvas is trusted up to the next anchor when it
    found as many faces, each overlapping one of the full canvas (IoU >= 0.5), and every one is at least
    :data:`MIN_REDUCED_FACE_PX` there (with no face on either, the reduced canvas looks for large newcomers; small
    ones are found by the next anchor). Every box stays on the full canvas's geometry: the anchor keeps its full
    detections, and a reduced keyframe's boxes and points are moved by the offset its face had between the two
    canvases at the anchors (see :class:`_Run`). SCRFD places a face's box 2-4 % of the side apart on the two
    canvases, mostly a size bias that holds for a face from frame to frame; the offset removes most of it (about
    1-1.5 % of the side remains at a keyframe, measured on dialogue_5shots and two talk-show groups), so the face
    crops move by that much instead of 2-4 %. A reduced keyframe whose faces are not the run's (one lost, one new)
    is detected again at full size and takes those detections.

    Attributes:
        size: the reduced canvas side (px; 0 = off); scale: frame px -> reduced canvas px.
        same_face_iou: see :class:`_Run` (the tracker's ``track_iou_threshold``).
        run: the current anchor's run, None when the keyframes after the last anchor run at full size.
    """

    def __init__(self, size: int, scale: float, same_face_iou: float):
        self.size, self.scale, self.same_face_iou, self.run = size, scale, same_face_iou, None

    @property
    def trusted(self) -> bool:
        return self.run is not None

    @classmethod
    def for_source(cls, vcfg: VisionConfig, width: int, height: int, detector: FaceDetector) -> "_ReducedCanvas":
        """Off (size 0) unless ``track_det_size`` is below ``det_size`` and the detector takes a canvas size per
        call (``variable_size``; BlazeFace and a fixed-size SCRFD graph do not)."""
        on = 0 < vcfg.track_det_size < vcfg.det_size and getattr(detector, "variable_size", False)
        size = vcfg.track_det_size if on else 0
        return cls(size, size / max(width, height, 1), vcfg.track_iou_threshold)

    def anchor(self, full: np.ndarray, small: np.ndarray, continues: bool = False) -> np.ndarray:
        """The detections of an anchor keyframe (``full`` and ``small``: its two canvases' detections, ``(n, 15)``
        float32); starts a run on the reduced canvas when the two agree, and returns ``full`` either way.
        ``continues``: the anchor continues the consecutive frames of the last one (same shot, no gap), whose
        faces' offsets are then averaged in."""
        before, self.run = (self.run if continues else None), None
        if len(full) != len(small):
            return full
        sides = np.maximum(full[:, 2] - full[:, 0], full[:, 3] - full[:, 1]) * self.scale
        iou = iou_matrix(small[:, :4], full[:, :4])
        pair = iou.argmax(axis=1) if len(full) else np.zeros(0, int)
        if (np.all(sides >= MIN_REDUCED_FACE_PX) and len(set(pair.tolist())) == len(pair)
                and np.all(iou[np.arange(len(pair)), pair] >= 0.5)):
            self.run = _Run(full, small, pair, self.same_face_iou, before)
        return full


def _run_window(window: list[list], detector: FaceDetector, step, stats: ExtractStats, empty: np.ndarray,
                reduced: _ReducedCanvas) -> None:
    """Detect faces on the keyframes of ``window`` (``[frame, shot, is_keyframe, anchor]`` items; anchor: False,
    ``"first"`` of a run of frames, or ``"again"``), one batch per canvas, then feed every frame to ``step`` in
    order (frames between keyframes with no detections)."""
    if not window:
        return
    keys = [w for w in window if w[2]]
    found: dict[int, np.ndarray] = {}

    def detect(items: list[list], size: int | None = None) -> list[np.ndarray]:
        return detector.detect([w[0].image for w in items], size) if items else []

    t0 = time.perf_counter()
    if not reduced.size:
        found.update(zip(map(id, keys), detect(keys)))
    else:
        anchors = [w for w in keys if w[3]]
        full_dets = dict(zip(map(id, anchors), detect(anchors)))
        small_dets = dict(zip(map(id, anchors), detect(anchors, reduced.size)))
        on_small: list[tuple[list, _Run]] = []
        on_full: list[list] = []
        for w in keys:  # in frame order: an anchor decides the canvas of the keyframes after it
            if w[3]:
                found[id(w)] = reduced.anchor(full_dets[id(w)], small_dets[id(w)], continues=w[3] == "again")
            elif reduced.run is not None:
                on_small.append((w, reduced.run))
            else:
                on_full.append(w)
        found.update(zip(map(id, on_full), detect(on_full)))
        lost = []
        for (w, run), dets in zip(on_small, detect([w for w, _ in on_small], reduced.size)):  # in frame order
            moved = run.follow(dets)
            if moved is None:
                lost.append(w)
            else:
                found[id(w)] = moved
        found.update(zip(map(id, lost), detect(lost)))
        stats.n_reduced_frames += len(on_small)
        stats.n_redetected_frames += len(lost)
    stats.detect_s += time.perf_counter() - t0
    stats.n_detected_frames += len(keys)
    for w in window:
        step(w[0], w[1], found[id(w)] if w[2] else empty)


def _median_window(values: np.ndarray, pos: int, half: int) -> float:
    lo, hi = max(0, pos - half), min(len(values), pos + half + 1)
    return float(np.median(values[lo:hi]))


def _crop_row(em: _Emitter, pos: int, frame: DecodedFrame, half: int, vcfg: VisionConfig,
              landmarker: LipLandmarker | None) -> dict:
    """Face crop, lips (``landmarker`` None: none) and mouth crop of position ``pos`` of a track (``frame`` is its
    frame); the track's geometry up to ``pos + half`` must be final (tracks only append)."""
    t = em.track
    lo, hi = max(0, pos - half), min(len(t.frames), pos + half + 1)
    boxes = np.asarray(t.boxes[lo:hi], np.float64)
    kps = np.asarray(t.kps[lo:hi], np.float64)
    p = pos - lo
    cx = _median_window((boxes[:, 0] + boxes[:, 2]) / 2, p, half)
    cy = _median_window((boxes[:, 1] + boxes[:, 3]) / 2, p, half)
    size = _median_window(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]), p, half)
    eye_roll = 0.0
    if (vcfg.align_roll or landmarker is not None) and np.any(kps[:, :4]):
        eye_roll = _median_window(np.array([roll_from_eyes(k) for k in kps]), p, half)
    roll = eye_roll if vcfg.align_roll else 0.0
    fa = face_affine((cx, cy), size, roll, crop_scale=vcfg.crop_scale, out_size=vcfg.face_crop_size)
    face = warp(frame.image, fa, vcfg.face_crop_size)
    # the landmark network expects an upright face (FaceMesh's graph levels the eyes too), whatever the crops do
    lips = None if landmarker is None else landmarker.lips(frame.image, landmark_affine((cx, cy), size, eye_roll))
    k = np.asarray(t.kps[pos], np.float64).reshape(5, 2)
    if lips is not None:
        mouth_c = lips[: len(lips) // 2].mean(axis=0)  # centre of the outer contour
    elif np.any(k):
        mouth_c = k[3:5].mean(axis=0)
    else:  # no points at all: the mouth sits about a third of the box below its centre
        mouth_c = np.array([cx, cy + size * 0.3])
    ma = mouth_affine((mouth_c[0], mouth_c[1]), size * vcfg.mouth_crop_scale, roll, out_size=vcfg.mouth_crop_size)
    mouth = warp(frame.image, ma, vcfg.mouth_crop_size)
    score = t.scores[pos]
    return {
        "track_id": "",
        "shot_index": t.shot_index,
        "frame_index": frame.index,
        "pts_ms": frame.pts_ms,
        "box_xyxy": [float(v) for v in t.boxes[pos]],
        "det_score": None if np.isnan(score) else float(score),
        "interpolated": bool(np.isnan(score)),
        "kps_xy": [float(v) for v in t.kps[pos]],
        "roll_deg": float(roll),
        "lip_xy": None if lips is None else [float(v) for v in lips.ravel()],
        "landmarks_ok": lips is not None,
        "face_affine": [float(v) for v in fa.ravel()],
        "mouth_affine": [float(v) for v in ma.ravel()],
        "face_crop": encode_image(face, vcfg.image_format, vcfg.image_quality),
        "mouth_crop": encode_image(mouth, vcfg.image_format, vcfg.image_quality),
    }


def iter_face_frames(frames_path: str | Path, track_id: str | None = None):
    """The rows of a faces Parquet file as :class:`FaceFrame` records (without the images), in file order.

    Args:
        track_id: only this track (row groups of other tracks are skipped by Parquet statistics).
    """
    cols = [n for n in FRAMES_SCHEMA.names if n not in ("face_crop", "mouth_crop", "face_affine", "mouth_affine", "shot_index", "kps_xy")]
    filters = [("track_id", "=", track_id)] if track_id else None
    for r in pq.read_table(str(frames_path), columns=cols, filters=filters).to_pylist():
        lips = r["lip_xy"] or []
        yield FaceFrame(
            track_id=r["track_id"],
            frame_index=r["frame_index"],
            pts_ms=r["pts_ms"],
            box_xyxy=tuple(r["box_xyxy"]),
            det_score=r["det_score"],
            interpolated=r["interpolated"],
            roll_deg=r["roll_deg"],
            lip_xy=tuple((lips[i], lips[i + 1]) for i in range(0, len(lips), 2)),
            landmarks_ok=r["landmarks_ok"],
        )
