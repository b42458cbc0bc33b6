"""The provider side: one `UpstreamProtocol` per pooled keep-alive connection.

Theory of operation. A connection is IDLE in its pool or ACTIVE on one exchange. `send`
writes a request and arms the first-byte deadline; the httptools response parser's callbacks
relay the head and each body piece to `pipeline` as they arrive, with nothing buffered. When
the response completes the connection goes back to its pool, but only if the response was
complete, keep-alive, and nothing went wrong; after any error it is closed.

While IDLE, any byte or EOF from the provider means the connection is no use: it closes and
leaves the pool at once (a Protocol learns this from a callback; nothing polls).

Deadlines: one timer per connection with a movable deadline, the earlier of the phase
deadline (first byte, or the idle gap between body pieces) and the exchange's total deadline.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from enum import IntEnum
from time import perf_counter
from typing import TYPE_CHECKING

import httptools

from proxy import errors, pipeline
from proxy.wire import HOP_BY_HOP

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.pool import Pool

log = logging.getLogger("llm_edge.upstream")

INF = float("inf")


class ConnState(IntEnum):
    NEW = 0
    IDLE = 1
    ACTIVE = 2
    CLOSED = 3


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection to a provider."""

    __slots__ = (
        "pool", "loop", "transport", "parser", "state", "ex", "reused", "released_at",
        "status", "headers", "content_length", "chunked", "keep_alive", "retry_after", "head_done",
        "deadline", "total_deadline", "timer", "read_paused",
    )  # fmt: skip

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.state = ConnState.NEW
        self.ex: Exchange | None = None
        self.reused = False
        self.released_at = 0.0
        # per response
        self.status = 0
        self.headers: list[bytes] = []
        self.content_length = -1
        self.chunked = False
        self.keep_alive = True
        self.retry_after = b""
        self.head_done = False
        # deadlines
        self.deadline = INF
        self.total_deadline = INF
        self.timer: asyncio.TimerHandle | None = None
        self.read_paused = False

    # asyncio.Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports don't subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass

    def data_received(self, data: bytes) -> None:
        ex = self.ex
        if ex is None:
            # Bytes on an idle connection: the provider broke the protocol or is closing.
            self.close()
            return
        if not ex.t_upstream:
            ex.t_upstream = perf_counter()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            log.error("error relaying an upstream response", exc_info=exc.__context__)
            self._fail(errors.UpstreamProtocolError("the gateway failed while relaying the response"))
        except httptools.HttpParserError:
            self._fail(errors.UpstreamProtocolError(f"provider {self.pool.provider.name!r} sent an invalid response"))

    def eof_received(self) -> bool:
        ex = self.ex
        if ex is not None and self.head_done and self.content_length < 0 and not self.chunked:
            self._complete(reusable=False)  # a close-delimited body ends at EOF
        else:
            self.close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == ConnState.CLOSED:
            return
        self.state = ConnState.CLOSED
        self._cancel_timer()
        if self.ex is not None:
            self._fail(errors.UpstreamClosed(f"provider {self.pool.provider.name!r} closed the connection"))
        self.pool.discard(self)

    # httptools parser callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in HOP_BY_HOP:
            if name == b"content-length":
                self.content_length = int(value)
            elif name == b"transfer-encoding":
                self.chunked = True
            elif name == b"connection" and b"close" in value.lower():
                self.keep_alive = False
            return
        if name == b"retry-after":
            self.retry_after = value
        self.headers.append(b"%b: %b\r\n" % (name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status < 200:  # an interim 1xx: its headers are not the response's
            self.headers = []
            return
        self.head_done = True
        self._arm_idle()
        ex = self.ex
        assert ex is not None
        pipeline.on_upstream_head(ex, self)

    def on_body(self, body: bytes) -> None:
        self._arm_idle()
        ex = self.ex
        assert ex is not None
        pipeline.on_upstream_body(ex, body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self._complete(reusable=self.keep_alive and self.parser.should_keep_alive())

    # called by the pool and the pipeline

    def send(self, ex: Exchange, head: bytes, body: bytes) -> None:
        """Write one request and wait for its response."""
        provider = self.pool.provider
        self.state = ConnState.ACTIVE
        self.ex = ex
        ex.upstream = self
        self.status = 0
        self.headers = []
        self.content_length = -1
        self.chunked = False
        self.keep_alive = True
        self.retry_after = b""
        self.head_done = False
        assert self.transport is not None
        self.transport.writelines((head, body))
        now = self.loop.time()
        self.total_deadline = now + provider.total_timeout_s
        self._arm(min(now + provider.first_byte_timeout_s, self.total_deadline))

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Close for good; the pool forgets the connection in `connection_lost`."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if self.state != ConnState.ACTIVE:
            self.connection_lost(None)

    def detach(self) -> None:
        """The exchange no longer wants this connection (client gone, or hedging lost): drop it."""
        self.ex = None
        self.close()

    @property
    def usable(self) -> bool:
        """True if this idle connection can carry another request."""
        return self.state == ConnState.IDLE and self.transport is not None and not self.transport.is_closing()

    # internal

    def _complete(self, reusable: bool) -> None:
        ex = self.ex
        assert ex is not None
        self.ex = None
        self._cancel_timer()
        self.resume_reading()
        if reusable:
            self.state = ConnState.IDLE
        pipeline.on_upstream_done(ex, self, reusable)
        if not reusable:
            self.close()

    def _fail(self, exc: errors.UpstreamError) -> None:
        ex = self.ex
        self.ex = None
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if ex is not None:
            pipeline.on_upstream_error(ex, self, exc)

    def _arm_idle(self) -> None:
        self._arm(min(self.loop.time() + self.pool.provider.stream_idle_timeout_s, self.total_deadline))

    def _arm(self, deadline: float) -> None:
        self.deadline = deadline
        if self.timer is None:
            self.timer = self.loop.call_at(deadline, self._on_timer)

    def _cancel_timer(self) -> None:
        self.deadline = INF
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        if self.ex is None or self.deadline == INF:
            return
        if self.loop.time() < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._on_timer)
            return
        name = self.pool.provider.name
        if not self.head_done:
            what = "the first byte"
        elif self.deadline >= self.total_deadline:
            what = "the whole response"
        else:
            what = "the next piece of the response"
        self._fail(errors.UpstreamTimeout(f"provider {name!r} timed out waiting for {what}"))
