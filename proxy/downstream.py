"""The client side: one `DownstreamProtocol` per client connection.

Theory of operation. One httptools parser lives as long as the connection. Its callbacks
fill an `Exchange` per request; when a request is complete it is handed to
`pipeline.handle` if nothing is being answered, else queued, so pipelined requests are
answered in order. Reading pauses while requests queue, and resumes once they drain.

Bounds are enforced here, as the bytes arrive: head size, header count, URI length and body
size, plus one timer per connection whose deadline moves with the state: waiting for a
head (header_timeout_s), for a body (body_timeout_s), or idle between requests
(keepalive_timeout_s). While a request is being answered, upstream timeouts apply instead.

A request that breaks HTTP is answered 400 (or 413/414/431) in its turn, then the
connection closes: after ambiguous framing nothing else on it can be trusted.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING

import httptools

from proxy import errors, pipeline
from proxy.auth import presented_key
from proxy.exchange import Exchange
from proxy.request_head import (
    ANTHROPIC_BETA,
    ANTHROPIC_VERSION,
    CACHE_CONTROL,
    CACHE_TTL,
    CLIENT_KEY,
    CONNECTION,
    CONTENT_LENGTH,
    EXPECT,
    FORWARD,
    HOST,
    TRANSFER_ENCODING,
    UNSEEN,
    UPGRADE,
)
from proxy.wire import CONTINUE_100, Dechunker

if TYPE_CHECKING:
    from proxy.gateway import GatewayState as Gateway

log = logging.getLogger("llm_edge.downstream")

INF = float("inf")
_IDLE, _HEAD, _BODY = 0, 1, 2


_WRITE_HIGH_WATER = 64 * 1024


class Http10Client:
    """An HTTP/1.0 client's view of a response: HTTP/1.0 has no chunked coding, so a chunked
    answer goes out close-delimited, its framing removed as it passes."""

    __slots__ = ("conn", "head", "dechunker")

    def __init__(self, conn: DownstreamProtocol) -> None:
        self.conn = conn
        self.head = b""  # the head while it is incomplete
        self.dechunker: Dechunker | None = None

    def write(self, data: bytes) -> None:
        if self.head is not None:
            data = self.head + data
            end = data.find(b"\r\n\r\n")
            if end < 0:
                self.head = data
                return
            self.head = None  # type: ignore[assignment]
            head, data = data[: end + 2], data[end + 4 :]
            at = head.lower().find(b"\r\ntransfer-encoding: chunked\r\n")
            if at >= 0:
                head = head[:at] + head[at + 28 :]
                self.dechunker = Dechunker()
            self.conn.write(head + b"\r\n")
        if self.dechunker is not None:
            data = self.dechunker.feed(data)
        if data:
            self.conn.write(data)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.write(b"".join(parts))

    def exchange_done(self, ex: Exchange) -> None:
        self.conn.exchange_done(ex)

    def close(self) -> None:
        self.conn.close()


class _StopParsingError(Exception):
    """Raised from a parser callback to stop httptools mid-buffer."""


class DownstreamProtocol(asyncio.Protocol):
    """Parses requests off one client connection and writes their responses in order."""

    __slots__ = (
        "gateway", "loop", "limits", "transport", "parser",
        "reading", "active", "queue", "state", "head_fed", "deadline", "timer",
        "read_paused", "write_paused", "closed", "stop_reading",
    )  # fmt: skip

    def __init__(self, gateway: Gateway) -> None:
        # config
        self.gateway = gateway
        self.loop = gateway.loop
        self.limits = gateway.gen.settings.server
        # per connection
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.reading: Exchange | None = None  # being parsed
        self.active: Exchange | None = None  # being answered
        self.queue: deque[Exchange] = deque()  # parsed, waiting their turn
        self.state = _IDLE
        self.head_fed = 0  # bytes fed while a head is incomplete: bounds what httptools buffers
        self.deadline = INF
        self.timer: asyncio.TimerHandle | None = None
        self.read_paused = False
        self.write_paused = False
        self.closed = False
        self.stop_reading = False  # set after an unrecoverable parse error or an upgrade

    # asyncio.Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports don't subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)  # type: ignore[union-attr]
        self.gateway.connections.add(self)
        # A fresh connection must send its first head promptly (slowloris guard).
        self._arm(self.loop.time() + self.limits.header_timeout_s)

    def data_received(self, data: bytes) -> None:
        if self.stop_reading:
            return
        try:
            if self.state == _IDLE or self.state == _HEAD:
                self.head_fed += len(data)
            self.parser.feed_data(data)
            if self.state == _HEAD and self.head_fed > self.limits.max_header_bytes:
                raise errors.HeadersTooLargeError("request head is too large")
        except httptools.HttpParserUpgrade:
            self._on_upgrade()
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _StopParsingError):
                return
            if isinstance(cause, errors.GatewayError):
                self._reject(cause)
            else:
                log.exception("unexpected error while parsing a request")
                self._reject(errors.MalformedHTTPError("could not parse the request"))
        except httptools.HttpParserError as exc:
            self._reject(errors.MalformedHTTPError(f"malformed HTTP request: {exc}"))
        except errors.GatewayError as exc:
            self._reject(exc)

    def eof_received(self) -> bool:
        # The client is gone (nginx treats a read EOF the same way): cancel its work.
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.gateway.connections.discard(self)
        active, self.active = self.active, None
        self.queue.clear()
        if active is not None and not active.done:
            try:
                pipeline.abort(active)
            except Exception as error:  # a boundary: the exchange still ends
                pipeline.crashed(active, error)

    def pause_writing(self) -> None:
        self.write_paused = True
        active = self.active
        if active is not None and active.upstream is not None:
            active.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        active = self.active
        if active is not None and active.upstream is not None:
            active.upstream.resume_reading()
        elif active is None and not self.closed:
            self._next()  # answers were held back while the client was not reading

    # httptools parser callbacks

    def on_message_begin(self) -> None:
        if self.stop_reading:
            raise _StopParsingError  # bytes after a "close" or a rejected request are not ours to answer
        self.reading = Exchange(self.gateway, self)
        if self.state == _IDLE:
            self.state = _HEAD
            if self.active is None:
                self._arm(self.loop.time() + self.limits.header_timeout_s)

    def on_url(self, url: bytes) -> None:
        ex = self.reading
        assert ex is not None
        ex.url += url  # httptools may deliver the URL in several pieces
        if len(ex.url) > self.limits.max_uri_bytes:
            raise errors.URITooLongError("request URI is too long")

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self.reading
        assert ex is not None
        if self.state != _HEAD:
            return  # a chunked trailer: nothing in one matters to us
        ex.header_count += 1
        ex.header_bytes += len(name) + len(value) + 4
        if ex.header_count > self.limits.max_headers:
            raise errors.HeadersTooLargeError(f"more than {self.limits.max_headers} request headers")
        actions = self.gateway.gen.header_actions
        action = actions.get(name, UNSEEN)  # exact spellings first: most headers need no lower() at all
        if action is UNSEEN:
            name = name.lower()
            action = actions.get(name)
        if action is None:
            return
        if action == FORWARD:
            ex.forward_headers.append(b"%b: %b\r\n" % (name, value))
        elif action == CONTENT_LENGTH:
            ex.content_length = int(value)  # httptools has already checked the digits
            if ex.content_length > self.limits.max_body_bytes:
                raise errors.PayloadTooLargeError(f"request body exceeds {self.limits.max_body_bytes} bytes")
        elif action == HOST:
            ex.host_count += 1
        elif action == EXPECT:
            if value.lower() != b"100-continue":
                raise errors.ExpectationFailedError("only 'Expect: 100-continue' is supported")
            ex.expect_continue = True
        elif action == CONNECTION:
            if b"close" in value.lower():
                ex.keep_alive = False
        elif action == CACHE_CONTROL:
            ex.cache_control = value
        elif action == ANTHROPIC_VERSION:
            ex.anthropic_version = value
        elif action == ANTHROPIC_BETA:
            ex.anthropic_beta = value
            ex.forward_headers.append(b"%b: %b\r\n" % (name, value))
        elif action == CACHE_TTL:
            ex.cache_ttl = value
        elif action == TRANSFER_ENCODING:
            # httptools accepts codings it does not apply ("gzip, chunked", ", chunked"): anything
            # but plain chunked could be read two ways by two parsers, so it is refused (RFC 9112 6.1).
            if value.strip().lower() != b"chunked" or ex.chunked:
                raise errors.MalformedHTTPError("only 'Transfer-Encoding: chunked', once, is accepted")
            ex.chunked = True
        elif action == UPGRADE:
            ex.upgrade = True
        elif action == CLIENT_KEY:
            key = presented_key(name.lower(), value)
            if key and (not ex.client_key or name.lower() == b"x-api-key"):  # x-api-key wins, as Anthropic's SDK means it
                ex.client_key = key

    def on_headers_complete(self) -> None:
        ex = self.reading
        assert ex is not None
        parser = self.parser
        ex.method = parser.get_method()
        version = parser.get_http_version()
        if version != "1.1" and version != "1.0":
            raise errors.MalformedHTTPError(f"unsupported HTTP version {version}")
        if ex.chunked and version == "1.0":
            raise errors.MalformedHTTPError("Transfer-Encoding in an HTTP/1.0 request: the framing cannot be trusted")
        if ex.header_bytes > self.limits.max_header_bytes:
            raise errors.HeadersTooLargeError(f"request headers exceed {self.limits.max_header_bytes} bytes")
        if ex.host_count > 1 or (version == "1.1" and ex.host_count != 1):
            raise errors.MalformedHTTPError("a request needs exactly one Host header (HTTP/1.0: at most one)")
        if ex.upgrade:
            # httptools stops at an upgrade and would leave the body unread: say so plainly rather
            # than answer a request we only half read (curl --http2 on http:// asks for h2c).
            raise errors.MalformedHTTPError("protocol upgrades (h2c, websocket) are not supported: send plain HTTP/1.1")
        if not ex.url.startswith(b"/") and ex.method != b"CONNECT":  # CONNECT gets its 405 below
            raise errors.MalformedHTTPError("only origin-form request targets are accepted; this is not a forward proxy")
        ex.keep_alive = ex.keep_alive and parser.should_keep_alive()
        if version == "1.0":
            ex.keep_alive = False  # its answer may have to be close-delimited
            ex.client = Http10Client(self)
        self.state = _BODY
        self.head_fed = 0
        if self.active is None:
            self._arm(self.loop.time() + self.limits.body_timeout_s)
            if ex.expect_continue:
                self._continue(ex)
        # else: 100 Continue waits its turn, so it never lands inside another response (_next)

    def on_body(self, body: bytes) -> None:
        ex = self.reading
        assert ex is not None
        ex.body_parts.append(body)
        ex.body_size += len(body)
        if ex.body_size > self.limits.max_body_bytes:  # chunked bodies have no length to check up front
            raise errors.PayloadTooLargeError(f"request body exceeds {self.limits.max_body_bytes} bytes")

    def on_message_complete(self) -> None:
        ex = self.reading
        assert ex is not None
        self.reading = None
        parts = ex.body_parts
        ex.body = parts[0] if len(parts) == 1 else b"".join(parts)
        ex.body_parts = []
        self.state = _IDLE
        self.head_fed = 0
        if not ex.keep_alive:
            self.stop_reading = True  # nothing after a "close" request is ours to answer
        self._enqueue(ex)

    # called by the pipeline

    def exchange_done(self, ex: Exchange) -> None:
        """The response to `ex` is complete: start the next request, or close."""
        if ex is not self.active:
            return
        self.active = None
        if self.closed:
            return
        if ex.close_after or not ex.keep_alive or (self.stop_reading and not self.queue):
            self._close()
            return
        if self.write_paused:
            # The client is not reading what we wrote: answer nothing more, and read nothing
            # more, until it does (resume_writing). Otherwise a client pipelining small requests
            # could make the gateway buffer its answers without bound.
            if not self.read_paused and self.transport is not None:
                self.read_paused = True
                self.transport.pause_reading()
            self._arm(self.loop.time() + self.limits.keepalive_timeout_s)  # a reader that never comes back is let go
            return
        self._next()

    def _continue(self, ex: Exchange) -> None:
        if ex.expect_continue and self.transport is not None and not self.closed:
            ex.expect_continue = False
            self.transport.write(CONTINUE_100)

    def _next(self) -> None:
        if self.queue:
            self._start(self.queue.popleft())
            return
        reading = self.reading
        if reading is not None and self.state == _BODY:
            self._continue(reading)  # its turn has come: now the client may send the body
        if self.read_paused and self.transport is not None:
            self.read_paused = False
            self.transport.resume_reading()
        if self.state == _IDLE:
            self._arm(self.loop.time() + self.limits.keepalive_timeout_s)
        elif self.state == _HEAD:
            self._arm(self.loop.time() + self.limits.header_timeout_s)
        else:
            self._arm(self.loop.time() + self.limits.body_timeout_s)

    def write(self, data: bytes) -> None:
        """Write to the client unless it has gone."""
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        """Write several buffers in one syscall, without joining them."""
        if not self.closed and self.transport is not None:
            self.transport.writelines(parts)

    def close(self) -> None:
        """Close the connection now (after an error mid-response, or on shutdown)."""
        self._close()

    @property
    def idle(self) -> bool:
        """True when no request is in progress on this connection."""
        return self.active is None and self.state == _IDLE

    # internal

    def _enqueue(self, ex: Exchange) -> None:
        if self.active is None and not self.write_paused:
            self._start(ex)
            return
        self.queue.append(ex)
        if not self.read_paused and self.transport is not None:
            # A pipelined request waits its turn; stop reading more until the queue drains.
            self.read_paused = True
            self.transport.pause_reading()
        if len(self.queue) > self.limits.max_pipelined:
            self.stop_reading = True

    def _start(self, ex: Exchange) -> None:
        self.active = ex
        self.deadline = INF  # upstream deadlines govern while a request is answered
        ex.t_start = perf_counter()
        pipeline.handle(ex)

    def _reject(self, exc: errors.GatewayError) -> None:
        """Answer a request that could not be parsed, in its turn, then close."""
        self.stop_reading = True
        ex = self.reading or Exchange(self.gateway, self)
        self.reading = None
        ex.error = exc
        ex.keep_alive = False
        self.state = _IDLE
        self._enqueue(ex)

    def _on_upgrade(self) -> None:
        # httptools stops at CONNECT or an Upgrade request; we serve neither, so the bytes
        # after it are not HTTP we understand. The request itself is answered, then we close.
        self.stop_reading = True
        last = self.queue[-1] if self.queue else self.active
        if last is not None:
            last.keep_alive = False
        elif self.transport is not None:
            self._close()

    def _arm(self, deadline: float) -> None:
        # One timer per connection with a movable deadline: moving it later costs a float
        # store; the timer re-arms itself when it fires early. Only an earlier deadline
        # needs a new timer.
        self.deadline = deadline
        if deadline == INF:
            return
        timer = self.timer
        if timer is None or deadline < timer.when():
            if timer is not None:
                timer.cancel()
            self.timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self.timer = None
        if self.closed or self.deadline == INF:
            return
        if self.loop.time() < self.deadline:
            self.timer = self.loop.call_at(self.deadline, self._on_timer)
            return
        if self.active is not None:
            return
        if self.state == _IDLE and self.reading is None:
            self._close()  # keep-alive expired: close quietly
            return
        what = "request head" if self.state == _HEAD else "request body"
        self._reject(errors.RequestTimeout(f"timed out waiting for the {what}"))

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
            if self.transport.get_write_buffer_size():
                # close() waits for the buffer to drain; a client that never reads would hold the
                # connection for ever. Give it the keep-alive timeout, then drop it.
                if self.timer is not None:
                    self.timer.cancel()
                self.timer = self.loop.call_later(self.limits.keepalive_timeout_s, self.transport.abort)
