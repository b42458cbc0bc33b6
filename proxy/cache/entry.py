# proxy/cache/entry.py: what a cached answer is, and which answers may become one.
#
# An entry is one complete, successful answer in one client API format, held as prebuilt bytes: the
# JSON body for non-streamed requests and, for chat formats, the SSE body(ies) for streamed ones
# (OpenAI: with and without the include_usage chunk). The SSE renderings are built on the first
# streamed hit and kept: rendering both for every stored answer cost a quarter of the miss path's
# CPU (bench/, py-spy), and most entries are never replayed as a stream. `size` counts an upper
# bound of those renderings from the start (SSE_BOUND), so the store's byte cap holds at all times.
# The parsed dict is not kept.
# Only cacheable answers become entries: 2xx, a complete body of the right shape, and a terminal
# finish/stop reason we know is a normal end (never errors, `content_filter`, Anthropic `refusal` or
# `pause_turn`, never a truncated stream). Unknown reasons are refused: None is the safe answer.
# Nothing here does I/O.
from __future__ import annotations

from typing import Any

from orjson import JSONDecodeError, JSONEncodeError, dumps, loads

from proxy.cache.assemble import assemble_anthropic_messages, assemble_openai_chat
from proxy.cache.formats import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_EMBEDDINGS
from proxy.cache.replay import render_anthropic_sse, render_openai_sse

# Rough per-entry cost of the Python objects around the payload bytes (entry, store node, dict slot,
# key, bytes headers); counted in `size` so many tiny entries cannot blow past max_bytes unseen.
ENTRY_OVERHEAD = 384


def SSE_BOUND(json_len: int) -> int:  # noqa: N802 (a size formula, read like a constant)
    """Upper bound of one SSE rendering of a JSON answer: a few chunk envelopes around its content."""
    return 2 * json_len + 2048

OPENAI_FINISH_OK = frozenset(("stop", "length", "tool_calls", "function_call"))
ANTHROPIC_STOP_OK = frozenset(("end_turn", "max_tokens", "stop_sequence", "tool_use", "model_context_window_exceeded"))


class CacheEntry:
    """One cached answer: prebuilt response bodies plus store bookkeeping.

    `created_at` / `expires_at` are set by the store on `put` (an entry lives in one store).
    """

    __slots__ = (
        "created_at", "expires_at", "fmt", "json_body", "size", "sse_body", "sse_usage_body", "streamable", "verified",
    )  # fmt: skip

    def __init__(self, fmt: bytes, json_body: bytes, verified: bool = True) -> None:
        self.fmt = fmt
        self.json_body = json_body
        self.verified = verified  # False: `verify()` before the first time it is served
        self.streamable = fmt != OPENAI_EMBEDDINGS
        self.sse_body: bytes | None = None  # for stream requests (OpenAI: without the usage chunk), once rendered
        self.sse_usage_body: bytes | None = None  # OpenAI with stream_options.include_usage; else sse_body
        size = ENTRY_OVERHEAD + len(json_body)
        if self.streamable:
            size += 2 * SSE_BOUND(len(json_body))
        self.size = size
        self.created_at = 0.0
        self.expires_at = 0.0

    def body(self, stream: bool, include_usage: bool = False) -> bytes | None:
        """The bytes to send: JSON, or SSE for a stream request (None: this format cannot stream)."""
        if not stream:
            return self.json_body
        if not self.streamable:
            return None
        if self.sse_body is None:
            self._render()
        return self.sse_usage_body if include_usage else self.sse_body

    def verify(self) -> bool:
        """Check an entry stored unverified (one not checked when it was stored); True if it may be served."""
        if not self.verified:
            try:
                self.verified = is_cacheable_answer(self.fmt, loads(self.json_body))
            except JSONDecodeError:
                return False
        return self.verified

    def _render(self) -> None:
        obj = loads(self.json_body)
        if self.fmt == OPENAI_CHAT:
            self.sse_body = render_openai_sse(obj, include_usage=False)
            has_usage = obj.get("usage") is not None
            self.sse_usage_body = render_openai_sse(obj, include_usage=True) if has_usage else self.sse_body
        else:
            self.sse_body = self.sse_usage_body = render_anthropic_sse(obj)

    def age(self, now: float) -> float:
        """Seconds since the entry was stored (for an `Age` header)."""
        return now - self.created_at

    def __repr__(self) -> str:
        return f"CacheEntry(fmt={self.fmt!r}, size={self.size}, created_at={self.created_at})"


def is_cacheable_answer(fmt: bytes, obj: Any) -> bool:
    """True when `obj` (a parsed 2xx body) is a complete, normal answer worth storing for `fmt`."""
    if type(obj) is not dict or "error" in obj:
        return False
    if fmt == OPENAI_CHAT:
        choices = obj.get("choices")
        if obj.get("object") != "chat.completion" or type(choices) is not list or not choices:
            return False
        for c in choices:  # a loop, not all() over a generator: this runs on every stored answer
            if type(c) is not dict or c.get("finish_reason") not in OPENAI_FINISH_OK:
                return False
        return True
    if fmt == ANTHROPIC_MESSAGES:
        return (
            obj.get("type") == "message"
            and type(obj.get("content")) is list
            and obj.get("stop_reason") in ANTHROPIC_STOP_OK
        )
    if fmt == OPENAI_EMBEDDINGS:
        data = obj.get("data")
        return obj.get("object") == "list" and type(data) is list and len(data) > 0
    return False


def entry_from_answer(fmt: bytes, obj: Any, raw: bytes | None = None) -> CacheEntry | None:
    """Build an entry from a parsed answer body (and its bytes, if it came as JSON), or None if it
    must not be cached."""
    if not is_cacheable_answer(fmt, obj):
        return None
    if raw is None:
        try:
            raw = dumps(obj)
        except JSONEncodeError:
            return None
    return CacheEntry(fmt, raw)


def entry_from_json(fmt: bytes, status: int, body: bytes) -> CacheEntry | None:
    """Build an entry from a non-streamed upstream answer (status + raw JSON body), or None."""
    if not 200 <= status < 300:
        return None
    try:
        obj = loads(body)
    except JSONDecodeError:
        return None
    return entry_from_answer(fmt, obj, body)  # the provider's own bytes: no re-encoding


def entry_from_sse(fmt: bytes, status: int, raw: bytes) -> CacheEntry | None:
    """Build an entry from a complete streamed upstream answer (status + raw SSE body), or None."""
    if not 200 <= status < 300:
        return None
    if fmt == OPENAI_CHAT:
        obj = assemble_openai_chat(raw)
    elif fmt == ANTHROPIC_MESSAGES:
        obj = assemble_anthropic_messages(raw)
    else:
        return None
    return None if obj is None else entry_from_answer(fmt, obj)
