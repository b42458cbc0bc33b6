"""Reading a provider's response head and body ends: pure checks on bytes, no I/O.

Is a 2xx head really an API answer, what do its headers say, did a stream end as a finished
answer ends, and what must never be passed on (the provider's own key echoed in an error).
The pipeline decides what to do with the answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy import adapt
from proxy.adapt import ANTHROPIC
from proxy.wire import LAST_CHUNK, chunk, openai_error_body

if TYPE_CHECKING:
    from proxy.adapt import Translation
    from proxy.exchange import Exchange

_JSON_TYPE_LINE = b"\r\ncontent-type: application/json"
_STREAM_TYPE_LINE = b"\r\ncontent-type: text/event-stream"
_EMPTY_LINE = b"\r\ncontent-length: 0\r\n"
_TE_LINE = b"\r\ntransfer-encoding:"
_CHUNKED_LINE = b"\r\ntransfer-encoding: chunked\r\n"


def not_an_answer(ex: Exchange, status: int, lower: bytes) -> str | None:
    """Why a 2xx head cannot be the API's answer (an HTML page, nothing, an unknown coding), if it cannot."""
    if status >= 300:
        return None
    # Fast path, what real providers send: the exact header lines, found without parsing.
    if (_STREAM_TYPE_LINE if ex.stream else _JSON_TYPE_LINE) not in lower:
        content_type = header(lower, b"content-type")
        if content_type and (b"text/event-stream" if ex.stream else b"json") not in content_type:
            return f"the provider answered {status} with {content_type.decode('latin-1')[:60]!r}, not an API answer"
    if _EMPTY_LINE in lower:
        return f"the provider answered {status} with an empty body"
    if _TE_LINE in lower and _CHUNKED_LINE not in lower:
        coding = header(lower, b"transfer-encoding")
        return f"the provider used a transfer coding the gateway does not read ({coding.decode('latin-1')[:40]!r})"
    return None


def header(lower: bytes, name: bytes) -> bytes:
    """A header's value from a lowercased head (b"" when absent)."""
    at = lower.find(b"\r\n" + name + b":")
    if at < 0:
        return b""
    start = at + len(name) + 3
    return lower[start : lower.find(b"\r\n", start)].strip()


def content_length(lower: bytes) -> int:
    value = header(lower, b"content-length")
    return int(value) if value.isdigit() else -1


def redacted(ex: Exchange, data: bytes) -> bytes:
    """An error relayed from a provider never carries the provider's key, even if it echoed it."""
    route = ex.route
    key = route.provider.api_key if route is not None else None
    if key and data:
        secret = key.encode("latin-1", "replace")
        if secret in data:
            return data.replace(secret, b"*" * len(secret))  # same length: content-length stays right
    return data


def end_of_stream(ex: Exchange, data: bytes) -> bytes:
    """The last bytes of a relayed stream: a provider that ended it without its terminator has
    its stream closed with an error event, never a clean end that looks like success."""
    if stream_completed(ex, None):
        return data
    recent = ex.tail_prev[-64:] + ex.tail
    if b"event: error" in recent or b'data: {"error"' in recent:
        return data  # the provider ended it with its own error event: the client has it already
    if ex.api == ANTHROPIC:
        event = adapt.anthropic_stream_error("the provider ended the stream before it was complete", 502)
    else:
        event = b"data: " + openai_error_body("the provider ended the stream before it was complete",
                                              "server_error", "upstream_stream_incomplete") + b"\n\n"  # fmt: skip
    if ex.close_delimited:
        return data + event
    if ex.chunked_out and data.endswith(LAST_CHUNK):
        return data[: -len(LAST_CHUNK)] + chunk(event) + LAST_CHUNK
    return data


def stream_completed(ex: Exchange, translation: Translation | None) -> bool:
    """Did the provider end its stream as a finished answer ends?"""
    if translation is not None:
        return translation.completed
    marker = b"message_stop" if ex.api == ANTHROPIC else b"data: [DONE]"
    return marker in ex.tail_prev[-64:] + ex.tail  # the terminator may straddle the last two reads


def retry_after_s(head: bytes, lower: bytes) -> float:
    at = lower.find(b"\r\nretry-after:")
    if at < 0:
        return 0.0
    value = head[at + 14 : lower.find(b"\r\n", at + 2)].strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        return 0.0  # an HTTP-date: rare from LLM providers; treat as no hint
