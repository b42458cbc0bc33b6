"""The HTTP/2 attacks, each sent as frames (the `h2` library as a client, or raw frames), each
refused; after each one the gateway still serves a normal request."""

from __future__ import annotations

import socket
import struct
from typing import Any

import h2.config
import h2.connection
import h2.events
import orjson
import pytest
from h2.errors import ErrorCodes
from hpack import Encoder

from tests.e2e.conftest import GatewayFactory, MockFactory, one_model, provider
from tests.harness import RunningGateway

CHAT = orjson.dumps({"model": "fast", "messages": [{"role": "user", "content": "hi"}]})


class H2Client:
    """A raw HTTP/2 client on one socket, h2 library inside, prior knowledge (h2c)."""

    def __init__(self, port: int, **settings: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
        self.conn.initiate_connection()
        if settings:
            self.conn.update_settings({getattr(h2.settings.SettingCodes, k.upper()): v for k, v in settings.items()})
        self.flush()
        self.events: list[Any] = []
        self.closed = False

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def raw(self, data: bytes) -> bool:
        """Send bytes as they are; False once the gateway has closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def headers(self, path: bytes = b"/v1/chat/completions", body: bytes | None = CHAT, extra: tuple = ()) -> list:
        method = b"POST" if body is not None else b"GET"
        return [(b":method", method), (b":scheme", b"http"), (b":authority", b"gw"), (b":path", path),
                (b"content-type", b"application/json"), *extra]  # fmt: skip

    def start(self, body: bytes | None = CHAT, path: bytes = b"/v1/chat/completions", extra: tuple = ()) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, self.headers(path, body, extra), end_stream=body is None)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=True)
        self.flush()
        return sid

    def pump(self) -> bool:
        """Read once and handle what came; False when the connection is closed."""
        try:
            data = self.sock.recv(65536)
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            self.closed = True
            return False
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        self.events.extend(events)
        self.flush()
        return True

    def wait(self, predicate: Any) -> Any:
        """Read until an event matches `predicate` (returned), or the connection closes (None)."""
        seen = 0
        while True:
            for event in self.events[seen:]:
                if predicate(event):
                    return event
            seen = len(self.events)
            if self.closed or not self.pump():
                for event in self.events[seen:]:
                    if predicate(event):
                        return event
                return None

    def response(self, sid: int) -> tuple[int, bytes]:
        """(status, body) of a stream, read to its end."""
        over = (h2.events.StreamEnded, h2.events.StreamReset)
        ended = self.wait(lambda e: isinstance(e, over) and e.stream_id == sid)
        assert isinstance(ended, h2.events.StreamEnded), f"stream {sid} did not end cleanly: {ended}"
        status = next(int(dict(e.headers)[b":status"]) for e in self.events
                      if isinstance(e, h2.events.ResponseReceived) and e.stream_id == sid)  # fmt: skip
        body = b"".join(e.data for e in self.events if isinstance(e, h2.events.DataReceived) and e.stream_id == sid)
        return status, body

    def goaway(self) -> Any:
        return self.wait(lambda e: isinstance(e, h2.events.ConnectionTerminated))

    def close(self) -> None:
        self.sock.close()


def still_serves(gw: RunningGateway) -> None:
    client = H2Client(gw.port)
    try:
        status, body = client.response(client.start())
        assert status == 200 and orjson.loads(body)["choices"][0]["message"]["content"]
    finally:
        client.close()


def frame(kind: int, flags: int, sid: int, payload: bytes = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", sid) + payload


PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0)  # the preface, then empty SETTINGS


def _frame_starts(data: bytes) -> list[int]:
    starts, at = [], 0
    while at + 9 <= len(data):
        starts.append(at)
        at += 9 + int.from_bytes(data[at : at + 3], "big")
    return starts


def read_until(sock: socket.socket, wanted: Any) -> bytes:
    """Read frames until one matches `wanted(kind, flags, stream_id)`; returns the bytes up to its end."""
    received = b""
    while True:
        for at in _frame_starts(received):
            end = at + 9 + int.from_bytes(received[at : at + 3], "big")
            sid = int.from_bytes(received[at + 5 : at + 9], "big")
            if end <= len(received) and wanted(received[at + 3], received[at + 4], sid):
                return received[:end]
        data = sock.recv(65536)
        assert data, "closed before the frame came"
        received += data


def goaway_code(sock: socket.socket) -> int | None:
    """Read to the close; the error code of the GOAWAY the gateway sent, or None."""
    received = b""
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            break
        if not data:
            break
        received += data
    sock.close()
    at = 0
    while at + 9 <= len(received):  # walk the frames
        length = int.from_bytes(received[at : at + 3], "big")
        if received[at + 3] == 7:
            return struct.unpack(">I", received[at + 13 : at + 17])[0]  # type: ignore[no-any-return]
        at += 9 + length
    return None


@pytest.fixture
def gw(mock: MockFactory, gateway: GatewayFactory) -> RunningGateway:
    return gateway({**one_model(provider("local", mock())), "server": {"h2_send_timeout_s": 0.4}})


def test_rapid_reset_is_bounded_then_goaway(gw: RunningGateway) -> None:
    client = H2Client(gw.port)
    for _ in range(400):  # twice the default burst
        sid = client.conn.get_next_available_stream_id()
        client.conn.send_headers(sid, client.headers(), end_stream=False)
        client.conn.reset_stream(sid, ErrorCodes.CANCEL)
    client.raw(client.conn.data_to_send())
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    client.close()
    still_serves(gw)


def test_continuation_flood_is_cut_off_at_the_header_bound(gw: RunningGateway) -> None:
    client = H2Client(gw.port)
    block = Encoder().encode([(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"x")])
    sent = client.raw(frame(1, 0, 1, block))  # HEADERS without END_HEADERS
    piece = Encoder().encode([(b"x-pad", b"p" * 4000)]) * 4
    frames = 0
    while sent and frames < 2000:  # 32 MiB if nothing stopped it
        sent = client.raw(frame(9, 0, 1, piece))
        frames += 1
    goaway = client.goaway()
    assert goaway is not None and goaway.error_code == ErrorCodes.ENHANCE_YOUR_CALM
    assert frames < 2000
    client.close()
    still_serves(gw)


def test_hpack_bomb_is_refused(gw: RunningGateway) -> None:
    # One 4000-byte header goes into the dynamic table, then a block of one-byte references to it
    # decodes to 100 times that.
    get = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/healthz"), (b":authority", b"x")]
    encoder = Encoder()
    first = encoder.encode([*get, (b"x-bomb", b"b" * 4000)])
    # GET, http, / from the static table (nothing new inserted), then index 62, x-bomb: 4 KB per byte sent
    second = b"\x82\x86\x84" + b"\xbe" * 100
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    sock.sendall(PREFACE + frame(1, 0x5, 1, first) + frame(1, 0x5, 3, second))
    assert goaway_code(sock) == ErrorCodes.ENHANCE_YOUR_CALM
    still_serves(gw)


@pytest.mark.parametrize("flood", ["settings", "ping", "window_update"])
def test_control_frame_floods_get_goaway(gw: RunningGateway, flood: str) -> None:
    one = {
        "settings": frame(4, 0, 0, struct.pack(">HI", 3, 100)),
        "ping": frame(6, 0, 0, b"12345678"),
        "window_update": frame(8, 0, 0, struct.pack(">I", 1)),
    }[flood]
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    sock.sendall(PREFACE)
    try:
        for _ in range(50):
            sock.sendall(one * 100)  # 5000 frames, five times the default burst
    except OSError:
        pass  # closed on us mid-flood
    assert goaway_code(sock) == ErrorCodes.ENHANCE_YOUR_CALM
    still_serves(gw)


def test_a_zero_window_held_open_is_reset(gw: RunningGateway) -> None:
    client = H2Client(gw.port, initial_window_size=0)
    client.wait(lambda e: isinstance(e, h2.events.SettingsAcknowledged))
    sid = client.start()
    reset = client.wait(lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == sid)
    assert reset is not None and reset.error_code == ErrorCodes.CANCEL
    assert not any(isinstance(e, h2.events.DataReceived) for e in client.events)
    client.close()
    still_serves(gw)


@pytest.mark.parametrize("abuse", ["even id", "id going down", "id reused"])
def test_stream_id_abuse_gets_goaway(gw: RunningGateway, abuse: str) -> None:
    encoder = Encoder()
    get = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/healthz"), (b":authority", b"x")]
    sids = {"even id": [2], "id going down": [5, 3], "id reused": [1]}[abuse]
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    sock.sendall(PREFACE + b"".join(frame(1, 0x5, sid, encoder.encode(get)) for sid in sids))
    if abuse == "id reused":  # once stream 1 is over (its END_STREAM read), open it again
        received = b""
        while not any(received[at + 3] in (0, 1) and received[at + 4] & 1 and received[at + 5 : at + 9] == b"\0\0\0\1"
                      for at in _frame_starts(received)):  # fmt: skip
            received += sock.recv(65536)
        sock.sendall(frame(1, 0x5, 1, encoder.encode(get)))
    assert goaway_code(sock) in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.STREAM_CLOSED)
    still_serves(gw)


@pytest.mark.parametrize("bad", [
    ((b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"x")),  # no :path
    ((b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/v1/chat/completions"), (b":foo", b"x")),
    ((b":method", b"POST"), (b":scheme", b"http"), (b"x-a", b"1"), (b":path", b"/v1/chat/completions")),
    ((b":method", b"POST"), (b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/v1/chat/completions")),
    ((b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/v1/chat/completions"), (b"X-Upper", b"1")),
    ((b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/v1/chat/completions"), (b"connection", b"close")),
    ((b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/v1/chat/completions"), (b"x-inject", b"a\r\nb: c")),
], ids=["no path", "unknown pseudo", "pseudo after regular", "pseudo twice", "uppercase", "connection",
        "crlf"])  # fmt: skip
def test_malformed_requests_are_a_stream_error_never_forwarded(
    mock: MockFactory, gateway: GatewayFactory, bad: tuple
) -> None:
    upstream = mock()
    gw = gateway(one_model(provider("local", upstream)))
    encoder = Encoder()
    sock = socket.create_connection(("127.0.0.1", gw.port), timeout=5)
    sock.sendall(PREFACE + frame(1, 0x4, 1, encoder.encode(list(bad))) + frame(0, 0x1, 1, CHAT))
    received = read_until(sock, lambda kind, flags, sid: kind == 3 and sid == 1)  # RST_STREAM on stream 1
    rst = received[-4:]
    assert struct.unpack(">I", rst)[0] == ErrorCodes.PROTOCOL_ERROR
    assert upstream.requests == 0
    # a stream error: the same connection goes on serving
    good = [(b":method", b"POST"), (b":scheme", b"http"), (b":path", b"/v1/chat/completions"), (b":authority", b"x")]
    sock.sendall(frame(1, 0x4, 3, encoder.encode(good)) + frame(0, 0x1, 3, CHAT))
    read_until(sock, lambda kind, flags, sid: kind in (0, 1) and flags & 1 and sid == 3)  # its END_STREAM
    sock.close()
    assert upstream.requests == 1


@pytest.mark.parametrize("sent", [10, len(CHAT) + 10])
def test_content_length_disagreeing_with_data_is_a_stream_error(
    mock: MockFactory, gateway: GatewayFactory, sent: int
) -> None:
    upstream = mock()
    gw = gateway(one_model(provider("local", upstream)))
    client = H2Client(gw.port)
    sid = client.conn.get_next_available_stream_id()
    body = (CHAT + b" " * 20)[:sent]
    client.conn.send_headers(sid, client.headers(extra=((b"content-length", str(len(CHAT)).encode()),)))
    client.raw(client.conn.data_to_send() + frame(0, 0x1, sid, body))
    reset = client.wait(lambda e: isinstance(e, h2.events.StreamReset) and e.stream_id == sid)
    assert reset is not None and reset.error_code == ErrorCodes.PROTOCOL_ERROR
    # the connection itself is still good
    client.conn.streams.pop(sid, None)
    status, answer = client.response(client.start())
    assert status == 200 and b"choices" in answer
    assert upstream.requests == 1
    client.close()
