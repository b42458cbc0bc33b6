# HTTP/1.1 plumbing of the mocks: one `MockProtocol` per connection, parsed by httptools.
#
# Rules: one parser per connection; pipelined requests queue and are answered strictly in order
# (reading pauses past `PIPELINE_HIGH` queued requests); nothing creates a Task. A reply is driven
# by `loop.call_later` callbacks: part 0 (head + pre-token events) and the first token go out together
# after the time to first token, then one part per token gap; parts that are due at once are joined
# into one `transport.write`. If the transport asks us to pause writing, the stream stalls until
# `resume_writing`. Keep-alive uses one timer handle per connection with a movable deadline
# (`_idle_since`), never cancel-and-recreate per request. Every handle is cancelled in
# `connection_lost`, so a client that disconnects mid-stream just stops the stream.

from __future__ import annotations

import asyncio
import socket
import time
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from .wire import BAD_REQUEST, CLOSE_HEAD_END, CONTINUE_100, HEAD_END, Reply, Request, fill, fill_whole

if TYPE_CHECKING:
    from .server import MockServer

PIPELINE_HIGH = 16  # queued requests before we stop reading from a pipelining client
PIPELINE_LOW = 4  # ...and resume below this

_METHODS: dict[bytes, str] = {m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")}


class MockProtocol(asyncio.Protocol):
    """One client connection to a mock provider."""

    __slots__ = (  # noqa: RUF023 (grouped by lifetime, see STYLE.md §4)
        # shared
        "_srv",
        "_loop",
        # per-connection
        "_transport",
        "_parser",
        "_queue",
        "_read_paused",
        "_write_paused",
        "_idle_since",
        "_idle_handle",
        # per-request (parsing)
        "_req",
        "_url",
        "_body",
        "_expect_continue",
        # the reply being written
        "_reply",
        "_parts",
        "_next",
        "_keep_alive",
        "_timer",
        "_stalled",
    )

    def __init__(self, server: MockServer) -> None:
        # shared
        self._srv = server
        self._loop = server.loop
        # per-connection
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpRequestParser(self)
        self._queue: deque[Request] = deque()
        self._read_paused = False
        self._write_paused = False
        self._idle_since = -1.0  # loop time the connection went idle; -1 while busy
        self._idle_handle: asyncio.TimerHandle | None = None
        # per-request (parsing)
        self._req = Request()
        self._url = b""
        self._body: list[bytes] = []
        self._expect_continue = False
        # the reply being written
        self._reply: Reply | None = None
        self._parts: list[bytes] = []
        self._next = 0
        self._keep_alive = True
        self._timer: asyncio.Handle | None = None
        self._stalled = False

    # -- asyncio.Protocol interface ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except (OSError, AttributeError):
                pass  # not TCP (unix socket) or not settable
        self._srv._connection_made(self)
        self._become_idle()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._reply is not None:
            self._srv.client_disconnects += 1
        self._drop()
        self._srv._connection_lost(self)

    def data_received(self, data: bytes) -> None:
        self._idle_since = -1.0
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            # A bug in the mock itself: surface it (tests fail on loop exceptions), then drop the client.
            self._loop.call_exception_handler(
                {"message": "mock provider failed on a request", "exception": exc.__context__ or exc, "protocol": self}
            )
            self._bad_request()
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):
            self._bad_request()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._stalled:
            self._stalled = False
            self._timer = self._loop.call_soon(self._on_timer)

    # -- parser callbacks --------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        self._req = Request()
        self._url = b""
        self._body.clear()
        self._expect_continue = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        req = self._req
        req.headers.append((name, value))
        if name == b"authorization":
            req.authorization = value
        elif name == b"x-api-key":
            req.x_api_key = value
        elif name == b"anthropic-version":
            req.anthropic_version = value
        elif name == b"expect":
            self._expect_continue = value.lower() == b"100-continue"

    def on_headers_complete(self) -> None:
        req = self._req
        parser = self._parser
        method = parser.get_method()
        req.method = _METHODS.get(method) or method.decode("latin-1")
        req.keep_alive = parser.should_keep_alive()
        if self._expect_continue and self._reply is None and not self._queue and self._transport is not None:
            self._transport.write(CONTINUE_100)

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        req = self._req
        target = self._url.decode("latin-1")
        req.target = target
        q = target.find("?")
        req.path = target if q < 0 else target[:q]
        body = self._body
        if body:
            req.body = body[0] if len(body) == 1 else b"".join(body)
        queue = self._queue
        queue.append(req)
        if self._reply is None:
            self._pump()
        elif len(queue) >= PIPELINE_HIGH and not self._read_paused and self._transport is not None:
            self._read_paused = True
            self._transport.pause_reading()

    # -- internal ----------------------------------------------------------------------------------

    def _pump(self) -> None:
        """Start queued requests in order until one has to wait (a delay or a stalled write)."""
        srv = self._srv
        queue = self._queue
        while queue:
            transport = self._transport
            if transport is None or transport.is_closing():
                queue.clear()
                return
            req = queue.popleft()
            if self._read_paused and len(queue) <= PIPELINE_LOW:
                self._read_paused = False
                transport.resume_reading()
            reply = srv.dispatch(req)
            cfg = srv.config
            if not reply.stream or (
                cfg.token_delay_ms <= 0.0
                and cfg.jitter_ms <= 0.0
                and cfg.stream_error_after < 0
                and cfg.stream_abort_after < 0
            ):  # everything is due at once: one write (5 KB stream: 3 us to fill instead of 11 us per part)
                parts = [fill_whole(reply, srv.next_uid(), b"%d" % time.time())]
            else:
                parts = fill(reply.parts, srv.next_uid(), b"%d" % time.time())
            keep_alive = req.keep_alive and cfg.keepalive_timeout_s > 0
            if not keep_alive:
                parts[0] = parts[0].replace(HEAD_END, CLOSE_HEAD_END, 1)
            self._reply = reply
            self._parts = parts
            self._next = 0
            self._keep_alive = keep_alive
            if reply.timed:
                delay = cfg.ttft_ms
                if cfg.jitter_ms > 0.0:
                    delay += srv.rng.random() * cfg.jitter_ms
                if delay > 0.0:
                    self._timer = self._loop.call_later(delay * 0.001, self._on_timer)
                    return
            if not self._emit():
                return
            self._finish()
        transport = self._transport
        if transport is not None and not transport.is_closing():
            self._become_idle()

    def _emit(self) -> bool:
        """Write every part that is due now; True when the reply is complete."""
        transport = self._transport
        assert transport is not None
        parts = self._parts
        if len(parts) == 1:  # a JSON answer, or a stream sent in one go
            transport.write(parts[0])
            return True
        reply = self._reply
        assert reply is not None
        cfg = self._srv.config
        last = len(parts)
        i = self._next
        out = []
        while True:
            out.append(parts[i])
            i += 1
            if i == last:
                transport.write(b"".join(out))
                return True
            emitted = i - 1  # tokens written so far (part 0 carries none)
            if emitted == cfg.stream_error_after:
                out.append(reply.error_frame)
                transport.write(b"".join(out))
                return True
            if emitted == cfg.stream_abort_after:
                transport.write(b"".join(out))
                self._srv.streams_aborted += 1
                self._reply = None  # not a client disconnect
                transport.close()
                return False
            if i > 1:  # the first token goes out with the head; later ones wait a token gap
                delay = cfg.token_delay_ms
                if cfg.jitter_ms > 0.0:
                    delay += self._srv.rng.random() * cfg.jitter_ms
                if delay > 0.0:
                    transport.write(b"".join(out))
                    self._next = i
                    self._timer = self._loop.call_later(delay * 0.001, self._on_timer)
                    return False
            if self._write_paused:
                transport.write(b"".join(out))
                self._next = i
                self._stalled = True
                return False

    def _on_timer(self) -> None:
        self._timer = None
        if self._transport is None or self._reply is None:
            return
        if self._emit():
            self._finish()
            self._pump()

    def _finish(self) -> None:
        """The current reply is fully written."""
        self._reply = None
        self._parts = []
        if not self._keep_alive and self._transport is not None:
            self._queue.clear()
            self._transport.close()

    def _become_idle(self) -> None:
        self._idle_since = now = self._loop.time()
        if self._idle_handle is None:
            timeout = self._srv.config.keepalive_timeout_s
            if timeout > 0.0:
                self._idle_handle = self._loop.call_at(now + timeout, self._on_idle)

    def _on_idle(self) -> None:
        self._idle_handle = None
        since = self._idle_since
        if since < 0.0 or self._transport is None:
            return  # busy: re-armed when it goes idle again
        timeout = self._srv.config.keepalive_timeout_s
        deadline = since + timeout
        if timeout <= 0.0 or self._loop.time() >= deadline - 0.001:
            self._transport.close()
        else:
            self._idle_handle = self._loop.call_at(deadline, self._on_idle)

    def _bad_request(self) -> None:
        transport = self._transport
        if transport is None:
            return
        if self._reply is None and not self._queue:
            transport.write(BAD_REQUEST)
        self._queue.clear()
        transport.close()

    def _drop(self) -> None:
        """Forget the connection's work and cancel its timers (the transport is gone or going)."""
        self._transport = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._idle_handle is not None:
            self._idle_handle.cancel()
            self._idle_handle = None
        self._queue.clear()
        self._reply = None
        self._parts = []
        self._stalled = False

    # -- used by MockServer ------------------------------------------------------------------------

    @property
    def is_idle(self) -> bool:
        """True between requests: nothing queued, nothing being written, no partial request."""
        return self._reply is None and not self._queue and self._idle_since >= 0.0

    def close(self) -> None:
        """Close the connection now (pending writes are flushed by the transport)."""
        transport = self._transport
        if transport is not None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            transport.close()
