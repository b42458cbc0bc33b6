"""The client side over HTTP/2: one `H2Protocol` per connection, one `H2Stream` per request.

Theory of operation. The `h2` library is the protocol engine (sans-IO): bytes in, events
out, frames queued for us to write. `H2Protocol` drives it from plain asyncio callbacks, so
there is no Task anywhere. Each stream becomes an `Exchange` filled exactly as the HTTP/1.1
parser fills one (the same `request_head` table decides what each header means), handed to
`pipeline.handle` once its request is complete. Nothing below this module knows which
protocol a request came on.

The pipeline writes HTTP/1.1-formatted responses. `H2Stream` is the exchange's client
connection: it parses that head as it arrives (it may come split), turns it into a HEADERS
frame (`:status`, lowercase names, connection-specific headers dropped), removes chunked
framing from the body, and queues the payload as DATA frames inside the client's flow-control
windows. Output held beyond a stream's window plus `h2_stream_buffer_bytes` pauses that
stream's upstream reading, and the window opening resumes it: a slow reader on one stream
never stalls the others nor makes the gateway buffer without bound.

Bounds, and the HTTP/2 attacks they answer: concurrent streams (SETTINGS, enforced by h2),
the header list (SETTINGS, and the HPACK decoder's own cap: HPACK bombs), one header block on
the wire (`HeaderBlockGuard`: CONTINUATION floods), client resets (a token bucket: Rapid
Reset), control frames (another: SETTINGS/PING/WINDOW_UPDATE floods), a stream whose output
stalls (`h2_send_timeout_s`: a zero window held open), a request that never completes
(`body_timeout_s`), an idle connection (`keepalive_timeout_s`). Protocol violations h2
detects (stream-id abuse, bad frames) end the connection with GOAWAY; a malformed request
(bad pseudo-headers, a body disagreeing with its content-length) is a stream error
(RST_STREAM PROTOCOL_ERROR, RFC 9113 8.1.1) and never reaches the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
from collections import deque
from time import perf_counter
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes
from h2.stream import StreamState
from hyperframe.frame import GoAwayFrame

from proxy import errors, pipeline
from proxy.auth import presented_key
from proxy.exchange import Exchange
from proxy.request_head import (
    ANTHROPIC_BETA,
    ANTHROPIC_VERSION,
    CACHE_CONTROL,
    CACHE_TTL,
    CLIENT_KEY,
    CONTENT_LENGTH,
    FORWARD,
    HOST,
)  # fmt: skip
from proxy.wire import Dechunker

if TYPE_CHECKING:
    from proxy.gateway import GatewayState as Gateway
    from proxy.upstream import UpstreamProtocol

log = logging.getLogger("llm_edge.h2")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_WRITE_HIGH_WATER = 64 * 1024
_MAX_RESPONSE_HEAD = 256 * 1024  # the pipeline's own heads are a few hundred bytes

# h2's inbound header validation is off (it makes a malformed request a connection error);
# `request_problem` does it instead, as a stream error.
_CONFIG = h2.config.H2Configuration(
    client_side=False, header_encoding=None, validate_inbound_headers=False, normalize_inbound_headers=False,
    validate_outbound_headers=False, normalize_outbound_headers=False,  # our heads are normalised here, once
)  # fmt: skip

_PSEUDO = {b":method": 0, b":scheme": 1, b":path": 2, b":authority": 3}
_CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"))
_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")  # RFC 9110 token, lowercase only (RFC 9113 8.2.1)
_BAD_VALUE = re.compile(rb"[\x00\r\n]")


# pure helpers


def response_headers(head: bytes) -> tuple[list[tuple[bytes, bytes]], int, bool]:
    """An HTTP/1.1 response head (without its final blank line) as h2 headers, with its
    content-length (-1: none) and whether its body is chunked."""
    lines = head.split(b"\r\n")
    headers = [(b":status", lines[0][9:12])]
    length, chunked = -1, False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name, value = name.strip().lower(), value.strip()
        if name in _CONNECTION_SPECIFIC:
            if name == b"transfer-encoding":
                chunked = value.lower().endswith(b"chunked")
            continue
        if name == b"content-length":
            length = int(value)
        headers.append((name, value))
    return headers, length, chunked


def request_problem(headers: list[tuple[bytes, bytes]]) -> str | None:
    """Why a request's header list is malformed (RFC 9113 8.1.1, 8.2, 8.3.1), or None."""
    seen = [False] * 4
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            at = _PSEUDO.get(name)
            if at is None:
                return f"unknown pseudo-header {name!r}"
            if regular or seen[at]:
                return f"pseudo-header {name!r} repeated or after a regular header"
            seen[at] = True
        else:
            regular = True
            if not name or _BAD_NAME.search(name) is not None:
                return "a header name that is empty, uppercase or not a token"
            if name in _CONNECTION_SPECIFIC or (name == b"te" and value != b"trailers"):
                return f"connection-specific header {name!r}"
        if _BAD_VALUE.search(value) is not None:
            return "a header value with CR, LF or NUL"
    if not (seen[0] and seen[1] and seen[2]):
        return "':method', ':scheme' and ':path' are required"
    return None


