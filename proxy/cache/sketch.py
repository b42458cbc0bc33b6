# proxy/cache/sketch.py: a TinyLFU-style frequency sketch, for optional admission to the store.
#
# A count-min sketch: 4 rows of 4-bit-saturating counters (one byte each, capped at 15) in a bytearray.
# `record(key)` runs on every lookup, hit or miss; `estimate(key)` is the smallest of the 4 counters.
# After `sample` records, every counter is halved (one bytes.translate in C), so old popularity fades.
# Row indexes are 16-bit slices of hash(key): bytes cache their hash, and the store's dict lookup has
# already computed it, so indexing costs no extra hashing. With one 64-bit hash, a row is at most
# 65536 counters wide; past ~65k entries the sketch just gets less precise, never wrong in a way that
# matters (admission is a heuristic). Nothing here does I/O.
from __future__ import annotations

_ROWS = 4  # unrolled in record() / estimate()
_MAX_WIDTH = 1 << 16
_CAP = 15
_HALVE = bytes(i >> 1 for i in range(256))


class FrequencySketch:
    """Approximate access counts of recently seen keys."""

    __slots__ = ("_mask", "_sample_size", "_samples", "_table", "_width")

    def __init__(self, capacity: int, sample_factor: int = 10) -> None:
        width = 16
        while width < capacity and width < _MAX_WIDTH:
            width <<= 1
        self._width = width
        self._mask = width - 1
        self._table = bytearray(_ROWS * width)
        self._samples = 0
        self._sample_size = max(16, sample_factor * capacity)

    def record(self, key: bytes) -> None:
        """Count one access to `key`."""
        h = hash(key)
        mask, width, table = self._mask, self._width, self._table
        # Unrolled over the 4 rows: ~1.3x faster than a `for row in range(4)` loop (0.51 vs 0.69 us,
        # bench: test_sketch_record).
        i = h & mask
        if table[i] < _CAP:
            table[i] += 1
        i = width + ((h >> 16) & mask)
        if table[i] < _CAP:
            table[i] += 1
        i = 2 * width + ((h >> 32) & mask)
        if table[i] < _CAP:
            table[i] += 1
        i = 3 * width + ((h >> 48) & mask)
        if table[i] < _CAP:
            table[i] += 1
        self._samples += 1
        if self._samples >= self._sample_size:
            self._table = table.translate(_HALVE)  # one C pass halves every counter
            self._samples //= 2

    def estimate(self, key: bytes) -> int:
        """How often `key` was seen recently (never under-counted, except by the periodic halving)."""
        h = hash(key)
        mask, width, table = self._mask, self._width, self._table
        return min(
            table[h & mask],
            table[width + ((h >> 16) & mask)],
            table[2 * width + ((h >> 32) & mask)],
            table[3 * width + ((h >> 48) & mask)],
        )
