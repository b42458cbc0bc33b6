"""The gateway's response cache as state: the L1 store, the leaders in flight, the optional L2.

The cache step of the request path (`caching`) reads and changes it; `/stats` and `/metrics`
read its counters. It outlives configuration reloads.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from proxy.cache import CacheSettings
from proxy.cache.store import new_store

if TYPE_CHECKING:
    from proxy.redis_tier import RedisTier


class Cache:
    """Policy-independent cache state shared by every generation of the configuration."""

    __slots__ = ("store", "inflight", "l2", "max_entry_bytes", "coalesced", "stored", "l2_hits")

    def __init__(self, settings: CacheSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.store = new_store(settings.max_entries, settings.max_bytes)
        self.inflight: dict[bytes, Any] = {}  # cache key -> the leading exchange (typed above this layer)
        self.max_entry_bytes = min(settings.max_bytes, 32 * 1024 * 1024)
        self.coalesced = 0
        self.stored = 0
        self.l2_hits = 0
        self.l2: RedisTier | None = None
        if settings.redis_url:
            from proxy.redis_tier import RedisTier

            self.l2 = RedisTier(settings.redis_url, settings.redis_timeout_ms, loop)

    def snapshot(self) -> dict[str, int]:
        """Counters for `GET /stats` and `/metrics`."""
        counters = self.store.counters()
        counters["coalesced"] = self.coalesced
        counters["stored"] = self.stored
        counters["in_flight_keys"] = len(self.inflight)
        if self.l2 is not None:
            counters["l2_hits"] = self.l2.hits
            counters["l2_misses"] = self.l2.misses
            counters["l2_errors"] = self.l2.errors
        return counters
