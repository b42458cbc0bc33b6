# proxy/cache/entry.py: what a cached answer is, and which answers may become one.
#
# An entry is one complete, successful answer in one client API format, held only as prebuilt bytes:
# the compact JSON body for non-streamed requests and, for chat formats, the SSE body(ies) for streamed
# ones (OpenAI: with and without the include_usage chunk). All renderings are built once, when the
# entry is made (after the upstream answered, off the hit path), so a hit is a dict lookup plus one
# write of ready bytes, and `size` is exact from the start: the store's byte cap holds at all times.
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

OPENAI_FINISH_OK = frozenset(("stop", "length", "tool_calls", "function_call"))
ANTHROPIC_STOP_OK = frozenset(("end_turn", "max_tokens", "stop_sequence", "tool_use", "model_context_window_exceeded"))


class CacheEntry:
    """One cached answer: prebuilt response bodies plus store bookkeeping.

    `created_at` / `expires_at` are set by the store on `put` (an entry lives in one store).
    """

    __slots__ = ("created_at", "expires_at", "fmt", "json_body", "size", "sse_body", "sse_usage_body")

    def __init__(self, fmt: bytes, json_body: bytes, sse_body: bytes | None, sse_usage_body: bytes | None) -> None:
        self.fmt = fmt
        self.json_body = json_body
        self.sse_body = sse_body  # for stream requests (OpenAI: without the usage chunk)
        self.sse_usage_body = sse_usage_body  # OpenAI with stream_options.include_usage; else same as sse_body
        size = ENTRY_OVERHEAD + len(json_body)
        if sse_body is not None:
            size += len(sse_body)
        if sse_usage_body is not None and sse_usage_body is not sse_body:
            size += len(sse_usage_body)
        self.size = size
        self.created_at = 0.0
        self.expires_at = 0.0

    def body(self, stream: bool, include_usage: bool = False) -> bytes | None:
        """The bytes to send: JSON, or SSE for a stream request (None: this format cannot stream)."""
        if not stream:
            return self.json_body
        return self.sse_usage_body if include_usage else self.sse_body

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
        return all(type(c) is dict and c.get("finish_reason") in OPENAI_FINISH_OK for c in choices)
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


def entry_from_answer(fmt: bytes, obj: Any) -> CacheEntry | None:
    """Build an entry from a parsed answer body, or None if it must not be cached."""
    if not is_cacheable_answer(fmt, obj):
        return None
    try:
        json_body = dumps(obj)
    except JSONEncodeError:
        return None
    if fmt == OPENAI_CHAT:
        plain = render_openai_sse(obj, include_usage=False)
        with_usage = render_openai_sse(obj, include_usage=True) if obj.get("usage") is not None else plain
        return CacheEntry(fmt, json_body, plain, with_usage)
    if fmt == ANTHROPIC_MESSAGES:
        sse = render_anthropic_sse(obj)
        return CacheEntry(fmt, json_body, sse, sse)
    return CacheEntry(fmt, json_body, None, None)


def entry_from_json(fmt: bytes, status: int, body: bytes) -> CacheEntry | None:
    """Build an entry from a non-streamed upstream answer (status + raw JSON body), or None."""
    if not 200 <= status < 300:
        return None
    try:
        obj = loads(body)
    except JSONDecodeError:
        return None
    return entry_from_answer(fmt, obj)


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
