"""Text + voice prompt -> speech, streaming (torch only): the inference API over FlowLM + VAE.

A voice prompt becomes a reusable ``VoiceState`` (its codec latents and the backbone's KV cache
after reading ``[bos_before_voice, voice]``; savable as ``.safetensors``). Each text chunk (long
texts are split at sentence ends, then at commas, to at most ``max_tokens`` tokens, as Pocket TTS
does) is read on a copy of that state; latents are generated frame by frame and decoded by the
streaming VAE, so audio is yielded 80 ms at a time as it is produced.

Everything runs on the model's device (``TextToSpeech.load(..., device=)``): voice states, the noise
generators and the returned audio and latents live there. A seed reproduces the same audio on the
same device type (CPU and CUDA generators draw different streams).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import TypeVar

import torch
from safetensors.torch import load_file, save_file

from pockettts.audio import AudioError, end_on_pause, is_silent, resample, to_mono
from pockettts.devices import resolve_device
from pockettts.models.bundle import ExportedModel, read_export
from pockettts.models.flow_lm import FlowLM
from pockettts.models.heads import sample_noise
from pockettts.models.quantize import generation_context, set_precision
from pockettts.models.sampling import SamplingOptions
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


_SENTENCE_MARKS = ".!?"
_WEAK_MARKS = ",;:-"
_CLOSERS = "\"')]"


def prepare_text(text: str) -> str:
    """Pocket TTS's inference text: a capitalised first letter and a sentence mark at the end.

    A text ending on a sentence mark (possibly inside closing quotes or brackets) is kept; a
    trailing ``, ; : -`` becomes a period; anything else gets a period after its closers. The model
    was trained on whole sentences: without the mark the last word is often garbled or repeated.
    """
    text = normalize_text(text)
    if text and text[0].islower():
        text = text[0].upper() + text[1:]
    core = text.rstrip(_CLOSERS + " ")
    closers = text[len(core) :].strip()
    if not core or core[-1] in _SENTENCE_MARKS:
        return text
    if core[-1] in _WEAK_MARKS:
        return core.rstrip(_WEAK_MARKS + " ") + "." + closers
    return text + "."


@dataclass
class VoiceState:
    """A voice prompt ready to speak: its codec features ``[F, voice_dim]`` (latents; v1 codecs: the
    512-d encoder features) and the backbone state."""

    latents: torch.Tensor
    backbone: State

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"latents": self.latents.contiguous().cpu()}
        tensors.update(
            {f"backbone.{k}": v.contiguous().cpu() for k, v in flatten_state(self.backbone).items()}
        )
        save_file(tensors, str(path), metadata={"format": "pockettts.voice"})
        return path

    @classmethod
    def load(cls, path: str | Path, model: FlowLM) -> VoiceState:
        """A saved voice state for ``model``, on the model's device."""
        device = model.bos_emb.device
        tensors = {name: tensor.to(device) for name, tensor in load_file(str(path)).items()}
        if "latents" not in tensors:
            raise ValueError(f"{path} is not a saved voice state")
        flat = {k.removeprefix("backbone."): v for k, v in tensors.items() if k.startswith("backbone.")}
        return cls(tensors["latents"], unflatten_state(flat, model.init_state(1)))


