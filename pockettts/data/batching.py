"""Seeded, resumable batch samplers (fixed-size and duration-bucketed), shardable across ranks.

Each epoch's batch list is a pure function of ``(seed, epoch)``, so a resumed run can skip exactly
the batches it already consumed and every rank agrees on the split without communication.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Base: deterministic per-epoch batches, sharded by rank, resumable mid-epoch.

    Subclasses implement :meth:`epoch_batches`. With ``tag_epoch`` each index is yielded as
    ``(index, epoch)`` so a dataset can seed per-epoch randomness from it. State is
    ``{"epoch", "batches_done"}``, where ``batches_done`` counts this rank's batches already
    consumed in ``epoch``.
    """

    def __init__(
        self,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        drop_last: bool = False,
        tag_epoch: bool = False,
    ):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.drop_last = drop_last
        self.tag_epoch = tag_epoch
        self.epoch = 0
        self._skip = 0
        self._yielded = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def _rank_batches(self) -> list[list[int]]:
        if self._cache is None or self._cache[0] != self.epoch:
            batches = self.epoch_batches(self.epoch)
            if self.num_replicas > 1:
                # Equal batch counts on every rank, or collective ops would hang.
                usable = len(batches) // self.num_replicas * self.num_replicas
                batches = batches[:usable][self.rank :: self.num_replicas]
            self._cache = (self.epoch, batches)
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches()
        start, self._skip = self._skip, 0
        self._yielded = start
        for batch in batches[start:]:
            self._yielded += 1
            yield [(i, self.epoch) for i in batch] if self.tag_epoch else batch

    def __len__(self) -> int:
        # The whole epoch, even when resuming mid-way: Lightning counts the consumed batches as
        # already done and ends the epoch at this length.
        return len(self._rank_batches())

    def state_dict(self, batches_done: int | None = None) -> dict:
        """Position to resume from; pass ``batches_done`` when a loader prefetches ahead."""
        return {"epoch": self.epoch, "batches_done": self._yielded if batches_done is None else batches_done}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self._skip = int(state["batches_done"])


class FixedSizeBatchSampler(EpochBatchSampler):
    """Shuffled fixed-size batches of ``range(num_items)`` (for fixed-length crops)."""

    def __init__(self, num_items: int, batch_size: int, shuffle: bool = True, **kwargs):
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.num_items = num_items
        self.batch_size = batch_size
        self.shuffle = shuffle

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        order = list(range(self.num_items))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if self.drop_last and batches and len(batches[-1]) < self.batch_size:
            batches.pop()
        return batches


class DurationBucketSampler(EpochBatchSampler):
    """Batches of similar-length items whose padded size fits a frame budget.

    Items are shuffled, cut into pools, sorted by length inside each pool, and packed greedily so
    that ``len(batch) * longest_item_frames <= max_frames``; the batch order is then shuffled.
    Pools keep batches varied from epoch to epoch while padding stays small.

    Args:
        durations: seconds per item.
        max_frames: padded-frame budget per batch (``batch_size x longest item``, in frames).
        frame_rate: frames per second used to count frames (12.5 for latents, 24000 for samples).
        max_batch_size: optional cap on items per batch.
        pool_size: items per sorting pool (``None``: one pool, tightest packing).
        ids: item names, used in error messages.
    """

    def __init__(
        self,
        durations: Sequence[float],
        max_frames: int,
        frame_rate: float = 12.5,
        max_batch_size: int | None = None,
        pool_size: int | None = 4096,
        shuffle: bool = True,
        ids: Sequence[str] | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.frames = [max(1, math.ceil(d * frame_rate)) for d in durations]
        too_long = [i for i, f in enumerate(self.frames) if f > max_frames]
        if too_long:
            i = too_long[0]
            name = ids[i] if ids is not None else f"item {i}"
            raise ValueError(
                f"{len(too_long)} item(s) exceed the batch budget of {max_frames} frames, e.g. {name} "
                f"({self.frames[i]} frames = {durations[i]:.2f}s); raise max_frames or filter long items"
            )
        self.max_frames = max_frames
        self.max_batch_size = max_batch_size
        self.pool_size = pool_size
        self.shuffle = shuffle

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = random.Random(self.seed * 1_000_003 + epoch)
        order = list(range(len(self.frames)))
        if self.shuffle:
            rng.shuffle(order)
        pool = self.pool_size or max(1, len(order))
        batches: list[list[int]] = []
        for start in range(0, len(order), pool):
            batches.extend(self._pack(sorted(order[start : start + pool], key=self.frames.__getitem__)))
        if self.shuffle:
            rng.shuffle(batches)
        return batches

    def _pack(self, sorted_indices: list[int]) -> list[list[int]]:
        batches, current, longest = [], [], 0
        for index in sorted_indices:
            new_longest = max(longest, self.frames[index])
            full = self.max_batch_size is not None and len(current) >= self.max_batch_size
            if current and (full or (len(current) + 1) * new_longest > self.max_frames):
                batches.append(current)
                current, new_longest = [], self.frames[index]
            current.append(index)
            longest = new_longest
        if current and not (self.drop_last and batches):
            batches.append(current)
        return batches
