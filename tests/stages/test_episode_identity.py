"""One speaker id per character across a source: a source built from real footage where a speaker comes back.

The source is dialogue_5shots cut and concatenated with ffmpeg: shot 1 (KH, 0-8 s), shot 2 (ES, 8-13.015 s), then
shot 1 again. KH's two appearances are 13 s apart and fall into different clips; they must carry the same speaker
id, and ES another one. The declared pipeline runs without Prefect up to the clips, without the visual stages
(ingest -> ASR -> shots -> diarization -> fusion -> segmentation).
"""

from __future__ import annotations

import re
import subprocess

from cinedub.pipeline import run_source


def test_returning_speaker_keeps_one_id_across_clips(cfg, media_dir, tmp_path):
    src = media_dir / "dialogue_5shots/dialogue_5shots.mp4"
    parts = [(0.0, 8.0), (8.0, 13.015), (0.0, 8.0)]
    for i, (a, b) in enumerate(parts):
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(a), "-to", str(b), "-i", str(src), "-c:v", "libx264",
                        "-preset", "ultrafast", "-c:a", "aac", "-ar", "44100", str(tmp_path / f"p{i}.mp4")], check=True)
    (tmp_path / "list.txt").write_text("".join(f"file 'p{i}.mp4'\n" for i in range(len(parts))))
    episode = tmp_path / "kh_es_kh.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(tmp_path / "list.txt"),
                    "-c", "copy", str(episode)], check=True)

    run = run_source(episode, tmp_path / "out", cfg.model_copy(update={"run_visual": False}), until="clips")
    ing, diar, clips = run["ingest"], run["diarization"], run["clips"].clips

    b1, b2 = 8000, 13015  # where the second and the third part start
    def speaker_of(lo, hi):
        ids = [w.speaker_id for c in clips for w in c.words if lo <= w.start_ms < hi and w.speaker_id]
        assert ids, f"no words between {lo} and {hi} ms"
        return max(set(ids), key=ids.count), ids

    kh1, ids1 = speaker_of(0, b1)
    es, _ = speaker_of(b1, b2)
    kh2, ids2 = speaker_of(b2, 21015)
    assert kh1 == kh2, f"KH got {kh1} then {kh2}"
    assert es != kh1
    assert ids1.count(kh1) >= 0.9 * len(ids1) and ids2.count(kh2) >= 0.9 * len(ids2)
    clips_kh = {c.index for c in clips for w in c.words if w.speaker_id == kh1}
    assert min(clips_kh) < max(clips_kh), "KH must appear in at least two clips"
    assert all(re.fullmatch(rf"{ing.source.source_id}-S\d\d", sid) for sid in diar.speaker_ids), diar.speaker_ids
