"""Frame-level faces, lips and active speaker detection (Prefect-free cores of the faces and ASD stages).

- :mod:`.decode`: single-pass PyAV reader (decode-order index, real PTS in ms, upright BGR) over ms spans.
- :mod:`.detect`: SCRFD (InsightFace ONNX, batched) and mediapipe BlazeFace (fallback).
- :mod:`.track`: IoU/motion tracker with gap tolerance, ended at every shot boundary.
- :mod:`.landmarks`: FaceMesh lip contour, aligned face crop, mouth crop, JPEG/WebP encoding.
- :mod:`.extract`: the streaming faces pipeline writing one Parquet file per source.
- :mod:`.light_asd` / :mod:`.asd`: Light-ASD rebuilt for the released weights, MFCC, track scoring, turn assignment.
- :mod:`.records` / :mod:`.config`: records and the ``VisionConfig`` section.
"""
