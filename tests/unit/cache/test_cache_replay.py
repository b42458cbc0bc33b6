"""proxy.cache.assemble / replay / entry: streams to stored answers and back, checked with the SDKs."""

from __future__ import annotations

import copy
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest
from anthropic.types import Message
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from proxy.cache.assemble import assemble_anthropic_messages, assemble_openai_chat, parse_sse
from proxy.cache.entry import ENTRY_OVERHEAD, entry_from_answer, entry_from_json, entry_from_sse, is_cacheable_answer
from proxy.cache.formats import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_EMBEDDINGS
from proxy.cache.replay import render_anthropic_sse, render_openai_sse
from tests.unit.cache.cache_samples import (
    ANTHROPIC_BODY,
    ANTHROPIC_EVENTS,
    ANTHROPIC_SSE,
    ANTHROPIC_THINKING_SSE,
    EMBEDDINGS_BODY,
    OPENAI_BODY,
    OPENAI_N2_SSE,
    OPENAI_TEXT_EVENTS,
    OPENAI_TEXT_SSE,
    OPENAI_TOOL_BODY,
    OPENAI_TOOL_SSE,
    USAGE,
    anthropic_sse,
    oa_chunk,
    sse,
)


def events_of(raw: bytes) -> list[tuple[bytes, bytes]]:
    events = parse_sse(raw)
    assert events is not None
    return events


# --- SSE framing --------------------------------------------------------------------------------


def test_parse_sse_handles_crlf_comments_and_missing_space() -> None:
    raw = b': keepalive\r\n\r\nevent: ping\r\ndata:{"a":1}\r\n\r\ndata: x\r\ndata: y\r\n\r\n'
    assert parse_sse(raw) == [(b"ping", b'{"a":1}'), (b"", b"x\ny")]


def test_parse_sse_refuses_a_half_event_at_the_end() -> None:
    assert parse_sse(b"data: {}\n\ndata: {") is None
    assert parse_sse(b"data: {}\n\n: trailing comment") == [(b"", b"{}")]


# --- OpenAI: stream -> JSON ---------------------------------------------------------------------


def test_openai_text_stream_assembles_to_a_valid_completion() -> None:
    body = assemble_openai_chat(OPENAI_TEXT_SSE)
    assert body is not None
    completion = ChatCompletion.model_validate(body)
    assert completion.id == "chatcmpl-1" and completion.object == "chat.completion"
    assert completion.choices[0].message.content == "Bonjour!"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens == 22


def test_openai_tool_call_stream_concatenates_arguments() -> None:
    body = assemble_openai_chat(OPENAI_TOOL_SSE)
    assert body is not None
    message = ChatCompletion.model_validate(body).choices[0].message
    assert message.content is None
    assert message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [  # type: ignore[union-attr]
        ("call_1", "get_weather", '{"city":"Paris"}'),
        ("call_2", "get_time", "{}"),
    ]
    assert body["choices"][0]["finish_reason"] == "tool_calls"


def test_openai_interleaved_choices_are_kept_apart() -> None:
    body = assemble_openai_chat(OPENAI_N2_SSE)
    assert body is not None and "usage" not in body
    choices = ChatCompletion.model_validate(body).choices
    assert [(c.index, c.message.content, c.finish_reason) for c in choices] == [
        (0, "Nope", "length"),
        (1, "Yes", "stop"),
    ]


def test_openai_stream_keeps_logprobs_refusal_and_extra_text_fields() -> None:
    lp = {"content": [{"token": "a", "logprob": -0.1, "bytes": None, "top_logprobs": []}], "refusal": None}
    first = oa_chunk({"role": "assistant", "content": "", "reasoning_content": "think "})
    first["choices"][0]["logprobs"] = lp
    second = oa_chunk({"content": "a", "reasoning_content": "more", "refusal": None})
    second["choices"][0]["logprobs"] = lp
    body = assemble_openai_chat(sse([first, second, oa_chunk({}, "stop")]))
    assert body is not None
    message = body["choices"][0]["message"]
    assert message["content"] == "a" and message["reasoning_content"] == "think more" and message["refusal"] is None
    assert len(body["choices"][0]["logprobs"]["content"]) == 2
    ChatCompletion.model_validate(body)