class TextToSpeech:
    """``FlowLM`` + ``AudioVAE`` + ``Tokenizer``: voice states, streaming synthesis.

    Args:
        precision: ``"float32"`` (exact), ``"int8"`` (CPU only: dynamic int8 linears in the backbone,
            head and decoder transformer, applied in place) or ``"bfloat16"`` / ``"float16"`` (for
            GPUs: the FlowLM runs under autocast); see ``pockettts.models.quantize``.
        overlap_decoding: ``stream``/``generate`` run generation in a background thread (after the
            first frame) while the caller's thread decodes the frames queued so far in one call,
            waiting for a few more while the audio already handed out lasts, each side with half the
            intra-op threads (decoding then hides behind generation). ``False`` decodes frame by
            frame in one thread.
        device: where both models are moved (``pockettts.devices.resolve_device``); ``None``: the
            FlowLM's device.
    """

    def __init__(
        self,
        flow_lm: FlowLM,
        vae: AudioVAE,
        tokenizer: Tokenizer,
        precision: str = "float32",
        overlap_decoding: bool = True,
        device: str | torch.device | None = None,
    ):
        if tokenizer.vocab_size != flow_lm.vocab_size:
            raise ValueError(
                f"tokenizer has {tokenizer.vocab_size} pieces, the model expects {flow_lm.vocab_size}"
            )
        if flow_lm.latent_dim != vae.latent_dim:
            raise ValueError(
                f"the model generates {flow_lm.latent_dim}-d latents, "
                f"the codec decodes {vae.latent_dim}-d ones"
            )
        self.device = resolve_device(device) if device is not None else flow_lm.bos_emb.device
        self.flow_lm, self.vae = flow_lm.to(self.device).eval(), vae.to(self.device).eval()
        self.tokenizer = tokenizer
        set_precision(self.flow_lm, self.vae, precision)
        self.precision, self.overlap_decoding = precision, overlap_decoding

    @classmethod
    def load(
        cls,
        export: str | Path | ExportedModel,
        vae: str | Path | None = None,
        device: str | torch.device = "cpu",
        **options,
    ) -> TextToSpeech:
        """From an exported FlowLM (teacher or student; a path, or one already read) with its
        tokenizer beside it; the VAE is the one recorded in the export unless given (then it must
        share the export's latent space: another decoder is fine, another encoder is not).
        ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; ``options`` go to the constructor."""
        device = resolve_device(device)
        if not isinstance(export, ExportedModel):
            export = read_export(export, device)
        codec = load_vae(export.codec(vae), device)
        return cls(export.flow_lm, codec, Tokenizer(export.tokenizer), device=device, **options)

    def _generating(self) -> contextlib.AbstractContextManager:
        """The context of the FlowLM's computations (autocast for the half precisions)."""
        return generation_context(self.precision, self.device)

    @torch.no_grad()
    def voice(self, audio: torch.Tensor, sample_rate: int, max_seconds: float = 30.0) -> VoiceState:
        """A voice state from prompt audio ``[C, T]`` or ``[T]`` at any rate: cut to ``max_seconds``,
        then made to end on a short pause (``end_on_pause``), as Pocket TTS prompts are."""
        wav = to_mono(audio.float()) if audio.dim() == 2 else audio.float()[None]
        wav = resample(wav, sample_rate, self.vae.sample_rate)
        if wav.shape[-1] == 0 or is_silent(wav, self.vae.sample_rate):
            raise AudioError("the voice prompt is empty or silent")
        wav = end_on_pause(wav[..., : int(max_seconds * self.vae.sample_rate)], self.vae.sample_rate)
        latents = self.vae.voice_features(
            wav[None].to(self.device), self.flow_lm.speaker_proj_weight.shape[1]
        )[0]
        with self._generating():
            return VoiceState(latents, self.flow_lm.prefill(latents, None))

    def _chunks(self, text: str, options: SamplingOptions) -> list[_Chunk]:
        chunks = []
        for chunk in split_text(prepare_text(text), self.tokenizer, options.max_tokens):
            tokens = torch.tensor(self.tokenizer.encode(chunk), dtype=torch.long, device=self.device)
            budget = options.frame_budget(len(tokens), self.vae.frame_rate)
            chunks.append(_Chunk(tokens, budget, options.frames_after(len(chunk.split()))))
        return chunks

    @torch.no_grad()
    def _latents(
        self, text: str, voice: VoiceState, options: SamplingOptions, eos: list[bool]
    ) -> Iterator[tuple[torch.Tensor, bool]]:
        """One request's raw latents ``[1, latent_dim]`` frame by frame, each with whether it opens a
        text chunk; appends to ``eos`` whether each chunk ended on EOS."""
        generator = torch.Generator(self.device).manual_seed(options.seed)
        for chunk in self._chunks(text, options):
            with self._generating():
                if options.guided:  # both passes in one batch; the voice prefix is read again
                    state = self.flow_lm.prefill_batch([(voice.latents, chunk.tokens)], with_null=True)
                else:
                    state = self.flow_lm.prefill_text(copy_state(voice.backbone), chunk.tokens)
            self._discard_prefill_draw(generator, options)
            sampler = self.flow_lm.frames(state, options, chunk.max_frames, chunk.frames_after_eos, generator)
            for index, frame in enumerate(_each_in(self._generating, sampler)):
                yield frame.latents, index == 0
            eos.append(sampler.eos_steps[0] is not None)

    def _discard_prefill_draw(self, generator: torch.Generator, options: SamplingOptions) -> None:
        """Pocket TTS samples (and discards) one noise vector when it reads a chunk's text; drawing it
        too makes a seed give the same frames in both implementations."""
        sample_noise(
            (self.flow_lm.latent_dim,), options.temperature, options.noise_clamp, generator, generator.device
        )

    def _fade_in(self, audio: torch.Tensor) -> torch.Tensor:
        """A fresh decoder state starts with a small step (a click): fade in its first 5 ms, in place."""
        fade = min(self.vae.sample_rate // 200, audio.shape[-1])
        ramp = torch.linspace(0, 1, self.vae.sample_rate // 200, device=audio.device, dtype=audio.dtype)
        audio[..., :fade] *= ramp[:fade]
        return audio

    @torch.no_grad()
    def stream(
        self, text: str, voice: VoiceState, options: SamplingOptions | None = None
    ) -> Iterator[torch.Tensor]:
        """Yield waveform chunks ``[frame_size]`` (80 ms) as the frames are generated (``options``:
        default ``SamplingOptions()``). Each text chunk is decoded from a fresh decoder state, as in
        Pocket TTS."""
        yield from self._stream(text, voice, options or SamplingOptions(), [], None)

    def _stream(
        self, text: str, voice: VoiceState, options: SamplingOptions, eos: list[bool],
        latents: list[torch.Tensor] | None,
    ) -> Iterator[torch.Tensor]:  # fmt: skip
        frames = self._latents(text, voice, options, eos)
        frame_seconds = self.vae.frame_size / self.vae.sample_rate
        batches = _overlapped(frames, frame_seconds) if self.overlap_decoding else ([item] for item in frames)
        decoder: State = {}
        for batch in batches:
            stacked = torch.cat([latent for latent, _ in batch])  # [F, latent_dim], one text chunk
            if latents is not None:
                latents.append(stacked)
            opens_chunk = batch[0][1]
            if opens_chunk:
                decoder = self.vae.init_state(1)
            with torch.no_grad():
                audio = self.vae.decode(stacked[None], decoder)[0, 0]
            if opens_chunk:
                self._fade_in(audio)
            yield from audio.split(self.vae.frame_size)

    @torch.no_grad()
    def generate(self, text: str, voice: VoiceState, options: SamplingOptions | None = None) -> Generation:
        """One request, streamed internally: audio, latents and whether every chunk reached EOS."""
        eos: list[bool] = []
        latents: list[torch.Tensor] = []
        audio = list(self._stream(text, voice, options or SamplingOptions(), eos, latents))
        return Generation(
            torch.cat(audio) if audio else torch.zeros(0, device=self.device),
            torch.cat(latents) if latents else torch.zeros(0, self.flow_lm.latent_dim, device=self.device),
            all(eos),
        )

    def synthesize(
        self, text: str, voice: VoiceState, options: SamplingOptions | None = None
    ) -> torch.Tensor:
        """The whole waveform ``[T]`` at ``vae.sample_rate``."""
        return self.generate(text, voice, options).audio

    @torch.no_grad()
    def generate_batch(
        self,
        texts: Sequence[str],
        voices: Sequence[VoiceState],
        options: SamplingOptions | None = None,
        seeds: Sequence[int] | None = None,
    ) -> list[Generation]:
        """Several requests generated together (one backbone pass per frame for the whole batch).

        Each request gets what ``generate`` would give it alone with seed ``seeds[i]`` (default:
        ``options.seed`` for all), up to float rounding: request ``i``'s chunks are generated in
        rounds (round ``r`` batches every request's ``r``-th chunk) with its own noise generator,
        and each chunk is decoded in one call (a causal decoder: the same as frame by frame).
        """
        if len(texts) != len(voices):
            raise ValueError(f"{len(texts)} texts but {len(voices)} voices")
        options = options or SamplingOptions()
        seeds = list(seeds) if seeds is not None else [options.seed] * len(texts)
        generators = [torch.Generator(self.device).manual_seed(seed) for seed in seeds]
        plans = [self._chunks(text, options) for text in texts]
        chunk_latents: list[list[torch.Tensor]] = [[] for _ in texts]
        eos: list[list[bool]] = [[] for _ in texts]
        for round_ in range(max(len(plan) for plan in plans)):
            members = [i for i, plan in enumerate(plans) if round_ < len(plan)]
            chunks = [plans[i][round_] for i in members]
            with self._generating():
                state = self.flow_lm.prefill_batch(
                    [(voices[i].latents, c.tokens) for i, c in zip(members, chunks)],
                    with_null=options.guided,
                )
            for i in members:
                self._discard_prefill_draw(generators[i], options)
            sampler = self.flow_lm.frames(
                state, options, [c.max_frames for c in chunks], [c.frames_after_eos for c in chunks],
                [generators[i] for i in members],
            )  # fmt: skip
            frames = [[] for _ in members]
            for frame in _each_in(self._generating, sampler):
                for row, emitting in enumerate(frame.emitting.tolist()):
                    if emitting:
                        frames[row].append(frame.latents[row])
            for row, i in enumerate(members):
                chunk_latents[i].append(torch.stack(frames[row]) if frames[row] else None)
                eos[i].append(sampler.eos_steps[row] is not None)
        results = []
        for chunks, ended in zip(chunk_latents, eos):
            spoken = [c for c in chunks if c is not None]
            audio = [self._fade_in(self.vae.decode(c[None])[0, 0]) for c in spoken]
            results.append(Generation(
                torch.cat(audio) if audio else torch.zeros(0, device=self.device),
                torch.cat(spoken) if spoken else torch.zeros(0, self.flow_lm.latent_dim, device=self.device),
                all(ended),
            ))  # fmt: skip
        return results


_Item = TypeVar("_Item")
_END = object()


def _each_in(
    context: Callable[[], contextlib.AbstractContextManager], items: Iterable[_Item]
) -> Iterator[_Item]:
    """``items``, each one computed inside a fresh ``context()``: autocast is per-thread state, which
    must not stay switched on while the consumer runs between two items."""
    iterator = iter(items)
    while True:
        with context():
            item = next(iterator, _END)
        if item is _END:
            return
        yield item


# The most frames the decoder waits for: a call's fixed cost (a few hundred small operations) is then
# spread thin, and a longer wait would only delay the audio.
MAX_AWAITED_FRAMES = 16


class _Playback:
    """The audio handed out so far, as a listener who starts playing at the first chunk hears it:
    how long the decoder may still wait for more frames before the listener runs out."""

    def __init__(self, frame_seconds: float):
        self.frame_seconds = frame_seconds
        self.started: float | None = None  # when the first audio was handed out
        self.handed_out = 0.0  # seconds of audio
        self.seconds_per_frame = 0.0  # the last batch's decoding and hand-out, per frame

    def handed(self, frames: int, since: float) -> None:
        """``frames`` frames of audio were handed out, decoded from ``since`` (``perf_counter``) on."""
        now = time.perf_counter()
        self.started = now if self.started is None else self.started
        self.handed_out += frames * self.frame_seconds
        self.seconds_per_frame = (now - since) / frames

    def spare(self, frames: int) -> float:
        """Seconds left to wait for one more frame, then decode all ``frames + 1`` (with twice the last
        per-frame cost as margin) before the audio handed out runs out; 0 before the first chunk."""
        if self.started is None:
            return 0.0
        runs_out = self.started + self.handed_out
        return runs_out - time.perf_counter() - 2 * (frames + 1) * self.seconds_per_frame


def _overlapped(
    frames: Iterator[tuple[torch.Tensor, bool]], frame_seconds: float
) -> Iterator[list[tuple[torch.Tensor, bool]]]:
    """Yield ``frames`` in batches to decode, generation and decoding each on half the intra-op
    threads. The first frame is generated and yielded alone in the caller's thread, so nothing
    competes with its decoding (time to first audio); the rest are generated in a background
    thread, each batch what it has queued since the last call (at least one frame, never across a
    text chunk's start).

    Later batches wait for more frames (up to ``MAX_AWAITED_FRAMES``) while the audio already handed
    out lasts: decoding several frames in one call costs much less per frame, which leaves the CPU
    to generation. Neither side ever gets every thread: on a busy machine, a team of OpenMP threads
    that spin-wait for each other loses far more than it gains on these small operations.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // 2))
    try:
        yield from _batches(frames, _Playback(frame_seconds))
    finally:
        torch.set_num_threads(threads)


def _batches(
    frames: Iterator[tuple[torch.Tensor, bool]], playback: _Playback
) -> Iterator[list[tuple[torch.Tensor, bool]]]:
    """``_overlapped``'s batches, the intra-op threads already set."""
    first = next(frames, None)
    if first is None:
        return
    since = time.perf_counter()
    yield [first]
    playback.handed(1, since)
    queue: Queue = Queue()
    stop, finished = threading.Event(), threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in frames:
                if stop.is_set():
                    return
                queue.put(item)
            queue.put(done)
        except BaseException as error:  # handed to the consumer, which raises it
            queue.put(error)
        finally:
            finished.set()

    worker = threading.Thread(target=produce, daemon=True)
    worker.start()
    pending = None
    try:
        while True:
            item = pending if pending is not None else queue.get()
            pending = None
            batch = []
            while True:
                if item is done:
                    if batch:
                        yield batch
                    return
                if isinstance(item, BaseException):
                    raise item
                if batch and item[1]:  # a new text chunk starts a new decoder: next batch
                    pending = item
                    break
                batch.append(item)
                awaiting = len(batch) < MAX_AWAITED_FRAMES and not finished.is_set()
                wait = playback.spare(len(batch)) if awaiting else 0.0
                try:
                    item = queue.get(timeout=wait) if wait > 0 else queue.get_nowait()
                except Empty:
                    break
            since = time.perf_counter()
            yield batch
            playback.handed(len(batch), since)
    finally:
        stop.set()
        worker.join()


@dataclass
class _Chunk:
    tokens: torch.Tensor  # [L]
    max_frames: int
    frames_after_eos: int


@dataclass
class Generation:
    """One request's result: ``audio`` ``[T]``, raw ``latents`` ``[F, latent_dim]``, and whether every
    text chunk ended on EOS (``False``: some chunk ran to its frame budget, usually a failure)."""

    audio: torch.Tensor
    latents: torch.Tensor
    eos_reached: bool
