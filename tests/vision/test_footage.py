"""Decoding, timestamps, crops and detection on real footage at 30, 23.976 and VFR 29.97 fps, portrait HEVC and a
rotated file; the SCRFD batch path against InsightFace's own detector; the mediapipe fallback."""

from __future__ import annotations

import subprocess
from fractions import Fraction

import numpy as np
import pyarrow.parquet as pq
import pytest

from cinedub.vision.config import VisionConfig
from cinedub.vision.decode import iter_frames, video_info
from cinedub.vision.detect import MediapipeDetector, build_detector
from cinedub.vision.extract import extract_faces
from cinedub.vision.landmarks import decode_image, warp


def _frames_by_index(path, indices) -> dict[int, np.ndarray]:
    """Frames decoded independently of the pipeline (sequential PyAV, counting), by index."""
    import av

    want, out = set(indices), {}
    with av.open(str(path)) as c:
        for i, f in enumerate(c.decode(c.streams.video[0])):
            if i in want:
                out[i] = f.to_ndarray(format="bgr24")
            if i >= max(want):
                break
    return out


def _check_crops_match_their_frame(path, rows, vcfg) -> int:
    """Each checked crop is closest to a re-crop of its own frame, not of a neighbour; returns frames checked."""
    rows = rows[2:-2:5]
    idx = {r["frame_index"] + d for r in rows for d in (-2, -1, 0, 1, 2)}
    frames = _frames_by_index(path, idx)
    checked = 0
    for r in rows:
        crop = decode_image(r["face_crop"]).astype(np.float32)
        m = np.asarray(r["face_affine"], np.float64).reshape(2, 3)
        diff = {d: np.abs(warp(frames[r["frame_index"] + d], m, vcfg.face_crop_size) - crop).mean() for d in (-2, -1, 0, 1, 2)}
        assert diff[0] < 3.0, diff  # JPEG q90 noise only
        nearest_other = min(diff[d] for d in (-2, -1, 1, 2))
        assert diff[0] <= nearest_other + 0.01, (r["frame_index"], diff)  # ties only for repeated frames
        if nearest_other > 1.02 * diff[0]:  # neighbours differ: the match is unambiguous
            checked += 1
    return checked


@pytest.mark.parametrize(
    "rel, fps, span",
    [("en_monologue/englishvideo.mp4", Fraction(30), (3000, 5000)),
     ("en_film_titanic/test1.mp4", Fraction(24000, 1001), (0, 2600))],
)
def test_timestamps_and_crops_match_source_frames(media_dir, vcfg, detector, landmarker, tmp_path, shot_tools, rel, fps,
                                                  span):
    path = media_dir / rel
    assert video_info(path).fps == fps
    frames = list(iter_frames(path, [span]))
    assert len(frames) >= int((span[1] - span[0]) * fps / 1000) - 1
    for f in frames:  # every frame: pts = index / fps within 1 ms
        assert abs(f.pts_ms - f.index * 1000 / fps) <= 1.0
    shots = shot_tools[0]([(0, 58), (58, 211), (211, 482)], fps, 482) if "titanic" in rel else None
    res, _ = extract_faces(path, tmp_path / "f.parquet", source_id="x", speech_spans_ms=[span], shots=shots,
                           vcfg=vcfg, detector=detector, landmarker=landmarker)
    assert res.tracks
    if shots is not None:  # test1.shots.txt: the cut at frame 58 ends every track
        assert all(t.end_frame <= 58 or t.start_frame >= 58 for t in res.tracks)
    rows = pq.read_table(res.frames_path).to_pylist()
    for r in rows:
        assert abs(r["pts_ms"] - r["frame_index"] * 1000 / fps) <= 1.0
    assert _check_crops_match_their_frame(path, rows, vcfg) >= 3