def test_openai_truncated_streams_are_refused_at_every_cut() -> None:
    for cut in range(len(OPENAI_TOOL_SSE)):
        assert assemble_openai_chat(OPENAI_TOOL_SSE[:cut]) is None, cut
    assert assemble_openai_chat(OPENAI_TOOL_SSE) is not None


@pytest.mark.parametrize(
    "raw",
    [
        sse(OPENAI_TEXT_EVENTS[:3]),  # [DONE] but no finish_reason
        sse([]),  # nothing but [DONE]
        sse(OPENAI_TEXT_EVENTS[:2] + [{"error": {"message": "overloaded", "type": "server_error"}}]),
        OPENAI_TEXT_SSE.replace(b'"Bon"', b'"Bon'),  # malformed JSON
        OPENAI_TEXT_SSE + b"data: {}\n\n",  # something after [DONE]
        sse([oa_chunk({"role": "assistant", "content": "x"}), oa_chunk({}, "stop"), [1, 2]]),  # not an object
        sse(  # two different calls at one index: cannot be rebuilt faithfully
            [
                oa_chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f", "arguments": "{}"}}]}),
                oa_chunk({"tool_calls": [{"index": 0, "id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
                oa_chunk({}, "tool_calls"),
            ]
        ),
        sse([oa_chunk({"tool_calls": [{"id": "a"}]}), oa_chunk({}, "tool_calls")]),  # no index
    ],
)
def test_openai_bad_streams_are_refused(raw: bytes) -> None:
    assert assemble_openai_chat(raw) is None
    assert entry_from_sse(OPENAI_CHAT, 200, raw) is None


def test_openai_content_filter_assembles_but_is_never_cached() -> None:
    raw = sse([oa_chunk({"role": "assistant", "content": "I"}), oa_chunk({}, "content_filter")])
    assert assemble_openai_chat(raw) is not None
    assert entry_from_sse(OPENAI_CHAT, 200, raw) is None


# --- OpenAI: JSON -> SSE ------------------------------------------------------------------------


def chunks_of(raw: bytes) -> list[ChatCompletionChunk]:
    events = events_of(raw)
    assert all(name == b"" for name, _ in events), "OpenAI SSE must not carry event: lines"
    assert events[-1][1] == b"[DONE]" and raw.endswith(b"data: [DONE]\n\n")
    return [ChatCompletionChunk.model_validate(orjson.loads(data)) for _, data in events[:-1]]


@pytest.mark.parametrize("body", [OPENAI_BODY, OPENAI_TOOL_BODY], ids=["text", "tools"])
def test_openai_replay_round_trips_through_the_assembler(body: dict[str, Any]) -> None:
    for include_usage in (False, True):
        raw = render_openai_sse(body, include_usage)
        chunks = chunks_of(raw)
        assert len(chunks) <= 5  # a few large chunks, not token-sized ones
        back = assemble_openai_chat(raw)
        assert back is not None
        expected = copy.deepcopy(body)
        if not include_usage:
            del expected["usage"]
        assert ChatCompletion.model_validate(back) == ChatCompletion.model_validate(expected)


def test_openai_usage_chunk_only_when_asked() -> None:
    plain = chunks_of(render_openai_sse(OPENAI_BODY, include_usage=False))
    assert all(c.choices for c in plain) and all(c.usage is None for c in plain)
    assert b'"usage"' not in render_openai_sse(OPENAI_BODY, include_usage=False)
    with_usage = chunks_of(render_openai_sse(OPENAI_BODY, include_usage=True))
    assert [c.choices for c in with_usage].count([]) == 1 and with_usage[-1].choices == []
    assert with_usage[-1].usage is not None and with_usage[-1].usage.total_tokens == 22
    assert with_usage[0].choices[0].delta.role == "assistant"
    assert with_usage[-2].choices[0].finish_reason == "stop"


def _openai_client(raw: bytes, content_type: str) -> openai.OpenAI:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": content_type}, content=raw)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return openai.OpenAI(api_key="sk-test", base_url="http://gateway.test/v1", http_client=http, max_retries=0)


def test_openai_sdk_reads_a_replayed_stream_and_a_json_hit() -> None:
    entry = entry_from_json(OPENAI_CHAT, 200, orjson.dumps(OPENAI_BODY))
    assert entry is not None
    msgs: Any = [{"role": "user", "content": "hi"}]
    client = _openai_client(entry.body(stream=True, include_usage=True) or b"", "text/event-stream")
    with client.chat.completions.stream(model="gpt-4.1", messages=msgs, stream_options={"include_usage": True}) as s:
        final = s.get_final_completion()
    assert final.choices[0].message.content == "Bonjour!" and final.choices[0].finish_reason == "stop"
    assert final.usage is not None and final.usage.completion_tokens == 3
    client = _openai_client(entry.body(stream=True) or b"", "text/event-stream")
    chunks = list(client.chat.completions.create(model="gpt-4.1", messages=msgs, stream=True))
    assert all(c.choices for c in chunks)  # no bare usage chunk: `chunk.choices[0]` is safe
    client = _openai_client(entry.body(stream=False) or b"", "application/json")
    completion = client.chat.completions.create(model="gpt-4.1", messages=msgs)
    assert completion.choices[0].message.content == "Bonjour!" and completion.usage is not None


# --- Anthropic: stream -> JSON ------------------------------------------------------------------


def test_anthropic_stream_assembles_to_a_valid_message() -> None:
    body = assemble_anthropic_messages(ANTHROPIC_SSE)
    assert body is not None
    message = Message.model_validate(body)
    assert [b.type for b in message.content] == ["text", "tool_use"]
    assert message.content[0].text == "Checking now."  # type: ignore[union-attr]
    assert message.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (25, 57)  # overwritten, not summed


def test_anthropic_thinking_signature_and_citations() -> None:
    body = assemble_anthropic_messages(ANTHROPIC_THINKING_SSE)
    assert body is not None
    message = Message.model_validate(body)
    thinking, text = message.content
    assert (thinking.thinking, thinking.signature) == ("Let me think.", "sig==")  # type: ignore[union-attr]
    assert text.text == "Paris." and text.citations and text.citations[0].cited_text == "Paris"  # type: ignore[union-attr]
    assert message.usage.input_tokens == 30


def test_anthropic_truncated_streams_are_refused_at_every_cut() -> None:
    for cut in range(len(ANTHROPIC_SSE)):
        assert assemble_anthropic_messages(ANTHROPIC_SSE[:cut]) is None, cut


def _without(kind: str) -> list[dict[str, Any]]:
    return [e for e in ANTHROPIC_EVENTS if e["type"] != kind]


@pytest.mark.parametrize(
    "events",
    [
        _without("message_stop"),
        _without("message_start"),
        _without("content_block_stop"),
        _without("message_delta"),  # no stop_reason
        ANTHROPIC_EVENTS[:5] + [{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}],
        [ANTHROPIC_EVENTS[0], {**ANTHROPIC_EVENTS[1], "index": 1}] + ANTHROPIC_EVENTS[2:],  # index not dense
        ANTHROPIC_EVENTS[:3]
        + [{"type": "content_block_delta", "index": 0, "delta": {"type": "future_delta", "x": 1}}]
        + ANTHROPIC_EVENTS[3:],  # a delta we cannot rebuild
        ANTHROPIC_EVENTS[:10]
        + [{"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "}}"}}]
        + ANTHROPIC_EVENTS[10:],  # tool input is not JSON
        ANTHROPIC_EVENTS + [{"type": "message_stop"}],  # events after message_stop
    ],
)
def test_anthropic_bad_streams_are_refused(events: list[dict[str, Any]]) -> None:
    raw = anthropic_sse(events)
    assert assemble_anthropic_messages(raw) is None
    assert entry_from_sse(ANTHROPIC_MESSAGES, 200, raw) is None


def test_anthropic_event_name_must_match_type() -> None:
    raw = ANTHROPIC_SSE.replace(b"event: message_stop", b"event: message_delta")
    assert assemble_anthropic_messages(raw) is None


def test_anthropic_unknown_events_are_ignored() -> None:
    raw = anthropic_sse(ANTHROPIC_EVENTS[:2] + [{"type": "future_event"}] + ANTHROPIC_EVENTS[2:])
    assert assemble_anthropic_messages(raw) == assemble_anthropic_messages(ANTHROPIC_SSE)


@pytest.mark.parametrize("stop_reason", ["refusal", "pause_turn", "something_new"])
def test_anthropic_abnormal_stops_are_never_cached(stop_reason: str) -> None:
    raw = ANTHROPIC_SSE.replace(b'"stop_reason":"tool_use"', b'"stop_reason":"%s"' % stop_reason.encode())
    assert assemble_anthropic_messages(raw) is not None
    assert entry_from_sse(ANTHROPIC_MESSAGES, 200, raw) is None


# --- Anthropic: JSON -> SSE ---------------------------------------------------------------------


def test_anthropic_replay_framing_and_round_trip() -> None:
    raw = render_anthropic_sse(ANTHROPIC_BODY)
    events = events_of(raw)
    kinds = [name for name, _ in events]
    assert kinds[0] == b"message_start" and kinds[-2:] == [b"message_delta", b"message_stop"]
    for name, data in events:
        assert orjson.loads(data)["type"].encode() == name  # every event has a matching `event:` line
    start = orjson.loads(events[0][1])["message"]
    assert start["content"] == [] and start["stop_reason"] is None and start["usage"]["input_tokens"] == 412
    delta = orjson.loads(events[-2][1])
    assert delta["delta"]["stop_reason"] == "tool_use" and delta["usage"]["output_tokens"] == 57
    back = assemble_anthropic_messages(raw)
    assert back is not None
    assert Message.model_validate(back) == Message.model_validate(ANTHROPIC_BODY)


def test_anthropic_thinking_and_citations_round_trip() -> None:
    body = assemble_anthropic_messages(ANTHROPIC_THINKING_SSE)
    assert body is not None
    assert assemble_anthropic_messages(render_anthropic_sse(body)) == body


def test_anthropic_blocks_without_deltas_replay_whole() -> None:
    body = {
        **ANTHROPIC_BODY,
        "stop_reason": "end_turn",
        "content": [{"type": "redacted_thinking", "data": "opaque"}, {"type": "text", "text": "ok"}],
    }
    assert assemble_anthropic_messages(render_anthropic_sse(body)) == body


def _anthropic_client(raw: bytes, content_type: str) -> anthropic.Anthropic:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": content_type}, content=raw)

    http = httpx2.Client(transport=httpx2.MockTransport(handler))
    return anthropic.Anthropic(api_key="sk-test", base_url="http://gateway.test", http_client=http, max_retries=0)


def test_anthropic_sdk_reads_a_replayed_stream_and_a_json_hit() -> None:
    entry = entry_from_sse(ANTHROPIC_MESSAGES, 200, ANTHROPIC_SSE)
    assert entry is not None
    msgs: Any = [{"role": "user", "content": "Weather in Paris?"}]
    client = _anthropic_client(entry.body(stream=True) or b"", "text/event-stream")
    with client.messages.stream(model="test-model", max_tokens=100, messages=msgs) as s:
        final = s.get_final_message()
    assert final.content[1].input == {"city": "Paris"}  # type: ignore[union-attr]
    assert (final.stop_reason, final.usage.output_tokens, final.usage.input_tokens) == ("tool_use", 57, 25)
    client = _anthropic_client(entry.body(stream=False) or b"", "application/json")
    message = client.messages.create(model="test-model", max_tokens=100, messages=msgs)
    assert message.content[0].text == "Checking now." and message.usage.output_tokens == 57  # type: ignore[union-attr]


def test_anthropic_sdk_stream_of_a_full_json_answer_matches_it() -> None:
    entry = entry_from_json(ANTHROPIC_MESSAGES, 200, orjson.dumps(ANTHROPIC_BODY))
    assert entry is not None
    msgs: Any = [{"role": "user", "content": "Weather in Paris?"}]
    client = _anthropic_client(entry.body(stream=True) or b"", "text/event-stream")
    with client.messages.stream(model="test-model", max_tokens=100, messages=msgs) as s:
        final = s.get_final_message()
    assert final.model_dump(exclude_none=True) == Message.model_validate(ANTHROPIC_BODY).model_dump(exclude_none=True)


# --- entries ------------------------------------------------------------------------------------


def test_entry_serves_json_or_sse_and_bounds_every_byte() -> None:
    raw = orjson.dumps(OPENAI_BODY, option=orjson.OPT_INDENT_2)
    entry = entry_from_json(OPENAI_CHAT, 200, raw)
    assert entry is not None
    assert orjson.loads(entry.body(stream=False) or b"") == OPENAI_BODY
    assert entry.json_body is raw  # the provider's own bytes, as a relayed answer would have them
    assert entry.sse_body is None  # rendered on the first streamed hit, not when stored
    assert entry.body(stream=True) is entry.sse_body and entry.body(True, True) is entry.sse_usage_body
    assert entry.sse_body != entry.sse_usage_body
    # `size` is an upper bound of both renderings from the start, so the byte cap always holds.
    assert entry.size >= ENTRY_OVERHEAD + len(entry.json_body) + len(entry.sse_body or b"") + len(
        entry.sse_usage_body or b""
    )


def test_entry_without_usage_shares_one_sse_body() -> None:
    body = {k: v for k, v in OPENAI_BODY.items() if k != "usage"}
    entry = entry_from_answer(OPENAI_CHAT, body)
    assert entry is not None and entry.body(True) is not None and entry.sse_usage_body is entry.sse_body
    assert entry.size >= ENTRY_OVERHEAD + len(entry.json_body) + len(entry.sse_body or b"")


def test_anthropic_entry_and_embeddings_entry() -> None:
    a = entry_from_json(ANTHROPIC_MESSAGES, 200, orjson.dumps(ANTHROPIC_BODY))
    assert a is not None and a.body(True) is a.body(True, True)
    e = entry_from_json(OPENAI_EMBEDDINGS, 200, orjson.dumps(EMBEDDINGS_BODY))
    assert e is not None and e.body(stream=True) is None and e.size == ENTRY_OVERHEAD + len(e.json_body)
    assert entry_from_sse(OPENAI_EMBEDDINGS, 200, b"data: {}\n\n") is None


@pytest.mark.parametrize("status", [199, 304, 400, 429, 500, 529])
def test_non_2xx_answers_are_never_cached(status: int) -> None:
    assert entry_from_json(OPENAI_CHAT, status, orjson.dumps(OPENAI_BODY)) is None
    assert entry_from_sse(OPENAI_CHAT, status, OPENAI_TEXT_SSE) is None


def test_2xx_statuses_are_cached() -> None:
    assert entry_from_json(OPENAI_CHAT, 200, orjson.dumps(OPENAI_BODY)) is not None
    assert entry_from_sse(OPENAI_CHAT, 201, OPENAI_TEXT_SSE) is not None


@pytest.mark.parametrize(
    "fmt,obj",
    [
        (OPENAI_CHAT, {"error": {"message": "bad", "type": "invalid_request_error"}}),
        (OPENAI_CHAT, {**OPENAI_BODY, "choices": []}),
        (OPENAI_CHAT, {**OPENAI_BODY, "object": "chat.completion.chunk"}),
        (OPENAI_CHAT, {**OPENAI_BODY, "choices": [{**OPENAI_BODY["choices"][0], "finish_reason": "content_filter"}]}),
        (OPENAI_CHAT, {**OPENAI_BODY, "choices": [{**OPENAI_BODY["choices"][0], "finish_reason": None}]}),
        (ANTHROPIC_MESSAGES, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        (ANTHROPIC_MESSAGES, {**ANTHROPIC_BODY, "stop_reason": "refusal"}),
        (ANTHROPIC_MESSAGES, {**ANTHROPIC_BODY, "stop_reason": None}),
        (OPENAI_EMBEDDINGS, {**EMBEDDINGS_BODY, "data": []}),
        (ANTHROPIC_MESSAGES, OPENAI_BODY),  # the wrong format's shape
        (b"openai.responses", OPENAI_BODY),  # unknown format
        (OPENAI_CHAT, [OPENAI_BODY]),
    ],
)
def test_uncacheable_answers(fmt: bytes, obj: Any) -> None:
    assert not is_cacheable_answer(fmt, obj)
    assert entry_from_answer(fmt, obj) is None


def test_garbage_json_is_not_cached() -> None:
    assert entry_from_json(OPENAI_CHAT, 200, b"{not json") is None


def test_usage_and_finish_reason_survive_a_stream_store_and_json_hit() -> None:
    entry = entry_from_sse(OPENAI_CHAT, 200, OPENAI_TEXT_SSE)
    assert entry is not None
    served = ChatCompletion.model_validate_json(entry.body(stream=False) or b"")
    assert served.usage is not None and served.usage.model_dump(exclude_none=True) == USAGE
    assert served.choices[0].finish_reason == "stop"
