"""How much does a trained backbone use its text? The head loss over a manifest's validation cuts
(teacher forcing), with the text and with every row's text removed, under the same seeded head
draws: the gap ``text_gain`` is what training logs as ``val/text_gain``, here for any exported model
and manifest. Comparing its training sentences with held-out ones separates memorising from
reading: ≈ 0 on held-out sentences means new text is not read; a large gap on training sentences
with a negative one on new text means sentence -> audio pairs were memorised. Command line:
``pockettts-tools text-gain``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pockettts.data.examples import collate_examples
from pockettts.eval.validation_cuts import cut_indices, validation_examples


@torch.no_grad()
def text_gain(
    teacher: str | Path,
    manifest: str | Path,
    cache_dir: str | Path,
    vae: str | Path | None = None,
    limit: int | None = None,
    draws: int = 8,
    batch_size: int = 8,
    spread_items: bool = False,
) -> dict:
    """Frame-weighted mean head loss with and without the text over ``draws`` seeded draws (draw
    ``d`` seeds the head's noise and times with ``d`` in both passes; the global RNG is untouched).
    ``limit`` items: the first ones, or with ``spread_items`` spread evenly over the manifest."""
    with torch.random.fork_rng():  # building the model draws its (then overwritten) init
        model, dataset, vae_path = validation_examples(teacher, manifest, cache_dir, vae)
    indices = cut_indices(len(dataset), limit, spread_items)
    pad_id = dataset.tokenizer.pad_id
    totals = {"with_text": 0.0, "without_text": 0.0}
    frames = 0
    for start in range(0, len(indices), batch_size):
        batch = collate_examples([dataset[i] for i in indices[start : start + batch_size]], pad_id)
        rows = batch.size
        everything = torch.ones(rows, dtype=torch.bool, device=batch.target.device)  # every text dropped
        inputs = (batch.voice, batch.voice_lengths, batch.text, batch.text_lengths, batch.target,
                  batch.target_lengths)  # fmt: skip
        batch_frames = int(batch.target_lengths.sum())
        for draw in range(draws):
            for key, drop_text in (("with_text", None), ("without_text", everything)):
                with torch.random.fork_rng():
                    torch.manual_seed(draw)
                    loss, _ = model.head_loss(model(*inputs, drop_text=drop_text))
                totals[key] += loss.item() * batch_frames / draws
        frames += batch_frames
    with_text, without_text = totals["with_text"] / frames, totals["without_text"] / frames
    return {
        "teacher": str(teacher), "manifest": str(manifest), "vae": str(vae_path), "items": len(indices),
        "selection": "spread" if spread_items else "first",
        "frames": frames, "draws": draws, "head_loss": with_text, "head_loss_without_text": without_text,
        "text_gain": without_text - with_text,
    }  # fmt: skip
