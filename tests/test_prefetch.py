"""The read-ahead thread: order kept, the reader's error raised where it happened, early stop."""

from __future__ import annotations

import threading
import time

import pytest

from macgpt.prefetch import prefetched


def test_items_come_in_order_across_chunks() -> None:
    assert list(prefetched(range(10_001), chunk=7, depth=3)) == list(range(10_001))
    assert list(prefetched([], chunk=7)) == []


def test_an_error_of_the_reader_is_raised_after_the_items_before_it() -> None:
    def items():
        yield from range(600)
        raise ValueError("data.jsonl:601: not JSON")

    got = []
    with pytest.raises(ValueError, match=r"data\.jsonl:601"):
        for x in prefetched(items(), chunk=256):
            got.append(x)
    assert got == list(range(600))


def test_a_consumer_that_stops_early_stops_the_reader() -> None:
    read = []

    def items():
        for i in range(10**9):
            read.append(i)
            yield i

    for x in prefetched(items(), chunk=10, depth=2):
        if x == 5:
            break
    time.sleep(0.3)
    n = len(read)
    time.sleep(0.3)
    assert len(read) == n < 200  # read ahead by a few chunks at most, then stopped
    assert not any(t.name == "prefetch" and t.is_alive() for t in threading.enumerate())
