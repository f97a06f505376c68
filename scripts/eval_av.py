"""Benchmark of audio-visual speaker attribution on every shared audio-visual case (issue 10's table).

For each case it runs the declared pipeline up to the fused timeline (records in ``--out`` are reused when their
keys match), times the face-identity and fuse steps again, and prints per case: DER/JER of the audio
diarization alone and after fusion, speakers found vs reference, face attribution per frame (and on shot 1),
whether each reference speaker keeps one id across shots, and what identity + synchrony cost (real-time factor on
CPU time, and wall time). ``en_2spk_audio`` has no picture: it is diarized by the diarization stage and fused
without faces (hygiene only).

    .venv/bin/python scripts/eval_av.py [--out /tmp/av-out] [--cases twoshot_dev,grp_c0] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CINEDUB_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))

def main() -> int:
    from cinedub.eval.av_run import AV_CASES

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=SHARED / "models")
    ap.add_argument("--media-dir", type=Path, default=SHARED / "media")
    ap.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "cinedub-eval-av")
    ap.add_argument("--cases", default=",".join([*AV_CASES, "en_2spk_audio"]), help="comma-separated subset")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    ap.add_argument("--separation", default="none",
                    help="separation method of the runs (none: the mix, as the tests; auto: a user's default)")
    ap.add_argument("--long", action="store_true",
                    help="also the long case: dialogue_5shots played 10 times (5 min, the same 5 people recurring)")
    args = ap.parse_args()
    os.environ.setdefault("PYANNOTE_METRICS_ENABLED", "false")
    # imported once here, as a pipeline worker has them loaded by earlier stages, so the timings are the cues' own
    import pyarrow.dataset  # noqa: F401  (parquet reads with filters)
    import scipy.optimize  # noqa: F401

    from cinedub.diarization.rttm import read_rttm
    from cinedub.eval.av import evaluate, load_truth
    from cinedub.config import Config
    from cinedub.eval.av_run import HELDOUT_CASES, LONG_CASES, audio_only_scores, case_files, cue_cost, run_case
    from cinedub.eval.diarization import score

    names = [n for n in args.cases.split(",") if n]
    args.out.mkdir(parents=True, exist_ok=True)
    if args.long:
        names = [*names, *LONG_CASES]
    files = {n: case_files(n, args.media_dir, args.out) for n in names if n in AV_CASES or n in LONG_CASES}
    cfg = Config.load(models_dir=args.models_dir, device="cpu", separation={"method": args.separation})
    rows = []
    head = (f"{'case':16s} {'DER audio':>9s} {'DER fused':>9s} {'spk ref/hyp':>11s} {'face/frame':>10s} "
            f"{'shot 1':>7s} {'one id':>7s} {'RTF id+sync':>11s} {'wall s':>7s}")
    print(head)
    for n, f in files.items():
        rttm, truth_json, key = f.rttm, f.truth, f.key
        rec, fused, run = run_case(f.video, args.out, cfg)
        cost = cue_cost(run)
        ref = read_rttm(rttm) if rttm else None
        before = score(ref, list(rec.diarization.turns)) if ref else None
        s = evaluate(load_truth(truth_json, key), fused.timeline, rec.faces, reference=ref) if truth_json \
            else None
        after = score(ref, list(fused.timeline.turns)) if ref else None
        one = "-" if s is None or not s.speakers or key else ("yes" if all(x.one_id for x in s.speakers) else "NO")
        row = dict(case=n, der_audio=before.der if before else None, der_fused=after.der if after else None,
                   ref_speakers=len({t.speaker_id for t in ref}) if ref else None, hyp_speakers=fused.timeline.num_speakers,
                   face_accuracy=s.accuracy if s else None, shot1_accuracy=s.shots[0].accuracy if s and s.shots else None,
                   one_id=one, rtf=cost.rtf(rec.source.duration_ms), identity_wall_s=cost.identity_wall_s,
                   identity_cpu_s=cost.identity_cpu_s, sync_wall_s=cost.sync_wall_s, fuse_cpu_s=cost.fuse_cpu_s,
                   n_descriptors=cost.n_descriptors, duration_s=rec.source.duration_ms / 1000,
                   speakers=[dict(speaker=x.speaker, ids=x.speaker_ids, one_id=x.one_id, one_face=x.one_face_identity)
                             for x in (s.speakers if s else ())])
        rows.append(row)
        pct = lambda v: f"{100 * v:.1f}%" if v is not None else "-"  # noqa: E731
        print(f"{n:16s} {pct(row['der_audio']):>9s} {pct(row['der_fused']):>9s} "
              f"{str(row['ref_speakers'] or '?') + '/' + str(row['hyp_speakers']):>11s} {pct(row['face_accuracy']):>10s} "
              f"{pct(row['shot1_accuracy']):>7s} {one:>7s} {row['rtf']:>11.3f} "
              f"{cost.identity_wall_s + cost.fuse_wall_s:>7.2f}")
    if "en_2spk_audio" in names:
        b, a = audio_only_scores(args.media_dir, args.models_dir)
        rows.append(dict(case="en_2spk_audio", der_audio=b.der, der_fused=a.der, ref_speakers=b.ref_speakers,
                         hyp_speakers=a.hyp_speakers))
        print(f"{'en_2spk_audio':16s} {100 * b.der:>8.1f}% {100 * a.der:>8.1f}% {f'{b.ref_speakers}/{a.hyp_speakers}':>11s}"
              f" {'-':>10s} {'-':>7s} {'-':>7s} {'-':>11s} {'-':>7s}")
    tot_cpu = sum(r.get("identity_cpu_s", 0) + r.get("fuse_cpu_s", 0) for r in rows)
    tot_s = sum(r.get("duration_s", 0) for r in rows)
    print(f"\nidentity + synchrony + decisions: {tot_cpu:.2f} s CPU for {tot_s:.1f} s of footage = RTF {tot_cpu / tot_s:.3f}"
          f" (descriptors: {sum(r.get('n_descriptors', 0) for r in rows)}; model load excluded)")
    print("DER: pyannote.metrics, collar 0.25 s total (+-0.125 s), overlap scored. zh_tvdrama's reference is the "
          "reference pipeline's output, not labels. Group/reaction clips: frames = the hypothesis's speech.")
    print(f"Held out (never used to choose a default; built from en_monologue + vertical_hevc): {', '.join(HELDOUT_CASES)}.")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