def test_vfr_source_keeps_real_timestamps(media_dir):
    path = media_dir / "zh_narration" / "10.mp4"
    info = video_info(path)
    assert info.variable_frame_rate
    frames = [(f.index, f.pts_ms) for f in iter_frames(path, [(0, 400)])]
    # the first frame lasts two frame periods (PTS 0 then 2002/30000 s): index 1 is at 67 ms, not 33 ms
    assert frames[:3] == [(0, 0), (1, 67), (2, 100)]
    sub = [(f.index, f.pts_ms) for f in iter_frames(path, [(5000, 5400), (9000, 9300)])]
    full = [(f.index, f.pts_ms) for f in iter_frames(path)]
    assert sub == [x for x in full if 5000 <= x[1] < 5400 or 9000 <= x[1] < 9300]


def test_narration_has_no_faces(media_dir, vcfg, detector, landmarker, tmp_path):
    """Voice-over over space footage. The media README says "no faces", but one 0.7 s insert (1.77-2.44 s)
    shows a man facing the camera (checked by eye): that is the only face allowed."""
    res, stats = extract_faces(media_dir / "zh_narration" / "10.mp4", tmp_path / "f.parquet", source_id="z",
                               speech_spans_ms=None, shots=None, vcfg=vcfg, detector=detector, landmarker=landmarker)
    assert stats.n_frames == 299
    assert res.n_frames_with_face <= 0.1 * stats.n_frames
    assert all(1700 <= t.start_ms and t.end_ms <= 2500 for t in res.tracks)
    assert pq.read_table(res.frames_path).num_rows == sum(t.n_frames for t in res.tracks)


def _assert_upright(rows, vcfg, min_rows: int):
    assert len(rows) >= min_rows
    for r in rows[::5]:
        face = decode_image(r["face_crop"])
        assert face.shape == (vcfg.face_crop_size, vcfg.face_crop_size, 3)
        m = np.asarray(r["face_affine"]).reshape(2, 3)
        k = np.asarray(r["kps_xy"]).reshape(5, 2) @ m[:, :2].T + m[:, 2]
        assert max(k[0, 1], k[1, 1]) < k[2, 1] < min(k[3, 1], k[4, 1])  # eyes above nose above mouth in the crop
        assert r["landmarks_ok"]
        lips = np.asarray(r["lip_xy"]).reshape(-1, 2) @ m[:, :2].T + m[:, 2]
        assert lips[:, 1].mean() > k[2, 1]  # lips below the nose


def test_portrait_hevc(media_dir, vcfg, detector, landmarker, tmp_path):
    path = media_dir / "vertical_hevc" / "vlog_ru_vertical.mp4"
    info = video_info(path)
    assert (info.width, info.height, info.rotation_deg) == (1080, 1920, 0)
    res, stats = extract_faces(path, tmp_path / "f.parquet", source_id="v", speech_spans_ms=[(1000, 3000)],
                               shots=None, vcfg=vcfg, detector=detector, landmarker=landmarker)
    assert res.n_frames_with_face >= 0.95 * stats.n_frames
    _assert_upright(pq.read_table(res.frames_path).to_pylist(), vcfg, 45)


def test_rotated_container_is_decoded_upright(media_dir, vcfg, detector, landmarker, tmp_path):
    src = media_dir / "en_monologue" / "englishvideo.mp4"
    rot = tmp_path / "rot90.mp4"
    # pixels stored turned clockwise (as a phone held sideways records them), the display matrix turns them back
    turned = tmp_path / "turned.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-t", "1.5", "-an", "-vf", "transpose=1",
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", str(turned)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(turned), "-c", "copy", "-metadata:s:v:0", "rotate=90",
                    str(rot)], check=True)
    ref = tmp_path / "ref.png"  # ffmpeg's own autorotated first frame
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(rot), "-frames:v", "1", str(ref)], check=True)
    import cv2

    info = video_info(rot)
    assert (info.width, info.height, info.rotation_deg) == (1080, 720, 90)
    first = next(iter(iter_frames(rot)))
    assert first.image.shape == (720, 1080, 3)
    assert np.abs(first.image.astype(int) - cv2.imread(str(ref))).mean() < 2.0
    res, _ = extract_faces(rot, tmp_path / "f.parquet", source_id="r", speech_spans_ms=None, shots=None,
                           vcfg=vcfg, detector=detector, landmarker=landmarker)
    _assert_upright(pq.read_table(res.frames_path).to_pylist(), vcfg, 30)


