"""Evaluation: codec reconstruction quality now; WER/CER, speaker similarity, quality and speed later."""
