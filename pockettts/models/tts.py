"""Text + voice prompt -> speech, streaming (torch only): the inference API over FlowLM + VAE.

A voice prompt becomes a reusable ``VoiceState`` (its codec latents and the backbone's KV cache
after reading ``[bos_before_voice, voice]``; savable as ``.safetensors``). Each text chunk (long
texts are split at sentence ends, then at commas, to at most ``max_tokens`` tokens, as Pocket TTS
does) is read on a copy of that state; latents are generated frame by frame and decoded by the
streaming VAE, so audio is yielded 80 ms at a time as it is produced.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pockettts.audio import AudioError, is_silent, resample, to_mono
from pockettts.models.flow_lm import FlowLM, load_flow_lm, read_flow_lm_metadata
from pockettts.models.vae import AudioVAE, load_vae
from pockettts.modules.streaming import State, copy_state, flatten_state, unflatten_state
from pockettts.text import Tokenizer, normalize_text

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_CLAUSE_END = re.compile(r"(?<=[,;:])\s+")


def split_text(text: str, tokenizer: Tokenizer, max_tokens: int = 50) -> list[str]:
    """Chunks of at most ``max_tokens`` tokens, cut at sentence ends first, then at ``,;:``, then
    between words; raises ``TextError`` for text with nothing to say."""
    text = normalize_text(text)
    tokenizer.encode(text)  # TextError names empty or unspeakable text
    chunks: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        pieces = [sentence] if len(tokenizer.encode(sentence)) <= max_tokens else _CLAUSE_END.split(sentence)
        for piece in pieces:
            words, current = piece.split(), ""
            for word in words:
                candidate = f"{current} {word}".strip()
                if current and len(tokenizer.encode(candidate)) > max_tokens:
                    chunks.append(current)
                    candidate = word
                current = candidate
            if current:
                if chunks and len(tokenizer.encode(f"{chunks[-1]} {current}")) <= max_tokens:
                    chunks[-1] = f"{chunks[-1]} {current}"  # keep short sentences together
                else:
                    chunks.append(current)
    return chunks


def prepare_text(text: str) -> str:
    """Pocket TTS's inference text: capitalised first letter, a final period after a bare word."""
    text = normalize_text(text)
    if text and text[0].islower():
        text = text[0].upper() + text[1:]
    if text and text[-1].isalnum():
        text += "."
    return text


@dataclass
class VoiceState:
    """A voice prompt ready to speak: raw codec latents ``[F, voice_dim]`` and the backbone state."""

    latents: torch.Tensor
    backbone: State

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"latents": self.latents.contiguous()}
        tensors.update({f"backbone.{k}": v.contiguous() for k, v in flatten_state(self.backbone).items()})
        save_file(tensors, str(path), metadata={"format": "pockettts.voice"})
        return path

    @classmethod
    def load(cls, path: str | Path, model: FlowLM) -> VoiceState:
        tensors = load_file(str(path))
        if "latents" not in tensors:
            raise ValueError(f"{path} is not a saved voice state")
        flat = {k.removeprefix("backbone."): v for k, v in tensors.items() if k.startswith("backbone.")}
        return cls(tensors["latents"], unflatten_state(flat, model.init_state(1)))


class TextToSpeech:
    """``FlowLM`` + ``AudioVAE`` + ``Tokenizer``: voice states, streaming synthesis."""

    def __init__(self, flow_lm: FlowLM, vae: AudioVAE, tokenizer: Tokenizer):
        if tokenizer.vocab_size != flow_lm.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} pieces, the model expects {flow_lm.vocab_size}"
            )
        self.flow_lm, self.vae, self.tokenizer = flow_lm.eval(), vae.eval(), tokenizer

    @classmethod
    def load(cls, flow_lm: str | Path, vae: str | Path | None = None) -> TextToSpeech:
        """From an exported FlowLM (teacher or student) with its tokenizer (``.model`` or
        ``tokenizer.json``) beside it; the VAE is the one recorded in the export unless given."""
        metadata = read_flow_lm_metadata(flow_lm)
        if vae is None and "vae" not in metadata:
            raise ValueError(f"{flow_lm} records no VAE: pass one")
        # The export records its tokenizer's file name (a SentencePiece .model or a tokenizer.json).
        folder = Path(flow_lm).parent
        names = ("tokenizer.model", "tokenizer.json")
        default = next((n for n in names if (folder / n).is_file()), names[0])
        tokenizer = folder / metadata.get("tokenizer", default)
        return cls(load_flow_lm(flow_lm), load_vae(vae or metadata["vae"]), Tokenizer(tokenizer))

    @torch.no_grad()
    def voice(self, audio: torch.Tensor, sample_rate: int, max_seconds: float = 30.0) -> VoiceState:
        """A voice state from prompt audio ``[C, T]`` at any rate (longer than ``max_seconds``: cut)."""
        wav = to_mono(audio.float()) if audio.dim() == 2 else audio.float()[None]
        wav = resample(wav, sample_rate, self.vae.sample_rate)
        if wav.shape[-1] == 0 or is_silent(wav, self.vae.sample_rate):
            raise AudioError("the voice prompt is empty or silent")
        wav = wav[..., : int(max_seconds * self.vae.sample_rate)]
        latents = self.vae.encode(wav[None])[0]
        return VoiceState(latents, self.flow_lm.prefill(latents, None))

    @torch.no_grad()
    def stream(
        self,
        text: str,
        voice: VoiceState,
        cfg_scale: float = 1.0,
        temperature: float = 0.3,
        noise_clamp: float | None = None,
        eos_threshold: float = -4.0,
        frames_after_eos: int | None = None,
        max_tokens: int = 50,
        seed: int = 0,
    ) -> Iterator[torch.Tensor]:
        """Yield waveform chunks ``[frame_size]`` (80 ms) as the frames are generated."""
        generator = torch.Generator().manual_seed(seed)
        decoder = self.vae.init_state(1)
        for chunk in split_text(prepare_text(text), self.tokenizer, max_tokens):
            tokens = torch.tensor(self.tokenizer.encode(chunk), dtype=torch.long)
            conditioned = self.flow_lm.prefill_text(copy_state(voice.backbone), tokens)
            null = self.flow_lm.prefill(None, None) if cfg_scale != 1.0 else None
            after_eos = (
                frames_after_eos if frames_after_eos is not None else (5 if len(chunk.split()) <= 4 else 3)
            )
            max_frames = math.ceil((len(tokens) / 3 + 2) * self.vae.frame_rate)
            for latent in self.flow_lm.frames(
                conditioned, null, max_frames, cfg_scale, temperature, noise_clamp, eos_threshold,
                after_eos, generator=generator,
            ):  # fmt: skip
                yield self.vae.decode(latent[None], decoder)[0, 0]

    def synthesize(self, text: str, voice: VoiceState, **options) -> torch.Tensor:
        """The whole waveform ``[T]`` at ``vae.sample_rate`` (``options``: those of ``stream``)."""
        chunks = list(self.stream(text, voice, **options))
        return torch.cat(chunks) if chunks else torch.zeros(0)
