"""Does a trained backbone align speech with its text? Its attention, read head by head
(``pockettts.models.text_alignment``: ``text_mass``, the share of an audio frame's attention on the
text, and ``progress``, how steadily its centre moves through the text; +1 for a diagonal), averaged
over a manifest's validation cuts (teacher forcing, the real latents as context), heads ranked by
``progress``. ``text_gain`` asks whether the text helps the loss; this asks whether the model has
found where in the text it is. Command line: ``pockettts-tools alignment``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pockettts.eval.validation_cuts import cut_indices, validation_examples
from pockettts.models.flow_lm import FlowLM
from pockettts.models.text_alignment import MIN_FRAMES, alignment_scores, text_attention


def example_attention(model: FlowLM, example: dict) -> torch.Tensor:
    """``text_attention`` of one validation cut (a ``TeacherExampleDataset`` item)."""
    voice, tokens, target = example["voice"], example["tokens"], example["target"]
    lengths = [torch.tensor([t.shape[0]], device=t.device) for t in (voice, tokens, target)]
    return text_attention(model, voice[None], lengths[0], tokens[None], lengths[1], target[None], lengths[2])[
        0
    ]


def alignment_report(
    teacher: str | Path,
    manifest: str | Path,
    cache_dir: str | Path,
    vae: str | Path | None = None,
    limit: int | None = None,
    spread_items: bool = False,
) -> dict:
    """Per-head ``text_mass`` and ``progress`` averaged over ``limit`` validation cuts (the first ones,
    or with ``spread_items`` spread evenly over the manifest); cuts under ``MIN_FRAMES`` are skipped."""
    with torch.random.fork_rng():  # building the model draws its (then overwritten) init
        model, dataset, vae_path = validation_examples(teacher, manifest, cache_dir, vae)
    indices = cut_indices(len(dataset), limit, spread_items)
    masses, progresses = [], []
    for index in indices:
        example = dataset[index]
        if example["target"].shape[0] < MIN_FRAMES:
            continue
        mass, progress = alignment_scores(example_attention(model, example))
        masses.append(mass)
        progresses.append(progress)
    if not masses:
        raise ValueError(f"{manifest}: no validation cut of {MIN_FRAMES}+ frames among {len(indices)} items")
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

    attention = example_attention(model, example)[layer, head]
    figure, axes = plt.subplots(figsize=(8, 4))
    axes.imshow(attention.T.numpy(), origin="lower", aspect="auto", interpolation="nearest")
    axes.set(xlabel="audio frame", ylabel="text token", title=f"{example['id']}: layer {layer} head {head}")
    figure.tight_layout()
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return Path(out)
