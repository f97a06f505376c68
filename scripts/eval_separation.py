"""How clean the separated vocals are (issue 11): clean shared speech (``asr/jfk.flac``, ``asr/aishell-*.wav``)
mixed with the score-only stretches of ``en_film_titanic`` at 0 and 5 dB, enhanced by the separation back-end
(DeepFilterNet 3), scored by SI-SDR against the clean speech and by Whisper's WER (English) / CER (Mandarin) on the
mix, the enhanced track and the clean speech. Method: :mod:`cinedub.eval.separation`.

    .venv/bin/python scripts/eval_separation.py [--models-dir ../shared/models] [--json rows.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CINEDUB_SHARED", REPO.parent / "shared"))
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=SHARED / "models")
    ap.add_argument("--media-dir", type=Path, default=SHARED / "media")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON")
    args = ap.parse_args()

    from cinedub.config import Config
    from cinedub.eval.separation import RATE_HZ, dfn_enhancer, evaluate, whisper_transcriber

    cfg = Config.load(models_dir=args.models_dir, device="cpu")
    enhance = dfn_enhancer(cfg)
    timing = {"audio_s": 0.0, "cpu_s": 0.0}

    def timed(x):
        t0 = time.process_time()
        y = enhance(x)
        timing["cpu_s"] += time.process_time() - t0
        timing["audio_s"] += len(x) / RATE_HZ
        return y

    rows = evaluate(args.media_dir, timed, whisper_transcriber(cfg))
    print(f"{'item':32s} {'SNR dB':>6s} {'SI-SDR mix':>10s} {'enhanced':>9s} {'gain dB':>8s} {'metric':>6s} "
          f"{'mix':>6s} {'enhanced':>8s} {'clean':>6s}")
    for r in rows:
        print(f"{r.item:32s} {r.snr_db:6.1f} {r.si_sdr_mix_db:10.2f} {r.si_sdr_enhanced_db:9.2f} "
              f"{r.si_sdr_improvement_db:+8.2f} {r.metric:>6s} {r.error_mix:6.3f} {r.error_enhanced:8.3f} "
              f"{r.error_clean:6.3f}")
    for snr in sorted({r.snr_db for r in rows}):
        at = [r for r in rows if r.snr_db == snr]
        print(f"mean at {snr:.0f} dB: SI-SDR improvement {sum(r.si_sdr_improvement_db for r in at) / len(at):+.2f} dB "
              "(target >= +8 dB at 0 dB)")
    print(f"DeepFilterNet CPU time / audio: {timing['cpu_s'] / timing['audio_s']:.3f} (one core, model load included)")
    if args.json:
        args.json.write_text(json.dumps([r.to_dict() for r in rows], indent=1, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
