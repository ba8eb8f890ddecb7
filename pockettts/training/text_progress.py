"""``val/text_progress`` for the modules that train a FlowLM (teacher and student): the best head's
mean progress through the text over the validation items of every rank (``models.text_alignment``;
+1: a clean diagonal, ≈ 0: the text's order is not followed)."""

from __future__ import annotations

import torch

from pockettts.data.examples import TeacherBatch
from pockettts.models.text_alignment import MIN_FRAMES, alignment_scores, text_attention


class TextProgressMixin:
    """For LightningModules whose ``self.model`` is a ``FlowLM``: call ``accumulate_text_progress``
    from ``validation_step``; the metric is logged at the end of each validation."""

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()  # e.g. the EMA weights in
        self.reset_text_progress()

    def reset_text_progress(self) -> None:
        layers = self.model.transformer.layers
        # Per-head sums, then the item count: [layers * H + 1].
        self._text_progress = torch.zeros(len(layers) * layers[0].self_attn.num_heads + 1, device=self.device)

    def accumulate_text_progress(self, batch: TeacherBatch) -> None:
        """Adds each row's per-head progress (rows of ``MIN_FRAMES`` target frames or more)."""
        attentions = text_attention(
            self.model, batch.voice, batch.voice_lengths, batch.text, batch.text_lengths, batch.target,
            batch.target_lengths,
        )  # fmt: skip
        rows = [
            alignment_scores(attention)[1].flatten()
            for attention in attentions
            if attention.shape[-2] >= MIN_FRAMES - 1
        ]
        if rows:
            self._text_progress[:-1] += torch.stack(rows).sum(0)
            self._text_progress[-1] += len(rows)

    def on_validation_epoch_end(self) -> None:
        totals = self.trainer.strategy.reduce(self._text_progress, reduce_op="sum")  # every rank joins
        if totals[-1] > 0:
            self.log("val/text_progress", (totals[:-1] / totals[-1]).max())
        super().on_validation_epoch_end()
