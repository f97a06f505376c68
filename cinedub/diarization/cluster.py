"""Clustering window d-vectors into speakers, with a speaker-count estimate (numpy, scipy, scikit-learn; no torch).

Two methods, both honouring ``[min_speakers, max_speakers]``:

- ``"ahc"`` (default): average-linkage agglomerative clustering on cosine distance, cut at a distance threshold;
  clusters with fewer than ``min_cluster_windows`` windows are then re-assigned to the closest large cluster (the
  ``min_cluster_size`` rule of pyannote.audio's ``AgglomerativeClustering``), so a few windows straddling a speaker
  change or a cough do not become a speaker.
- ``"spectral"``: NME-SC, Park, Han, Kumar, Narayanan, "Auto-Tuning Spectral Clustering for Speaker Diarization Using
  Normalized Maximum Eigengap" (IEEE SPL 2019; NeMo's clustering): the cosine affinity is binarised to each row's
  ``p`` nearest neighbours, ``p`` is chosen to minimise ``p / g_p`` (``g_p`` = largest Laplacian eigengap over the
  largest eigenvalue) and the count is the position of that gap. Eigengaps cannot answer "one speaker", so the AHC
  threshold decides that case first.

Threshold of record (GE2E d-vectors, 1.6 s windows, 0.4 s hop, stable windows only, see
:mod:`cinedub.diarization.offline`), from six real recordings of ``../shared/media``: the largest average-linkage
merge between clusters of >= 2 windows was 0.245-0.26 inside single-speaker recordings (zh_narration,
vertical_hevc) and at most 0.269 inside one speaker of the multi-speaker ones, while different speakers merged at
0.33 (the two telephone voices of en_2spk_audio, the closest pair), 0.47-0.59 (dialogue_5shots) and 0.51
(zh_tvdrama). Any threshold in 0.27-0.31 gave the right count on those six; 0.29 is the middle. (en_film_titanic,
2 speakers under a film score, yields only two windows of unseparated mix and comes out as one speaker.) The margins are
small (0.02-0.04), a channel or language shift can move these numbers, and faces are meant to bound the count later.
"NME-SC" needs many windows: on these 10-30 s clips it over-counted (7 speakers for dialogue_5shots, 4 for a
narrator), so it is an option for long recordings, not the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cinedub.diarization.config import ClusterConfig


@dataclass(frozen=True)
class Clustering:
    """Result of clustering ``n`` windows.

    Attributes:
        labels: ``(n,)`` int cluster index per window, 0..k-1, numbered by first appearance in time.
        centroids: ``(k, dim)`` float32 unit mean d-vector per cluster.
        num_speakers: ``k``.
        method: "ahc", "spectral" or "single" (everything one speaker).
    """

    labels: np.ndarray
    centroids: np.ndarray
    num_speakers: int
    method: str = ""


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def centroids_of(embeddings: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Unit mean d-vector of each cluster 0..k-1 (``(k, dim)`` float32; a zero row for an empty cluster)."""
    out = np.zeros((k, embeddings.shape[1]), dtype=np.float32)
    for c in range(k):
        if np.any(labels == c):
            out[c] = _unit(embeddings[labels == c].mean(axis=0))
    return out


def _renumber(labels: np.ndarray) -> np.ndarray:
    """Relabel clusters 0, 1, ... in order of first appearance (speaker numbers follow time)."""
    order: dict[int, int] = {}
    for lab in labels:
        order.setdefault(int(lab), len(order))
    return np.array([order[int(v)] for v in labels], dtype=int)


def _result(embeddings: np.ndarray, labels: np.ndarray, method: str) -> Clustering:
    labels = _renumber(labels)
    k = int(labels.max()) + 1 if len(labels) else 0
    return Clustering(labels, centroids_of(embeddings, labels, k), k, method)


def _linkage(embeddings: np.ndarray) -> np.ndarray:
    from scipy.cluster.hierarchy import linkage

    return linkage(embeddings.astype(np.float64), method="average", metric="cosine")


def absorb_small_clusters(embeddings: np.ndarray, labels: np.ndarray, min_size: int, min_clusters: int = 1) -> np.ndarray:
    """Re-assign windows of clusters smaller than ``min_size`` to the closest large centroid (cosine).

    Small clusters are kept when fewer than ``min_clusters`` large ones exist (largest first), so a lower bound on
    the count (e.g. from faces) wins over this rule.
    """
    sizes = np.bincount(labels)
    order = np.argsort(-sizes, kind="stable")
    large = [int(c) for c in order if sizes[c] >= min_size]
    for c in order:
        if len(large) >= min_clusters:
            break
        if int(c) not in large and sizes[c] > 0:
            large.append(int(c))
    if not large or len(large) == len(np.flatnonzero(sizes)):
        return labels
    cents = centroids_of(embeddings, labels, len(sizes))[large]
    out = labels.copy()
    small = ~np.isin(labels, large)
    out[small] = np.array(large)[np.argmax(embeddings[small] @ cents.T, axis=1)]
    return out


