"""Non-streamed responses, usage helpers and stop-reason tables."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic.types import Message

from proxy.errors import UpstreamProtocolError
from proxy.translate import (
    anthropic_to_openai_response,
    openai_to_anthropic_response,
    usage_from_anthropic,
    usage_from_openai,
)
from proxy.translate.reasons import finish_reason_from_anthropic, stop_reason_from_openai
from proxy.translate.usage import anthropic_usage_detail, openai_usage_detail
from tests.unit.translate.translate_samples import check_openai_completion

ANTHROPIC_MESSAGE: dict[str, Any] = {
    "id": "msg_01XF",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5-20250929",
    "content": [
        {"type": "thinking", "thinking": "Let me see", "signature": "abc"},
        {"type": "text", "text": "I'll check."},
        {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "stop_reason": "tool_use",
    "stop_sequence": None,
    "usage": {
        "input_tokens": 412,
        "output_tokens": 57,
        "cache_creation_input_tokens": 100,
        "cache_read_input_tokens": 2048,
        "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 0},
        "service_tier": "standard",
    },
}

OPENAI_COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-abc123",
    "object": "chat.completion",
    "created": 1741569952,
    "model": "gpt-4.1-2025-04-14",
    "choices": [
        {
            "index": 0,
            "message": {
                "role": "assistant",
                "content": "Let me look.",
                "refusal": None,
                "annotations": [],
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": ""}},
                ],
            },
            "logprobs": None,
            "finish_reason": "tool_calls",
        }
    ],
    "usage": {
        "prompt_tokens": 19,
        "completion_tokens": 3,
        "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    },
}


def test_anthropic_message_to_openai_golden() -> None:
    out = anthropic_to_openai_response(ANTHROPIC_MESSAGE, model="gpt-alias", created=1700000000)
    assert out == {
        "id": "msg_01XF",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-alias",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "I'll check.",
                    "refusal": None,
                    "tool_calls": [
                        {
                            "id": "toolu_01A",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                        }
                    ],
                },
                "logprobs": None,
                "finish_reason": "tool_calls",
            }
        ],
        "usage": {
            "prompt_tokens": 2560,
            "completion_tokens": 57,
            "total_tokens": 2617,
            "prompt_tokens_details": {"cached_tokens": 2048, "cache_write_tokens": 100},
        },
    }
    check_openai_completion(out)


def test_anthropic_text_only_and_tools_only() -> None:
    text = dict(
        ANTHROPIC_MESSAGE,
        content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        stop_reason="end_turn",
    )
    c = check_openai_completion(anthropic_to_openai_response(text, model="m"))
    assert c.choices[0].message.content == "ab" and c.choices[0].finish_reason == "stop"
    assert c.choices[0].message.tool_calls is None
    tools = dict(ANTHROPIC_MESSAGE, content=[ANTHROPIC_MESSAGE["content"][2]])
    c = check_openai_completion(anthropic_to_openai_response(tools, model="m"))
    assert c.choices[0].message.content is None and c.choices[0].message.tool_calls
    empty = dict(ANTHROPIC_MESSAGE, content=[], stop_reason="max_tokens")
    c = check_openai_completion(anthropic_to_openai_response(empty, model="m"))
    assert c.choices[0].message.content == "" and c.choices[0].finish_reason == "length"
    assert isinstance(c.created, int) and c.created > 1_700_000_000


def test_openai_completion_to_anthropic_golden() -> None:
    out = openai_to_anthropic_response(OPENAI_COMPLETION, model="claude-alias")
    assert out == {
        "id": "msg_chatcmpl-abc123",
        "type": "message",
        "role": "assistant",
        "model": "claude-alias",
        "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 15,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 4,
        },
    }
    Message.model_validate(out)


def test_openai_variants_to_anthropic() -> None:
    vllm = {
        "id": "cmpl-9",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hi"},
                "finish_reason": "stop",
                "stop_reason": "END",
            }
        ],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }
    out = openai_to_anthropic_response(vllm, model="c")
    assert (out["stop_reason"], out["stop_sequence"]) == ("stop_sequence", "END")
    Message.model_validate(out)
    refusal = {"choices": [{"message": {"content": None, "refusal": "I can't."}, "finish_reason": "content_filter"}]}
    out = openai_to_anthropic_response(refusal, model="c")
    assert out["content"] == [{"type": "text", "text": "I can't."}] and out["stop_reason"] == "refusal"
    assert out["id"].startswith("msg_") and out["usage"]["output_tokens"] == 0
    Message.model_validate(out)
    empty = openai_to_anthropic_response({"id": "msg_x", "choices": []}, model="c")
    assert empty["content"] == [] and empty["stop_reason"] == "end_turn" and empty["id"] == "msg_x"


@pytest.mark.parametrize("args", ["{not json", "[1,2]", '"s"'])
def test_openai_broken_tool_arguments_are_an_upstream_fault(args: str) -> None:
    bad = {"choices": [{"message": {"tool_calls": [{"id": "c", "function": {"name": "f", "arguments": args}}]}}]}
    with pytest.raises(UpstreamProtocolError):
        openai_to_anthropic_response(bad, model="c")


def test_response_round_trip_keeps_content() -> None:
    there = openai_to_anthropic_response(OPENAI_COMPLETION, model="c")
    back = anthropic_to_openai_response(there, model="gpt", created=1)
    m = back["choices"][0]["message"]
    orig = OPENAI_COMPLETION["choices"][0]["message"]
    assert m["content"] == orig["content"]
    assert [
        (t["id"], t["function"]["name"], orjson.loads(t["function"]["arguments"] or "{}")) for t in m["tool_calls"]
    ] == [
        (t["id"], t["function"]["name"], orjson.loads(t["function"]["arguments"] or "{}")) for t in orig["tool_calls"]
    ]
    assert back["usage"]["prompt_tokens"] == 19 and back["usage"]["completion_tokens"] == 3


# usage


def test_usage_helpers() -> None:
    assert usage_from_anthropic(ANTHROPIC_MESSAGE) == (2560, 57)
    assert usage_from_openai(OPENAI_COMPLETION) == (19, 3)
    assert usage_from_openai({}) == (0, 0) and usage_from_anthropic({"usage": None}) == (0, 0)
    d = anthropic_usage_detail(ANTHROPIC_MESSAGE["usage"])
    assert (d.input_tokens, d.output_tokens, d.cache_read_tokens, d.cache_write_tokens, d.input_uncached) == (
        2560,
        57,
        2048,
        100,
        412,
    )
    d = openai_usage_detail(
        {"prompt_tokens": 12000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 10000}}
    )
    assert d.input_uncached == 2000 and d.cache_read_tokens == 10000
    assert openai_usage_detail({"prompt_tokens": True, "completion_tokens": "3"}) == (0, 0, 0, 0)


# reasons


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("pause_turn", "stop"),
        ("refusal", "content_filter"),
        ("model_context_window_exceeded", "length"),
        ("brand_new_reason", "stop"),
        (None, "stop"),
    ],
)
def test_anthropic_to_openai_reasons(stop: Any, finish: str) -> None:
    assert finish_reason_from_anthropic(stop) == finish


@pytest.mark.parametrize(
    ("finish", "stop"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        ("other", "end_turn"),
        (None, "end_turn"),
    ],
)
def test_openai_to_anthropic_reasons(finish: Any, stop: str) -> None:
    assert stop_reason_from_openai(finish) == (stop, None)
    assert stop_reason_from_openai("stop", 50256) == ("end_turn", None)  # vLLM token-id stop is not a sequence
