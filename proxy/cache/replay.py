# proxy/cache/replay.py: a stored JSON answer -> the SSE body a streaming client expects.
#
# The cache stores one complete answer per key; a `"stream": true` request for the same key gets it
# replayed in its own format, in a few large events (no artificial pacing: a hit should be fast):
#   OpenAI:    per choice a role chunk, one chunk with all content (and other text fields, logprobs),
#              one chunk with all tool calls (arguments whole), a finish chunk; then the usage chunk
#              (`choices: []`) only when the client asked `stream_options.include_usage`; `data: [DONE]`.
#              No `event:` lines (openai-python JSON-parses every event).
#   Anthropic: message_start (content [], stop_reason null, input usage), per block
#              content_block_start / one delta / content_block_stop, message_delta with stop_reason and
#              the full cumulative usage (output_tokens included), message_stop; every event has its
#              `event:` line (anthropic >= 2.0 drops events without one).
# Feeding the result back through proxy/cache/assemble.py gives the same answer (tested both ways).
# Runs once per stored entry (proxy/cache/entry.py memoises the bytes). Nothing here does I/O.
from __future__ import annotations

from typing import Any

from orjson import dumps

DONE = b"data: [DONE]\n\n"
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
# Message fields that move to other OpenAI deltas, or are rebuilt by the client.
_OPENAI_SPECIAL = frozenset(("role", "content", "tool_calls", "function_call"))
_TOOL_INPUT_BLOCKS = frozenset(("tool_use", "server_tool_use", "mcp_tool_use"))


def _data(obj: Any) -> bytes:
    return b"data: " + dumps(obj) + b"\n\n"


def _event(kind: bytes, obj: Any) -> bytes:
    return b"event: " + kind + b"\ndata: " + dumps(obj) + b"\n\n"


def render_openai_sse(body: dict[str, Any], include_usage: bool) -> bytes:
    """Render a `chat.completion` body as a `chat.completion.chunk` SSE body ending in [DONE]."""
    base: dict[str, Any] = {
        "id": body.get("id"),
        "object": "chat.completion.chunk",
        "created": body.get("created"),
        "model": body.get("model"),
    }
    for f in ("service_tier", "system_fingerprint"):
        if body.get(f) is not None:
            base[f] = body[f]
    if include_usage:
        base["usage"] = None  # as upstream does: every chunk carries usage null, the last one the totals
    out: list[bytes] = []

    def chunk(index: int, delta: dict[str, Any], logprobs: Any, finish_reason: Any) -> None:
        choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        out.append(_data({**base, "choices": [choice]}))

    for choice in body.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        content = message.get("content")
        chunk(
            index,
            {"role": message.get("role") or "assistant", "content": "" if type(content) is str else None},
            None,
            None,
        )
        delta = {k: v for k, v in message.items() if k not in _OPENAI_SPECIAL and v is not None}
        if content:
            delta = {"content": content, **delta}
        if delta or choice.get("logprobs") is not None:
            chunk(index, delta, choice.get("logprobs"), None)
        if message.get("tool_calls"):
            calls = [{"index": i, **call} for i, call in enumerate(message["tool_calls"])]
            chunk(index, {"tool_calls": calls}, None, None)
        if message.get("function_call"):
            chunk(index, {"function_call": message["function_call"]}, None, None)
        chunk(index, {}, None, choice.get("finish_reason"))
    if include_usage and body.get("usage") is not None:
        out.append(_data({**base, "choices": [], "usage": body["usage"]}))
    out.append(DONE)
    return b"".join(out)


def render_anthropic_sse(body: dict[str, Any]) -> bytes:
    """Render an Anthropic `message` body as the event stream that produces it."""
    usage = body.get("usage") or {}
    start_usage = {**usage, "output_tokens": 0}  # the final count arrives in message_delta
    start = {k: v for k, v in body.items() if k not in ("stop_details", "container")}
    start.update(content=[], stop_reason=None, stop_sequence=None, usage=start_usage)
    out = [_event(b"message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(body.get("content") or ()):
        kind = block.get("type")
        deltas: list[dict[str, Any]] = []
        if kind == "text":
            first = {k: v for k, v in block.items() if k != "citations"}
            first["text"] = ""
            deltas.append({"type": "text_delta", "text": block.get("text") or ""})
            for citation in block.get("citations") or ():
                deltas.append({"type": "citations_delta", "citation": citation})
        elif kind == "thinking":
            first = {**block, "thinking": "", "signature": ""}
            deltas.append({"type": "thinking_delta", "thinking": block.get("thinking") or ""})
            if block.get("signature"):
                deltas.append({"type": "signature_delta", "signature": block["signature"]})
        elif kind in _TOOL_INPUT_BLOCKS and "input" in block:
            first = {**block, "input": {}}
            deltas.append({"type": "input_json_delta", "partial_json": dumps(block["input"]).decode()})
        else:
            first = block  # complete in content_block_start (server tool results, redacted_thinking...)
        out.append(
            _event(b"content_block_start", {"type": "content_block_start", "index": index, "content_block": first})
        )
        for delta in deltas:
            out.append(_event(b"content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}))
        out.append(_event(b"content_block_stop", {"type": "content_block_stop", "index": index}))
    final = {"stop_reason": body.get("stop_reason"), "stop_sequence": body.get("stop_sequence")}
    for f in ("stop_details", "container"):
        if body.get(f) is not None:
            final[f] = body[f]
    out.append(
        _event(
            b"message_delta",
            {
                "type": "message_delta",
                "delta": final,
                "usage": {**usage, "output_tokens": usage.get("output_tokens", 0)},
            },
        )
    )
    out.append(_MESSAGE_STOP)
    return b"".join(out)
