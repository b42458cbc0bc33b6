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
from proxy.wire import CONTINUE_100

if TYPE_CHECKING:
    from proxy.server import Gateway

log = logging.getLogger("llm_edge.downstream")

INF = float("inf")
_IDLE, _HEAD, _BODY = 0, 1, 2

# What to do with a request header, by lowercased name (see `header_actions`).
(
    FORWARD, CONTENT_LENGTH, HOST, EXPECT, CONNECTION, CACHE_CONTROL, ANTHROPIC_VERSION, ANTHROPIC_BETA, CACHE_TTL,
    CLIENT_KEY, TRANSFER_ENCODING, UPGRADE,
) = range(12)



_UNSEEN = -1

# Headers the SDKs, curl and load tools send that the gateway ignores, in the spellings they use:
# found by one exact dict probe instead of a lower() and a probe (bench/micro_hotpath.py).
_IGNORED = (
    b"Accept", b"accept", b"User-Agent", b"user-agent", b"Content-Type", b"content-type", b"Accept-Encoding",
    b"accept-encoding", b"X-Stainless-Lang", b"X-Stainless-Package-Version", b"X-Stainless-OS",
    b"X-Stainless-Arch", b"X-Stainless-Runtime", b"X-Stainless-Runtime-Version", b"X-Stainless-Async",
    b"x-stainless-retry-count", b"x-stainless-read-timeout", b"x-stainless-timeout", b"X-Stainless-Retry-Count",
    b"X-Stainless-Read-Timeout", b"x-stainless-lang", b"x-stainless-package-version", b"x-stainless-os",
    b"x-stainless-arch", b"x-stainless-runtime", b"x-stainless-runtime-version", b"x-stainless-async",
)  # fmt: skip


def header_actions(forwarded: tuple[bytes, ...]) -> dict[bytes, int | None]:
    """The request headers the gateway acts on, keyed by lowercased name: `forwarded` ones go
    upstream (`[server] forward_headers`); everything else, the client's credentials above
    all, stays here."""
    actions = {name: FORWARD for name in forwarded}
    if b"anthropic-beta" in actions:
        actions[b"anthropic-beta"] = ANTHROPIC_BETA  # forwarded, and part of the cache key
    actions.update(
        {
            b"content-length": CONTENT_LENGTH,
            b"host": HOST,
            b"expect": EXPECT,
            b"connection": CONNECTION,
            b"cache-control": CACHE_CONTROL,
            b"anthropic-version": ANTHROPIC_VERSION,
            b"x-llm-edge-cache-ttl": CACHE_TTL,
            b"transfer-encoding": TRANSFER_ENCODING,
            b"upgrade": UPGRADE,
            b"authorization": CLIENT_KEY,  # the gateway key, either way the SDKs send it; never forwarded
            b"x-api-key": CLIENT_KEY,
        }
    )
    exact: dict[bytes, int | None] = dict.fromkeys(_IGNORED)
    for name, action in actions.items():  # the usual spellings of the ones we act on
        exact[name] = action
        exact[name.title()] = action
        exact[name.upper()] = action
    return exact
_WRITE_HIGH_WATER = 64 * 1024


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
            pipeline.abort(active)

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
        action = actions.get(name, _UNSEEN)  # exact spellings first: most headers need no lower() at all
        if action is _UNSEEN:
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
        self.state = _BODY
        self.head_fed = 0
        if self.active is None:
            self._arm(self.loop.time() + self.limits.body_timeout_s)
        if ex.expect_continue and self.transport is not None:
            self.transport.write(CONTINUE_100)

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

    def _next(self) -> None:
        if self.queue:
            self._start(self.queue.popleft())
            return
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
