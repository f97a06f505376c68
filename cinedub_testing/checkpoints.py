"""Random-weight model checkpoints in the exact on-disk layout the real ones use.

No model hub is reachable from CI and the real demucs weights (about 80 MB, MIT licence) are not in the shared model
pack, so tests and benchmarks build a stand-in: same class, same file layout, same loading code path
(``demucs.api.Separator(model=..., repo=<folder>)``), random weights. Its "stems" are noise shaped by random
filters: use it to check shapes, sample rates, durations, file plumbing and speed, never separation quality.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

DEMUCS_SOURCES = ("drums", "bass", "other", "vocals")
# The released htdemucs was trained on 7.8 s segments; demucs refuses longer ones for transformer models.
HTDEMUCS_SEGMENT_S = Fraction(39, 5)
HTDEMUCS_SIG = "955717e8"  # signature of the released htdemucs (demucs/remote/files.txt: 955717e8-8726e21a.th)

# Small enough for about 0.5 s of CPU per second of model input (2 shared cores); depth must stay 4: with fewer layers
# the frequency axis is not folded away before the cross-transformer and attention becomes quadratic in time x freq.
_SMALL_KWARGS = {"channels": 8, "depth": 4, "t_layers": 1, "t_heads": 2}


def build_random_demucs_repo(
    dest: str | Path,
    name: str = "htdemucs",
    sig: str = HTDEMUCS_SIG,
    small: bool = True,
    seed: int = 0,
) -> Path:
    """Write a random-weight HTDemucs as a demucs local repo: ``<dest>/<sig>.th`` and ``<dest>/<name>.yaml``.

    The layout is what ``demucs.repo.LocalRepo`` / ``BagOnlyRepo`` read (demucs 4.1.0): ``<sig>.th`` is a
    ``torch.save``'d dict ``{"klass": HTDemucs, "args": (), "kwargs": {...}, "state": state_dict}`` (the shape of
    ``demucs.states.serialize_model``, loaded by ``demucs.states.load_model``) and ``<name>.yaml`` holds
    ``models: ['<sig>']``, a bag of one model.

    Args:
        dest: the folder to fill (``<models_dir>/<cfg.separation.model_dir_name>`` for the pipeline).
        name: model name the pipeline asks for (``cfg.separation.model``).
        sig: checkpoint signature (file stem).
        small: tiny channels and one transformer layer (fast on CPU); False keeps HTDemucs' default sizes
            (about the released model's compute, for GPU timing).
        seed: torch seed for the random weights (same seed, same checkpoint).

    Returns:
        ``dest``. The model separates 44.1 kHz stereo into drums, bass, other, vocals, like htdemucs.
    """
    import torch
    import yaml
    from demucs.htdemucs import HTDemucs

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    kwargs = {
        "sources": list(DEMUCS_SOURCES),
        "audio_channels": 2,
        "samplerate": 44100,
        "segment": HTDEMUCS_SEGMENT_S,
        **(_SMALL_KWARGS if small else {}),
    }
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = HTDemucs(**kwargs)
    package = {
        "klass": HTDemucs,
        "args": (),
        "kwargs": kwargs,
        "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "training_args": {"note": "random weights built by cinedub_testing.build_random_demucs_repo"},
    }
    torch.save(package, dest / f"{sig}.th")
    (dest / f"{name}.yaml").write_text(yaml.safe_dump({"models": [sig]}), encoding="utf-8")
    return dest


def build_random_syncnet(path: str | Path, seed: int = 0) -> Path:
    """Write a random-weight SyncNet state_dict in ``syncnet_v2.model``'s layout (joonson/syncnet_python), for
    tests: it proves the loading path, not quality.

    Args:
        path: the file to write (parents are created), e.g. ``<models_dir>/syncnet/syncnet_v2.model``.
        seed: torch seed for the random weights (same seed, same checkpoint).
    """
    import torch

    from cinedub.vision.syncnet import SyncNetS

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = SyncNetS()
    torch.save(net.state_dict(), path)
    return path
