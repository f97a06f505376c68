"""Damaged media built from shared footage at test time (never stored in the repository)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np


def damaged_copy(src: str | Path, dest: str | Path, *, seconds: float = 8.0, seed: int = 11,
                 at: tuple[float, ...] = (0.4, 0.6), n_bytes: int = 4096) -> Path:
    """The first ``seconds`` of ``src`` (stream copy) with ``n_bytes`` of seeded random bytes written over the file at
    each fraction ``at`` of its size (inside the media data of an MP4 whose index comes last): a few corrupt packets
    in the middle of an otherwise good file, which the ffmpeg CLI decodes to the end with errors."""
    dest = Path(dest)
    cut = dest.with_name(".cut_" + dest.name)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(Path(src).absolute()), "-t", str(seconds), "-c", "copy",
                    str(cut)], check=True)
    data = bytearray(cut.read_bytes())
    cut.unlink()
    rng = np.random.default_rng(seed)
    for frac in at:
        off = int(len(data) * frac)
        data[off : off + n_bytes] = rng.integers(0, 256, n_bytes, dtype=np.uint8).tobytes()
    dest.write_bytes(bytes(data))
    return dest
