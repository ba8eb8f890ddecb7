"""Evaluation: codec reconstruction (codec.py), Whisper ASR from local checkpoints (asr.py,
whisper_convert.py), WER (wer.py), and generated-vs-codec resynthesis (resynthesis.py)."""