def _speaker_bounds(n: int, min_speakers: int, max_speakers: int) -> tuple[int, int]:
    """``(min, max)`` speaker counts possible with ``n`` windows: max in ``1..n``, min at most max."""
    max_speakers = max(1, min(max_speakers, n))
    return min(min_speakers, max_speakers), max_speakers


def ahc_cluster(
    embeddings: np.ndarray, min_speakers: int = 1, max_speakers: int = 8, cfg: ClusterConfig | None = None
) -> Clustering:
    """Average-linkage AHC on cosine distance cut at ``cfg.ahc_threshold``, small clusters absorbed, count clamped.

    Args:
        embeddings: ``(n, dim)`` unit d-vectors.
        min_speakers / max_speakers: inclusive bounds (a bound beyond ``n`` is lowered to ``n``).

    Returns:
        :class:`Clustering` (k = 0 for no windows).
    """
    from scipy.cluster.hierarchy import fcluster

    cfg = cfg or ClusterConfig()
    n = len(embeddings)
    if n <= 1:
        return _result(embeddings, np.zeros(n, dtype=int), "single")
    min_speakers, max_speakers = _speaker_bounds(n, min_speakers, max_speakers)
    z = _linkage(embeddings)
    labels = fcluster(z, t=cfg.ahc_threshold, criterion="distance") - 1
    labels = absorb_small_clusters(embeddings, labels, cfg.min_cluster_windows, min_speakers)
    k = len(np.unique(labels))
    if not min_speakers <= k <= max_speakers:
        labels = fcluster(z, t=min(max(k, min_speakers), max_speakers), criterion="maxclust") - 1
    return _result(embeddings, labels, "ahc")


def nme_eigengap(affinity: np.ndarray, max_speakers: int, max_p: int | None = None) -> tuple[int, int]:
    """NME-SC speaker count (Park et al. 2019): ``(k, p)`` for a cosine affinity matrix.

    For each ``p`` the affinity is binarised to each row's ``p`` largest entries and symmetrised; the unnormalised
    Laplacian's eigenvalues give ``g_p`` = largest gap among the first ``max_speakers + 1`` eigenvalues divided by
    the largest eigenvalue. The ``p`` minimising ``p / g_p`` wins; ``k`` is the index of its largest gap.
    """
    n = len(affinity)
    max_p = max_p or max(2, n // 4)
    order = np.argsort(-affinity, axis=1)
    best: tuple[float, int, int] | None = None
    for p in range(1, min(max_p, n - 1) + 1):
        a = np.zeros_like(affinity)
        np.put_along_axis(a, order[:, :p], 1.0, axis=1)
        a = 0.5 * (a + a.T)
        lap = np.diag(a.sum(axis=1)) - a
        lam = np.linalg.eigvalsh(lap)
        gaps = np.diff(lam[: max_speakers + 1])
        if len(gaps) == 0:
            break
        g = gaps.max() / max(lam[-1], 1e-10)
        ratio = p / max(g, 1e-10)
        if best is None or ratio < best[0]:
            best = (ratio, p, int(np.argmax(gaps)) + 1)
    return (best[2], best[1]) if best else (1, 1)


def spectral_cluster(
    embeddings: np.ndarray, min_speakers: int = 1, max_speakers: int = 8, cfg: ClusterConfig | None = None
) -> Clustering:
    """NME-SC spectral clustering (Park et al. 2019) with the AHC threshold deciding the single-speaker case.

    Args:
        embeddings: ``(n, dim)`` unit d-vectors.
        min_speakers / max_speakers: inclusive bounds.

    Returns:
        :class:`Clustering` (k = 0 for no windows).
    """
    from sklearn.cluster import KMeans

    cfg = cfg or ClusterConfig()
    n = len(embeddings)
    if n <= 1:
        return _result(embeddings, np.zeros(n, dtype=int), "single")
    min_speakers, max_speakers = _speaker_bounds(n, min_speakers, max_speakers)
    if max_speakers == 1 or (min_speakers == 1 and _linkage(embeddings)[-1, 2] < cfg.ahc_threshold):
        return _result(embeddings, np.zeros(n, dtype=int), "single")
    affinity = np.clip(embeddings @ embeddings.T, 0.0, 1.0).astype(np.float64)
    k, p = nme_eigengap(affinity, max_speakers)
    k = min(max(k, min_speakers, 2), max_speakers)
    a = np.zeros_like(affinity)
    np.put_along_axis(a, np.argsort(-affinity, axis=1)[:, :p], 1.0, axis=1)
    a = 0.5 * (a + a.T)
    lap = np.diag(a.sum(axis=1)) - a
    _, vecs = np.linalg.eigh(lap)
    labels = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(vecs[:, :k])
    return _result(embeddings, labels, "spectral")


def cluster(embeddings: np.ndarray, min_speakers: int, max_speakers: int, cfg: ClusterConfig) -> Clustering:
    """Dispatch on ``cfg.method`` ("ahc" or "spectral")."""
    fn = spectral_cluster if cfg.method == "spectral" else ahc_cluster
    return fn(embeddings, min_speakers, max_speakers, cfg)