class TokenBucket:
    """`rate` events per second sustained, `burst` at once; `take` says whether one more fits."""

    __slots__ = ("rate", "burst", "tokens", "last")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate, self.burst, self.tokens, self.last = rate, float(burst), float(burst), now

    def take(self, now: float) -> bool:
        tokens = self.tokens + (now - self.last) * self.rate
        self.tokens = (tokens if tokens < self.burst else self.burst) - 1.0
        self.last = now
        return self.tokens >= 0.0


class HeaderBlockGuard:
    """Reads only the 9-byte frame headers of a connection's inbound bytes, to size the header
    block being received (HEADERS plus CONTINUATIONs) before h2, which keeps it whole until
    END_HEADERS, has buffered much of it. About 0.3 µs per frame."""

    __slots__ = ("skip", "partial", "block")

    def __init__(self, skip: int = len(PREFACE)) -> None:
        self.skip = skip  # payload bytes of the current frame still to pass over
        self.partial = b""  # an incomplete frame header
        self.block = 0  # bytes of the unfinished header block so far

    def feed(self, data: bytes) -> int:
        """Account for `data`; returns the size of the header block still open."""
        if self.partial:
            data = self.partial + data
            self.partial = b""
        n, at = len(data), self.skip
        while at + 9 <= n:
            length = (data[at] << 16) | (data[at + 1] << 8) | data[at + 2]
            kind = data[at + 3]
            if kind == 1 or kind == 9:  # HEADERS, CONTINUATION
                self.block = 0 if data[at + 4] & 4 else self.block + length  # END_HEADERS closes it
            at += 9 + length
        if at > n:
            self.skip = at - n
        else:
            self.skip, self.partial = 0, data[at:]
        return self.block


class _ServerConnection(h2.connection.H2Connection):
    """h2's connection, with a body that disagrees with its content-length made a stream error
    (h2 makes it a connection error; RFC 9113 8.1.1 says stream)."""

    def _receive_frame(self, frame: Any) -> list[h2.events.Event]:
        try:
            return super()._receive_frame(frame)  # type: ignore[no-any-return]
        except h2.exceptions.InvalidBodyLengthError:
            self.reset_stream(frame.stream_id, ErrorCodes.PROTOCOL_ERROR)
            self.acknowledge_received_data(frame.flow_controlled_length, frame.stream_id)  # the connection window
            return [_BodyLengthMismatch(frame.stream_id)]


class _BodyLengthMismatch(h2.events.Event):
    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id


# one stream


