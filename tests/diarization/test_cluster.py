"""Clustering logic on synthetic d-vector clouds (pure numpy: known ground truth)."""

from __future__ import annotations

import numpy as np
import pytest

from cinedub.diarization.cluster import absorb_small_clusters, ahc_cluster, nme_eigengap, spectral_cluster
from cinedub.diarization.config import ClusterConfig


def cloud(sizes: list[int], spread: float = 0.08, dim: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around ``len(sizes)`` random non-negative centres (GE2E d-vectors are non-negative)."""
    rng = np.random.default_rng(seed)
    centres = np.abs(rng.standard_normal((len(sizes), dim)))
    x, y = [], []
    for c, n in enumerate(sizes):
        pts = centres[c] / np.linalg.norm(centres[c]) + spread * rng.standard_normal((n, dim)) / np.sqrt(dim) * 4
        x.append(pts)
        y += [c] * n
    x = np.concatenate(x)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.array(y)


def purity(labels: np.ndarray, truth: np.ndarray) -> float:
    return sum(np.bincount(truth[labels == c]).max() for c in np.unique(labels)) / len(labels)


@pytest.mark.parametrize("sizes", [[20], [15, 12], [10, 8, 12, 9, 7]])
def test_ahc_finds_the_number_of_clouds(sizes):
    x, y = cloud(sizes)
    cl = ahc_cluster(x, 1, 8, ClusterConfig())
    assert cl.num_speakers == len(sizes)
    assert purity(cl.labels, y) == 1.0
    assert cl.centroids.shape == (len(sizes), x.shape[1])
    assert list(dict.fromkeys(cl.labels.tolist())) == list(range(cl.num_speakers))  # numbered by first appearance


def test_ahc_bounds_win_over_threshold():
    x, _ = cloud([10, 10, 10])
    assert ahc_cluster(x, 1, 2).num_speakers == 2
    single, _ = cloud([30])
    assert ahc_cluster(single, 2, 8).num_speakers == 2


def test_small_clusters_are_absorbed_unless_the_lower_bound_needs_them():
    x, y = cloud([12, 12, 1], spread=0.05)
    labels = y.copy()
    out = absorb_small_clusters(x, labels, min_size=2)
    assert set(out) == {0, 1}
    assert set(absorb_small_clusters(x, labels, min_size=2, min_clusters=3)) == {0, 1, 2}


def test_spectral_nme_counts_clouds():
    x, y = cloud([25, 20, 30], spread=0.1)
    k, p = nme_eigengap(np.clip(x @ x.T, 0, 1), max_speakers=8)
    assert k == 3 and p >= 1
    cl = spectral_cluster(x, 1, 8, ClusterConfig(method="spectral"))
    assert cl.num_speakers == 3 and purity(cl.labels, y) == 1.0


def test_empty_and_single_window():
    empty = np.zeros((0, 256), dtype=np.float32)
    assert ahc_cluster(empty).num_speakers == 0
    one, _ = cloud([1])
    assert ahc_cluster(one).num_speakers == 1
