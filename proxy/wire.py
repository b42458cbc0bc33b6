"""Bytes we send, precomputed: status lines, header names, error bodies, chunk framing.

Nothing here does I/O. Whatever the request path writes that does not come from the
upstream is built here once, at import, or by a small pure helper.
"""

from __future__ import annotations

from http import HTTPStatus

import orjson

from proxy import __version__

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

# Response header lines that describe the upstream hop, not the message. The framing headers
# (content-length, transfer-encoding) stay: the body is relayed with its framing as it is.
_HOP_LINES = (b"\r\nconnection:", b"\r\nkeep-alive:", b"\r\nproxy-connection:")


def strip_hop_by_hop(head: bytes, lower: bytes) -> bytes:
    """`head` without its hop-by-hop header lines; `lower` is `head.lower()`."""
    for name in _HOP_LINES:
        at = lower.find(name)
        while at >= 0:
            end = lower.find(b"\r\n", at + 2)
            head = head[:at] + head[end:]
            lower = lower[:at] + lower[end:]
            at = lower.find(name, at)
    return head


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
