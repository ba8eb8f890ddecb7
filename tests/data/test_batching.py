import random

import pytest

from pockettts.data.batching import DurationBucketSampler, FixedSizeBatchSampler


def _durations(n=500, seed=0):
    rng = random.Random(seed)
    return [rng.uniform(0.5, 20.0) for _ in range(n)]


def _sampler(durations, **kwargs):
    return DurationBucketSampler(durations, max_frames=600, frame_rate=12.5, pool_size=128, seed=3, **kwargs)


def test_every_batch_fits_the_budget_and_every_item_appears_once():
    durations = _durations()
    sampler = _sampler(durations)
    batches = list(sampler)
    frames = sampler.frames
    assert all(len(b) * max(frames[i] for i in b) <= 600 for b in batches)
    assert sorted(i for b in batches for i in b) == list(range(len(durations)))
    # Bucketing keeps padding low: most of each batch is real frames.
    padded = sum(len(b) * max(frames[i] for i in b) for b in batches)
    assert sum(frames) / padded > 0.8


def test_order_is_seeded_and_changes_with_the_epoch():
    durations = _durations()
    a, b = _sampler(durations), _sampler(durations)
    assert list(a) == list(b)
    b.set_epoch(1)
    assert list(a) != list(b)


def test_max_batch_size_caps_items_per_batch():
    sampler = DurationBucketSampler([1.0] * 50, max_frames=10_000, max_batch_size=8)
    assert max(len(b) for b in sampler) == 8


@pytest.mark.parametrize(
    "make",
    [
        lambda: _sampler(_durations()),
        lambda: FixedSizeBatchSampler(103, batch_size=8, seed=5),
    ],
)
def test_resume_continues_at_the_same_position(make):
    reference = make()
    reference.set_epoch(2)
    full = list(reference)

    interrupted = make()
    interrupted.set_epoch(2)
    iterator = iter(interrupted)
    seen = [next(iterator) for _ in range(5)]
    state = interrupted.state_dict()
    assert state == {"epoch": 2, "batches_done": 5}

    resumed = make()
    resumed.load_state_dict(state)
    rest = list(resumed)
    assert seen + rest == full
    assert len(resumed) == len(full)  # the skip applies to one pass only
    resumed.set_epoch(3)
    assert list(resumed) != full


@pytest.mark.parametrize("replicas, accumulate", [(3, 1), (2, 2), (1, 4)])
def test_ranks_and_accumulation_split_the_same_global_batches(replicas, accumulate):
    """Whatever the devices x accumulation split, one optimizer step sees the global batch the
    single-process sampler makes, in equal shares of similar lengths."""
    durations = _durations()
    shares = replicas * accumulate

    def sampler(**kwargs):
        return DurationBucketSampler(
            durations, max_frames=600 * shares, max_batch_size=12, pool_size=128, seed=3, **kwargs
        )

    whole = sampler(accumulate=shares)  # one process, all shares as micro-batches
    per_rank = [list(sampler(num_replicas=replicas, rank=r, accumulate=accumulate)) for r in range(replicas)]
    assert len({len(b) for b in per_rank}) == 1  # equal batch counts, or collectives would hang
    micro = list(whole)
    steps = len(micro) // shares
    for step in range(steps):
        expected = micro[step * shares : (step + 1) * shares]
        got = [b for rank in per_rank for b in rank[step * accumulate : (step + 1) * accumulate]]
        assert got == expected
        assert len({len(b) for b in got}) == 1  # the same number of rows on every device
        assert all(len(b) * max(whole.frames[i] for i in b) <= 600 for b in got)  # each share fits
        assert len(sum(got, [])) <= 12
    ids = [i for rank in per_rank for b in rank for i in b]
    assert len(ids) == len(set(ids)) and len(ids) > 0.95 * len(durations)
    with pytest.raises(ValueError, match="rank 3 is outside"):
        sampler(num_replicas=3, rank=3)
    with pytest.raises(ValueError, match="does not split evenly into 5 device"):
        DurationBucketSampler(durations, max_frames=10_000, max_batch_size=12, num_replicas=5)


def test_fixed_size_global_batches_split_into_shares():
    whole = list(FixedSizeBatchSampler(22, batch_size=8, seed=5))
    ranks = [list(FixedSizeBatchSampler(22, batch_size=8, seed=5, num_replicas=2, rank=r)) for r in range(2)]
    for step, batch in enumerate(whole):
        assert ranks[0][step] == batch[0::2] and ranks[1][step] == batch[1::2]
    assert len(ranks[0]) == len(ranks[1]) == 3 and len(ranks[0][2]) == 3  # the last 6 items, 3 each
    with pytest.raises(ValueError, match="batch_size 8 .* does not split evenly into 3 device"):
        FixedSizeBatchSampler(22, batch_size=8, num_replicas=3)


def test_resume_state_counts_global_batches():
    sampler = FixedSizeBatchSampler(40, batch_size=4, seed=1, accumulate=2)
    full = list(sampler)
    iterator = iter(sampler)
    seen = [next(iterator) for _ in range(5)]  # 2.5 optimizer steps
    state = sampler.state_dict()
    assert state["batches_done"] == 2  # the interrupted step restarts from its first micro-batch
    resumed = FixedSizeBatchSampler(40, batch_size=4, seed=1, accumulate=2)
    resumed.load_state_dict(state)
    assert seen[:4] + list(resumed) == full


def test_item_longer_than_budget_is_named():
    with pytest.raises(ValueError, match=r"exceed the batch budget of 100 frames, e.g. utt_b \(250 frames"):
        DurationBucketSampler([1.0, 20.0], max_frames=100, ids=["utt_a", "utt_b"])


def test_tagged_epoch_indices():
    sampler = FixedSizeBatchSampler(4, batch_size=2, shuffle=False, tag_epoch=True)
    sampler.set_epoch(7)
    assert list(sampler) == [[(0, 7), (1, 7)], [(2, 7), (3, 7)]]
