"""Cache (the response cache's state): its bounds, its counters, and the optional L2."""

from __future__ import annotations

import pytest

from proxy.cache import CacheSettings
from proxy.response_cache import Cache
from tests.fakes import FakeLoop


def test_the_entry_bound_is_the_smaller_of_the_store_and_32_mib() -> None:
    assert Cache(CacheSettings(max_bytes=1000), FakeLoop()).max_entry_bytes == 1000  # type: ignore[arg-type]
    assert Cache(CacheSettings(), FakeLoop()).max_entry_bytes == 32 * 1024 * 1024  # type: ignore[arg-type]


def test_snapshot_counts() -> None:
    cache = Cache(CacheSettings(), FakeLoop())  # type: ignore[arg-type]
    cache.inflight[b"k"] = object()
    cache.coalesced, cache.stored = 3, 2
    snap = cache.snapshot()
    assert snap["coalesced"] == 3 and snap["stored"] == 2 and snap["in_flight_keys"] == 1
    assert "l2_hits" not in snap and cache.l2 is None


def test_an_l2_is_made_only_when_configured() -> None:
    pytest.importorskip("redis")
    loop = FakeLoop()
    cache = Cache(CacheSettings(redis_url="redis://127.0.0.1:1/0", redis_timeout_ms=5), loop)  # type: ignore[arg-type]
    assert cache.l2 is not None and cache.l2.timeout == 0.005
    snap = cache.snapshot()
    assert (snap["l2_hits"], snap["l2_misses"], snap["l2_errors"]) == (0, 0, 0)
