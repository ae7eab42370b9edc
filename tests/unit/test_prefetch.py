"""prefetched and ordered_map: order, bounded read-ahead, errors, consumers that stop early."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

import time

from exdd.detector.prefetch import ordered_map, prefetched


def test_yields_every_item_in_order() -> None:
    assert list(prefetched(iter(range(100)), depth=3)) == list(range(100))
    assert list(prefetched([], depth=1)) == []


def test_a_producer_error_reaches_the_consumer() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise OSError("disk went away while decoding image 2")

    got = []
    with pytest.raises(OSError, match="image 2"):
        for item in prefetched(failing(), depth=2):
            got.append(item)
    assert got == [1]


def test_an_early_stop_closes_the_producer() -> None:
    produced: list[int] = []
    closed = threading.Event()

    def source() -> Iterator[int]:
        try:
            for i in range(10_000):
                produced.append(i)
                yield i
        finally:
            closed.set()

    for item in prefetched(source(), depth=2):
        if item == 5:
            break
    assert closed.wait(5), "the producer's generator was not closed"
    assert len(produced) <= 5 + 1 + 2 + 1  # consumed, the one in hand, the queue, one blocked
    assert not any(t.name == "exdd-prefetch" for t in threading.enumerate())


def test_depth_must_be_positive() -> None:
    with pytest.raises(ValueError, match="depth"):
        list(prefetched([1], depth=0))


def test_ordered_map_keeps_order_and_bounds_the_work_done_ahead() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def slow_square(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.001 * (i % 3))  # finish out of order
        return i * i

    consumed = 0
    for i, value in enumerate(ordered_map(slow_square, range(200), workers=4, ahead=8)):
        assert value == i * i
        consumed += 1
        time.sleep(0.002)  # a slow consumer, like the backbone
        with lock:
            assert len(started) <= consumed + 8  # never more than `ahead` beyond the consumer
    assert consumed == 200


def test_ordered_map_raises_at_the_failing_item() -> None:
    def decode(i: int) -> int:
        if i == 3:
            raise ValueError("image 3 is truncated")
        return i

    got = []
    with pytest.raises(ValueError, match="image 3"):
        for value in ordered_map(decode, range(10), workers=2, ahead=4):
            got.append(value)
    assert got == [0, 1, 2]
