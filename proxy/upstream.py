"""The provider side: one `UpstreamProtocol` per pooled keep-alive connection.

Theory of operation. A connection is IDLE in its pool or ACTIVE on one exchange. `send`
writes a request; the response is relayed raw: its head once, adjusted by
the pipeline's `on_upstream_head`, then every byte exactly as the provider framed it (content-length
or chunked), each read passed on as it arrives, nothing buffered. httptools' response parser
sees the same bytes only to validate them and to find where the response ends; its callbacks
just set flags, so no Python runs per body piece.

When the response completes the connection goes back to its pool, but only if it was
complete, keep-alive, and nothing went wrong; after any error it is closed. While IDLE, any
byte or EOF from the provider means the connection is no use: it closes and leaves the pool
at once (a Protocol learns this from a callback; nothing polls).

Deadlines: one timer per connection. It is always scheduled no later than the true deadline
(the first byte, the idle gap between reads, or the total), and re-arms itself when it fires
early, so moving a deadline later costs a float store and no timer is made per request.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from enum import IntEnum
from time import perf_counter
from typing import TYPE_CHECKING, Any, Protocol

import httptools

from proxy import errors, response

if TYPE_CHECKING:
    from proxy.config import ProviderSettings, Route

log = logging.getLogger("llm_edge.upstream")

INF = float("inf")
MAX_HEAD_BYTES = 64 * 1024
_END_OF_HEAD = b"\r\n\r\n"


class ResponseHandler(Protocol):
    """What a connection calls as its response arrives: the pipeline, handed in through the pool.

    `owner` is the exchange the response belongs to; this layer never looks inside it."""

    def on_upstream_head(self, owner: Any, conn: UpstreamProtocol, head: bytes, rest: bytes) -> None: ...

    def on_upstream_data(self, owner: Any, data: bytes, last: bool) -> None: ...

    def on_upstream_done(self, owner: Any, conn: UpstreamProtocol, reusable: bool) -> None: ...

    def on_upstream_error(self, owner: Any, conn: UpstreamProtocol, exc: errors.UpstreamError) -> None: ...

    def on_decoded_head(self, owner: Any, conn: UpstreamProtocol) -> None: ...

    def on_decoded_body(self, owner: Any, conn: UpstreamProtocol, data: bytes) -> None: ...

    def on_decoded_read(self, owner: Any, conn: UpstreamProtocol) -> None: ...

    def on_connected(self, owner: Any, conn: UpstreamProtocol, route: Route) -> None: ...

    def on_connect_failed(self, owner: Any, route: Route, exc: errors.UpstreamError) -> None: ...

    def on_crash(self, owner: Any, exc: BaseException, conn: UpstreamProtocol | None) -> None: ...


class ConnectionOwner(Protocol):
    """What a connection needs of the pool it belongs to."""

    provider: ProviderSettings
    loop: asyncio.AbstractEventLoop
    handler: ResponseHandler
    request_prefixes: dict[str, bytes]

    def release(self, conn: UpstreamProtocol) -> None: ...

    def discard(self, conn: UpstreamProtocol) -> None: ...


class ConnState(IntEnum):
    NEW = 0
    IDLE = 1
    ACTIVE = 2
    CLOSED = 3


# The states as plain module constants for the request path: on CPython 3.11 reading an enum
# member through its class goes through EnumType.__getattr__, 144 ns against 12 ns (timeit).
NEW, IDLE, ACTIVE, CLOSED = ConnState.NEW, ConnState.IDLE, ConnState.ACTIVE, ConnState.CLOSED


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive connection to a provider."""

    __slots__ = (
        "pool", "handler", "loop", "transport", "parser", "decoder", "translation", "state", "ex", "route", "reused",
        "released_at", "retry_after", "max_head_bytes",
        "status", "head", "head_bytes", "head_done", "message_done", "keep_alive", "in_chunk", "close_delimited",
        "t_first",
        "deadline", "timer_at", "total_deadline", "timer", "read_paused",
    )  # fmt: skip

    def __init__(self, pool: ConnectionOwner) -> None:
        self.pool = pool
        self.handler: ResponseHandler = pool.handler
        self.loop = pool.loop
        self.max_head_bytes = MAX_HEAD_BYTES
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.decoder: httptools.HttpResponseParser | None = None  # made on first use: see `_Decoded`
        self.translation: Any = None  # the exchange's `adapt.Translation` when this response is translated
        self.retry_after = 0.0
        self.state = NEW
        self.ex: Any = None  # the exchange being answered (opaque here)
        self.route: Route | None = None  # the route of the attempt this connection carries
        self.reused = False
        self.released_at = 0.0
        # per response
        self.status = 0
        self.head = b""  # the response head while it is still arriving
        self.head_bytes = 0  # bytes received before the head was complete (the decoded path)
        self.head_done = False  # the head has been handed to the pipeline
        self.message_done = False
        self.keep_alive = False
        self.in_chunk = False  # inside a chunk of a chunked body: no event can be injected here
        self.close_delimited = False  # the body ends at EOF (set by the pipeline from the head)
        self.t_first = 0.0  # perf_counter() at the response's first byte
        # deadlines
        self.deadline = INF
        self.timer_at = INF
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
        try:
            if self.translation is not None:
                self._decode(ex, data)
                return
            # The raw relay, inline: this runs once per upstream read.
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self._fail(errors.UpstreamProtocolError(f"provider {self.pool.provider.name!r} sent an invalid response"))
                return
            if self.head_done:
                self.deadline = min(self.loop.time() + self.pool.provider.stream_idle_timeout_s, self.total_deadline)
                self.handler.on_upstream_data(ex, data, self.message_done)
            else:
                if not self.head:
                    self.t_first = perf_counter()
                self._on_head_bytes(ex, data)
            if self.message_done and self.ex is ex:
                self._complete(reusable=self.keep_alive)
        except Exception as exc:  # a boundary: whatever went wrong above, the exchange still ends
            self._crashed(ex, exc)

    def eof_received(self) -> bool:
        ex = self.ex
        try:
            if ex is not None and self.head_done and self.close_delimited:
                self._complete(reusable=False)  # a close-delimited body ends at EOF
            else:
                self.close()
        except Exception as exc:
            self._crashed(ex, exc)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self._cancel_timer()
        ex = self.ex
        try:
            if ex is not None:
                self._fail(errors.UpstreamClosedError(f"provider {self.pool.provider.name!r} closed the connection"))
        except Exception as error:
            self._crashed(ex, error)
        finally:
            self.pool.discard(self)

    # httptools parser callbacks: flags only, the bytes are relayed by data_received

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()

    def on_message_complete(self) -> None:
        if self.status >= 200:
            self.message_done = True
            self.keep_alive = self.parser.should_keep_alive()  # read now: the parser resets after

    def on_chunk_header(self) -> None:
        self.in_chunk = True

    def on_chunk_complete(self) -> None:
        self.in_chunk = False

    # called by the pool and the pipeline

    def send(
        self, ex: Any, head: bytes, body: bytes, translation: Any, head_deadline_s: float
    ) -> None:
        """Write one request and wait for its response (decoded for `translation`, else relayed raw).

        `head_deadline_s`: how long the response head may take (the provider's first-byte
        timeout, or the model's shorter attempt deadline so another route can be tried)."""
        provider = self.pool.provider
        self.state = ACTIVE
        self.ex = ex
        self.translation = translation
        if translation is not None and self.decoder is None:
            self.decoder = httptools.HttpResponseParser(_Decoded(self))
        self.retry_after = 0.0
        self.status = 0
        self.head = b""
        self.head_bytes = 0
        self.head_done = False
        self.message_done = False
        self.in_chunk = False
        self.close_delimited = False
        self.t_first = 0.0
        assert self.transport is not None
        self.transport.writelines((head, body))  # one writev: head and body in one segment
        now = self.loop.time()
        self.total_deadline = now + provider.total_timeout_s
        first_byte = min(provider.first_byte_timeout_s, head_deadline_s)
        self.deadline = min(now + first_byte, self.total_deadline)
        # Schedule no later than any deadline this request can reach, so later moves are free.
        soonest = now + min(provider.soonest_timeout_s, first_byte)
        if soonest < self.timer_at:
            self._schedule(soonest)

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
        if self.state != ACTIVE:
            self.connection_lost(None)

    def detach(self) -> None:
        """The exchange no longer wants this connection (client gone, or hedging lost): drop it."""
        self.ex = None
        self.close()

    # internal

    def _crashed(self, ex: Any, exc: BaseException) -> None:
        self.ex = None
        self.deadline = INF
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if ex is not None:
            self.handler.on_crash(ex, exc, self)

    def _decode(self, ex: Any, data: bytes) -> None:
        # The translated path: the decoder's callbacks hand the pipeline decoded body pieces.
        if not self.head_done:
            if not self.head_bytes:
                self.t_first = perf_counter()
            self.head_bytes += len(data)
        assert self.decoder is not None
        try:
            self.decoder.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if not isinstance(cause, errors.UpstreamError):
                log.error("error translating a response", exc_info=cause)
                cause = errors.UpstreamProtocolError("the gateway failed to translate the response")
            self._fail(cause)
            return
        except httptools.HttpParserError:
            self._fail(errors.UpstreamProtocolError(f"provider {self.pool.provider.name!r} sent an invalid response"))
            return
        if not self.head_done and self.head_bytes > self.max_head_bytes and self.ex is ex:
            # Still no whole head: httptools would keep joining an endless header in memory.
            self._fail(errors.UpstreamProtocolError(f"provider {self.pool.provider.name!r} sent an oversized head"))
            return
        if self.ex is not ex:
            return  # the head lost a race or failed over: this connection is already dropped
        if self.head_done:
            self.handler.on_decoded_read(ex, self)  # one write per upstream read
        if self.head_done:
            self.deadline = min(self.loop.time() + self.pool.provider.stream_idle_timeout_s, self.total_deadline)
        if self.message_done:
            self._complete(reusable=self.keep_alive)

    def _on_decoded_head(self) -> None:
        ex = self.ex
        assert ex is not None
        self.head_done = True
        self.deadline = min(self.loop.time() + self.pool.provider.stream_idle_timeout_s, self.total_deadline)
        if self.deadline < self.timer_at:
            self._schedule(self.deadline)
        self.handler.on_decoded_head(ex, self)

    def _on_head_bytes(self, ex: Any, data: bytes) -> None:
        head = self.head + data if self.head else data
        start, interim = response.interim_heads_end(head) if head[9:10] == b"1" else (0, 0)
        end = head.find(_END_OF_HEAD, start) if start >= 0 else -1
        if 0 < self.status < 100:  # not an HTTP status: refused now, not at the first-byte timeout
            self._fail(errors.UpstreamProtocolError(f"provider {self.pool.provider.name!r} answered status {self.status}"))
            return
        if self.status < 200 or end < 0:  # the parser has not seen the whole final head yet
            if len(head) - max(start, 0) > self.max_head_bytes or interim > response.MAX_INTERIM_HEADS:
                self._fail(errors.UpstreamProtocolError(f"provider {self.pool.provider.name!r} sent an oversized head"))
                return
            self.head = head
            return
        end += 4
        problem = None
        if interim or end - start > self.max_head_bytes or not 200 <= self.status <= 599:
            problem = response.head_problem(self.status, end - start, interim, self.max_head_bytes)
        if problem is not None:  # bounded however the bytes arrived: in pieces or in one read
            self._fail(errors.UpstreamProtocolError(f"provider {self.pool.provider.name!r}: {problem}"))
            return
        self.head = b""
        self.head_done = True
        self.deadline = min(self.loop.time() + self.pool.provider.stream_idle_timeout_s, self.total_deadline)
        if self.deadline < self.timer_at:  # once per response: the idle phase may end sooner
            self._schedule(self.deadline)
        self.handler.on_upstream_head(ex, self, head[start:end], head[end:])

    def _complete(self, reusable: bool) -> None:
        ex = self.ex
        assert ex is not None
        self.ex = None
        self.deadline = INF
        self.resume_reading()
        if reusable:
            self.state = IDLE
        try:
            self.handler.on_upstream_done(ex, self, reusable)
        except Exception as error:
            self.handler.on_crash(ex, error, self)
            reusable = False
        if not reusable:
            self.close()

    def _fail(self, exc: errors.UpstreamError) -> None:
        ex = self.ex
        self.ex = None
        self.deadline = INF
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()
        if ex is not None:
            try:
                self.handler.on_upstream_error(ex, self, exc)
            except Exception as error:  # a boundary: the timer and connection_lost call this
                self.handler.on_crash(ex, error, self)

    def _schedule(self, when: float) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer_at = when
        self.timer = self.loop.call_at(when, self._on_timer)

    def _cancel_timer(self) -> None:
        self.deadline = INF
        self.timer_at = INF
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _on_timer(self) -> None:
        self.timer = None
        self.timer_at = INF
        if self.ex is None or self.deadline == INF:
            return
        if self.loop.time() < self.deadline:
            self._schedule(self.deadline)
            return
        name = self.pool.provider.name
        if not self.head_done:
            self._fail(errors.FirstByteTimeout(f"provider {name!r} timed out waiting for the first byte"))
        elif self.deadline >= self.total_deadline:
            self._fail(errors.TotalTimeout(f"provider {name!r} timed out waiting for the whole response"))
        else:
            self._fail(errors.StreamIdleTimeout(f"provider {name!r} timed out waiting for the next piece"))


class _Decoded:
    """Parser callbacks for a response that is translated rather than relayed: they see
    decoded body pieces. A separate object so the raw path's parser has no `on_body` at all
    (httptools wires only the callbacks an object has)."""

    __slots__ = ("conn",)

    def __init__(self, conn: UpstreamProtocol) -> None:
        self.conn = conn

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() == b"retry-after":
            try:
                self.conn.retry_after = max(0.0, float(value))
            except ValueError:
                pass

    def on_headers_complete(self) -> None:
        conn = self.conn
        conn.status = conn.decoder.get_status_code()  # type: ignore[union-attr]
        if conn.status >= 200:
            conn._on_decoded_head()

    def on_body(self, body: bytes) -> None:
        conn = self.conn
        if conn.ex is not None and conn.translation is not None:
            conn.handler.on_decoded_body(conn.ex, conn, body)

    def on_message_complete(self) -> None:
        conn = self.conn
        if conn.status >= 200:
            conn.message_done = True
            conn.keep_alive = conn.decoder.should_keep_alive()  # type: ignore[union-attr]
