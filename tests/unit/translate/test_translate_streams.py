"""Stream state machines: golden output, every feeding mode, terminators, errors, usage."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest

from proxy.translate import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from tests.unit.translate.translate_samples import (
    ANTHROPIC_ERROR_STREAM,
    ANTHROPIC_TEXT_STREAM,
    ANTHROPIC_TOOL_STREAM,
    OPENAI_ERROR_STREAM,
    OPENAI_TEXT_STREAM,
    OPENAI_TOOL_STREAM,
    OPENAI_USAGE_CHUNK,
    OPENAI_VLLM_STREAM,
    StreamFailedError,
    data_lines,
    feed_bytewise,
    feed_split,
    feed_whole,
    read_anthropic_stream,
    read_openai_stream,
    sse,
)


def to_openai(include_usage: bool = True) -> Callable[[], AnthropicToOpenAIStream]:
    return lambda: AnthropicToOpenAIStream("gpt-4o", include_usage=include_usage, created=1700000000)


def to_anthropic() -> OpenAIToAnthropicStream:
    return OpenAIToAnthropicStream("claude-x")


_HEAD = (
    b'data: {"id":"msg_01","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o",'
    b'"choices":[{"index":0,"delta":'
)
_TAIL = b',"logprobs":null,"finish_reason":null}],"usage":null}\n\n'

GOLDEN_TOOL_TO_OPENAI = (
    _HEAD
    + b'{"role":"assistant","content":""}'
    + _TAIL
    + b": ping\n\n"
    + _HEAD
    + b'{"content":"Checking"}'
    + _TAIL
    + _HEAD
    + b'{"tool_calls":[{"index":0,"id":"toolu_01A","type":"function",'
    b'"function":{"name":"get_weather","arguments":""}}]}'
    + _TAIL
    + _HEAD
    + b'{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\": \\"Pa"}}]}'
    + _TAIL
    + _HEAD
    + b'{"tool_calls":[{"index":0,"function":{"arguments":"ris\\"}"}}]}'
    + _TAIL
    + _HEAD
    + b'{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}\n\n'
    + b'data: {"id":"msg_01","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","choices":[],'
    b'"usage":{"prompt_tokens":25,"completion_tokens":57,"total_tokens":82,'
    b'"prompt_tokens_details":{"cached_tokens":0}}}\n\n' + b"data: [DONE]\n\n"
)

GOLDEN_TOOL_TO_ANTHROPIC = (
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_chatcmpl-1","type":"message",'
    b'"role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,'
    b'"usage":{"input_tokens":0,"output_tokens":0}}}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,'
    b'"content_block":{"type":"text","text":""}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":"Let me check."}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":1,'
    b'"content_block":{"type":"tool_use","id":"call_1","name":"get_weather","input":{}}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
    b'"delta":{"type":"input_json_delta","partial_json":"{\\"city\\":"}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":1,'
    b'"delta":{"type":"input_json_delta","partial_json":"\\"Paris\\"}"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":1}\n\n'
    b'event: content_block_start\ndata: {"type":"content_block_start","index":2,'
    b'"content_block":{"type":"tool_use","id":"call_2","name":"get_time","input":{}}}\n\n'
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":2,'
    b'"delta":{"type":"input_json_delta","partial_json":"{}"}}\n\n'
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":2}\n\n'
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},'
    b'"usage":{"input_tokens":15,"output_tokens":3,"cache_creation_input_tokens":0,"cache_read_input_tokens":4}}\n\n'
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
)


# golden


def test_golden_anthropic_tool_stream_to_openai() -> None:
    assert feed_whole(to_openai(), ANTHROPIC_TOOL_STREAM) == GOLDEN_TOOL_TO_OPENAI


def test_golden_openai_tool_stream_to_anthropic() -> None:
    assert feed_whole(to_anthropic, OPENAI_TOOL_STREAM) == GOLDEN_TOOL_TO_ANTHROPIC


# feeding modes: whole == byte by byte == split at any point; line endings don't matter

ALL_CASES: list[tuple[str, Callable[[], Any], bytes]] = [
    ("a2o-tool", to_openai(), ANTHROPIC_TOOL_STREAM),
    ("a2o-tool-nousage", to_openai(False), ANTHROPIC_TOOL_STREAM),
    ("a2o-text", to_openai(), ANTHROPIC_TEXT_STREAM),
    ("a2o-error", to_openai(), ANTHROPIC_ERROR_STREAM),
    ("a2o-cut", to_openai(), ANTHROPIC_TOOL_STREAM[:-40]),
    ("o2a-text", to_anthropic, OPENAI_TEXT_STREAM),
    ("o2a-tool", to_anthropic, OPENAI_TOOL_STREAM),
    ("o2a-vllm", to_anthropic, OPENAI_VLLM_STREAM),
    ("o2a-error", to_anthropic, OPENAI_ERROR_STREAM),
    ("o2a-cut", to_anthropic, OPENAI_TOOL_STREAM[:-30]),
]
CASE_IDS = [c[0] for c in ALL_CASES]


@pytest.mark.parametrize(("name", "make", "data"), ALL_CASES, ids=CASE_IDS)
def test_byte_by_byte_equals_whole(name: str, make: Callable[[], Any], data: bytes) -> None:
    assert feed_bytewise(make, data) == feed_whole(make, data)


@pytest.mark.parametrize(("name", "make", "data"), ALL_CASES, ids=CASE_IDS)
def test_split_at_every_boundary_equals_whole(name: str, make: Callable[[], Any], data: bytes) -> None:
    whole = feed_whole(make, data)
    for cut in range(len(data) + 1):
        assert feed_split(make, data, [cut]) == whole, cut


@pytest.mark.parametrize("eol", [b"\r\n", b"\r"], ids=["crlf", "cr"])
@pytest.mark.parametrize(("name", "make", "data"), ALL_CASES, ids=CASE_IDS)
def test_line_endings_do_not_matter(name: str, make: Callable[[], Any], data: bytes, eol: bytes) -> None:
    whole = feed_whole(make, data)
    other = data.replace(b"\n", eol)
    assert feed_whole(make, other) == whole
    assert feed_bytewise(make, other) == whole


def test_comments_multiline_data_and_bom_are_understood() -> None:
    lines = ANTHROPIC_TOOL_STREAM.replace(b"event: ping\n", b": keepalive\nevent: ping\n")
    # JSON split over several data: lines joins with "\n", which is JSON whitespace.
    lines = lines.replace(b'"type":"message_stop"}', b'"type":\ndata: "message_stop"}')
    assert feed_whole(to_openai(), b"\xef\xbb\xbf" + lines) == GOLDEN_TOOL_TO_OPENAI


def test_output_frames_are_whole_events_per_feed() -> None:
    # Whatever the input split, each feed returns only complete frames.
    m = to_openai()()
    for i in range(len(ANTHROPIC_TOOL_STREAM)):
        out = m.feed(ANTHROPIC_TOOL_STREAM[i : i + 1])
        assert out == b"" or out.endswith(b"\n\n")


# the SDKs can read what we send


def test_openai_sdk_reads_translated_tool_stream() -> None:
    chunks, final, done = read_openai_stream(feed_whole(to_openai(), ANTHROPIC_TOOL_STREAM))
    assert done
    msg = final.choices[0].message
    assert msg.content == "Checking"
    assert msg.tool_calls[0].id == "toolu_01A"
    assert orjson.loads(msg.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage.prompt_tokens == 25 and final.usage.completion_tokens == 57
    assert chunks[-1].choices == []


def test_openai_sdk_reads_text_stream_with_cache_usage() -> None:
    _, final, done = read_openai_stream(feed_whole(to_openai(), ANTHROPIC_TEXT_STREAM))
    assert done
    assert final.choices[0].message.content == "Bonjour à toi ☀\n"  # thinking dropped
    assert final.choices[0].finish_reason == "length"
    u = final.usage
    # input_tokens overwritten by message_delta (12), plus cache read 2048 and write 100
    assert (u.prompt_tokens, u.completion_tokens, u.total_tokens) == (2160, 7, 2167)
    assert u.prompt_tokens_details.cached_tokens == 2048


def test_no_usage_chunk_unless_client_asked() -> None:
    out = feed_whole(to_openai(False), ANTHROPIC_TOOL_STREAM)
    chunks, _, done = read_openai_stream(out)
    assert done and all(c.choices for c in chunks) and b'"usage"' not in out
    m = to_openai(False)()
    m.feed(ANTHROPIC_TOOL_STREAM)
    assert (m.input_tokens, m.output_tokens, m.finish_reason) == (25, 57, "tool_calls")  # still counted


def test_openai_output_never_has_event_lines() -> None:
    for data in (ANTHROPIC_TOOL_STREAM, ANTHROPIC_TEXT_STREAM, ANTHROPIC_ERROR_STREAM):
        out = feed_whole(to_openai(), data)
        for frame in out.split(b"\n\n")[:-1]:
            assert frame.startswith((b"data: ", b": ")), frame


def test_anthropic_sdk_reads_translated_streams() -> None:
    msg = read_anthropic_stream(feed_whole(to_anthropic, OPENAI_TOOL_STREAM))
    assert [b.type for b in msg.content] == ["text", "tool_use", "tool_use"]
    assert msg.content[1].input == {"city": "Paris"} and msg.content[2].input == {}
    assert msg.stop_reason == "tool_use"
    assert (msg.usage.input_tokens, msg.usage.cache_read_input_tokens, msg.usage.output_tokens) == (15, 4, 3)

    msg = read_anthropic_stream(feed_whole(to_anthropic, OPENAI_TEXT_STREAM))
    assert msg.content[0].text == "Bonjour ☀" and msg.stop_reason == "end_turn"


def test_vllm_stop_string_content_with_finish_and_no_usage() -> None:
    m = to_anthropic()
    out = m.feed(OPENAI_VLLM_STREAM) + m.close()
    msg = read_anthropic_stream(out)
    assert msg.content[0].text == "Hello world"
    assert (msg.stop_reason, msg.stop_sequence) == ("stop_sequence", "END")
    assert b'"usage":{"output_tokens":0}' in out  # required even when the upstream sent none
    assert m.complete and not m.usage_final


def test_anthropic_output_frames_pair_event_and_type() -> None:
    for data in (OPENAI_TEXT_STREAM, OPENAI_TOOL_STREAM, OPENAI_VLLM_STREAM, OPENAI_ERROR_STREAM):
        out = feed_whole(to_anthropic, data)
        assert b"[DONE]" not in out
        for frame in out.split(b"\n\n")[:-1]:
            event, data_line = frame.split(b"\n")
            assert orjson.loads(data_line[6:])["type"].encode() == event[7:]


# usage and finish reason exposed for accounting


def test_machines_expose_final_usage_and_reason() -> None:
    a = to_openai()()
    a.feed(ANTHROPIC_TEXT_STREAM)
    assert (a.input_tokens, a.output_tokens, a.cache_read_tokens, a.cache_write_tokens) == (2160, 7, 2048, 100)
    assert (a.finish_reason, a.upstream_stop_reason, a.complete, a.usage_final) == ("length", "max_tokens", True, True)

    o = to_anthropic()
    o.feed(OPENAI_TOOL_STREAM)
    assert (o.input_tokens, o.output_tokens, o.cache_read_tokens) == (19, 3, 4)
    assert (o.finish_reason, o.upstream_finish_reason, o.complete) == ("tool_use", "tool_calls", True)


def test_usage_is_overwritten_not_summed() -> None:
    # vLLM continuous_usage_stats: cumulative usage on every chunk.
    chunk = dict(OPENAI_USAGE_CHUNK, choices=[{"index": 0, "delta": {"content": "x"}, "finish_reason": None}])
    u1 = dict(chunk, usage={"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6})
    u2 = dict(chunk, usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})
    m = to_anthropic()
    out = m.feed(data_lines(u1, u2, "[DONE]"))
    assert (m.input_tokens, m.output_tokens) == (5, 2)
    assert read_anthropic_stream(out).usage.output_tokens == 2


# terminators and errors


def test_anthropic_stream_without_message_stop_ends_with_openai_error() -> None:
    cut = ANTHROPIC_TOOL_STREAM[: ANTHROPIC_TOOL_STREAM.index(b"event: message_stop")]
    m = to_openai()()
    out = m.feed(cut)
    tail = m.close()
    assert tail.startswith(b'data: {"error":{"message":"upstream stream ended before message_stop"')
    assert b"[DONE]" not in out + tail
    assert m.errored and not m.complete and m.close() == b""
    with pytest.raises(StreamFailedError):
        read_openai_stream(out + tail)


def test_openai_stream_without_done_ends_with_anthropic_error() -> None:
    cut = OPENAI_TEXT_STREAM[: OPENAI_TEXT_STREAM.index(b"data: [DONE]")]
    m = to_anthropic()
    out = m.feed(cut) + m.close()
    assert out.endswith(
        b'event: error\ndata: {"type":"error","error":{"type":"api_error",'
        b'"message":"upstream stream ended before [DONE]"}}\n\n'
    )
    assert b"message_stop" not in out and m.errored
    with pytest.raises(StreamFailedError):
        read_anthropic_stream(out)


def test_empty_upstream_is_an_error_not_a_clean_end() -> None:
    a, o = to_openai()(), to_anthropic()
    assert a.close().startswith(b'data: {"error":')
    assert o.close().startswith(b"event: error\n")


def test_terminator_without_trailing_blank_line_is_accepted_at_eof() -> None:
    m = to_anthropic()
    out = m.feed(OPENAI_TEXT_STREAM.rstrip(b"\n")) + m.close()
    assert out.endswith(b'event: message_stop\ndata: {"type":"message_stop"}\n\n') and m.complete


def test_mid_stream_upstream_errors_become_client_error_frames() -> None:
    m = to_openai()()
    out = m.feed(ANTHROPIC_ERROR_STREAM)
    assert out.endswith(
        b'data: {"error":{"message":"Overloaded","type":"overloaded_error","param":null,"code":null}}\n\n'
    )
    assert m.errored and m.feed(ANTHROPIC_TOOL_STREAM) == b"" and m.close() == b""

    o = to_anthropic()
    out = o.feed(OPENAI_ERROR_STREAM)
    assert out.endswith(
        b'event: error\ndata: {"type":"error","error":{"type":"api_error","message":"The server had an error"}}\n\n'
    )
    assert o.errored and o.close() == b""


def test_vllm_flat_error_and_int_code_mid_stream() -> None:
    o = to_anthropic()
    out = o.feed(data_lines({"object": "error", "message": "too long", "type": "BadRequestError", "code": 400}))
    assert (
        out == b'event: error\ndata: {"type":"error","error":{"type":"invalid_request_error","message":"too long"}}\n\n'
    )


def test_malformed_upstream_data_is_an_error() -> None:
    assert to_openai()().feed(b"event: message_start\ndata: {nope\n\n").startswith(b'data: {"error":')
    assert to_anthropic().feed(b"data: [1,2]\n\n").startswith(b"event: error\n")
    assert to_anthropic().feed(b'data: {"choices":[{"delta":"x"}]}\n\n').count(b"event: error") == 1


def test_error_method_builds_client_frames_once() -> None:
    a = to_openai()()
    a.feed(ANTHROPIC_TOOL_STREAM[:300])
    assert a.error("upstream timed out", "timeout") == (
        b'data: {"error":{"message":"upstream timed out","type":"timeout","param":null,"code":null}}\n\n'
    )
    assert a.error("again", "x") == b"" and a.close() == b""
    o = to_anthropic()
    assert o.error("slow", "timeout_error") == (
        b'event: error\ndata: {"type":"error","error":{"type":"timeout_error","message":"slow"}}\n\n'
    )
    done = to_anthropic()
    done.feed(OPENAI_TEXT_STREAM)
    assert done.error("late", "api_error") == b""  # never after a clean end


def test_interleaved_tool_arguments_cannot_be_translated() -> None:
    def tc(index: int, args: str, **kw: Any) -> dict[str, Any]:
        return {
            "choices": [{"index": 0, "delta": {"tool_calls": [dict(index=index, function={"arguments": args}, **kw)]}}]
        }

    data = data_lines(tc(0, "{", id="a"), tc(1, "{", id="b"), tc(0, "}"))
    out = to_anthropic().feed(data)
    assert out.endswith(b'cannot translate"}}\n\n')


def test_parallel_tool_calls_in_one_chunk_and_missing_ids() -> None:
    chunk = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "delta": {
                    "tool_calls": [
                        {"index": 0, "id": "c1", "function": {"name": "a", "arguments": '{"x":1}'}},
                        {"index": 1, "function": {"name": "b", "arguments": ""}},
                    ]
                },
                "finish_reason": "tool_calls",
            },
            {"index": 1, "delta": {"content": "ignored second choice"}},
        ],
    }
    msg = read_anthropic_stream(feed_whole(to_anthropic, data_lines(chunk, "[DONE]")))
    assert [(b.name, b.input) for b in msg.content] == [("a", {"x": 1}), ("b", {})]
    assert msg.content[1].id.startswith("toolu_")


def test_explicit_ids_and_input_estimate() -> None:
    m = OpenAIToAnthropicStream("claude-x", message_id="msg_fixed", input_tokens=42)
    out = m.feed(OPENAI_TEXT_STREAM)
    assert b'"id":"msg_fixed"' in out and b'"usage":{"input_tokens":42,"output_tokens":0}' in out
    a = AnthropicToOpenAIStream("gpt", include_usage=False, chunk_id="chatcmpl-fixed", created=1)
    assert a.feed(ANTHROPIC_TOOL_STREAM).count(b'"id":"chatcmpl-fixed"') == 6


def test_refusal_maps_to_content_filter_and_back() -> None:
    up = sse(
        ("message_start", {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "refusal"}, "usage": {"output_tokens": 0}},
        ),
        ("message_stop", {"type": "message_stop"}),
    )
    a = to_openai()()
    a.feed(up)
    assert a.finish_reason == "content_filter"
    o = to_anthropic()
    o.feed(
        data_lines(
            {"choices": [{"index": 0, "delta": {"refusal": "No."}, "finish_reason": "content_filter"}]}, "[DONE]"
        )
    )
    assert o.finish_reason == "refusal"


def test_tool_id_repeated_on_every_fragment_and_index_reused_for_new_ids() -> None:
    def tc(index: int, call_id: str, name: str, args: str) -> dict[str, Any]:
        call = {"index": index, "id": call_id, "function": {"name": name, "arguments": args}}
        return {"choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}

    data = data_lines(tc(0, "a", "f", '{"x":'), tc(0, "a", "", "1}"), tc(0, "b", "g", "{}"), "[DONE]")
    msg = read_anthropic_stream(feed_whole(to_anthropic, data))
    assert [(b.id, b.name, b.input) for b in msg.content] == [("a", "f", {"x": 1}), ("b", "g", {})]


def test_tool_use_start_with_full_input_and_empty_feeds() -> None:
    start = {"type": "content_block_start", "index": 0}
    start["content_block"] = {"type": "tool_use", "id": "t", "name": "f", "input": {"k": "v"}}
    up = sse(
        ("message_start", {"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": 1}}}),
        ("content_block_start", start),
        (
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 2}},
        ),
        ("message_stop", {"type": "message_stop"}),
    )
    m = to_openai()()
    assert m.feed(b"") == b""
    _, final, done = read_openai_stream(m.feed(up) + m.close())
    call = final.choices[0].message.tool_calls[0]
    assert done and orjson.loads(call.function.arguments) == {"k": "v"}
