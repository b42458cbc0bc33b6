# Bytes on the wire for the mock providers. Nothing here does I/O.
#
# Owns: the status lines, response-head builders, HTTP chunk framing, the `Request` record the
# protocol fills for each request, and the `Reply` the API modules hand back.
#
# Theory of operation: an API module renders a reply once per distinct prompt into a `Reply`
# *template*: a tuple of byte `parts` (head + body for a JSON answer; for a stream, part 0 is the
# head plus the events before the first token and part k is token k plus the events due right after
# it). Ids and timestamps in a template are placeholders of the final length (`PH_ID`,
# `PH_CREATED`), so content-length stays right and the template can be cached; `fill` stamps a
# fresh id and time into a copy per request (two `bytes.replace` per part).

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson

# Placeholders: 24 characters for the unique id (request id, message/call ids), and a quoted
# 8-character JSON string that is exactly as long as a 10-digit unix time. No rendered content can
# contain them: reply words are [a-z], tool arguments are letters, ids and numbers are ours.
PH_ID = b"@" * 24
CREATED_SENTINEL = "@" * 8
PH_CREATED = b'"' + CREATED_SENTINEL.encode() + b'"'


def _reason(status: int) -> bytes:
    if status == 529:
        return b"Site Overloaded"
    try:
        return HTTPStatus(status).phrase.encode()
    except ValueError:
        return b"Unknown"


def reason_phrase(status: int) -> str:
    """The reason phrase of `status` ("Too Many Requests")."""
    return _reason(status).decode()


STATUS_LINE: dict[int, bytes] = {s: b"HTTP/1.1 %d %s\r\n" % (s, _reason(s)) for s in range(100, 600)}


def status_line(status: int) -> bytes:
    """The status line of any status, even one HTTP does not allow (a fault mock sends those on purpose)."""
    return STATUS_LINE.get(status) or b"HTTP/1.1 %d Unknown\r\n" % status

HEAD_END = b"\r\n\r\n"
CLOSE_HEAD_END = b"\r\nconnection: close\r\n\r\n"
CONTINUE_100 = b"HTTP/1.1 100 Continue\r\n\r\n"
CHUNK_END = b"0\r\n\r\n"
BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 11\r\n"
    b"connection: close\r\n\r\nBad Request"
)

_JSON_HEAD = b"content-type: application/json\r\ncontent-length: "
_SSE_HEAD = b"content-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
_CHUNKED = b"transfer-encoding: chunked\r\n"


class Request:
    """One parsed request, as the provider saw it. Kept as `MockServer.last_request`.

    `headers` is the list of (lowercased name, raw value) byte pairs in arrival order; `path` has no
    query string; `target` is the full request target.
    """

    __slots__ = (
        "anthropic_version",
        "authorization",
        "body",
        "headers",
        "keep_alive",
        "method",
        "path",
        "target",
        "x_api_key",
    )

    def __init__(self) -> None:
        self.method = ""
        self.target = ""
        self.path = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.body = b""
        self.keep_alive = True
        # Headers the mocks act on, spotted while parsing (no per-request dict).
        self.authorization: bytes | None = None
        self.x_api_key: bytes | None = None
        self.anthropic_version: bytes | None = None

    def header(self, name: bytes | str) -> bytes | None:
        """The first value of header `name` (case-insensitive), or None."""
        key = (name.encode("latin-1") if isinstance(name, str) else name).lower()
        for n, v in self.headers:
            if n == key:
                return v
        return None

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.target} headers={len(self.headers)} body={len(self.body)}B>"


class Reply:
    """A rendered answer (usually a cached template with placeholders, see `fill`).

    `timed` answers wait for the time to first token; errors and control answers do not.
    `error_frame` is what a stream sends instead of its remaining parts when a mid-stream error is
    injected: the provider's error event plus the chunked-body terminator.
    """

    __slots__ = ("error_frame", "parts", "segments", "status", "stream", "timed")

    def __init__(
        self,
        status: int,
        parts: tuple[bytes, ...],
        *,
        stream: bool = False,
        timed: bool = False,
        error_frame: bytes = b"",
    ) -> None:
        self.status = status
        self.parts = parts
        self.stream = stream
        self.timed = timed
        self.error_frame = error_frame
        # All parts as one, pre-split at the placeholders: answers sent in one go (JSON, or a stream
        # without token gaps) are stamped by `fill_whole` with joins, ~2x cheaper than two replaces.
        whole = parts[0] if len(parts) == 1 else b"".join(parts)
        self.segments = [seg.split(PH_CREATED) for seg in whole.split(PH_ID)]

    @property
    def size(self) -> int:
        """Total bytes of all parts."""
        return sum(len(p) for p in self.parts)


def fill(parts: tuple[bytes, ...], uid: bytes, created: bytes) -> list[bytes]:
    """A copy of `parts` with the id and creation-time placeholders replaced."""
    return [p.replace(PH_ID, uid).replace(PH_CREATED, created) for p in parts]


def fill_whole(reply: Reply, uid: bytes, created: bytes) -> bytes:
    """All of `reply`'s parts as one, with the id and creation-time placeholders replaced."""
    return uid.join([created.join(seg) for seg in reply.segments])


def chunk(payload: bytes) -> bytes:
    """One HTTP/1.1 chunk holding `payload`."""
    return b"%x\r\n%s\r\n" % (len(payload), payload)


_FRAMES: dict[tuple[bytes, str, bytes], bytes] = {}
FRAMES_MAX = 8192  # memoised token frames; reply tokens come from a small word list, so hits dominate


def text_frame(prefix: bytes, text: str, suffix: bytes) -> bytes:
    """chunk(prefix + JSON string of `text` + suffix), memoised (~5x cheaper than framing each time)."""
    key = (prefix, text, suffix)
    frame = _FRAMES.get(key)
    if frame is None:
        if len(_FRAMES) >= FRAMES_MAX:
            _FRAMES.clear()
        frame = _FRAMES[key] = chunk(prefix + orjson.dumps(text) + suffix)
    return frame


def json_reply(status: int, obj: Any, id_header: bytes = b"", extra: bytes = b"", *, timed: bool = False) -> Reply:
    """A complete JSON response. `id_header`/`extra` are full header lines ending in CRLF."""
    body = orjson.dumps(obj)
    head = b"%s%s%d\r\n%s%s\r\n" % (STATUS_LINE[status], _JSON_HEAD, len(body), id_header, extra)
    return Reply(status, (head + body,), timed=timed)


def json_head(status: int, length: int, extra: bytes = b"") -> bytes:
    """The head of a JSON response of `length` bytes. `extra`: full header lines ending in CRLF."""
    return b"%s%s%d\r\n%s\r\n" % (status_line(status), _JSON_HEAD, length, extra)


def sse_head(id_header: bytes = b"") -> bytes:
    """The head of a 200 SSE response with a chunked body."""
    return b"%s%s%s%s\r\n" % (STATUS_LINE[200], _SSE_HEAD, id_header, _CHUNKED)


def stream_parts(head: bytes, events: list[tuple[bool, bytes]]) -> tuple[bytes, ...]:
    """Group framed SSE events into timed parts (see the module header).

    `events` are (is_token, chunk-framed bytes). Non-token events ride with the part before them,
    since they are due at the same moment. The chunked terminator ends the last part.
    """
    parts: list[bytes] = []
    cur = [head]
    for is_token, frame in events:
        if is_token:
            parts.append(b"".join(cur))
            cur = [frame]
        else:
            cur.append(frame)
    cur.append(CHUNK_END)
    parts.append(b"".join(cur))
    return tuple(parts)
