"""Evaluation of audio-visual speaker attribution: DER/JER, speaker count, face per frame, one id per person.

Inputs: a source's reference RTTM (optional: the group clips have none), a truth JSON of on-screen positions and the
fused timeline (a :class:`~cinedub.diarization.records.DiarizationResult` whose exclusive turns carry
``face_track_id``) with the faces stage's record (boxes per frame). Truth formats (``../shared/media``):

- ``{"shots_s": [[a, b], ...], "turns": [{"speaker", "start", "end", "on_screen"}]}`` (``twoshot_dev``,
  ``dialogue_5shots``): ``on_screen`` is "left", "right", "center" or null (off screen).
- ``asd_groups.truth.json``: ``{"slot_width_px", "groups": {name: {"speaking_slot"}}, "reactions": {name: ...}}``:
  in the clip ``name`` the face in slot ``speaking_slot`` (0-based from the left) speaks all speech; in a reaction
  clip no visible face speaks. Its reference frames are the hypothesis's speech (there is no reference RTTM).

Face attribution is scored per video frame of reference speech: the position of the hypothesis's face (the box of
the exclusive turn's ``face_track_id`` at that frame) must equal the truth's. A position is the face's slot
(``x_centre // slot_width_px``) for group clips, else its rank among the faces on screen at that frame: alone
"center", otherwise the leftmost "left", the rightmost "right", any between "center". A frame whose truth is null is
right when the hypothesis shows no face. DER/JER use :func:`cinedub.eval.diarization.score` (collar convention
there).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from cinedub.diarization.records import DiarizationResult
from cinedub.types import Turn
from cinedub.vision.records import FaceTrackList


@dataclass(frozen=True)
class Truth:
    """Normalised truth: shots (ms), reference turns with their on-screen position, and how positions are named."""

    shots_ms: tuple[tuple[int, int], ...]
    turns: tuple[tuple[int, int, str, str | None], ...]  # (start_ms, end_ms, speaker, position)
    slot_width_px: float | None = None  # group clips: positions are slots
    whole_clip_position: str | None = None  # group / reaction clips: the position during all hypothesis speech
    whole_clip: bool = False


def load_truth(path: str | Path, name: str | None = None) -> Truth:
    """Read a truth JSON (either format of the module docstring); ``name`` picks the clip of a groups file.

    Raises:
        ValueError: unknown format, or ``name`` missing from a groups file (the message lists the names).
    """
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if "turns" in data:
        shots = tuple((int(round(a * 1000)), int(round(b * 1000))) for a, b in data.get("shots_s", []))
        turns = tuple((int(round(t["start"] * 1000)), int(round(t["end"] * 1000)), str(t["speaker"]), t.get("on_screen"))
                      for t in data["turns"])
        return Truth(shots, turns)
    if "groups" in data or "reactions" in data:
        clips = {**data.get("groups", {}), **data.get("reactions", {})}
        if name not in clips:
            raise ValueError(f"{path}: no clip {name!r} (has {', '.join(sorted(clips))})")
        slot = clips[name].get("speaking_slot")
        return Truth((), (), float(data.get("slot_width_px", 224)), None if slot is None else str(slot), True)
    raise ValueError(f"{path}: not a known truth format (needs 'turns' or 'groups'/'reactions')")


@dataclass(frozen=True)
class ShotAccuracy:
    """Face attribution over one shot's reference speech frames."""

    shot: int
    frames: int
    correct: int
    wrong_face: int
    no_face: int
    no_speech: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.frames if self.frames else float("nan")


@dataclass(frozen=True)
class SpeakerIds:
    """Which hypothesis speaker id and face identity a reference speaker gets in each shot (majority of frames)."""

    speaker: str
    speaker_ids: dict[int, str | None]
    face_identity_ids: dict[int, str | None]
    one_id: bool
    one_face_identity: bool | None


