"""Separation back-ends that are not a stage themselves: the DeepFilterNet 3 speech-enhancement runtime
(:mod:`cinedub.separation.deepfilternet`). The stage that chooses a back-end is :mod:`cinedub.stages.separation`."""