def test_batched_scrfd_equals_insightface(media_dir, models_dir):
    from cinedub.vision.detect import ScrfdDetector

    det = ScrfdDetector(models_dir / "scrfd-500m" / "scrfd_500m_bnkps.onnx", det_size=640, batch_size=8)
    imgs = [f.image for f in iter_frames(media_dir / "dialogue_5shots" / "dialogue_5shots.mp4",
                                         [(0, 120), (9000, 9120), (14000, 14120), (26000, 26080)])]
    assert len(imgs) == 11
    ours = det.detect(imgs)  # two batches, faces of different people
    for img, got in zip(imgs, ours):
        boxes, kps = det.model.detect(img, input_size=(640, 640))
        assert len(got) == len(boxes) == 1
        np.testing.assert_allclose(got[:, :5], boxes, atol=0.05)
        np.testing.assert_allclose(got[:, 5:], kps.reshape(len(kps), -1), atol=0.05)


def test_mediapipe_fallback_when_scrfd_is_missing(media_dir, tmp_path):
    det = build_detector(VisionConfig(), tmp_path)  # no scrfd-500m folder here
    assert isinstance(det, MediapipeDetector)
    img = next(iter(iter_frames(media_dir / "dialogue_5shots" / "dialogue_5shots.mp4", [(9000, 9040)]))).image
    (face,) = det.detect([img])
    assert len(face) == 1
    x1, y1, x2, y2 = face[0, :4]
    assert 150 < (x1 + x2) / 2 < 450 and 100 < (y1 + y2) / 2 < 500  # the centred speaker
    with pytest.raises(Exception):
        build_detector(VisionConfig(fallback_to_mediapipe=False), tmp_path)


def test_asd_on_a_30fps_monologue(media_dir, vcfg, detector, landmarker, asd_net, tmp_path):
    """Scoring resamples 30 fps tracks to Light-ASD's 25 fps and maps scores back to every source frame."""
    from cinedub.media import extract_audio, load_audio
    from cinedub.vision.asd import score_tracks

    video = media_dir / "en_monologue" / "englishvideo.mp4"
    audio = extract_audio(video, tmp_path / "a.flac")
    res, _ = extract_faces(video, tmp_path / "f.parquet", source_id="m", speech_spans_ms=None, shots=None,
                           vcfg=vcfg, detector=detector, landmarker=landmarker)
    statuses, scores = score_tracks(asd_net, res.frames_path, res.tracks, audio, fps=res.fps, vcfg=vcfg)
    assert [s.status for s in statuses] == ["scored"] and len(scores[0].pts_ms) == res.tracks[0].n_frames
    x, sr = load_audio(audio)
    level = np.array([10 * np.log10(np.mean(x[int(p * 16):int((p + 33) * 16)] ** 2) + 1e-12) for p in scores[0].pts_ms])
    speaking = scores[0].score >= vcfg.asd_threshold
    # the speech is about 25% of the 10 s (-36..-25 dBFS); the rest is near-silence (< -55 dBFS)
    print(f"\nmonologue: speaking in {speaking[level > -40].mean():.1%} of speech frames, "
          f"{speaking[level < -55].mean():.1%} of silent frames")
    assert speaking[level > -40].mean() >= 0.9
    assert speaking[level < -55].mean() <= 0.4


