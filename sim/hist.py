# sim/hist.py: a log-linear latency histogram in integer microseconds, and percentiles.
#
# Rules: pure code, no I/O, no clock. Constant memory whatever the run length (a soak run
# records tens of millions of samples), O(1) record, mergeable across load processes.
#
# Theory of operation: values below 2**SUB_BITS µs get one bucket each, so they are exact.
# Above that, each power of two is split into 2**(SUB_BITS-1) equal buckets, so a bucket is
# at most 1/128 of its value wide: a reported percentile is the bucket midpoint, within
# 0.4% of the true sample, and is then clamped to the exact min and max. Percentiles use
# the nearest-rank definition: pXX is the smallest recorded value with at least XX% of the
# samples at or below it.
from __future__ import annotations

from typing import Any

SUB_BITS = 8
_SUB = 1 << SUB_BITS  # 256 exact buckets for 0..255 µs
_HALF = _SUB >> 1
MAX_EXP = 40  # 2**(40+8) µs is ~9 years; larger values are clamped into the top bucket
_NBUCKETS = (MAX_EXP + 2) * _HALF
_TOP = _NBUCKETS - 1

PERCENTILES = (50.0, 90.0, 99.0)


def bucket_of(v: int) -> int:
    """Return the bucket index of a non-negative integer value (µs)."""
    if v < _SUB:
        return v if v > 0 else 0
    e = v.bit_length() - SUB_BITS
    idx = (e << (SUB_BITS - 1)) + (v >> e)
    return idx if idx < _TOP else _TOP


def bucket_range(idx: int) -> tuple[int, int]:
    """Return the half-open value range ``[low, high)`` covered by bucket ``idx``."""
    if idx < _SUB:
        return idx, idx + 1
    e = (idx >> (SUB_BITS - 1)) - 1
    m = idx - (e << (SUB_BITS - 1))
    return m << e, (m + 1) << e


class Histogram:
    """Counts of integer-microsecond samples in log-linear buckets (see module header)."""

    __slots__ = ("counts", "n", "min", "max", "total")

    def __init__(self) -> None:
        self.counts = [0] * _NBUCKETS
        self.n = 0
        self.min = 0
        self.max = 0
        self.total = 0

    def record(self, us: float) -> None:
        """Add one sample, in microseconds (fractions are truncated, negatives become 0)."""
        v = int(us)
        if v < _SUB:
            if v < 0:
                v = 0
            self.counts[v] += 1
        else:
            e = v.bit_length() - SUB_BITS
            idx = (e << (SUB_BITS - 1)) + (v >> e)
            self.counts[idx if idx < _TOP else _TOP] += 1
        if self.n == 0:
            self.min = self.max = v
        elif v > self.max:
            self.max = v
        elif v < self.min:
            self.min = v
        self.n += 1
        self.total += v

    def merge(self, other: Histogram) -> None:
        """Add every sample of ``other`` into this histogram."""
        if other.n == 0:
            return
        counts = self.counts
        for i, c in enumerate(other.counts):
            if c:
                counts[i] += c
        self.min = other.min if self.n == 0 else min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.n += other.n
        self.total += other.total

    def percentile(self, q: float) -> float:
        """Return the nearest-rank ``q``-th percentile (0 < q <= 100) in µs; 0.0 when empty."""
        n = self.n
        if n == 0:
            return 0.0
        if q >= 100.0:
            return float(self.max)
        rank = max(1, -(-int(q * n * 1000) // 100000))  # ceil(q/100 * n) without float error
        seen = 0
        for idx, c in enumerate(self.counts):
            if c:
                seen += c
                if seen >= rank:
                    low, high = bucket_range(idx)
                    value = low if high - low == 1 else (low + high - 1) / 2
                    return float(min(max(value, self.min), self.max))
        return float(self.max)

    def mean(self) -> float:
        """Mean of the truncated integer samples, in µs; 0.0 when empty."""
        return self.total / self.n if self.n else 0.0

    def summary(self, percentiles: tuple[float, ...] = PERCENTILES) -> dict[str, float]:
        """Return ``{"count", "min", "mean", "p50", "p90", "p99", "max"}`` (values in µs)."""
        out: dict[str, float] = {"count": self.n, "min": float(self.min), "mean": round(self.mean(), 1)}
        for q in percentiles:
            out[f"p{q:g}"] = self.percentile(q)
        out["max"] = float(self.max)
        return out

    def to_dict(self) -> dict[str, Any]:
        """Serialize to a compact JSON-able dict (sparse ``[bucket, count]`` pairs)."""
        return {
            "n": self.n,
            "min": self.min,
            "max": self.max,
            "total": self.total,
            "buckets": [[i, c] for i, c in enumerate(self.counts) if c],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Histogram:
        """Rebuild a histogram serialized by :meth:`to_dict`."""
        h = cls()
        for i, c in d["buckets"]:
            h.counts[i] = c
        h.n, h.min, h.max, h.total = d["n"], d["min"], d["max"], d["total"]
        return h

    def __repr__(self) -> str:
        return f"<Histogram n={self.n} p50={self.percentile(50):g} p99={self.percentile(99):g} max={self.max}>"
