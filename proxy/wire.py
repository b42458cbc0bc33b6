"""Bytes we send, precomputed: status lines, header names, error bodies, chunk framing.

Nothing here does I/O. Whatever the request path writes that does not come from the
upstream is built here once, at import, or by a small pure helper.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Protocol

import orjson

from proxy import __version__
from proxy.apis import ANTHROPIC
from proxy.translate.error_bodies import anthropic_type_for_status

_REASONS = {s.value: s.phrase for s in HTTPStatus}
_REASONS[529] = "Overloaded"

# "HTTP/1.1 200 OK\r\n" for every status, so a head never formats its status line.
STATUS_LINE = {
    code: f"HTTP/1.1 {code} {_REASONS.get(code, 'Unknown')}\r\n".encode("ascii") for code in range(100, 600)
}

CRLF = b"\r\n"
LAST_CHUNK = b"0\r\n\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"

SERVER_HEADER = f"server: llm-edge/{__version__}\r\n".encode("ascii")
JSON_TYPE = b"content-type: application/json\r\n"
CHUNKED = b"transfer-encoding: chunked\r\n"
CONNECTION_CLOSE = b"connection: close\r\n"
NO_BUFFERING = b"x-accel-buffering: no\r\n"
PROVIDER_HEADER = b"x-llm-edge-provider: "
ATTEMPTS_HEADER = b"x-llm-edge-attempts: "

def dechunk(data: bytes) -> bytes:
    """The payload of a complete chunked body (chunk extensions and trailers dropped)."""
    out: list[bytes] = []
    at = 0
    while True:
        line_end = data.index(b"\r\n", at)
        size = int(data[at:line_end].split(b";", 1)[0], 16)
        if size == 0:
            return b"".join(out)
        start = line_end + 2
        out.append(data[start : start + size])
        at = start + size + 2


def chunk(data: bytes) -> bytes:
    """One HTTP/1.1 chunk holding `data` (which must not be empty)."""
    return b"%x\r\n%b\r\n" % (len(data), data)


def anthropic_error_body(status: int, message: str) -> bytes:
    """Anthropic's error shape for the gateway's own errors."""
    return orjson.dumps({"type": "error", "error": {"type": anthropic_type_for_status(status), "message": message}})


def anthropic_stream_error(message: str, status: int) -> bytes:
    """Anthropic's mid-stream error event."""
    return b"event: error\ndata: " + anthropic_error_body(status, message) + b"\n\n"


def openai_stream_error(message: str, type_: str, code: str | None = None) -> bytes:
    """OpenAI's mid-stream error event (the SDKs raise on it)."""
    return b"data: " + openai_error_body(message, type_, code) + b"\n\n"


class _ErrorLike(Protocol):
    status: int
    message: str
    type: str
    code: str | None
    param: str | None

    def headers(self) -> bytes: ...


def error_answer(api: int, exc: _ErrorLike, close: bool, date: bytes) -> bytes:
    """A complete error response for a gateway error, in the client API's shape."""
    if api == ANTHROPIC:
        body = anthropic_error_body(exc.status, exc.message)
    else:
        body = openai_error_body(exc.message, exc.type, exc.code, exc.param)
    return json_response(exc.status, body, close=close, extra=exc.headers(), date=date)


def stream_error_event(api: int, exc: _ErrorLike) -> bytes:
    """A gateway error as the client API's mid-stream error event."""
    if api == ANTHROPIC:
        return anthropic_stream_error(exc.message, exc.status)
    return openai_stream_error(exc.message, exc.type, exc.code)


class Dechunker:
    """Strips chunked framing from a body as it arrives, for a client that cannot read it (HTTP/1.0).

    `feed` returns the payload bytes the input completes; `done` is True after the last chunk.
    A chunk's size line is short, so only a partial size line is ever held back."""

    __slots__ = ("left", "pending", "done", "state")

    def __init__(self) -> None:
        self.left = 0  # payload bytes still to come in the current chunk
        self.pending = b""  # an incomplete size line or CRLF
        self.done = False
        self.state = 0  # 0: at a size line, 1: in a chunk's data, 2: at the CRLF after it

    def feed(self, data: bytes) -> bytes:
        if self.pending:
            data = self.pending + data
            self.pending = b""
        out: list[bytes] = []
        at, n = 0, len(data)
        while at < n and not self.done:
            if self.state == 1:
                take = min(self.left, n - at)
                out.append(data[at : at + take])
                at += take
                self.left -= take
                if not self.left:
                    self.state = 2
            elif self.state == 2:
                if n - at < 2:
                    self.pending = data[at:]
                    break
                at += 2
                self.state = 0
            else:
                end = data.find(b"\r\n", at)
                if end < 0:
                    if n - at > 1024:
                        raise ValueError("a chunk size line over 1 KiB")
                    self.pending = data[at:]
                    break
                size = int(data[at:end].split(b";", 1)[0], 16)
                at = end + 2
                if size == 0:
                    self.done = True  # trailers, if any, are dropped
                else:
                    self.left, self.state = size, 1
        return b"".join(out)


def openai_error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> bytes:
    """OpenAI's error shape, which the OpenAI SDK and most clients expect."""
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def json_response(
    status: int,
    body: bytes,
    *,
    close: bool = False,
    extra: bytes = b"",
    date: bytes = b"",
) -> bytes:
    """A complete JSON response: head and body in one buffer, for one write."""
    return b"".join(
        (
            STATUS_LINE[status],
            SERVER_HEADER,
            date,
            JSON_TYPE,
            b"content-length: %d\r\n" % len(body),
            extra,
            CONNECTION_CLOSE if close else b"",
            CRLF,
            body,
        )
    )


def error_response(
    status: int,
    message: str,
    type_: str,
    code: str | None = None,
    param: str | None = None,
    *,
    close: bool = False,
    extra: bytes = b"",
    date: bytes = b"",
) -> bytes:
    """A complete error response in OpenAI's shape."""
    return json_response(status, openai_error_body(message, type_, code, param), close=close, extra=extra, date=date)
