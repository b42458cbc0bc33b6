"""Per-provider pools of keep-alive upstream connections.

Acquire and release are O(1): idle connections sit on a stack (LIFO, so the warmest
connection is reused and the coldest ones age out), each stamped with the time it was
released; staleness is a timestamp compare on acquire, and the 1 Hz tick sweeps the rest.
When no idle connection is usable, a new one is opened, up to `max_connections`; beyond
that, exchanges wait in a FIFO for the next released connection, bounded by the connect
timeout. Connecting is the one place the request path creates a Task: it is the cold path.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

from proxy import errors
from proxy.upstream import ACTIVE, CLOSED, IDLE, ResponseHandler, UpstreamProtocol
from proxy.wire import JSON_TYPE

if TYPE_CHECKING:
    from proxy.config import ProviderSettings, Route

log = logging.getLogger("llm_edge.pool")


class Waiter(Protocol):
    """What the pool needs of an exchange waiting for a connection."""

    done: bool
    t_waited: float


class Pool:
    """The connections to one provider."""

    __slots__ = (
        "provider", "handler", "loop", "ssl", "idle", "open", "waiters", "request_prefixes", "tasks", "opened_total",
        "retired",
    )  # fmt: skip

    def __init__(self, provider: ProviderSettings, loop: asyncio.AbstractEventLoop, handler: ResponseHandler) -> None:
        self.provider = provider
        self.handler = handler  # the pipeline: told when a connection is ready or cannot be had
        self.loop = loop
        self.ssl = make_ssl_context(provider.ca_file) if provider.tls else None
        self.idle: list[UpstreamProtocol] = []
        self.open = 0  # connected or connecting
        self.waiters: deque[tuple[Any, Route, float]] = deque()
        self.tasks: set[asyncio.Task[None]] = set()
        self.opened_total = 0
        self.retired = False  # replaced by a config reload: connections close as they come back
        # "POST /v1/chat/completions HTTP/1.1\r\nhost: ...\r\nauthorization: ...\r\n", per endpoint
        self.request_prefixes: dict[str, bytes] = {}
        for endpoint in ("/chat/completions", "/messages", "/embeddings"):
            self.request_prefixes[endpoint] = (
                b"POST " + provider.path(endpoint) + b" HTTP/1.1\r\n" + provider.fixed_headers + JSON_TYPE
            )

    def acquire(self, ex: Waiter, route: Route) -> UpstreamProtocol | None:
        """An idle connection now, or None: then the handler's `on_connected` or `on_connect_failed` follows."""
        idle = self.idle
        if idle:
            oldest_ok = self.loop.time() - self.provider.pool_idle_timeout_s
            while idle:
                conn = idle.pop()
                if conn.released_at >= oldest_ok and conn.state == IDLE:
                    conn.reused = True
                    return conn
                conn.close()
        self.connect_new(ex, route)
        return None

    def connect_new(self, ex: Waiter, route: Route) -> None:
        """Open a fresh connection for `ex`, or queue it when the pool is at its bound."""
        if self.open < self.provider.max_connections:
            self._connect(ex, route)
        else:
            self.waiters.append((ex, route, self.loop.time() + self.provider.connect_timeout_s))

    def release(self, conn: UpstreamProtocol) -> None:
        """Take back a connection that finished a response cleanly."""
        if conn.state == CLOSED:
            return  # closed meanwhile: connection_lost has already forgotten it
        while self.waiters:
            ex, route, _ = self.waiters.popleft()
            if not ex.done:
                conn.state = ACTIVE
                conn.reused = True
                self._hand_over(ex, conn, route)
                return
        if self.retired:
            conn.close()
            return
        conn.state = IDLE
        conn.released_at = self.loop.time()
        self.idle.append(conn)

    def discard(self, conn: UpstreamProtocol) -> None:
        """Forget a closed connection; a waiting exchange may now connect."""
        self.open -= 1
        if conn in self.idle:  # cold path: the provider closed an idle connection
            self.idle.remove(conn)
        while self.waiters and self.open < self.provider.max_connections:
            ex, route, _ = self.waiters.popleft()
            if not ex.done:
                self._connect(ex, route)

    def sweep(self, now: float) -> None:
        """Close idle connections past their expiry and fail waiters past their deadline (on the tick)."""
        oldest_ok = now - self.provider.pool_idle_timeout_s
        idle = self.idle
        while idle and idle[0].released_at < oldest_ok:
            idle.pop(0).close()
        while self.waiters and (self.waiters[0][2] <= now or self.waiters[0][0].done):
            ex, route, _ = self.waiters.popleft()
            if not ex.done:
                self._connect_failed(
                    ex, route, errors.PoolTimeout(f"no connection to provider {self.provider.name!r} became free in time")
                )

    def retire(self) -> None:
        """No new requests will come: close idle connections now, busy ones when they finish."""
        self.retired = True
        for conn in list(self.idle):
            conn.close()

    def close(self) -> None:
        """Close every connection (shutdown)."""
        for conn in list(self.idle):
            conn.close()
        for task in list(self.tasks):
            task.cancel()

    @property
    def idle_count(self) -> int:
        return len(self.idle)

    def __repr__(self) -> str:
        return f"<Pool {self.provider.name} open={self.open} idle={len(self.idle)} waiting={len(self.waiters)}>"

    # internal

    def _connect(self, ex: Waiter, route: Route) -> None:
        self.open += 1
        task = self.loop.create_task(self._open_for(ex, route))
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # retrieved: never "never retrieved"
            log.error("connecting to provider %r failed unexpectedly", self.provider.name, exc_info=task.exception())

    def _hand_over(self, ex: Waiter, conn: UpstreamProtocol, route: Route) -> None:
        try:
            self.handler.on_connected(ex, conn, route)
        except Exception as exc:  # a boundary: the connect task and release() call this
            if conn.ex is not ex:  # not yet carrying the request: nobody else will close it
                conn.close()
            self.handler.on_crash(ex, exc, conn)

    def _connect_failed(self, ex: Waiter, route: Route, exc: errors.UpstreamError) -> None:
        try:
            self.handler.on_connect_failed(ex, route, exc)
        except Exception as error:
            self.handler.on_crash(ex, error, None)

    async def _open_for(self, ex: Waiter, route: Route) -> None:
        provider = self.provider
        started = perf_counter()
        try:
            _, conn = await asyncio.wait_for(
                self.loop.create_connection(
                    lambda: UpstreamProtocol(self),
                    provider.host,
                    provider.port,
                    ssl=self.ssl,
                    server_hostname=provider.host if self.ssl else None,
                ),
                provider.connect_timeout_s,
            )
        except asyncio.CancelledError:
            self.open -= 1
            raise
        except (TimeoutError, asyncio.TimeoutError):
            self.open -= 1
            self._connect_failed(ex, route, errors.ConnectTimeout(f"connecting to provider {provider.name!r} timed out"))
            return
        except ssl.SSLError as exc:
            self.open -= 1
            reason = exc.reason or "handshake failed"
            self._connect_failed(ex, route, errors.ConnectError(f"TLS to provider {provider.name!r} failed: {reason}"))
            return
        except OSError as exc:
            self.open -= 1
            reason = exc.strerror or type(exc).__name__
            self._connect_failed(ex, route, errors.ConnectError(f"cannot connect to provider {provider.name!r}: {reason}"))
            return
        if conn.state == CLOSED or conn.transport is None or conn.transport.is_closing():
            # Accepted, then closed or reset at once: its connection_lost has done (or will do)
            # the pool's bookkeeping; this attempt failed to connect.
            self._connect_failed(ex, route, errors.ConnectError(f"provider {provider.name!r} closed the connection at once"))
            return
        self.opened_total += 1
        ex.t_waited += perf_counter() - started
        conn.state = ACTIVE
        self._hand_over(ex, conn, route)  # released again if the attempt was abandoned meanwhile


def make_ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Verifying TLS client context; `ca_file` replaces the system trust store when given."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])
    return context
