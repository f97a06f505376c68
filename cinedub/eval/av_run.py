"""Run the audio-visual attribution on a pipeline work folder and time its new cues (benchmark and tests).

A source's work folder (``<out>/.work/<source_id>/``) holds the records the stages wrote, named
``<stage>-<12 hex>.json`` (the newest of each stage is used): ``diarization``, ``faces``, ``asd``, ``shots``,
``separation`` (for the 16 kHz audio) and ``source.json``. :func:`fuse_work` runs the face-identity step and
:func:`cinedub.ops.fusion.fuse_av` on them and reports what the identity and synchrony cues cost.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cinedub.diarization.records import DiarizationResult
from cinedub.ops.av_config import AvConfig
from cinedub.ops.fusion import FusionResult, fuse_av
from cinedub.types import AudioTracks, ShotList, Source
from cinedub.vision.identity import FaceDescriber, identify_faces
from cinedub.vision.records import AsdResult, FaceIdentityResult, FaceTrackList


def _newest(work: Path, stage: str) -> Path | None:
    found = [p for p in work.glob(f"{stage}-*.json") if p.stem[len(stage) + 1 :].isalnum()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


@dataclass(frozen=True)
class WorkRecords:
    """The records of one source's work folder (None where the stage did not run)."""

    work_dir: Path
    source: Source
    diarization: DiarizationResult
    diarization_path: Path
    audio_16k: str
    shots: ShotList | None
    faces: FaceTrackList | None
    asd: AsdResult | None
    fused_path: Path | None  # the pipeline's own fuse output, if any


def load_work_records(work_dir: str | Path) -> WorkRecords:
    """Read the newest record of each stage in ``work_dir``.

    Raises:
        FileNotFoundError: no ``source.json``, diarization or separation record there (the message names the folder).
    """
    work = Path(work_dir)
    diar, sep = _newest(work, "diarization"), _newest(work, "separation")
    if not (work / "source.json").is_file() or diar is None or sep is None:
        raise FileNotFoundError(f"{work}: no source.json / diarization-*.json / separation-*.json (run the pipeline)")
    load = lambda cls, stage: cls.from_json(p) if (p := _newest(work, stage)) else None  # noqa: E731
    return WorkRecords(
        work_dir=work, source=Source.from_json(work / "source.json"), diarization=DiarizationResult.from_json(diar),
        diarization_path=diar, audio_16k=AudioTracks.from_json(sep).vocals_16k, shots=load(ShotList, "shots"),
        faces=load(FaceTrackList, "faces"), asd=load(AsdResult, "asd"), fused_path=_newest(work, "fuse"),
    )


def find_work_dir(out_dir: str | Path, media_path: str | Path) -> Path | None:
    """The work folder under ``<out_dir>/.work`` of the source with ``media_path``'s content (SHA-256, as the
    pipeline identifies sources), or None."""
    from cinedub.media import sha256_file

    digest = sha256_file(media_path)
    for src in sorted(Path(out_dir, ".work").glob("*/source.json")):
        try:
            if Source.from_json(src).sha256 == digest:
                return src.parent
        except (OSError, ValueError, KeyError):
            continue
    return None


@dataclass(frozen=True)
class CueCost:
    """Seconds spent by the new cues on one source: wall and CPU (user + system of this process)."""

    identity_wall_s: float
    identity_cpu_s: float
    sync_wall_s: float
    fuse_wall_s: float
    fuse_cpu_s: float
    n_descriptors: int

    def rtf(self, duration_ms: int) -> float:
        """Real-time factor of identity + synchrony on CPU time (wall time is inflated on a shared machine)."""
        return (self.identity_cpu_s + self.fuse_cpu_s) / max(duration_ms / 1000, 1e-9)


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fuse_work(
    rec: WorkRecords, describer: FaceDescriber | None, cfg: AvConfig | None = None, *, out_dir: str | Path | None = None
) -> tuple[FusionResult, FaceIdentityResult | None, CueCost]:
    """Face identities (with ``describer``) and :func:`fuse_av` on a work folder's records.

    Args:
        out_dir: where to write ``identity.json`` / ``identity.npy`` and ``fused.json`` (None writes nothing).
    """
    cfg = cfg or AvConfig()
    ident = None
    t0, c0 = time.perf_counter(), _cpu()
    if rec.faces is not None and describer is not None:
        npy = Path(out_dir) / "identity.npy" if out_dir else None
        ident = identify_faces(rec.faces, describer, cfg, embeddings_npy=npy)
    t1, c1 = time.perf_counter(), _cpu()
    fused = fuse_av(rec.diarization, rec.faces, rec.asd, rec.shots, ident, rec.audio_16k if rec.faces else None,
                    speaker_prefix=rec.source.source_id, cfg=cfg, diar_json_dir=rec.diarization_path.parent)
    t2, c2 = time.perf_counter(), _cpu()
    if out_dir is not None:
        os.makedirs(out_dir, exist_ok=True)
        if ident is not None:
            ident.to_json(Path(out_dir) / "identity.json")
        fused.timeline.to_json(Path(out_dir) / "fused.json")
    cost = CueCost(round(t1 - t0, 3), round(c1 - c0, 3), fused.sync_wall_s, round(t2 - t1, 3), round(c2 - c1, 3),
                   ident.n_descriptors if ident else 0)
    return fused, ident, cost


