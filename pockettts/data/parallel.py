"""An ordered parallel map that looks only a bounded number of items ahead: preparation jobs over
hundreds of thousands of items neither submit them all at once nor hold their results in memory,
and their output comes in input order, so a parallel run writes what a serial one writes."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor
from itertools import islice
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    function: Callable[[T], R], items: Iterable[T], executor: Executor | None, ahead: int
) -> Iterator[R]:
    """``function(item)`` for each of ``items``, in order; with an ``executor`` (threads or
    processes) up to ``ahead`` items are computed ahead of the one yielded, without one in-process."""
    if executor is None:
        yield from map(function, items)
        return
    remaining = iter(items)
    pending = deque(executor.submit(function, item) for item in islice(remaining, max(ahead, 1)))
    while pending:
        future = pending.popleft()
        pending.extend(executor.submit(function, item) for item in islice(remaining, 1))
        yield future.result()
