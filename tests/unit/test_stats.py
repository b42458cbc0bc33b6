"""Histograms and usage scanning."""

from __future__ import annotations

import random

from proxy.stats import Histogram, bucket_bounds, scan_usage


def test_buckets_are_contiguous_and_exact_below_32us() -> None:
    previous_high = 0
    for index in range(34 * 16):
        low, high = bucket_bounds(index)
        assert low == previous_high and high > low
        previous_high = high
    assert bucket_bounds(7) == (7, 8)


def test_percentiles_within_a_few_percent() -> None:
    rng = random.Random(7)
    samples = [rng.lognormvariate(4, 1) for _ in range(20000)]  # microseconds
    hist = Histogram()
    for us in samples:
        hist.record(us / 1e6)
    samples_us = sorted(int(s) for s in samples)
    for q in (0.5, 0.9, 0.99):
        exact = samples_us[int(q * len(samples_us)) - 1]
        assert abs(hist.percentile(q) - exact) <= max(2, exact * 0.04)
    assert hist.count == 20000 and hist.max_us == samples_us[-1]


def test_empty_and_extreme_values() -> None:
    hist = Histogram()
    assert hist.percentile(0.99) == 0.0
    hist.record(-1.0)
    hist.record(1e9)
    assert hist.count == 2 and hist.percentile(0.01) == 0.5


def test_scan_usage_openai_and_anthropic_tails() -> None:
    assert scan_usage(b'..."usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}') == (12, 30)
    assert scan_usage(b'data: {"choices":[],"usage":{"prompt_tokens": 3, "completion_tokens": 4}}\n\ndata: [DONE]') == (3, 4)
    assert scan_usage(b'"usage":{"input_tokens":9,"output_tokens":2}') == (9, 2)
    assert scan_usage(b"no usage here") == (0, 0)
