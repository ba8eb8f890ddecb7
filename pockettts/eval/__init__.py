"""Evaluation: codec reconstruction (codec.py), WER (wer.py), and generated-vs-codec resynthesis
(resynthesis.py); Whisper ASR itself lives in ``pockettts.whisper``."""
