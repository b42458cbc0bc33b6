"""Drive the gateway's request path with arbitrary bytes, without sockets, and read back what it did.

`run` feeds bytes to a `DownstreamProtocol` on the unit tests' fake loop, cut into reads where
asked, and parses what the gateway wrote with an independent response parser. The checks shared
by the property tests and by the longer fuzz run (`python -m tests.fuzz.request_path`) live here.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import h11
import httptools

from proxy import pipeline
from tests.unit.protocol_harness import connect_client, make_gateway

LIMITS = {"max_header_bytes": 4096, "max_headers": 20, "max_uri_bytes": 1024, "max_body_bytes": 8192, "max_pipelined": 4}


@dataclass
class Response:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False


class _Responses:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.items: list[Response] = []
        self.error: str | None = None

    def on_message_begin(self) -> None:
        self.items.append(Response())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.items[-1].headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.items[-1].status = self.parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.items[-1].body += body

    def on_message_complete(self) -> None:
        self.items[-1].complete = True

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as exc:
            self.error = str(exc)


@dataclass
class Outcome:
    written: bytes
    responses: list[Response]
    framing_error: str | None
    closed: bool
    errors_logged: list[str]
    handled: list[tuple[bytes, bytes, bytes]]  # (method, target, body) of requests the pipeline accepted
    max_queue: int
    max_body: int


class _ErrorRecorder(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def recording_errors() -> Iterator[list[str]]:
    logger = logging.getLogger("llm_edge")
    handler = _ErrorRecorder()
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


def pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    edges = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(edges) if b > a] or [data]


def run(data: bytes, cuts: list[int] = (), *, stub: bool = False) -> Outcome:  # type: ignore[assignment]
    """Feed `data` (cut at `cuts`) to a fresh gateway connection. With `stub`, the pipeline answers every
    request it is handed with an empty 200, recording it, instead of routing it."""
    gateway, loop = make_gateway(server=LIMITS)
    handled: list[tuple[bytes, bytes, bytes]] = []
    real_handle = pipeline.handle

    def stub_handle(ex: Any) -> None:
        if ex.error is not None:
            real_handle(ex)
            return
        if ex.method == b"CONNECT" or ex.downstream.parser.should_upgrade():
            # httptools stops at these (no body is read); the gateway answers and closes, so nothing
            # after them is interpreted. Not compared: see test_hostile_clients' upgrade test.
            pipeline.reply(ex, b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            return
        handled.append((ex.method, ex.url, ex.body))
        close = b"" if ex.keep_alive else b"connection: close\r\n"
        pipeline.reply(ex, b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n" + close + b"\r\n")

    patch = mock.patch.object(pipeline, "handle", stub_handle) if stub else contextlib.nullcontext()
    max_queue = max_body = 0
    with recording_errors() as errors, patch:
        proto, transport = connect_client(gateway, loop)
        for piece in pieces(data, list(cuts)):
            if transport.closed:
                break  # a closed transport delivers nothing more
            proto.data_received(piece)
            loop.run_ready()
            max_queue = max(max_queue, len(proto.queue))
            if proto.reading is not None:
                max_body = max(max_body, proto.reading.body_size)
        loop.advance(0)
    written = bytes(transport.buffer)
    parsed = _Responses()
    parsed.feed(written)
    return Outcome(written, parsed.items, parsed.error, transport.closed, errors, handled, max_queue, max_body)


_DATE = re.compile(rb"\r\ndate: [^\r]*")


def without_dates(written: bytes) -> bytes:
    """What the gateway wrote, less its date headers (the clock may tick between two runs)."""
    return _DATE.sub(b"", written)


def check_same_answers(whole: Outcome, split: Outcome) -> None:
    """The answers to the same bytes fed whole and cut into reads are the same, except that the
    error that ends a connection may be found at a different point (a 414 for a target cut off at a
    read boundary, where the whole read reaches a bad byte first and gets a 400): the statuses of
    those last answers may differ, as long as both are a 4xx followed by a close."""
    assert len(split.responses) == len(whole.responses), "a different number of answers"
    assert split.closed == whole.closed
    if without_dates(split.written) == without_dates(whole.written):
        return
    for a, b in zip(whole.responses[:-1], split.responses[:-1]):
        assert (a.status, a.body) == (b.status, b.body)
    a, b = whole.responses[-1], split.responses[-1]
    for last in (a, b):
        assert 400 <= last.status < 500 and last.headers.get(b"connection") == b"close", (a.status, b.status)


def check_outcome(out: Outcome) -> None:
    """What must hold for any input: valid framing, no 5xx, nothing after a close, bounded state."""
    assert out.framing_error is None, f"the gateway wrote invalid HTTP: {out.framing_error}: {out.written[:300]!r}"
    assert not out.errors_logged, f"the gateway logged errors: {out.errors_logged}"
    for i, resp in enumerate(out.responses):
        assert resp.complete, f"an incomplete response: {out.written[-300:]!r}"
        assert resp.status < 500, f"a {resp.status} for client input: {resp.body[:200]!r}"
        if resp.headers.get(b"connection") == b"close":
            assert i == len(out.responses) - 1, "a response after one that said connection: close"
            assert out.closed, "said connection: close and kept the connection"
    assert out.max_queue <= LIMITS["max_pipelined"] + 1
    assert out.max_body <= LIMITS["max_body_bytes"]


def h11_messages(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """The requests h11 (an independent, strict RFC 9112 parser) finds at the start of `data`, up to
    the first one it rejects or that is incomplete."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    found: list[tuple[bytes, bytes, bytes]] = []
    current: list[bytes] = []
    while True:
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError:
            return found
        if event is h11.NEED_DATA or event is h11.PAUSED and conn.our_state is not h11.IDLE:
            return found
        if isinstance(event, h11.Request):
            current = [bytes(event.method), bytes(event.target), b""]
        elif isinstance(event, h11.Data):
            current[2] += bytes(event.data)
        elif isinstance(event, h11.EndOfMessage):
            found.append((current[0], current[1], current[2]))
            if conn.their_state is not h11.DONE or conn.our_state is h11.MUST_CLOSE:
                return found
            try:
                conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                conn.send(h11.EndOfMessage())
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return found
        elif event is h11.PAUSED:
            return found
        else:
            return found
