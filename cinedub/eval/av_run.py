"""Run the declared pipeline on the shared audio-visual cases and time the new cues (benchmark and tests).

:func:`run_case` runs :data:`cinedub.pipeline.PIPELINE` on one source up to the fused timeline (records of an
earlier run in the same output folder are reused: their keys cover every input), and reads back what the fusion
decided (``fusion.json`` in the fuse step's artifacts). :func:`cue_cost` times the face-identity and fuse steps
again, in this process, so the cost of identity + synchrony is measured on CPU time.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path

from cinedub.config import Config
from cinedub.diarization.records import DiarizationResult
from cinedub.ops.fusion import FusionResult
from cinedub.pipeline import execute_step, run_source
from cinedub.types import ShotList, Source
from cinedub.vision.records import AsdResult, FaceIdentityResult, FaceTrackList


@dataclass(frozen=True)
class CaseRecords:
    """The records of one source's run (None where the stage did not run)."""

    source: Source
    diarization: DiarizationResult
    audio_16k: str
    shots: ShotList | None
    faces: FaceTrackList | None
    asd: AsdResult | None
    identities: FaceIdentityResult | None


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


def run_case(media_path: str | Path, out: str | Path, cfg: Config) -> tuple[CaseRecords, FusionResult, object]:
    """The pipeline on one source up to the fused timeline; returns its records, the fusion's evidence and the
    :class:`cinedub.pipeline.RunResult` (its ``plan`` names every step).

    Attribution does not depend on the language: speech outside ``cfg.languages`` (the talk-show cases are detected
    as several languages at low probability) is transcribed rather than skipped, so every case reaches fusion."""
    cfg = cfg.model_copy(update={"asr": cfg.asr.model_copy(update={"other_languages": "transcribe"})})
    run = run_source(media_path, out, cfg, until="timeline", reuse=True)
    get = run.records.get
    rec = CaseRecords(run["ingest"].source, run["diarization"], run["tracks"].analysis_audio, get("shots"), get("faces"),
                      get("asd"), get("identities"))
    fusion = FusionResult.from_json(run.plan.step("timeline").artifacts_dir / "fusion.json")
    return rec, fusion, run


def cue_cost(run) -> CueCost:
    """Run the face-identity and fuse steps of ``run``'s plan again and time them (CPU and wall)."""
    plan = run.plan
    t0, c0 = time.perf_counter(), _cpu()
    has_faces = any(s.output == "identities" for s in plan.steps)
    if has_faces:
        execute_step(plan, plan.step("identities"))
    t1, c1 = time.perf_counter(), _cpu()
    execute_step(plan, plan.step("timeline"))
    t2, c2 = time.perf_counter(), _cpu()
    fusion = FusionResult.from_json(plan.step("timeline").artifacts_dir / "fusion.json")
    n = FaceIdentityResult.from_json(plan.step("identities").record_path).n_descriptors if has_faces else 0
    return CueCost(round(t1 - t0, 3), round(c1 - c0, 3), fusion.sync_wall_s, round(t2 - t1, 3), round(c2 - c1, 3), n)


# The shared audio-visual dev set (paths relative to ../shared/media): name -> (media, reference RTTM or None,
# truth JSON or None, clip name inside a groups truth file). "video+audio" media are muxed first; "built:" cases
# are edited at run time from footage the attribution was not tuned on (cinedub.eval.av_heldout).
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
    # held out: never used to choose a default (see cinedub.eval.av_heldout)
    "heldout_twoshot": ("built:heldout_twoshot", "built", "built", None),
    "heldout_reaction": ("built:heldout_reaction", "built", "built", None),
}
HELDOUT_CASES = ("heldout_twoshot", "heldout_reaction")
# Long cases (benchmark only, minutes each on 2 cores): the same people recurring over a longer source
LONG_CASES = {"dialogue_5shots_x10": ("dialogue_5shots", 10)}


@dataclass(frozen=True)
class CaseFiles:
    """The files of one case: its video, reference RTTM and truth JSON (None where it has none), and the clip name
    inside a groups truth file."""

    video: Path
    rttm: Path | None
    truth: Path | None
    key: str | None


def case_files(name: str, media: Path, tmp: Path) -> CaseFiles:
    """The files of the case ``name`` (a key of :data:`AV_CASES` or :data:`LONG_CASES`); muxed or built cases are
    made once in ``tmp``.

    Raises:
        KeyError: unknown case.
    """
    if name in LONG_CASES:
        from cinedub.eval.av_heldout import build_repeated

        base, times = LONG_CASES[name]
        f = case_files(base, media, tmp)
        video, ref, tr = build_repeated(name, f.video, f.rttm, f.truth, times, tmp / "long")
        return CaseFiles(video, ref, tr, None)
    spec, rttm, truth, key = AV_CASES[name]
    if spec.startswith("built:"):
        from cinedub.eval.av_heldout import build_case

        video, ref, tr = build_case(spec.removeprefix("built:"), media, tmp / "heldout")
        return CaseFiles(video, ref, tr, None)
    return CaseFiles(media_file(media, spec, tmp), media / rttm if rttm else None, media / truth if truth else None, key)


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
