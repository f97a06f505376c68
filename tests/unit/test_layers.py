"""The layer contract of pyproject.toml ([tool.importlinter]) holds: the core imports neither Prefect nor the flows,
the CLI or the test helpers, and stages do not import each other."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_import_contracts_are_kept():
    exe = Path(sys.executable).with_name("lint-imports")
    proc = subprocess.run([str(exe), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 kept, 0 broken" in proc.stdout


def test_every_declared_stage_is_in_the_independence_contract():
    import tomllib

    from cinedub.pipeline import PIPELINE

    contracts = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    independent = next(c for c in contracts if c["type"] == "independence")["modules"]
    assert sorted(independent) == sorted({s.__module__ for s in PIPELINE})
