"""Request translation, both directions: golden pairs and the untranslatable cases."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from proxy.errors import BadRequestError
from proxy.translate import (
    anthropic_to_openai_request,
    client_wants_usage,
    openai_to_anthropic_request,
    sampling_allowed,
)

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
OPENAI_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather", "parameters": WEATHER_SCHEMA},
}
ANTHROPIC_TOOL = {"name": "get_weather", "description": "Current weather", "input_schema": WEATHER_SCHEMA}


def to_anthropic(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    before = copy.deepcopy(body)
    out = openai_to_anthropic_request(body, model="claude-sonnet-4-5", **kw)
    assert body == before  # never mutates the client's body
    return out


def to_openai(body: dict[str, Any], **kw: Any) -> dict[str, Any]:
    before = copy.deepcopy(body)
    out = anthropic_to_openai_request(body, model="gpt-4.1", **kw)
    assert body == before
    return out


# OpenAI -> Anthropic


def test_system_developer_and_turns() -> None:
    body = {
        "model": "alias",
        "messages": [
            {"role": "developer", "content": "You are terse."},
            {
                "role": "system",
                "content": [{"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}}],
            },
            {"role": "user", "content": "Hi"},
            {"role": "user", "content": [{"type": "text", "text": "there"}]},
            {"role": "system", "content": "Late system."},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "Merci"},
        ],
        "max_tokens": 100,
    }
    assert to_anthropic(body) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 100,
        "system": [
            {"type": "text", "text": "You are terse."},
            {"type": "text", "text": "Answer in French.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Late system."},
        ],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "there"}]},
            {"role": "assistant", "content": "Bonjour"},
            {"role": "user", "content": "Merci"},
        ],
    }


def test_single_system_string_and_default_max_tokens() -> None:
    body = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]}
    assert to_anthropic(body) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hi"}],
    }
    assert to_anthropic(body, default_max_tokens=512)["max_tokens"] == 512
    assert to_anthropic({**body, "max_tokens": None})["max_tokens"] == 4096


def test_max_completion_tokens_wins() -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    assert to_anthropic({"messages": msgs, "max_completion_tokens": 50, "max_tokens": 9})["max_tokens"] == 50
    assert to_anthropic({"messages": msgs, "max_tokens": 9, "max_completion_tokens": 50})["max_tokens"] == 50
    with pytest.raises(BadRequestError) as e:
        to_anthropic({"messages": msgs, "max_tokens": "9"})
    assert e.value.param == "max_tokens"


def test_tools_and_tool_choice() -> None:
    base = {"messages": [{"role": "user", "content": "Weather?"}], "tools": [OPENAI_TOOL]}
    assert to_anthropic(base)["tools"] == [ANTHROPIC_TOOL]
    assert "tool_choice" not in to_anthropic(base)
    cases = {
        "auto": {"type": "auto"},
        "none": {"type": "none"},
        "required": {"type": "any"},
    }
    for choice, expected in cases.items():
        assert to_anthropic({**base, "tool_choice": choice})["tool_choice"] == expected
    named = {"type": "function", "function": {"name": "get_weather"}}
    assert to_anthropic({**base, "tool_choice": named})["tool_choice"] == {"type": "tool", "name": "get_weather"}
    assert to_anthropic({**base, "parallel_tool_calls": False})["tool_choice"] == {
        "type": "auto",
        "disable_parallel_tool_use": True,
    }
    assert to_anthropic({**base, "tool_choice": "required", "parallel_tool_calls": False})["tool_choice"] == {
        "type": "any",
        "disable_parallel_tool_use": True,
    }
    assert to_anthropic({**base, "tool_choice": "none", "parallel_tool_calls": False})["tool_choice"] == {
        "type": "none"
    }
    assert "tool_choice" not in to_anthropic({**base, "parallel_tool_calls": True})
    bare = {"type": "function", "function": {"name": "ping"}}
    assert to_anthropic({**base, "tools": [bare]})["tools"] == [
        {"name": "ping", "input_schema": {"type": "object", "properties": {}}}
    ]


def test_tool_round_trip_history() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "functions.get_weather:1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ""},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "18°C"},
            {"role": "tool", "tool_call_id": "functions.get_weather:1", "content": [{"type": "text", "text": "21°C"}]},
            {"role": "user", "content": "Thanks"},
        ],
        "tools": [OPENAI_TOOL],
    }
    assert to_anthropic(body)["messages"] == [
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "functions_get_weather_1", "name": "get_weather", "input": {}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18°C"},
                {"type": "tool_result", "tool_use_id": "functions_get_weather_1", "content": "21°C"},
                {"type": "text", "text": "Thanks"},
            ],
        },
    ]


def test_assistant_null_content_with_tool_calls_only() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
            },
            {"role": "tool", "tool_call_id": "c", "content": ""},
        ]
    }
    msgs = to_anthropic(body)["messages"]
    assert msgs[1] == {"role": "assistant", "content": [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]}
    assert msgs[2] == {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c"}]}


def test_images() -> None:
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo=", "detail": "high"}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
                    {
                        "type": "file",
                        "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="},
                    },
                ],
            }
        ]
    }
    assert to_anthropic(body)["messages"][0]["content"] == [
        {"type": "text", "text": "What is in these?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}},
    ]


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,PHN2Zz4="}},
        {"type": "image_url", "image_url": {"url": "data:image/png,raw"}},
        {"type": "input_audio", "input_audio": {"data": "AAA", "format": "wav"}},
        {"type": "file", "file": {"file_id": "file-1"}},
    ],
)
def test_untranslatable_content_parts(part: dict[str, Any]) -> None:
    with pytest.raises(BadRequestError) as e:
        to_anthropic({"messages": [{"role": "user", "content": [part]}]})
    assert e.value.param == "messages[0].content[0]" and e.value.status == 400


def test_stop_sequences() -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    assert to_anthropic({"messages": msgs, "stop": "END"})["stop_sequences"] == ["END"]
    assert to_anthropic({"messages": msgs, "stop": ["a", " ", "\n\nHuman:"]})["stop_sequences"] == ["a", "\n\nHuman:"]
    assert "stop_sequences" not in to_anthropic({"messages": msgs, "stop": ["\n"]})
    with pytest.raises(BadRequestError):
        to_anthropic({"messages": msgs, "stop": [1]})


def test_sampling_kept_for_2023_dropped_for_2026() -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "temperature": 0.2, "top_p": 0.9, "top_k": 5}
    old = to_anthropic(body, anthropic_version="2023-06-01")
    assert (old["temperature"], old["top_p"], old["top_k"]) == (0.2, 0.9, 5)
    for version in ("2026-10-21", "2027-03-01", "not-a-date"):
        dropped: list[str] = []
        new = to_anthropic(body, anthropic_version=version, dropped=dropped)
        assert not {"temperature", "top_p", "top_k"} & new.keys()
        assert dropped == ["temperature", "top_p", "top_k"]
    dropped = []
    forced = to_anthropic(body, anthropic_version="2023-06-01", allow_sampling=False, dropped=dropped)
    assert "temperature" not in forced and dropped == ["temperature", "top_p", "top_k"]
    assert sampling_allowed("2023-06-01") and not sampling_allowed("2026-10-21")


def test_temperature_out_of_anthropic_range_is_a_400() -> None:
    with pytest.raises(BadRequestError) as e:
        to_anthropic({"messages": [{"role": "user", "content": "Hi"}], "temperature": 1.5})
    assert e.value.param == "temperature"
    # ...but not when it would be dropped anyway
    assert "temperature" not in to_anthropic(
        {"messages": [{"role": "user", "content": "Hi"}], "temperature": 1.5}, anthropic_version="2026-10-21"
    )


@pytest.mark.parametrize(
    ("param", "value"),
    [
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 3),
        ("logit_bias", {"50256": -100}),
        ("presence_penalty", 0.5),
        ("frequency_penalty", -1),
        ("seed", 7),
        ("audio", {"voice": "alloy", "format": "wav"}),
        ("modalities", ["text", "audio"]),
        ("prediction", {"type": "content", "content": "x"}),
        ("functions", [{"name": "f"}]),
        ("reasoning_effort", "high"),
        ("web_search_options", {}),
        ("totally_new_param", 1),
    ],
)
def test_untranslatable_params_are_400_naming_the_param(param: str, value: Any) -> None:
    with pytest.raises(BadRequestError) as e:
        to_anthropic({"messages": [{"role": "user", "content": "Hi"}], param: value})
    assert e.value.param == param and e.value.status == 400
    assert param.split("_")[0] in e.value.message


def test_default_values_of_untranslatable_params_are_fine() -> None:
    body = {
        "messages": [{"role": "user", "content": "Hi"}],
        "n": 1,
        "logprobs": False,
        "presence_penalty": 0,
        "frequency_penalty": 0.0,
        "logit_bias": {},
        "modalities": ["text"],
        "seed": None,
        "stream_options": {"include_usage": True},
        "store": False,
        "metadata": {"k": "v"},
        "response_format": {"type": "text"},
    }
    assert to_anthropic(body) == {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "messages": [{"role": "user", "content": "Hi"}],
    }


def test_drop_params_drops_the_harmless_ones_but_never_n() -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "seed": 1, "logit_bias": {"1": 2}, "presence_penalty": 1}
    dropped: list[str] = []
    out = to_anthropic(body, drop_params=True, dropped=dropped)
    assert sorted(dropped) == ["logit_bias", "presence_penalty", "seed"] and "seed" not in out
    with pytest.raises(BadRequestError) as e:
        to_anthropic({**body, "n": 3}, drop_params=True)
    assert e.value.message == "n>1 is not supported for claude-sonnet-4-5" and e.value.code == "unsupported_parameter"


def test_response_format() -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    out = to_anthropic(
        {"messages": msgs, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    )
    assert out["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    with pytest.raises(BadRequestError) as e:
        to_anthropic({"messages": msgs, "response_format": {"type": "json_object"}})
    assert e.value.param == "response_format"


def test_user_becomes_metadata_unless_personal() -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    assert to_anthropic({"messages": msgs, "user": "hashed-42"})["metadata"] == {"user_id": "hashed-42"}
    assert "metadata" not in to_anthropic({"messages": msgs, "user": "bob@example.com"})
    assert "metadata" not in to_anthropic({"messages": msgs, "user": "+1 (555) 123-4567"})


def test_stream_kept_and_usage_request_detected() -> None:
    body = {"messages": [{"role": "user", "content": "Hi"}], "stream": True, "stream_options": {"include_usage": True}}
    out = to_anthropic(body)
    assert out["stream"] is True and "stream_options" not in out
    assert client_wants_usage(body) and not client_wants_usage({"stream": True})


def test_prefill_is_right_stripped_and_empty_text_dropped() -> None:
    body = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": ""}, {"type": "text", "text": "Say hi"}]},
            {"role": "assistant", "content": "Hi there  \n"},
        ]
    }
    assert to_anthropic(body)["messages"] == [
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": "Hi there"},
    ]
    body["messages"][1]["content"] = "   "
    assert to_anthropic(body)["messages"] == [{"role": "user", "content": "Say hi"}]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([], "messages"),
        ([{"role": "user", "content": ""}], "messages"),
        ([{"role": "function", "name": "f", "content": "x"}], "messages[0].role"),
        ([{"role": "tool", "content": "x"}], "messages[0].tool_call_id"),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "[1]"}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{x"}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x"}}]}],
            "messages[0].content[0]",
        ),
        ([{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}], "messages[0].function_call"),
    ],
)
def test_bad_messages(messages: list[Any], param: str) -> None:
    with pytest.raises(BadRequestError) as e:
        to_anthropic({"messages": messages})
    assert e.value.param == param


def test_bad_tools() -> None:
    msgs = [{"role": "user", "content": "Hi"}]
    with pytest.raises(BadRequestError) as e:
        to_anthropic({"messages": msgs, "tools": [{"type": "custom", "custom": {"name": "x"}}]})
    assert e.value.param == "tools[0]"
    with pytest.raises(BadRequestError) as e:
        to_anthropic(
            {"messages": msgs, "tools": [OPENAI_TOOL], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}}
        )
    assert e.value.param == "tool_choice"


# Anthropic -> OpenAI


def test_anthropic_golden_conversation() -> None:
    body = {
        "model": "claude-alias",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are terse.", "cache_control": {"type": "ephemeral"}}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "thinking", "thinking": "...", "signature": "s"},
                    {"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_01A", "name": "get_weather", "input": {"city": "Paris"}},
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Also, what is this?"},
                    {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18°C, cloudy"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBOR"}},
                ],
            },
        ],
        "tools": [ANTHROPIC_TOOL],
        "tool_choice": {"type": "auto"},
        "stop_sequences": ["\n\nHuman:"],
        "temperature": 0.2,
        "metadata": {"user_id": "hashed-user-42"},
        "stream": False,
    }
    assert to_openai(body) == {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "toolu_01A",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "toolu_01A", "content": "18°C, cloudy"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Also, what is this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBOR"}},
                ],
            },
        ],
        "max_completion_tokens": 1024,
        "stop": ["\n\nHuman:"],
        "temperature": 0.2,
        "tools": [OPENAI_TOOL],
        "tool_choice": "auto",
        "user": "hashed-user-42",
        "stream": False,
    }


def test_local_dialect_max_tokens_and_top_k() -> None:
    body = {"max_tokens": 64, "top_k": 40, "messages": [{"role": "user", "content": "Hi"}], "system": "Sys"}
    local = to_openai(body, for_local=True)
    assert local == {
        "model": "gpt-4.1",
        "messages": [{"role": "system", "content": "Sys"}, {"role": "user", "content": "Hi"}],
        "max_tokens": 64,
        "top_k": 40,
    }
    dropped: list[str] = []
    remote = to_openai(body, dropped=dropped)
    assert remote["max_completion_tokens"] == 64 and "max_tokens" not in remote and "top_k" not in remote
    assert dropped == ["top_k"]


def test_stream_asks_upstream_for_usage() -> None:
    out = to_openai({"max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}], "stream": True})
    assert out["stream"] is True and out["stream_options"] == {"include_usage": True}


def test_anthropic_tool_choice_mapping() -> None:
    base = {"max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}], "tools": [ANTHROPIC_TOOL]}
    assert to_openai({**base, "tool_choice": {"type": "any"}})["tool_choice"] == "required"
    assert to_openai({**base, "tool_choice": {"type": "none"}})["tool_choice"] == "none"
    assert to_openai({**base, "tool_choice": {"type": "tool", "name": "get_weather"}})["tool_choice"] == {
        "type": "function",
        "function": {"name": "get_weather"},
    }
    out = to_openai({**base, "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}})
    assert out["tool_choice"] == "auto" and out["parallel_tool_calls"] is False


def test_tool_result_forms() -> None:
    body = {
        "max_tokens": 5,
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": "a",
                        "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}],
                    },
                    {"type": "tool_result", "tool_use_id": "b", "is_error": True, "content": "boom"},
                    {"type": "tool_result", "tool_use_id": "c"},
                ],
            }
        ],
    }
    assert to_openai(body)["messages"] == [
        {
            "role": "tool",
            "tool_call_id": "a",
            "content": [{"type": "text", "text": "x"}, {"type": "text", "text": "y"}],
        },
        {"role": "tool", "tool_call_id": "b", "content": "Error: boom"},
        {"role": "tool", "tool_call_id": "c", "content": ""},
    ]


def test_documents_images_urls_and_mid_conversation_system() -> None:
    pdf = {
        "type": "document",
        "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBE"},
        "title": "r.pdf",
    }
    img = {"type": "image", "source": {"type": "url", "url": "https://x/y.png"}}
    body = {
        "max_tokens": 5,
        "messages": [{"role": "user", "content": [pdf, img]}, {"role": "system", "content": "Now be formal."}],
    }
    assert to_openai(body)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "file", "file": {"filename": "r.pdf", "file_data": "data:application/pdf;base64,JVBE"}},
                {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
            ],
        },
        {"role": "system", "content": "Now be formal."},
    ]
    with pytest.raises(BadRequestError) as e:
        to_openai(body, for_local=True)
    assert e.value.param == "messages[0].content[0]"


def test_thinking_and_output_config() -> None:
    schema = {"type": "object"}
    body = {
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "Hi"}],
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "output_config": {"format": {"type": "json_schema", "schema": schema}, "effort": "high"},
    }
    dropped: list[str] = []
    out = to_openai(body, dropped=dropped)
    assert out["response_format"] == {"type": "json_schema", "json_schema": {"name": "output", "schema": schema}}
    assert dropped == ["thinking", "output_config.effort"] and "thinking" not in out
    assert to_openai({**body, "thinking": {"type": "disabled"}, "output_config": {}}) == {
        "model": "gpt-4.1",
        "messages": [{"role": "user", "content": "Hi"}],
        "max_completion_tokens": 5,
    }


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages[0].role"),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "tool_result", "tool_use_id": "a", "content": [{"type": "image", "source": {}}]}
                        ],
                    }
                ]
            },
            "messages[0].content[0].content[0]",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "server_tool_use"}]}]}, "messages[0].content[0]"),
        (
            {
                "messages": [{"role": "user", "content": "x"}],
                "tools": [{"type": "web_search_20250305", "name": "web_search"}],
            },
            "tools[0]",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"name": "n" * 65, "input_schema": {}}]},
            "tools[0].name",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "stop_sequences": ["1", "2", "3", "4", "5"]},
            "stop_sequences",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "container": "c"}, "container"),
        ({"messages": [{"role": "user", "content": "x"}], "tool_choice": {"type": "bogus"}}, "tool_choice"),
    ],
)
def test_anthropic_untranslatable(body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as e:
        to_openai({"max_tokens": 5, **body})
    assert e.value.param == param


def test_local_allows_long_tool_names_and_many_stops() -> None:
    body = {
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"name": "n" * 65, "input_schema": {"type": "object"}}],
        "stop_sequences": ["1", "2", "3", "4", "5"],
    }
    out = to_openai(body, for_local=True)
    assert len(out["stop"]) == 5 and out["tools"][0]["function"]["name"] == "n" * 65


def test_tool_choice_without_tools_is_left_out_both_ways() -> None:
    oa = {
        "messages": [{"role": "user", "content": "Hi"}],
        "tools": [],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
    }
    assert "tool_choice" not in to_anthropic(oa) and "tools" not in to_anthropic(oa)
    an = {"max_tokens": 5, "messages": [{"role": "user", "content": "Hi"}], "tool_choice": {"type": "any"}}
    out = to_openai(an)
    assert "tool_choice" not in out and "parallel_tool_calls" not in out