class H2Stream:
    """One request on an HTTP/2 connection, and the `ClientConnection` its exchange writes to."""

    __slots__ = (
        "conn", "sid", "ex", "opened", "started", "done", "ended", "head", "dechunker", "left", "end", "out",
        "out_size", "paused", "stall_since",
    )  # fmt: skip

    def __init__(self, conn: H2Protocol, sid: int, now: float) -> None:
        self.conn = conn
        self.sid = sid
        self.ex = Exchange(conn.gateway, self)
        self.opened = now
        self.started = False  # handed to the pipeline
        self.done = False  # the pipeline has finished the exchange
        self.ended = False  # our side of the stream is over (END_STREAM or RST_STREAM sent or received)
        self.head: bytes | None = b""  # the response head while it is incomplete; None once sent
        self.dechunker: Dechunker | None = None
        self.left = -1  # response body bytes still due by content-length; -1: not length-delimited
        self.end = False  # the body is complete: END_STREAM once `out` is sent
        self.out: deque[bytes] = deque()  # payload waiting for the client's window
        self.out_size = 0
        self.paused: UpstreamProtocol | None = None  # the upstream we paused for this stream
        self.stall_since = 0.0  # loop time output began waiting on a closed window (0: it is not)

    # ClientConnection, called by the pipeline

    def write(self, data: bytes) -> None:
        if self.ended:
            return
        head = self.head
        if head is not None:
            head = head + data if head else data
            at = head.find(b"\r\n\r\n")
            if at < 0:
                if len(head) > _MAX_RESPONSE_HEAD:
                    self.conn.reset(self, ErrorCodes.INTERNAL_ERROR)
                else:
                    self.head = head
                return
            self.head = None
            data = head[at + 4 :]
            if not self._send_head(head[:at]):
                return
        if self.dechunker is not None:
            try:
                data = self.dechunker.feed(data)
            except ValueError:
                self.conn.reset(self, ErrorCodes.INTERNAL_ERROR)
                return
            self.end = self.dechunker.done
        elif self.left >= 0:
            if len(data) >= self.left:
                data, self.left, self.end = data[: self.left], 0, True
            else:
                self.left -= len(data)
        if data:
            self.out.append(data)
            self.out_size += len(data)
        self.conn.pump(self)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.write(b"".join(parts))

    def exchange_done(self, ex: Exchange) -> None:
        self.done = True
        if self.ended:
            self.conn.forget(self)
        elif self.head is not None or (self.dechunker is not None and not self.dechunker.done) or self.left > 0:
            self.conn.reset(self, ErrorCodes.INTERNAL_ERROR)  # cut short: never let it look complete
        else:
            self.end = True
            self.conn.pump(self)

    def close(self) -> None:
        if not self.ended:
            self.conn.reset(self, ErrorCodes.INTERNAL_ERROR)

    # internal

    def _send_head(self, head: bytes) -> bool:
        try:
            headers, length, chunked = response_headers(head)
            status = int(headers[0][1])
        except ValueError:
            self.conn.reset(self, ErrorCodes.INTERNAL_ERROR)
            return False
        if status < 200:
            self.head = b""  # an interim response: the final head follows
            self.conn.send_headers(self, headers, False)
            return not self.ended
        if chunked:
            self.dechunker = Dechunker()
        elif length >= 0:
            self.left = length
        empty = length == 0 or status == 204 or status == 304 or self.ex.method == b"HEAD"
        if empty:
            self.end, self.left, self.dechunker = True, 0, None
        self.conn.send_headers(self, headers, empty)
        return not self.ended

    def __repr__(self) -> str:
        return f"<H2Stream {self.sid} started={self.started} done={self.done} ended={self.ended} out={self.out_size}>"


# the connection