@pytest.mark.parametrize("rel,span,cuts", [
    ("dialogue_5shots/dialogue_5shots.mp4", (0, 16000), True),  # three hard cuts, talking heads
    ("en_monologue/englishvideo.mp4", (0, 9900), False),  # a 30 fps webcam: head and hands move
])
def test_sparse_detection_keeps_recall_and_boxes(media_dir, models_dir, landmarker, tmp_path, shot_tools, rel, span,
                                                 cuts):
    """The sparse schedule (detect every 200 ms, track in between; the default with keyframes all at full size, and
    with the reduced canvas while the faces are large) finds the faces of detecting every frame at full size: the
    same tracks and frames, and lips on every tracked frame. Its boxes are those of detecting every frame at full
    size within a few % of the side, with the reduced canvas too: the reduced keyframes take the full canvas's
    geometry (the two canvases place SCRFD's boxes 2-4 % of the side apart, printed)."""
    vcfg = VisionConfig(track_det_size=320)  # the production canvas (640), with reduced keyframes at 320
    detector = build_detector(vcfg, models_dir)
    path = media_dir / rel
    shots = shot_tools[1](path) if cuts else None
    runs = {}
    for name, update in [("dense", {"detect_every_ms": 0, "track_det_size": 0}),
                         ("dense_reduced", {"detect_every_ms": 0, "track_det_size": 0, "det_size": 320}),
                         ("sparse_full", {"track_det_size": 0}),
                         ("sparse", {})]:
        cfg = vcfg.model_copy(update=update)
        res, stats = extract_faces(path, tmp_path / f"{name}.parquet", source_id="s", speech_spans_ms=[span],
                                   shots=shots, vcfg=cfg, detector=build_detector(cfg, models_dir)
                                   if cfg.det_size != vcfg.det_size else detector, landmarker=landmarker)
        rows = pq.read_table(res.frames_path, columns=["frame_index", "box_xyxy", "landmarks_ok"]).to_pylist()
        runs[name] = (res, stats, {r["frame_index"]: r for r in rows})
    dense, sparse = runs["dense"], runs["sparse"]
    assert sparse[1].n_detected_frames <= 0.3 * dense[1].n_detected_frames
    assert dense[1].n_reduced_frames == 0 and runs["sparse_full"][1].n_reduced_frames == 0
    assert sparse[1].n_reduced_frames >= 0.5 * sparse[1].n_detected_frames  # the reduced path is what runs
    for name in ("sparse_full", "sparse"):
        assert len(runs[name][0].tracks) == len(dense[0].tracks), name
        # recall: frames with a tracked face, relative to every-frame detection at full size
        assert runs[name][0].n_frames_with_face >= 0.98 * dense[0].n_frames_with_face, name

    def box_error(a: dict, b: dict) -> np.ndarray:
        common = sorted(set(a) & set(b))
        return np.array([np.abs(np.subtract(a[f]["box_xyxy"], b[f]["box_xyxy"])).max() /
                         max(1.0, b[f]["box_xyxy"][2] - b[f]["box_xyxy"][0]) for f in common])

    err = box_error(sparse[2], dense[2])
    err_full = box_error(runs["sparse_full"][2], dense[2])
    canvases = box_error(runs["dense_reduced"][2], dense[2])
    print(f"\n{rel}: detections {sparse[1].n_detected_frames}/{dense[1].n_detected_frames} "
          f"({sparse[1].n_reduced_frames} reduced, {sparse[1].n_redetected_frames} again at full size), frames with "
          f"a face {sparse[0].n_frames_with_face}/{dense[0].n_frames_with_face}; box error / box side against every "
          f"frame at full size: median {np.median(err):.3f}, 95th percentile {np.quantile(err, 0.95):.3f} (keyframes "
          f"all at full size: {np.median(err_full):.3f}, {np.quantile(err_full, 0.95):.3f}); between the two "
          f"canvases: median {np.median(canvases):.3f}, 95th percentile {np.quantile(canvases, 0.95):.3f}")
    for e in (err, err_full):
        assert np.median(e) <= 0.03 and np.quantile(e, 0.95) <= 0.10
    # the reduced keyframes add at most about 1 % of the side to the schedule's error, well under the canvases' gap
    assert np.median(err) <= np.median(err_full) + 0.5 * np.median(canvases)
    assert np.mean([sparse[2][f]["landmarks_ok"] for f in sparse[2]]) >= 0.98
    if cuts:
        # the pipeline's path: the shots found in the same decoding pass (frames held until their shot is final)
        # are PySceneDetect's own, and the faces are those found with the shots given
        from cinedub.config import ShotConfig

        res, _ = extract_faces(path, tmp_path / "f-cuts.parquet", source_id="s", speech_spans_ms=[span], shots=None,
                               shot_cfg=ShotConfig(), vcfg=vcfg, detector=detector, landmarker=landmarker)
        assert res.shots is not None and res.shots.cut_frames == shots.cut_frames
        rows = pq.read_table(res.frames_path, columns=["frame_index", "box_xyxy"]).to_pylist()
        assert {r["frame_index"]: r["box_xyxy"] for r in rows} == {f: r["box_xyxy"] for f, r in sparse[2].items()}


