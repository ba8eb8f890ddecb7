r"""Does a trained backbone align speech with its text? Its attention, read head by head.

A TTS backbone that reads has heads whose attention from the audio frames onto the text tokens
moves through the text as the speech goes on (the diagonal of attention-based TTS). For every
layer and head, over a manifest's validation cuts (teacher forcing, the real latents as context):

- ``text_mass``: the share of an audio frame's attention that lands on text tokens (frame mean);
- ``progress``: the correlation between a frame's index and the centre of its attention over the
  text (token position / (tokens - 1), attention renormalised over the text); +1 is a steady march
  from the first token to the last, 0 is no relation (a memorising or text-blind model).

Item means are reported, with the heads ranked. ``text_gain`` asks whether the text helps the loss;
this asks whether the model has found where in the text it is.

    python -m pockettts.eval.alignment --teacher RUN/export/teacher.safetensors \
        --manifest data/demo/clean/valid.jsonl --cache data/demo/latents [--limit 16] [--plot a.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from pockettts.eval.runner import spread
from pockettts.eval.validation_cuts import validation_examples
from pockettts.models.flow_lm import FlowLM


@torch.no_grad()
def text_attention(model: FlowLM, example: dict) -> torch.Tensor:
    """Attention of one example's audio frames onto its text tokens, every layer and head:
    ``[layers, H, F - 1, L]`` for a target of ``F`` frames and ``L`` tokens (the queries are the
    positions that see frames 1..F-1 as input: after the BOS latent, before the EOS position)."""
    inputs: list[torch.Tensor] = []
    hooks = [
        layer.self_attn.register_forward_pre_hook(lambda _, args: inputs.append(args[0]))
        for layer in model.transformer.layers
    ]
    voice, tokens, target = example["voice"], example["tokens"], example["target"]
    try:
        model(
            voice[None], torch.tensor([voice.shape[0]]), tokens[None], torch.tensor([tokens.shape[0]]),
            target[None], torch.tensor([target.shape[0]]),
        )  # fmt: skip
    finally:
        for hook in hooks:
            hook.remove()
    text_start = model.prefix(voice, None).shape[0]  # BOS-before-voice and voice frames
    audio_start = text_start + tokens.shape[0]
    frames = target.shape[0]
    weights = [
        layer.self_attn.attention_weights(x)[0, :, audio_start + 1 : audio_start + frames]
        for layer, x in zip(model.transformer.layers, inputs)
    ]
    return torch.stack(weights)[..., text_start:audio_start]


def alignment_scores(attention: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[..., Q, L]`` attention of ``Q`` successive queries onto ``L`` tokens -> ``text_mass`` and
    ``progress`` ``[...]`` (see the module doc; ``progress`` is 0 where the centre never moves)."""
    mass = attention.sum(-1)
    tokens = attention.shape[-1]
    positions = torch.arange(tokens, dtype=attention.dtype) / max(tokens - 1, 1)
    centre = (attention / mass[..., None].clamp_min(1e-12)) @ positions  # [..., Q]
    steps = torch.arange(attention.shape[-2], dtype=attention.dtype)
    centre = centre - centre.mean(-1, keepdim=True)
    steps = steps - steps.mean()
    scale = centre.norm(dim=-1) * steps.norm()
    progress = torch.where(scale > 1e-9, (centre * steps).sum(-1) / scale.clamp_min(1e-9), 0.0)
    return mass.mean(-1), progress


def alignment_report(
    teacher: str | Path,
    manifest: str | Path,
    cache_dir: str | Path,
    vae: str | Path | None = None,
    limit: int | None = None,
    spread_items: bool = False,
) -> dict:
    """Per-head ``text_mass`` and ``progress`` averaged over ``limit`` validation cuts (the first ones,
    or with ``spread_items`` spread evenly over the manifest); cuts under 3 frames are skipped."""
    with torch.random.fork_rng():  # building the model draws its (then overwritten) init
        model, dataset, vae_path = validation_examples(teacher, manifest, cache_dir, vae)
    indices = spread(len(dataset), limit) if spread_items else list(range(len(dataset)))[:limit]
    masses, progresses = [], []
    for index in indices:
        example = dataset[index]
        if example["target"].shape[0] < 3:
            continue
        mass, progress = alignment_scores(text_attention(model, example))
        masses.append(mass)
        progresses.append(progress)
    if not masses:
        raise ValueError(f"{manifest}: no validation cut of 3 frames or more among {len(indices)} items")
    mass, progress = torch.stack(masses).mean(0), torch.stack(progresses).mean(0)
    heads = [
        {"layer": layer, "head": head, "text_mass": mass[layer, head].item(),
         "progress": progress[layer, head].item()}
        for layer in range(mass.shape[0]) for head in range(mass.shape[1])
    ]  # fmt: skip
    heads.sort(key=lambda h: h["progress"], reverse=True)
    return {
        "teacher": str(teacher), "manifest": str(manifest), "vae": str(vae_path), "items": len(masses),
        "selection": "spread" if spread_items else "first", "heads": heads,
    }  # fmt: skip


def plot_head(model: FlowLM, example: dict, layer: int, head: int, out: str | Path) -> Path:
    """One example's attention of ``layer``/``head`` onto its text, tokens against frames, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attention = text_attention(model, example)[layer, head]
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.imshow(attention.T.numpy(), origin="lower", aspect="auto", interpolation="nearest")
    axes.set(xlabel="audio frame", ylabel="text token", title=f"{example['id']}: layer {layer} head {head}")
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return Path(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--teacher", required=True, help="an exported FlowLM")
    parser.add_argument("--manifest", required=True)
    parser.add_argument("--cache", required=True, help="latent cache root of the manifest")
    parser.add_argument("--vae", default=None, help="default: the VAE recorded in the teacher export")
    parser.add_argument("--limit", type=int, default=None, help="first N items (see --spread)")
    parser.add_argument("--spread", action="store_true", help="the N items spread evenly over the manifest")
    parser.add_argument("--plot", default=None, help="PNG of the best head on the first item")
    args = parser.parse_args(argv)
    report = alignment_report(args.teacher, args.manifest, args.cache, args.vae, args.limit, args.spread)
    print(json.dumps(report, indent=2))
    if args.plot:
        model, dataset, _ = validation_examples(args.teacher, args.manifest, args.cache, args.vae)
        best = report["heads"][0]
        print(f"wrote {plot_head(model, dataset[0], best['layer'], best['head'], args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
