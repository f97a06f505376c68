"""Helpers for tests and benchmarks: random-weight model checkpoints laid out like the real ones.

They prove that the loading paths and the plumbing around a model work offline; they say nothing about quality.
"""

from cinedub_testing.checkpoints import build_random_demucs_repo, build_random_syncnet

__all__ = ["build_random_demucs_repo", "build_random_syncnet"]