class _LosingDetector:
    """The real detector, except that every other call on the reduced canvas loses all faces (a face the small
    canvas misses, as a turned or shrinking face would be)."""

    def __init__(self, detector):
        self.detector, self.name, self.batch_size = detector, detector.name, detector.batch_size
        self.variable_size = detector.variable_size
        self.reduced_calls = 0

    def detect(self, images, det_size=None):
        out = self.detector.detect(images, det_size)
        if det_size is not None:
            self.reduced_calls += 1
            if self.reduced_calls % 2 == 0:
                return [d[:0] for d in out]
        return out


def test_reduced_canvas_that_loses_a_face_detects_again_at_full_size(media_dir, models_dir, landmarker, tmp_path):
    """Keyframes where the reduced canvas does not find its run's faces are detected again at full size: the
    faces, tracks and tracked frames stay those of the undisturbed run."""
    vcfg = VisionConfig(track_det_size=320)
    detector = build_detector(vcfg, models_dir)
    path, span = media_dir / "dialogue_5shots" / "dialogue_5shots.mp4", [(0, 16000)]
    ref, ref_stats = extract_faces(path, tmp_path / "ref.parquet", source_id="s", speech_spans_ms=span, shots=None,
                                   vcfg=vcfg, detector=detector, landmarker=landmarker)
    losing = _LosingDetector(detector)
    res, stats = extract_faces(path, tmp_path / "lost.parquet", source_id="s", speech_spans_ms=span, shots=None,
                               vcfg=vcfg, detector=losing, landmarker=landmarker)
    assert ref_stats.n_redetected_frames == 0 and ref_stats.n_reduced_frames > 0
    assert stats.n_redetected_frames >= 10  # the windows whose reduced keyframes were all lost
    assert len(res.tracks) == len(ref.tracks)
    assert res.n_frames_with_face == ref.n_frames_with_face
    assert [(t.start_frame, t.end_frame) for t in res.tracks] == [(t.start_frame, t.end_frame) for t in ref.tracks]


@pytest.mark.parametrize("rel, span", [("dialogue_5shots/dialogue_5shots.mp4", (0, 12000)),
                                       ("av_speakers/twoshot_dev.mp4", (0, 6000))])
def test_lips_match_the_facemesh_graph(media_dir, vcfg, detector, landmarker, tmp_path, rel, span):
    """The landmark network run on the tracked face box gives the lips that mediapipe's own FaceMesh graph (tracking
    mode, one graph per track, as the faces stage ran before) finds on the same face crops: within a few percent of
    the mouth's width (about 1.5 % median when the geometry was set), on every frame."""
    import mediapipe as mp

    from cinedub.vision.landmarks import LIP_INDICES, invert_points

    assert len(set(LIP_INDICES)) == 40
    assert set(LIP_INDICES) == {i for edge in mp.solutions.face_mesh.FACEMESH_LIPS for i in edge}
    res, _ = extract_faces(media_dir / rel, tmp_path / "f.parquet", source_id="s", speech_spans_ms=[span], shots=None,
                           vcfg=vcfg, detector=detector, landmarker=landmarker)
    rows = pq.read_table(res.frames_path, columns=["track_id", "face_crop", "face_affine", "lip_xy"]).to_pylist()
    assert len(rows) >= 100 and all(r["lip_xy"] for r in rows)
    err, graph, track = [], None, None
    for r in rows:
        if r["track_id"] != track:
            if graph is not None:
                graph.close()
            graph = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=1)
            track = r["track_id"]
        crop = decode_image(r["face_crop"])
        found = graph.process(crop[:, :, ::-1].copy()).multi_face_landmarks
        assert found, r["track_id"]
        lm, n = found[0].landmark, crop.shape[0]
        ref = invert_points(np.asarray(r["face_affine"]).reshape(2, 3),
                            np.array([(lm[i].x * n, lm[i].y * n) for i in LIP_INDICES]))
        got = np.asarray(r["lip_xy"]).reshape(40, 2)
        err.append(np.linalg.norm(got - ref, axis=1).mean() / np.linalg.norm(ref[0] - ref[10]))
    graph.close()
    assert np.median(err) < 0.04 and np.percentile(err, 90) < 0.08, (np.median(err), np.percentile(err, 90))


