"""Seeded, resumable batch samplers (fixed-size and duration-bucketed), split across ranks.

Each epoch's list of *global* batches (everything one optimizer step sees) is a pure function of
``(seed, epoch)``. A global batch is split into ``num_replicas x accumulate`` equal shares: rank
``r`` yields shares ``r*accumulate ... r*accumulate + accumulate - 1`` of every global batch, one
micro-batch each. So the data of an optimizer step is the same whatever the number of devices or
accumulation steps, every rank agrees on the split without communication, and a resumed run can
skip exactly the global batches it already consumed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Base: deterministic per-epoch global batches, split into shares, resumable mid-epoch.

    Subclasses implement :meth:`epoch_batches`, returning global batches whose sizes are multiples
    of :attr:`shares`; share ``s`` of a global batch is ``batch[s::shares]``. With ``tag_epoch``
    each index is yielded as ``(index, epoch)`` so a dataset can seed per-epoch randomness from it.
    State is ``{"epoch", "batches_done"}``, where ``batches_done`` counts the global batches
    already consumed in ``epoch``.

    Args:
        num_replicas, rank: data-parallel processes and this one's rank.
        accumulate: micro-batches per optimizer step on each rank (gradient accumulation).
    """

    def __init__(
        self,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        accumulate: int = 1,
        drop_last: bool = False,
        tag_epoch: bool = False,
    ):
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is outside 0..{num_replicas - 1}")
        if accumulate < 1:
            raise ValueError(f"accumulate must be >= 1, got {accumulate}")
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.accumulate = accumulate
        self.drop_last = drop_last
        self.tag_epoch = tag_epoch
        self.epoch = 0
        self._skip = 0
        self._yielded = 0
        self._cache: tuple[int, list[list[int]]] | None = None

    @property
    def shares(self) -> int:
        """How many micro-batches one global batch is split into (all ranks, all accumulation steps)."""
        return self.num_replicas * self.accumulate

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0
        self.epoch = epoch

    def _rank_batches(self) -> list[list[int]]:
        """This rank's micro-batches of the epoch, ``accumulate`` per global batch, in order."""
        if self._cache is None or self._cache[0] != self.epoch:
            own = range(self.rank * self.accumulate, (self.rank + 1) * self.accumulate)
            micro = [batch[share :: self.shares] for batch in self.epoch_batches(self.epoch) for share in own]
            self._cache = (self.epoch, micro)
        return self._cache[1]

    def __iter__(self) -> Iterator[list[int]]:
        batches = self._rank_batches()
        start, self._skip = self._skip * self.accumulate, 0
        self._yielded = start
        for batch in batches[start:]:
            self._yielded += 1
            yield [(i, self.epoch) for i in batch] if self.tag_epoch else batch

    def __len__(self) -> int:
        # The whole epoch, even when resuming mid-way: Lightning counts the consumed batches as
        # already done and ends the epoch at this length.
        return len(self._rank_batches())

    def state_dict(self, batches_done: int | None = None) -> dict:
        """Position to resume from. ``batches_done`` counts this rank's micro-batches (pass it when
        a loader prefetches ahead); the state counts whole global batches, so a step whose
        accumulation was interrupted is redone from its first micro-batch."""
        done = self._yielded if batches_done is None else batches_done
        return {"epoch": self.epoch, "batches_done": done // self.accumulate}

    def load_state_dict(self, state: dict) -> None:
        self.epoch = int(state["epoch"])
        self._skip = int(state["batches_done"])


class FixedSizeBatchSampler(EpochBatchSampler):
    """Shuffled fixed-size global batches of ``range(num_items)`` (for fixed-length crops).

    ``batch_size`` is the global batch (all ranks and accumulation steps together) and must split
    evenly into :attr:`shares`. A last, incomplete batch is dropped with ``drop_last``; otherwise it
    is cut to a multiple of the shares (every rank needs a non-empty share of it).
    """

    def __init__(self, num_items: int, batch_size: int, shuffle: bool = True, **kwargs):
        super().__init__(**kwargs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if batch_size % self.shares:
            raise ValueError(
                f"batch_size {batch_size} (the global batch) does not split evenly into "
                f"{self.num_replicas} device(s) x {self.accumulate} accumulation step(s)"
            )
        self.num_items = num_items
        self.batch_size = batch_size
        self.shuffle = shuffle

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        order = list(range(self.num_items))
        if self.shuffle:
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if batches and len(batches[-1]) < self.batch_size:
            last = batches.pop()
            usable = len(last) // self.shares * self.shares
            if usable and not self.drop_last:
                batches.append(last[:usable])
        return batches


class DurationBucketSampler(EpochBatchSampler):
    """Global batches of similar-length items whose padded size fits a frame budget.

    Items are shuffled, cut into pools, sorted by length inside each pool, grouped into units of
    :attr:`shares` neighbours (one item per share) and packed greedily so that
    ``len(batch) * longest_item_frames <= max_frames``; the batch order is then shuffled. Pools keep
    batches varied from epoch to epoch while padding stays small. Each share of a global batch
    holds one item of every unit, so all devices get the same number of rows of similar lengths,
    and each share's padded size is at most ``max_frames / shares``. The last ``< shares`` items of
    a pool (a different few every epoch) wait for the next epoch.

    Args:
        durations: seconds per item.
        max_frames: padded-frame budget per global batch (``rows x longest item``, in frames).
        frame_rate: frames per second used to count frames (12.5 for latents, 24000 for samples).
        max_batch_size: optional cap on rows per global batch (a multiple of the shares).
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
        split = "" if self.shares == 1 else f" shared by {self.shares} micro-batches"
        too_long = [i for i, f in enumerate(self.frames) if f * self.shares > max_frames]
        if too_long:
            i = too_long[0]
            name = ids[i] if ids is not None else f"item {i}"
            raise ValueError(
                f"{len(too_long)} item(s) exceed the batch budget of {max_frames} frames{split}, e.g. "
                f"{name} ({self.frames[i]} frames = {durations[i]:.2f}s); raise max_frames or filter "
                "long items"
            )
        if max_batch_size is not None and max_batch_size % self.shares:
            raise ValueError(
                f"max_batch_size {max_batch_size} (rows per global batch) does not split evenly into "
                f"{self.num_replicas} device(s) x {self.accumulate} accumulation step(s)"
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
        n = self.shares
        units = [sorted_indices[i : i + n] for i in range(0, len(sorted_indices) - n + 1, n)]
        batches, current, longest = [], [], 0
        for unit in units:
            new_longest = max(longest, self.frames[unit[-1]])
            full = self.max_batch_size is not None and len(current) + n > self.max_batch_size
            if current and (full or (len(current) + n) * new_longest > self.max_frames):
                batches.append(current)
                current, new_longest = [], self.frames[unit[-1]]
            current.extend(unit)
            longest = new_longest
        if current and not (self.drop_last and batches):
            batches.append(current)
        return batches