# The shared audio-visual dev set (paths relative to ../shared/media): name -> (media, reference RTTM or None,
# truth JSON or None, clip name inside a groups truth file). "video+audio" media are muxed first.
AV_CASES = {
    "twoshot_dev": ("av_speakers/twoshot_dev.mp4", "av_speakers/twoshot_dev.rttm", "av_speakers/twoshot_dev.truth.json", None),
    "grp_c0": ("av_speakers/grp_c0.mp4", None, "av_speakers/asd_groups.truth.json", "grp_c0"),
    "grp_1e": ("av_speakers/grp_1e.mp4", None, "av_speakers/asd_groups.truth.json", "grp_1e"),
    "grp_0a": ("av_speakers/grp_0a.mp4", None, "av_speakers/asd_groups.truth.json", "grp_0a"),
    "react_12": ("av_speakers/react_12.mp4", None, "av_speakers/asd_groups.truth.json", "react_12"),
    "react_13": ("av_speakers/react_13.mp4", None, "av_speakers/asd_groups.truth.json", "react_13"),
    "dialogue_5shots": ("dialogue_5shots/dialogue_5shots.mp4", "dialogue_5shots/dialogue_5shots.rttm",
                        "dialogue_5shots/dialogue_5shots.truth.json", None),
    # reference = the reference pipeline's output (not labels): only the speaker count is a target
    "zh_tvdrama": ("zh_tvdrama/sample_DEBUG.mp4+zh_tvdrama/sample.wav", "zh_tvdrama/sample.pipeline_output.rttm", None, None),
}


def media_file(media: Path, spec: str, tmp: Path) -> Path:
    """The case's video; ``video+audio`` specs are muxed once into ``tmp`` (zh_tvdrama's picture has no sound)."""
    if "+" not in spec:
        return media / spec
    video, audio = spec.split("+")
    out = tmp / (Path(video).parent.name + ".mp4")
    if not out.is_file():
        from cinedub.media import mux_video_audio

        mux_video_audio(media / video, media / audio, out)
    return out


def ensure_pipeline(inputs: list[Path], out: Path, models_dir: Path, *, repo: Path | None = None) -> None:
    """``cinedub run`` (a subprocess, separation off) on the inputs that have no work folder under ``out`` yet.

    Raises:
        subprocess.CalledProcessError: the run failed.
    """
    todo = [p for p in inputs if find_work_dir(out, p) is None]
    if todo:
        cmd = [sys.executable, "-m", "cinedub.cli", "run", *map(str, todo), "--out", str(out), "--models-dir",
               str(models_dir), "--separation", "none", "--no-progress"]
        env = {**os.environ, **({"PYTHONPATH": str(repo)} if repo else {})}
        subprocess.run(cmd, check=True, cwd=repo, env=env, stdout=subprocess.DEVNULL)


def audio_only_scores(media: Path, models_dir: Path):
    """DER of ``en_2spk_audio`` (no picture): the offline diarization alone and fused without faces (hygiene)."""
    from cinedub.config import Config
    from cinedub.diarization.rttm import read_rttm
    from cinedub.eval.diarization import score
    from cinedub.media import load_audio
    from cinedub.ops.fusion import fuse_av
    from cinedub.stages.diarization import DiarizationStage

    stage = DiarizationStage(Config.load(models_dir=models_dir, device="cpu", separation={"method": "none"}))
    wav, sr = load_audio(media / "en_2spk_audio/sample.wav")
    diar = stage.diarize_array(wav, sr, speaker_prefix="en")
    ref = read_rttm(media / "en_2spk_audio/sample.rttm")
    return score(ref, list(diar.turns)), score(ref, list(fuse_av(diar, speaker_prefix="en").timeline.turns))