def test_long_tracks_spill_to_disk_and_give_the_same_file(media_dir, vcfg, detector, landmarker, tmp_path, monkeypatch):
    """A track holds at most ``_SPILL_ROWS`` rows in memory (the rest wait in a file of its own until the track
    ends) and rows are written in groups of at most ``_FLUSH_BYTES``: the output is the same rows, crops included, in
    the same order, and no spill file is left behind."""
    import cinedub.vision.extract as extract

    path, span = media_dir / "dialogue_5shots" / "dialogue_5shots.mp4", [(0, 16000)]
    ref, _ = extract_faces(path, tmp_path / "ref.parquet", source_id="s", speech_spans_ms=span, shots=None,
                           vcfg=vcfg, detector=detector, landmarker=landmarker)
    monkeypatch.setattr(extract, "_SPILL_ROWS", 16)
    monkeypatch.setattr(extract, "_FLUSH_BYTES", 64 << 10)
    res, _ = extract_faces(path, tmp_path / "out" / "spilled.parquet", source_id="s", speech_spans_ms=span,
                           shots=None, vcfg=vcfg, detector=detector, landmarker=landmarker)
    a, b = pq.read_table(ref.frames_path), pq.read_table(res.frames_path)
    assert a.num_rows >= 300 and max(t.n_frames for t in ref.tracks) > 16  # a track longer than the spill size
    assert a.equals(b)
    assert res.tracks == ref.tracks
    assert pq.ParquetFile(res.frames_path).metadata.num_row_groups > pq.ParquetFile(ref.frames_path).metadata.num_row_groups
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["spilled.parquet"]


def test_landmark_network_found_in_folder_or_wheel(tmp_path):
    """``facemesh`` resolves to the models folder when it has the file, else to the installed mediapipe wheel's; a
    file that is not FaceMesh's network is refused with its path."""
    from cinedub.config import Config
    from cinedub.models import model_path
    from cinedub.vision.landmarks import LipLandmarker

    cfg = Config.load(models_dir=tmp_path)
    wheel = model_path(cfg, "facemesh")
    assert wheel.is_file() and wheel.parts[-3:] == ("modules", "face_landmark", "face_landmark.tflite")
    (tmp_path / "mediapipe-facemesh").mkdir()
    (tmp_path / "mediapipe-facemesh" / "face_landmark.tflite").write_bytes(b"not a model")
    local = model_path(cfg, "facemesh")
    assert local == tmp_path / "mediapipe-facemesh" / "face_landmark.tflite"
    with pytest.raises(ValueError, match="face_landmark.tflite"):
        LipLandmarker(local)


def test_lips_do_not_depend_on_crop_alignment(media_dir, vcfg, detector, landmarker, tmp_path):
    """The landmark network always sees the face levelled by its eyes (it expects an upright face, as FaceMesh's
    graph levels it), so turning ``align_roll`` off changes the crops, not the lips."""
    path, span = media_dir / "av_speakers" / "twoshot_dev.mp4", [(0, 3000)]
    cols = ["track_id", "frame_index", "lip_xy", "face_affine"]
    runs = {}
    for align in (True, False):
        cfg = vcfg.model_copy(update={"align_roll": align})
        res, _ = extract_faces(path, tmp_path / f"{align}.parquet", source_id="s", speech_spans_ms=span, shots=None,
                               vcfg=cfg, detector=detector, landmarker=landmarker)
        runs[align] = pq.read_table(res.frames_path, columns=cols).to_pylist()
    assert len(runs[True]) >= 50 and len(runs[True]) == len(runs[False])
    rolled = 0
    for a, b in zip(runs[True], runs[False]):
        assert (a["track_id"], a["frame_index"]) == (b["track_id"], b["frame_index"])
        assert a["lip_xy"] == b["lip_xy"]
        rolled += a["face_affine"] != b["face_affine"]
    assert rolled >= 0.5 * len(runs[True])  # the crops did change: the heads are not exactly level
