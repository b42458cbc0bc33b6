"""sim.hist: buckets, percentiles (nearest rank), merge and serialization. No loop, no I/O."""
from __future__ import annotations

import random

import pytest

from sim.hist import Histogram, bucket_of, bucket_range


def hist(values: list[float]) -> Histogram:
    h = Histogram()
    for v in values:
        h.record(v)
    return h


def test_small_values_are_exact_nearest_rank() -> None:
    h = hist(list(range(1, 101)))
    assert (h.percentile(50), h.percentile(90), h.percentile(99), h.percentile(100)) == (50, 90, 99, 100)
    assert h.percentile(0.5) == 1  # rank rounds up, never to 0
    assert (h.min, h.max, h.n, h.mean()) == (1, 100, 100, 50.5)


def test_nearest_rank_on_tiny_sets() -> None:
    h = hist([10, 20])
    assert h.percentile(50) == 10
    assert h.percentile(50.1) == 20
    assert h.percentile(99) == 20
    assert hist([7]).summary() == {"count": 1, "min": 7, "mean": 7.0, "p50": 7, "p90": 7, "p99": 7, "max": 7}


def test_empty() -> None:
    h = Histogram()
    assert h.percentile(99) == 0.0
    assert h.summary()["count"] == 0
    assert h.summary()["max"] == 0.0


def test_fractions_truncate_and_negatives_clamp() -> None:
    h = hist([3.9, -5.0])
    assert (h.min, h.max) == (0, 3)


@pytest.mark.parametrize("v", [0, 1, 255, 256, 257, 511, 512, 1000, 4095, 4096, 10**6, 2**33 + 12345])
def test_bucket_contains_value(v: int) -> None:
    low, high = bucket_range(bucket_of(v))
    assert low <= v < high
    assert (high - low) <= max(1, low // 128)  # at most 1/128 of the value wide


def test_buckets_are_contiguous_and_monotonic() -> None:
    prev_high = 0
    for idx in range(bucket_of(2**30)):
        low, high = bucket_range(idx)
        assert low == prev_high, idx
        prev_high = high


def test_large_values_within_half_a_percent() -> None:
    rng = random.Random(7)
    values = sorted(rng.uniform(300, 5_000_000) for _ in range(5000))
    h = hist(values)
    for q in (50, 90, 99):
        exact = int(values[-(-q * len(values) // 100) - 1])
        assert abs(h.percentile(q) - exact) <= exact * 0.005, q
    assert h.percentile(100) == int(values[-1])


def test_percentile_is_clamped_to_exact_min_and_max() -> None:
    h = hist([1_000_001] * 10)
    assert h.percentile(50) == 1_000_001


def test_merge_equals_recording_everything() -> None:
    a, b = hist([5, 500, 50_000]), hist([7, 7_000_000])
    a.merge(b)
    whole = hist([5, 500, 50_000, 7, 7_000_000])
    assert a.to_dict() == whole.to_dict()
    a.merge(Histogram())
    assert a.n == 5
    empty = Histogram()
    empty.merge(b)
    assert (empty.min, empty.max) == (7, 7_000_000)


def test_dict_round_trip() -> None:
    h = hist([1, 2, 300, 40_000])
    again = Histogram.from_dict(h.to_dict())
    assert again.to_dict() == h.to_dict()
    assert again.summary() == h.summary()
    assert "n=4" in repr(again)
