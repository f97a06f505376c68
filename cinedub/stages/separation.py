"""Vocal separation with demucs (Hybrid Transformer Demucs, Rouard, Massa & Défossez, ICASSP 2023).

Film and TV mixes put dialogue over score and effects; ASR, diarization and the training target all want the
dialogue alone. demucs splits the mix into drums, bass, other and vocals; CineDub keeps ``vocals`` and stores the sum
of the other stems as ``accompaniment`` (what a dubbing model re-mixes the new voice over).

Every output is cut or padded to exactly the source duration at its own rate (``round(duration_ms * rate / 1000)``
samples), so sample ``i`` of any track is source time ``i / rate``. The weights load offline from
``<models_dir>/<separation.model_dir_name>`` (``<name>.yaml`` + ``<sig>.th``, demucs' repo layout); the hub is only
tried when ``allow_hub`` is set and that folder is missing.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import soundfile as sf

from cinedub.errors import ModelNotFoundError
from cinedub.media import ASR_SAMPLE_RATE_HZ, write_flac
from cinedub.models import is_present, resolve_model_dir
from cinedub.config import Config
from cinedub.stages.base import Resources, Stage, StageContext

from cinedub.timebase import ms_to_sample
from cinedub.types import AudioTracks, IngestResult, Record

VOCALS_NAME = "vocals.flac"
ACCOMPANIMENT_NAME = "accompaniment.flac"
VOCALS_16K_NAME = "vocals_16k.flac"
VOCALS_STEM = "vocals"
_SHIFTS_SEED = 0  # demucs draws its random time shifts from Python's `random`; seeded so reruns match


def fit_length(x: Any, n: int) -> Any:
    """Trim or zero-pad the last axis of a torch tensor ``x`` to exactly ``n`` samples."""
    import torch

    if x.shape[-1] >= n:
        return x[..., :n]
    return torch.nn.functional.pad(x, (0, n - x.shape[-1]))


def resample_to_length(x: Any, old_sr: int, new_sr: int, n: int) -> Any:
    """Resample the last axis of float tensor ``x`` from ``old_sr`` to ``new_sr`` Hz and fit it to ``n`` samples.

    Uses julius' windowed-sinc ``resample_frac`` (zero phase: sample ``i`` stays at time ``i / rate``), the resampler
    demucs itself uses.
    """
    import julius

    if old_sr != new_sr:
        most = -(-x.shape[-1] * new_sr // old_sr)  # julius accepts up to ceil(length * new / old)
        x = julius.resample_frac(x, old_sr, new_sr, output_length=min(n, most))
    return fit_length(x, n)


class SeparationStage(Stage):
    """Split a source's mix into vocals and accompaniment (demucs ``Separator``), or pass the mix through.

    ``cfg.separation.method == "none"`` loads nothing and returns the mix as the vocals (``separation="none"``).
    """

    name: ClassVar[str] = "separation"
    version: ClassVar[str] = "1"
    inputs: ClassVar[tuple[str, ...]] = ("ingest",)
    output: ClassVar[str] = "tracks"
    record: ClassVar[type[Record]] = AudioTracks
    config_sections: ClassVar[tuple[str, ...]] = ("separation",)
    models: ClassVar[tuple[str, ...]] = ("demucs",)
    resources: ClassVar[Resources] = Resources(cpus=2, gpus=1, gpu_memory_gb=4)

    @classmethod
    def model_names(cls, cfg: Config) -> list[str]:
        """``demucs:<model>@<sig>+<sig>``: the model and the checkpoint signatures its yaml lists (a different
        checkpoint is a different output), or "none"."""
        sep = cfg.separation
        if sep.method == "none":
            return ["none"]
        import yaml

        name = f"demucs:{sep.model}"
        if is_present(cfg, "demucs"):
            bag = yaml.safe_load((resolve_model_dir(cfg, "demucs") / f"{sep.model}.yaml").read_text("utf-8")) or {}
            name += "@" + "+".join(str(m) for m in bag.get("models", []))
        return [name]

    def process(self, ctx: StageContext, ingest: IngestResult) -> AudioTracks:
        """Separate the source's mix into ``ctx.artifacts_dir`` (see :meth:`separate`)."""
        return self.separate(ingest, ctx.artifacts_dir)

    separator: Any = None
    model_dir: Path | None = None

    def setup(self) -> None:
        """Load the demucs model once (no-op for method "none").

        Raises:
            ModelNotFoundError: ``<models_dir>/<model_dir_name>`` lacks ``<model>.yaml`` or a ``.th`` checkpoint (and
                ``allow_hub`` is off, or the hub download failed), or the yaml names a signature with no checkpoint.
            ValueError: ``segment_s`` is longer than the model allows, or the model has no "vocals" stem.
        """
        sep = self.cfg.separation
        if sep.method == "none":
            return
        from demucs.api import Separator
        from demucs.repo import ModelLoadingError

        kwargs = dict(
            device=self.device,
            shifts=sep.shifts,
            overlap=sep.overlap,
            split=True,  # `segment`-second chunks bound activation memory; the full-length outputs stay in RAM
            segment=sep.segment_s,
            progress=False,
        )
        try:
            self.model_dir = resolve_model_dir(self.cfg, "demucs")
        except ModelNotFoundError as missing:
            if not self.cfg.allow_hub:
                raise
            try:  # repo=None: demucs tries the HuggingFace hub, then its legacy AWS repository
                self.separator = Separator(model=sep.model, repo=None, **kwargs)
            except Exception as e:
                raise ModelNotFoundError(f"{missing} The hub download failed too: {e!r}") from e
        else:
            try:
                self.separator = Separator(model=sep.model, repo=self.model_dir, **kwargs)
            except ModelLoadingError as e:
                raise ModelNotFoundError(
                    f"demucs model {sep.model!r} cannot be loaded from {self.model_dir}: {e}"
                ) from e
        model = self.separator.model
        if VOCALS_STEM not in model.sources:
            raise ValueError(f"demucs model {sep.model!r} has no vocals stem (sources: {model.sources})")
        max_segment = float(getattr(model, "max_allowed_segment", float("inf")))
        if sep.segment_s is not None and sep.segment_s > max_segment:
            raise ValueError(
                f"separation.segment_s={sep.segment_s} exceeds {max_segment:.2f} s, the longest {sep.model} allows"
            )

    @property
    def samplerate(self) -> int | None:
        """The model's sample rate (Hz); None when not separating."""
        return None if self.separator is None else int(self.separator.samplerate)

    def separate(self, ingest: IngestResult, out_dir: str | Path) -> AudioTracks:
        """Separate ``ingest.mix_full`` and write ``vocals.flac``, ``accompaniment.flac`` (model rate, model channels)
        and ``vocals_16k.flac`` (mono 16 kHz) into ``out_dir``.

        The mix is read once, converted to the model's channels (mono is duplicated) and rate (julius sinc
        resampling, zero phase so no delay), separated in ``segment``-second chunks with ``overlap``, and each
        output is fitted to the source duration at its rate.

        Returns:
            :class:`AudioTracks` with ``separation="demucs:<model>"`` (or the mix as vocals for method "none").

        Raises:
            soundfile.LibsndfileError: the ingest FLAC is missing or unreadable.
        """
        self.ensure_setup()
        if self.cfg.separation.method == "none" or self.separator is None:
            return ingest.unseparated_tracks()
        import torch
        from demucs.audio import convert_audio_channels

        out_dir = Path(out_dir)
        duration_ms = ingest.source.duration_ms
        model_sr = int(self.separator.samplerate)
        n_model = ms_to_sample(duration_ms, model_sr)
        n_16k = ms_to_sample(duration_ms, ASR_SAMPLE_RATE_HZ)

        data, sr = sf.read(ingest.mix_full, dtype="float32", always_2d=True)  # (samples, channels)
        wav = convert_audio_channels(torch.from_numpy(data.T), self.separator.audio_channels)
        del data
        wav = resample_to_length(wav.contiguous(), sr, model_sr, n_model)

        state = random.getstate()
        random.seed(_SHIFTS_SEED)
        try:
            _, stems = self.separator.separate_tensor(wav, model_sr)
        finally:
            random.setstate(state)
        del wav
        vocals = fit_length(stems.pop(VOCALS_STEM), n_model)
        accompaniment = fit_length(sum(stems.values()), n_model)
        del stems

        vocals_path = write_flac(out_dir / VOCALS_NAME, np.ascontiguousarray(vocals.T.numpy()), model_sr)
        acc_path = write_flac(out_dir / ACCOMPANIMENT_NAME, np.ascontiguousarray(accompaniment.T.numpy()), model_sr)
        del accompaniment
        mono = vocals.mean(dim=0)
        vocals_16k = resample_to_length(mono, model_sr, ASR_SAMPLE_RATE_HZ, n_16k).numpy()
        v16_path = write_flac(out_dir / VOCALS_16K_NAME, np.ascontiguousarray(vocals_16k), ASR_SAMPLE_RATE_HZ)
        return AudioTracks(
            mix_16k=ingest.mix_16k,
            mix_full=ingest.mix_full,
            vocals_16k=str(v16_path),
            separation=f"demucs:{self.cfg.separation.model}",
            vocals=str(vocals_path),
            accompaniment=str(acc_path),
            separated_rate_hz=model_sr,
            full_rate_hz=ingest.full_rate_hz,
        )
