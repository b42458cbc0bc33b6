"""The gateway-wide state every connection shares, and its 1 Hz housekeeping.

`Gateway` holds the current configuration generation, stats, the response cache, the
access log, and a few byte strings the request path reuses (the date header, the attempt
headers). Time-derived bytes are rebuilt by the tick, never per request. Listening, signals
and draining are `server`'s.
"""

from __future__ import annotations

import asyncio
import os
import time
from email.utils import formatdate
from typing import Any

from proxy import dashboard, totals
from proxy.accesslog import AccessLog
from proxy.config import Settings
from proxy.dashboard import History
from proxy.errors import ConfigError
from proxy.fleet import Fleet
from proxy.generation import Generation
from proxy.keys_admin import KeysAdmin
from proxy.ledger import Ledger
from proxy.limits import Accounts
from proxy.pool import Pool
from proxy.response_cache import Cache
from proxy.routing import Router
from proxy.shared import INTERVAL_S as SHARE_INTERVAL_S
from proxy.shared import SharedRoutes
from proxy.stats import Stats
from proxy.upstream import ResponseHandler

# Every 5th share (250 ms): gathering ~3000 counters costs ~40 µs, and a scrape's own worker publishes first anyway.
COUNTERS_EVERY = 5


def start_tracing(settings: Settings) -> Any:
    """The OpenTelemetry tracer (`proxy.tracing.Tracer`), or None when tracing is off: the SDK is then
    never imported. Built in each worker after the fork (the SDK's export threads do not survive one)."""
    if not settings.tracing.enabled:
        return None
    try:
        from proxy.tracing import Tracer
    except ImportError as exc:
        raise ConfigError(f"tracing.otlp_endpoint: the OpenTelemetry SDK is not installed "
                          f"(pip install 'llm-edge[otel]'): {exc}") from None  # fmt: skip
    return Tracer(settings.tracing)


class GatewayState:
    """Shared state of one gateway process."""

    def __init__(
        self,
        settings: Settings,
        loop: asyncio.AbstractEventLoop,
        handler: ResponseHandler,
        shared: SharedRoutes | None = None,
    ) -> None:
        self.loop = loop
        self.handler = handler  # the request path, called back by upstream connections
        self.shared = shared  # route state shared with the other workers, when there are several
        self.accounts = Accounts(settings.auth.workers)
        self.ledger = Ledger(settings.ledger.path, self.accounts, sync_budgets=settings.limits.redis_url is None)
        self.ledger.load(time.time())  # run-time keys first: they decide whether keys are required
        self.gen = Generation(settings, loop, handler, accounts=self.accounts)
        self.ledger.load(time.time())  # then every configured key's spend in its period
        self.fleet = Fleet(settings.limits, self.accounts, loop) if settings.limits.redis_url else None
        self.keys_admin = KeysAdmin(self.accounts, self.ledger.history)
        self.stats = Stats()
        self.tracer = start_tracing(settings)  # None unless [tracing] otlp_endpoint is set
        otlp = self.tracer.emit_logs if self.tracer is not None and settings.tracing.export_logs else None
        self.access_log = AccessLog(settings.log, otlp=otlp) if settings.log.enabled or otlp else None
        self.request_ids = 0
        self.request_id_prefix = f"req_{os.getpid():x}_"
        self.cache = Cache(settings.cache, loop) if settings.cache.enabled else None
        self.history = History()  # the dashboard's last minutes, one sample per tick
        self.connections: set[Any] = set()  # client connections (server's protocols), for draining
        self.created = int(time.time())
        self.started_at = time.monotonic()
        self.draining = False
        self.server: asyncio.Server | None = None
        self.date_header = b""
        self.attempt_headers = [b"x-llm-edge-attempts: %d\r\n" % n for n in range(10)]
        self._tick_handle: asyncio.TimerHandle | None = None
        self._tick()
        self._shares = 0
        if shared is not None:
            self._share()

    # The current generation's parts, for code that is not in a request (admin, ticks, tests).
    @property
    def settings(self) -> Settings:
        return self.gen.settings

    @property
    def pools(self) -> list[Pool]:
        return self.gen.pools

    @property
    def router(self) -> Router:
        return self.gen.router

    def next_request_id(self) -> str:
        """The gateway's own id for a request: unique per process, cheap, never reused."""
        self.request_ids += 1
        return f"{self.request_id_prefix}{self.request_ids:x}"

    def reload(self, settings: Settings) -> None:
        """Swap in a new configuration; requests in flight finish on the old one."""
        old, self.gen = self.gen, Generation(settings, self.loop, self.handler, previous=self.gen, accounts=self.accounts)
        self.ledger.flush(time.time())  # a key back in the file gets its spend at once
        old.retire(self.gen)

    def _tick(self) -> None:
        now = time.time()
        self.date_header = b"date: %b\r\n" % formatdate(now, usegmt=True).encode("ascii")
        loop_now = self.loop.time()
        for pool in self.pools:
            pool.sweep(loop_now)
        self.router.tick(loop_now)
        if self.cache is not None:
            self.cache.store.sweep(loop_now)
        self._flush_access_log()
        dashboard.tick(self, self.history, now)
        self.ledger.flush(now)
        if self.fleet is not None:
            self.fleet.tick(now)
        # Fire just after the next whole second, so the date header changes on time.
        self._tick_handle = self.loop.call_later(1.0 - (now % 1.0) + 0.001, self._tick)

    def _share(self) -> None:
        router = self.gen.router
        if self.shared is not None:
            self.shared.publish(router, self.settings.routes)
            self.shared.merge(router, self.settings.routes, self.loop.time())
            self._shares += 1
            if self._shares % COUNTERS_EVERY == 0:
                totals.publish(self)  # the other counters, for a scrape another worker answers
        self._share_handle = self.loop.call_later(SHARE_INTERVAL_S, self._share)

    def _flush_access_log(self) -> None:
        log = self.access_log
        if log is None or not log.pending:
            return
        log.flush(time.time(), time.perf_counter(), max_lines=1000)  # a few ms at most per turn of the loop
        if log.pending:
            self.loop.call_soon(self._flush_access_log)
