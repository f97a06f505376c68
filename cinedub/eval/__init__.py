"""Evaluation: WER/CER (jiwer), DER/JER (pyannote.metrics)."""
