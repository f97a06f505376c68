"""``cinedub eval-av`` on a fused timeline of the shared footage (the command is a thin layer on cinedub.eval.av)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cinedub_cli.main import app
from cinedub.eval.av import load_truth

pytestmark = pytest.mark.slow


def test_eval_av_command(av_case, media_dir, tmp_path):
    rec, fused, ident, cost = av_case("twoshot_dev")
    hyp = fused.timeline.to_json(tmp_path / "fused.json")
    faces = rec.faces.to_json(tmp_path / "faces.json")
    args = ["eval-av", str(media_dir / "av_speakers/twoshot_dev.truth.json"), str(hyp), "--faces", str(faces),
            "--rttm", str(media_dir / "av_speakers/twoshot_dev.rttm")]
    res = CliRunner().invoke(app, args)
    print(res.output)
    assert res.exit_code == 0
    assert "DER" in res.output and "speakers ref 2 hyp 2" in res.output and "shot 3:" in res.output
    assert "VR2: one id" in res.output and "VR3: one id" in res.output
    res = CliRunner().invoke(app, [*args, "--json"])
    data = json.loads(res.output)
    assert data["der"] <= 0.10 and len(data["shots"]) == 3 and data["hyp_speakers"] == 2
    # a groups truth file needs the clip's name, and says which names it has
    bad = CliRunner().invoke(app, ["eval-av", str(media_dir / "av_speakers/asd_groups.truth.json"), str(hyp),
                                   "--name", "nope"])
    assert bad.exit_code == 2 and "grp_c0" in bad.output


def test_truth_formats(media_dir):
    t = load_truth(media_dir / "dialogue_5shots/dialogue_5shots.truth.json")
    assert len(t.shots_ms) == 5 and t.turns[-1][3] is None and t.turns[0][3] == "center"
    g = load_truth(media_dir / "av_speakers/asd_groups.truth.json", "grp_1e")
    assert g.whole_clip and g.whole_clip_position == "1" and g.slot_width_px == 224
    r = load_truth(media_dir / "av_speakers/asd_groups.truth.json", "react_12")
    assert r.whole_clip and r.whole_clip_position is None
