"""The optional shared cache tier: answers in Redis, shared by every gateway that points at it.

Redis must never make the gateway worse. Every lookup has a tight deadline
(`[cache] redis_timeout_ms`); a timeout or an error counts as a miss, logs one warning, and
switches the tier off for a short back-off so that a dead Redis costs one deadline per
back-off period, not one per request. Writes are fire-and-forget. A request never fails or
stalls because of Redis.

Stored value: the answer's JSON body in the client's format, under
`llm-edge:<format>:<key hex>` with the entry's TTL; the local entry (with its SSE forms) is
rebuilt from it on a hit. Cold path only: L1 misses of cacheable requests.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

log = logging.getLogger("llm_edge.cache")

BACKOFF_S = 2.0  # after a failure, skip Redis this long


class RedisTier:
    """Best-effort get/put against one Redis server."""

    def __init__(self, url: str, timeout_ms: float, loop: asyncio.AbstractEventLoop) -> None:
        import redis.asyncio as redis  # imported only when a tier is configured

        self.loop = loop
        self.timeout = timeout_ms / 1000.0
        self.client = redis.Redis.from_url(url, socket_connect_timeout=max(self.timeout, 0.05), socket_timeout=None)
        self.down_until = 0.0
        self.tasks: set[asyncio.Task[None]] = set()
        self.hits = self.misses = self.errors = 0

    @property
    def available(self) -> bool:
        """False during the back-off after a failure."""
        return self.loop.time() >= self.down_until

    def get(self, key: bytes, done: Callable[[bytes | None], None]) -> None:
        """Look `key` up; `done(value or None)` is called exactly once, within the deadline."""
        self._spawn(self._get(key, done))

    def put(self, key: bytes, value: bytes, ttl_s: float) -> None:
        """Store `value` under `key` for `ttl_s` seconds, without waiting."""
        if self.available and ttl_s >= 1:
            self._spawn(self._put(key, value, int(ttl_s)))

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        try:
            await self.client.aclose()
        except Exception:  # closing a broken connection: nothing left to do
            pass

    async def _get(self, key: bytes, done: Callable[[bytes | None], None]) -> None:
        value: Any = None
        try:
            value = await asyncio.wait_for(self.client.get(key), self.timeout)
        except asyncio.CancelledError:
            done(None)
            raise
        except Exception as exc:
            self._failed("lookup", exc)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        done(value)

    async def _put(self, key: bytes, value: bytes, ttl: int) -> None:
        try:
            await asyncio.wait_for(self.client.set(key, value, ex=ttl), max(self.timeout * 4, 0.05))
        except Exception as exc:
            self._failed("write", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        self.errors += 1
        if self.available:
            # The message names the failure kind only: a Redis URL may carry a password.
            log.warning("redis %s failed (%s); serving from the local cache only for %.0fs", what,
                        type(exc).__name__, BACKOFF_S)  # fmt: skip
        self.down_until = self.loop.time() + BACKOFF_S

    def _spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = self.loop.create_task(coro)  # type: ignore[arg-type]
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