@dataclass(frozen=True)
class AvScores:
    """The table row of one source (``der``/``jer`` None without a reference RTTM)."""

    der: float | None
    jer: float | None
    ref_speakers: int | None
    hyp_speakers: int
    accuracy: float
    shots: tuple[ShotAccuracy, ...]
    speakers: tuple[SpeakerIds, ...] = field(default_factory=tuple)
    der_line: str | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["shots"] = [{**asdict(s), "accuracy": s.accuracy} for s in self.shots]
        return d


class _Boxes:
    """Face boxes per (track, frame time) from the faces Parquet, and the faces on screen at a time."""

    def __init__(self, faces: FaceTrackList, frames_path: str | Path | None = None):
        t = pq.read_table(str(frames_path or faces.frames_path), columns=["track_id", "pts_ms", "box_xyxy"]).to_pydict()
        self.frame_ms = 1000.0 / float(faces.fps)
        self.by_time: dict[int, dict[str, float]] = {}
        for tid, pts, box in zip(t["track_id"], t["pts_ms"], t["box_xyxy"]):
            self.by_time.setdefault(self._key(pts), {})[tid] = (box[0] + box[2]) / 2

    def _key(self, ms: float) -> int:
        return int(round(ms / self.frame_ms))

    def position(self, track_id: str, ms: float, slot_width_px: float | None) -> str | None:
        """The track's position at ``ms`` (None when it has no box in that frame)."""
        here = self.by_time.get(self._key(ms), {})
        if track_id not in here:
            return None
        x = here[track_id]
        if slot_width_px:
            return str(int(x // slot_width_px))
        xs = sorted(here.values())
        if len(xs) == 1 or xs[0] < x < xs[-1]:
            return "center"
        return "left" if x == xs[0] else "right"


def _at(turns: list[Turn], ms: float) -> Turn | None:
    for t in turns:
        if t.start_ms <= ms < t.end_ms:
            return t
    return None


def _majority(values: list) -> object:
    vals = [v for v in values if v is not None]
    return Counter(vals).most_common(1)[0][0] if vals else None


def evaluate(
    truth: Truth,
    hypothesis: DiarizationResult,
    faces: FaceTrackList | None,
    *,
    reference: list[Turn] | None = None,
    collar_s: float = 0.25,
    frames_path: str | Path | None = None,
) -> AvScores:
    """Score one source (see the module docstring)."""
    from cinedub.eval.diarization import score

    boxes = _Boxes(faces, frames_path) if faces is not None else None
    frame_ms = boxes.frame_ms if boxes else 40.0
    excl = sorted(hypothesis.exclusive_turns, key=lambda t: t.start_ms)
    shots = list(truth.shots_ms) or [(0, hypothesis.duration_ms or max((t.end_ms for t in excl), default=0))]
    if truth.whole_clip:
        ref = [(t.start_ms, t.end_ms, "SPEAKER", truth.whole_clip_position) for t in excl]
    else:
        ref = list(truth.turns)
    counts = {i: Counter() for i in range(len(shots))}
    per_speaker: dict[str, dict[int, tuple[list, list]]] = {}
    for a, b, spk, pos in ref:
        for f in range(int(np.ceil(a / frame_ms)), int(np.ceil(b / frame_ms))):
            ms = f * frame_ms
            shot = next((i for i, (s, e) in enumerate(shots) if s <= ms < e), None)
            if shot is None:
                continue
            hyp = _at(excl, ms)
            got = None
            if hyp is not None and hyp.face_track_id and boxes is not None:
                got = boxes.position(hyp.face_track_id, ms, truth.slot_width_px)
            if pos is None:
                kind = "correct" if not (hyp and hyp.face_track_id) else "wrong_face"
            elif hyp is None:
                kind = "no_speech"
            elif got is None:
                kind = "no_face"
            else:
                kind = "correct" if got == pos else "wrong_face"
            counts[shot][kind] += 1
            ids, faces_ = per_speaker.setdefault(spk, {}).setdefault(shot, ([], []))
            ids.append(hyp.speaker_id if hyp else None)
            faces_.append(hyp.face_identity_id if hyp and hyp.face_track_id else None)
    shot_acc = tuple(ShotAccuracy(i, sum(c.values()), c["correct"], c["wrong_face"], c["no_face"], c["no_speech"])
                     for i, c in counts.items() if sum(c.values()))
    majority = {spk: {shot: (_majority(v[0]), _majority(v[1])) for shot, v in by.items()}
                for spk, by in per_speaker.items()}
    speakers = []
    for spk, by in sorted(majority.items()):
        ids = {s: v[0] for s, v in by.items()}
        fids = {s: v[1] for s, v in by.items()}
        others = {v[0] for o, ob in majority.items() if o != spk for v in ob.values()}
        one = len(set(ids.values())) == 1 and None not in ids.values() and not (set(ids.values()) & others)
        known = [f for f in fids.values() if f is not None]
        speakers.append(SpeakerIds(spk, ids, fids, one, (len(set(known)) == 1) if known else None))
    der = jer = line = None
    if reference is not None:
        s = score(reference, list(hypothesis.turns), collar_s=collar_s)
        der, jer, line = s.der, s.jer, s.line()
    total = sum(s.frames for s in shot_acc)
    return AvScores(
        der=der, jer=jer, ref_speakers=len({t.speaker_id for t in reference}) if reference is not None else None,
        hyp_speakers=hypothesis.num_speakers, accuracy=sum(s.correct for s in shot_acc) / total if total else float("nan"),
        shots=shot_acc, speakers=tuple(speakers), der_line=line,
    )


def report(name: str, s: AvScores) -> str:
    """Human-readable lines for one source."""
    der = f"DER {100 * s.der:.1f}% JER {100 * s.jer:.1f}%" if s.der is not None else "DER n/a (no reference RTTM)"
    lines = [f"{name}: {der} | speakers ref {s.ref_speakers if s.ref_speakers is not None else '?'} hyp {s.hyp_speakers}"
             f" | face per frame {100 * s.accuracy:.1f}%"]
    for sh in s.shots:
        lines.append(f"  shot {sh.shot + 1}: {100 * sh.accuracy:.1f}% of {sh.frames} speech frames "
                     f"(wrong face {sh.wrong_face}, no face {sh.no_face}, no speech {sh.no_speech})")
    for sp in s.speakers:
        ids = ", ".join(f"shot {k + 1}: {v}" for k, v in sorted(sp.speaker_ids.items()))
        lines.append(f"  {sp.speaker}: {'one id' if sp.one_id else 'NOT one id'} ({ids}); face identity "
                     f"{'one' if sp.one_face_identity else 'n/a' if sp.one_face_identity is None else 'NOT one'}")
    return "\n".join(lines)


def evaluate_files(
    truth_path: str | Path,
    hypothesis_path: str | Path,
    *,
    faces_path: str | Path | None = None,
    rttm_path: str | Path | None = None,
    name: str | None = None,
    uri: str | None = None,
    collar_s: float = 0.25,
) -> tuple[AvScores, str]:
    """:func:`evaluate` on files: the truth JSON, the fused timeline JSON (``fuse-*.json``), the faces record
    (``faces-*.json``; without it every frame counts as "no face"), the reference RTTM. ``name`` (default: the
    hypothesis RTTM's uri or the file stem) picks the clip of a groups truth file.

    Returns:
        The scores and :func:`report`'s text.
    """
    from cinedub.diarization.rttm import read_rttm

    hyp = DiarizationResult.from_json(hypothesis_path)
    faces = FaceTrackList.from_json(faces_path) if faces_path else None
    ref = read_rttm(rttm_path, uri) if rttm_path else None
    label = name or (Path(rttm_path).stem if rttm_path else Path(hypothesis_path).stem)
    truth = load_truth(truth_path, name or label)
    scores = evaluate(truth, hyp, faces, reference=ref, collar_s=collar_s)
    return scores, report(label, scores)