class H2Protocol(asyncio.Protocol):
    """Serves one HTTP/2 connection (h2 with ALPN, or h2c with prior knowledge)."""

    __slots__ = (
        "gateway", "loop", "limits", "transport", "h2", "streams", "guard", "resets", "control", "in_receive",
        "write_paused", "closed", "draining", "last_active", "timer",
    )  # fmt: skip

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.loop = gateway.loop
        limits = self.limits = gateway.gen.settings.server
        self.transport: asyncio.Transport | None = None
        self.h2 = _ServerConnection(config=_CONFIG)
        self.h2.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.h2_max_concurrent_streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.h2_max_header_list_size,
            h2.settings.SettingCodes.ENABLE_PUSH: 0,
        })  # fmt: skip
        self.h2.decoder.max_header_list_size = limits.h2_max_header_list_size  # from the first frame, not the ACK
        self.streams: dict[int, H2Stream] = {}
        self.guard = HeaderBlockGuard()
        now = self.loop.time()
        self.resets = TokenBucket(limits.h2_reset_rate, limits.h2_reset_burst, now)
        self.control = TokenBucket(limits.h2_control_rate, limits.h2_control_burst, now)
        self.in_receive = False  # frames are written once the received bytes are handled
        self.write_paused = False
        self.closed = False
        self.draining = False  # GOAWAY sent: no new stream, close once the open ones finish
        self.last_active = now
        self.timer: asyncio.TimerHandle | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self.transport.set_write_buffer_limits(high=_WRITE_HIGH_WATER)  # type: ignore[union-attr]
        self.gateway.connections.add(self)
        self.h2.initiate_connection()
        self.flush()
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        if self.guard.feed(data) > self.limits.h2_max_header_list_size:
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, b"header block too large")
            return
        self.in_receive = True
        try:
            events = self.h2.receive_data(data)
            for event in events:
                self._on_event(event)
                if self.closed:
                    return
        except h2.exceptions.ProtocolError as exc:  # h2 has queued its GOAWAY
            log.debug("h2 protocol error from a client: %s", exc)
            self.in_receive = False
            self.flush()
            self._close()
            return
        finally:
            self.in_receive = False
        self.flush()

    def eof_received(self) -> bool:
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.gateway.connections.discard(self)
        streams = list(self.streams.values())
        self.streams.clear()
        for st in streams:
            st.ended = True
            self._abort(st)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._pump_all()

    # events

    def _on_event(self, event: h2.events.Event) -> None:
        kind = type(event)
        if kind is h2.events.DataReceived:
            self._on_data(event)  # type: ignore[arg-type]
        elif kind is h2.events.RequestReceived:
            self._on_request(event)  # type: ignore[arg-type]
        elif kind is h2.events.StreamEnded:
            st = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
            if st is not None and not st.started and not st.ended:
                ex = st.ex
                ex.body = ex.body_parts[0] if len(ex.body_parts) == 1 else b"".join(ex.body_parts)
                ex.body_parts = []
                self._start(st)
        elif kind is h2.events.WindowUpdated:
            if not self._control_ok():
                return
            sid = event.stream_id  # type: ignore[attr-defined]
            if sid == 0:
                self._pump_all()
            else:
                st = self.streams.get(sid)
                if st is not None:
                    self.pump(st)
        elif kind is h2.events.StreamReset:
            self._on_reset(event)  # type: ignore[arg-type]
        elif kind is _BodyLengthMismatch:
            st = self.streams.get(event.stream_id)  # type: ignore[attr-defined]
            if st is not None:
                st.ended = True
                self._abort(st)
                self.forget(st)
        elif kind is h2.events.RemoteSettingsChanged:
            if self._control_ok():
                self._pump_all()  # the initial window may have grown
        elif kind is h2.events.PingReceived or kind is h2.events.PriorityUpdated:
            self._control_ok()
        elif kind is h2.events.ConnectionTerminated:
            self._close()
        # SettingsAcknowledged, TrailersReceived, PingAckReceived...: nothing to do

    def _control_ok(self) -> bool:
        if self.control.take(self.loop.time()):
            return True
        self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, b"too many control frames")
        return False

    def _on_request(self, event: h2.events.RequestReceived) -> None:
        sid = event.stream_id
        if self.draining:
            self.h2.reset_stream(sid, ErrorCodes.REFUSED_STREAM)
            return
        st = H2Stream(self, sid, self.loop.time())
        self.streams[sid] = st
        self.last_active = st.opened
        headers: list[tuple[bytes, bytes]] = event.headers  # type: ignore[assignment]
        problem = request_problem(headers)
        if problem is not None:
            log.debug("malformed h2 request on stream %d: %s", sid, problem)
            self.reset(st, ErrorCodes.PROTOCOL_ERROR)
            return
        self._fill(st.ex, headers)
        if st.ex.error is not None:
            self._start(st)  # answered at once (413, 414, 431): the body is not needed

    def _fill(self, ex: Exchange, headers: list[tuple[bytes, bytes]]) -> None:
        """Fill the exchange from the request's headers, as `downstream.on_header` does for HTTP/1.1."""
        limits = self.limits
        actions = self.gateway.gen.header_actions
        try:
            for name, value in headers:
                ex.header_count += 1
                ex.header_bytes += len(name) + len(value) + 4
                if name[:1] == b":":
                    if name == b":method":
                        ex.method = value
                    elif name == b":path":
                        ex.url = value
                        if len(value) > limits.max_uri_bytes:
                            raise errors.URITooLongError("request URI is too long")
                    elif name == b":authority":
                        ex.host_count += 1
                    continue
                action = actions.get(name)
                if action is None:
                    continue
                if action == FORWARD:
                    ex.forward_headers.append(b"%b: %b\r\n" % (name, value))
                elif action == CONTENT_LENGTH:
                    if not value.isdigit():
                        raise errors.MalformedHTTPError("content-length must be digits")
                    ex.content_length = int(value)
                    if ex.content_length > limits.max_body_bytes:
                        raise errors.PayloadTooLargeError(f"request body exceeds {limits.max_body_bytes} bytes")
                elif action == HOST:
                    ex.host_count += 1
                elif action == CACHE_CONTROL:
                    ex.cache_control = value
                elif action == ANTHROPIC_VERSION:
                    ex.anthropic_version = value
                elif action == ANTHROPIC_BETA:
                    ex.anthropic_beta = value
                    ex.forward_headers.append(b"%b: %b\r\n" % (name, value))
                elif action == CACHE_TTL:
                    ex.cache_ttl = value
                elif action == CLIENT_KEY:
                    key = presented_key(name, value)
                    if key and (not ex.client_key or name == b"x-api-key"):  # x-api-key wins, as over HTTP/1.1
                        ex.client_key = key
                # EXPECT needs nothing: an h2 client sends its body without waiting for 100 Continue
            if ex.header_count > limits.max_headers:
                raise errors.HeadersTooLargeError(f"more than {limits.max_headers} request headers")
            if ex.header_bytes > limits.max_header_bytes:
                raise errors.HeadersTooLargeError(f"request headers exceed {limits.max_header_bytes} bytes")
            if not ex.url.startswith(b"/") and ex.method != b"CONNECT":
                raise errors.MalformedHTTPError("only origin-form request targets are accepted")
        except errors.GatewayError as exc:
            ex.error = exc

    def _on_data(self, event: h2.events.DataReceived) -> None:
        sid = event.stream_id
        if event.flow_controlled_length:
            self.h2.acknowledge_received_data(event.flow_controlled_length, sid)  # the body is bounded below
        elif not event.stream_ended and not self._control_ok():
            return  # empty DATA frames cost work and carry nothing
        st = self.streams.get(sid)
        if st is None or st.started or st.ended:
            return
        ex = st.ex
        ex.body_parts.append(event.data)
        ex.body_size += len(event.data)
        if ex.body_size > self.limits.max_body_bytes:
            ex.error = errors.PayloadTooLargeError(f"request body exceeds {self.limits.max_body_bytes} bytes")
            ex.body_parts = []
            self._start(st)

    def _on_reset(self, event: h2.events.StreamReset) -> None:
        st = self.streams.get(event.stream_id)
        if st is not None:
            st.ended = True
            self._abort(st)
            self.forget(st)
        if event.remote_reset and not self.resets.take(self.loop.time()):
            self._goaway(ErrorCodes.ENHANCE_YOUR_CALM, b"too many stream resets")

    # the request path

    def _start(self, st: H2Stream) -> None:
        st.started = True
        st.ex.t_start = perf_counter()
        pipeline.handle(st.ex)

    def _abort(self, st: H2Stream) -> None:
        """The client is gone from this stream: the exchange ends as on a client disconnect."""
        self._resume(st)
        ex = st.ex
        if st.started and not ex.done:
            try:
                pipeline.abort(ex)
            except Exception as error:  # a boundary: the exchange still ends
                pipeline.crashed(ex, error)

    # output, called by H2Stream

    def send_headers(self, st: H2Stream, headers: list[tuple[bytes, bytes]], end: bool) -> None:
        try:
            self.h2.send_headers(st.sid, headers, end_stream=end)
        except h2.exceptions.ProtocolError:  # the stream closed under us (reset in the same read)
            st.ended = True
            self.forget(st)
            return
        if end:
            self._ended(st)
        self.flush()

    def pump(self, st: H2Stream) -> None:
        """Send what the stream's window allows; END_STREAM once its body is complete and sent."""
        if st.ended:
            return
        conn = self.h2
        out = st.out
        try:
            if out and not self.write_paused:
                window = conn.local_flow_control_window(st.sid)
                frame = conn.max_outbound_frame_size
                sent = False
                while out and window > 0:
                    data = out[0]
                    n = len(data)
                    if n > window or n > frame:
                        n = window if window < frame else frame
                        out[0] = data[n:]
                        data = data[:n]
                    else:
                        out.popleft()
                    window -= n
                    st.out_size -= n
                    conn.send_data(st.sid, data, end_stream=st.end and not out)
                    sent = True
                if sent:
                    st.stall_since = 0.0
                if not out and st.end:
                    self._ended(st)
            elif st.end and not out:
                conn.end_stream(st.sid)
                self._ended(st)
        except h2.exceptions.ProtocolError:
            st.ended = True
            self._abort(st)
            self.forget(st)
            return
        if st.ended:
            self.flush()
            return
        if st.out_size > self.limits.h2_stream_buffer_bytes:
            ex = st.ex
            up = ex.upstream
            if st.paused is None and up is not None:
                up.pause_reading()
                st.paused = up
        elif st.paused is not None and st.out_size <= self.limits.h2_stream_buffer_bytes // 2:
            self._resume(st)
        if out and not st.stall_since:
            st.stall_since = self.loop.time()
        self.flush()

    def reset(self, st: H2Stream, code: ErrorCodes) -> None:
        """End one stream abnormally (RST_STREAM), cancelling its exchange if it is still running."""
        if st.ended:
            return
        st.ended = True
        st.out.clear()
        st.out_size = 0
        try:
            self.h2.reset_stream(st.sid, code)
        except h2.exceptions.ProtocolError:
            pass
        # Called from inside the pipeline (a write, or its close()): the exchange is cancelled on
        # the next turn of the loop, as a closed HTTP/1.1 connection's is (connection_lost).
        self.loop.call_soon(self._abort, st)
        self.forget(st)
        self.flush()

    def forget(self, st: H2Stream) -> None:
        if st.ended and (st.done or not st.started) and self.streams.get(st.sid) is st:
            del self.streams[st.sid]
            self.last_active = self.loop.time()
            if self.draining and not self.streams:
                self._close()

    def flush(self) -> None:
        if self.in_receive or self.closed or self.transport is None:
            return
        data = self.h2.data_to_send()
        if data:
            self.transport.write(data)

    # ClientConnection-side registry (gateway.connections)

    @property
    def idle(self) -> bool:
        """True when no stream is open. Polled by `Gateway.stop` while it drains: the first poll
        sends GOAWAY, so the client opens nothing new while the open streams finish."""
        if self.gateway.draining and not self.draining and not self.closed:
            self.drain()
        return not self.streams

    def drain(self) -> None:
        """Graceful shutdown: GOAWAY(NO_ERROR), then close once the open streams have finished."""
        if self.draining or self.closed or self.transport is None:
            return
        self.draining = True
        self.flush()
        # A GOAWAY of our own: h2's close_connection would refuse to send the open streams' DATA.
        frame = GoAwayFrame(0, last_stream_id=self.h2.highest_inbound_stream_id, error_code=0)
        self.transport.write(frame.serialize())
        if not self.streams:
            self._close()

    def close(self) -> None:
        """Close now (shutdown timeout, or a drained idle connection)."""
        if not self.closed and self.transport is not None:
            try:
                self.h2.close_connection()
            except h2.exceptions.ProtocolError:
                pass
            self.flush()
        self._close()

    # internal

    def _ended(self, st: H2Stream) -> None:
        st.ended = True
        self._resume(st)
        if self._remote_open(st.sid):
            try:
                self.h2.reset_stream(st.sid, ErrorCodes.NO_ERROR)  # answered early: stop sending the body
            except h2.exceptions.ProtocolError:
                pass
        self.forget(st)

    def _remote_open(self, sid: int) -> bool:
        """The client is still sending this stream's request (we answered before its end)."""
        stream = self.h2.streams.get(sid)
        return stream is not None and stream.state_machine.state is StreamState.HALF_CLOSED_LOCAL

    def _resume(self, st: H2Stream) -> None:
        up, st.paused = st.paused, None
        if up is not None:
            up.resume_reading()

    def _pump_all(self) -> None:
        for st in list(self.streams.values()):
            if st.out or st.end:
                self.pump(st)

    def _goaway(self, code: ErrorCodes, why: bytes) -> None:
        log.info("h2 connection refused: %s", why.decode())
        try:
            self.h2.close_connection(error_code=code, additional_data=why)
        except h2.exceptions.ProtocolError:
            pass
        self.in_receive = False
        self.flush()
        self._close()

    def _arm(self) -> None:
        limits = self.limits
        step = min(1.0, min(limits.h2_send_timeout_s, limits.body_timeout_s, limits.keepalive_timeout_s,
                            limits.header_timeout_s) / 4)  # fmt: skip
        self.timer = self.loop.call_later(step, self._on_timer)

    def _on_timer(self) -> None:
        # One periodic sweep per connection rather than a timer per stream: at most
        # h2_max_concurrent_streams cheap checks, a few times a second.
        self.timer = None
        if self.closed:
            return
        now = self.loop.time()
        limits = self.limits
        for st in list(self.streams.values()):
            if not st.started and not st.ended and now - st.opened > limits.body_timeout_s:
                st.ex.error = errors.RequestTimeout("timed out waiting for the request body")
                st.ex.body_parts = []
                self._start(st)
            elif st.stall_since and now - st.stall_since > limits.h2_send_timeout_s:
                log.info("h2 stream %d reset: its client read nothing for %.0fs", st.sid, limits.h2_send_timeout_s)
                self.reset(st, ErrorCodes.CANCEL)
        if self.closed:
            return
        if not self.streams:
            idle_for = limits.header_timeout_s if self.h2.highest_inbound_stream_id == 0 else limits.keepalive_timeout_s
            if now - self.last_active > idle_for:
                self.close()
                return
        self._arm()

    def _close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()
            if self.transport.get_write_buffer_size():
                # close() waits for the buffer to drain; a client that never reads is dropped later.
                self.loop.call_later(self.limits.keepalive_timeout_s, self.transport.abort)
