"""Shared upstream byte samples and SDK-based checkers for the translate tests.

The upstream streams are written the way the providers send them (API-FORMATS §1.5, §2.4).
The checkers run our output through the official SDKs' own SSE decoders and accumulators,
so "the client can read it" is tested, not assumed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import orjson
from anthropic._streaming import SSEDecoder as AnthropicSSEDecoder
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message
from openai._streaming import SSEDecoder as OpenAISSEDecoder
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk


class Machine(Protocol):
    def feed(self, data: bytes) -> bytes: ...
    def close(self) -> bytes: ...


def sse(*events: tuple[str, dict[str, Any]]) -> bytes:
    """Anthropic-style upstream bytes from (event, payload) pairs."""
    return b"".join(b"event: " + e.encode() + b"\ndata: " + orjson.dumps(p) + b"\n\n" for e, p in events)


def data_lines(*payloads: Any) -> bytes:
    """OpenAI-style upstream bytes; a str payload is sent verbatim (e.g. "[DONE]")."""
    return b"".join(b"data: " + (p.encode() if isinstance(p, str) else orjson.dumps(p)) + b"\n\n" for p in payloads)


# Anthropic upstream streams


def _msg_start(input_tokens: int = 25, read: int = 0, write: int = 0) -> tuple[str, dict[str, Any]]:
    return (
        "message_start",
        {
            "type": "message_start",
            "message": {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {
                    "input_tokens": input_tokens,
                    "cache_creation_input_tokens": write,
                    "cache_read_input_tokens": read,
                    "output_tokens": 1,
                },
            },
        },
    )


ANTHROPIC_TOOL_STREAM = sse(
    _msg_start(),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {"type": "ping"}),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Checking"}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {}},
        },
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
    ),
    (
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city": "Pa'},
        },
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": 'ris"}'}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 57},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)

# Text with thinking first, cache usage, a non-ASCII text and a late input-token correction.
ANTHROPIC_TEXT_STREAM = sse(
    _msg_start(input_tokens=10, read=2048, write=100),
    (
        "content_block_start",
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        },
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "sig"}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 0}),
    ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}}),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Bonjour "}},
    ),
    (
        "content_block_delta",
        {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "à toi ☀\n"}},
    ),
    ("content_block_stop", {"type": "content_block_stop", "index": 1}),
    ("some_future_event", {"type": "some_future_event", "x": 1}),
    (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
            "usage": {"output_tokens": 7, "input_tokens": 12},
        },
    ),
    ("message_stop", {"type": "message_stop"}),
)

ANTHROPIC_ERROR_STREAM = sse(
    _msg_start(),
    ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}}),
    ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
)


# OpenAI upstream streams


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice: dict[str, Any] = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    choice.update(extra)
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1741569952,
        "model": "gpt-4.1",
        "choices": [choice],
        "usage": None,
    }


OPENAI_USAGE_CHUNK = {
    "id": "chatcmpl-1",
    "object": "chat.completion.chunk",
    "created": 1741569952,
    "model": "gpt-4.1",
    "choices": [],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 3,
        "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 4},
    },
}

OPENAI_TEXT_STREAM = data_lines(
    _chunk({"role": "assistant", "content": ""}),
    _chunk({"content": "Bon"}),
    _chunk({"content": "jour ☀"}),
    _chunk({}, "stop"),
    OPENAI_USAGE_CHUNK,
    "[DONE]",
)

OPENAI_TOOL_STREAM = data_lines(
    _chunk({"role": "assistant", "content": None}),
    _chunk({"content": "Let me check."}),
    _chunk(
        {
            "tool_calls": [
                {"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}
            ]
        }
    ),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"city":'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}),
    _chunk(
        {
            "tool_calls": [
                {"index": 1, "id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
            ]
        }
    ),
    _chunk({}, "tool_calls"),
    OPENAI_USAGE_CHUNK,
    "[DONE]",
)

# vLLM-style: no usage chunk, a matched stop string, one chunk with content AND finish_reason.
OPENAI_VLLM_STREAM = data_lines(
    _chunk({"role": "assistant", "content": "Hello"}),
    _chunk({"content": " world"}, "stop", stop_reason="END"),
    "[DONE]",
)

OPENAI_ERROR_STREAM = data_lines(
    _chunk({"role": "assistant", "content": "Hi"}),
    {"error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}},
)


# feeding modes (h11 style): whole, byte by byte, split at one point


def feed_whole(make: Callable[[], Machine], data: bytes) -> bytes:
    m = make()
    return m.feed(data) + m.close()


def feed_bytewise(make: Callable[[], Machine], data: bytes) -> bytes:
    m = make()
    return b"".join(m.feed(data[i : i + 1]) for i in range(len(data))) + m.close()


def feed_split(make: Callable[[], Machine], data: bytes, cuts: list[int]) -> bytes:
    m = make()
    out = []
    prev = 0
    for c in sorted(cuts) + [len(data)]:
        out.append(m.feed(data[prev:c]))
        prev = c
    return b"".join(out) + m.close()


# SDK-side readers


class StreamFailedError(Exception):
    """The SDK would raise on this stream (error frame)."""


def read_openai_stream(data: bytes) -> tuple[list[ChatCompletionChunk], Any, bool]:
    """(validated chunks, accumulated final completion or None, saw [DONE]) as openai-python reads it."""
    chunks: list[ChatCompletionChunk] = []
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    done = False
    for ev in OpenAISSEDecoder().iter_bytes(iter([data])):
        assert ev.event is None, "OpenAI streams must not carry event: lines"
        if ev.data == "[DONE]":
            done = True
            break
        doc = orjson.loads(ev.data)
        if "error" in doc:
            raise StreamFailedError(doc["error"])
        chunk = ChatCompletionChunk.model_validate(doc)
        chunks.append(chunk)
        state.handle_chunk(chunk)
    final = state.current_completion_snapshot if chunks else None
    return chunks, final, done


def read_anthropic_stream(data: bytes) -> Message:
    """The final Message as anthropic-python's MessageStream accumulates it."""
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for ev in AnthropicSSEDecoder().iter_bytes(iter([data])):
        assert ev.event is not None, "Anthropic events need an event: line"
        doc = orjson.loads(ev.data)
        assert doc["type"] == ev.event
        if ev.event == "error":
            raise StreamFailedError(doc["error"])
        if ev.event == "message_delta":
            assert "output_tokens" in doc["usage"]
        snapshot = accumulate_event(event=doc, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    return Message.model_validate(snapshot.to_dict())


def check_openai_completion(doc: dict[str, Any]) -> ChatCompletion:
    """Validate with the SDK type and the usage invariant."""
    c = ChatCompletion.model_validate(doc)
    assert c.usage is not None and c.usage.prompt_tokens + c.usage.completion_tokens == c.usage.total_tokens
    return c
