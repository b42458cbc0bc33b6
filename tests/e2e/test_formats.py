"""Both official SDKs, through the gateway, against every kind of provider: same format and translated."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from tests.e2e.conftest import GatewayFactory, MockFactory, SDKClients, provider

KEY = "sk-gateway-client"
SYSTEM = "You answer in one short sentence."
WEATHER_TOOL_OPENAI = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
WEATHER_TOOL_ANTHROPIC = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}

# (provider kind, mock kind): "local" is any OpenAI-compatible server.
UPSTREAMS = {"openai": ("openai", "openai"), "anthropic": ("anthropic", "anthropic"), "local": ("local", "openai")}


def start(mock_uv: MockFactory, gateway_uv: GatewayFactory, upstream: str, **mock_options: Any) -> Any:
    kind, mock_kind = UPSTREAMS[upstream]
    server = mock_uv(kind=mock_kind, **mock_options)
    extra = {"api_key": "sk-provider"} if kind != "local" else {}
    table = {
        "providers": [provider("up", server, kind=kind, **extra)],
        "models": [{"name": "m", "routes": [{"provider": "up", "model": f"{upstream}-model",
                                              "input_per_mtok": 1.0, "output_per_mtok": 2.0}]}],
    }  # fmt: skip
    return server, gateway_uv(table)


def route_row(gw: Any) -> dict[str, Any]:
    return next(r for r in gw.stats()["routes"] if r["model"] == "m")


# The OpenAI SDK: against an OpenAI, an Anthropic and a local provider


@pytest.mark.parametrize("upstream", ["openai", "anthropic", "local"])
def test_openai_sdk_chat_and_stream(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, client_protocol: SDKClients, upstream: str
) -> None:
    _, gw = start(mock_uv, gateway_uv, upstream)
    sdk = client_protocol.openai(gw.openai_base, api_key=KEY, max_retries=0)
    messages: Any = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Tell me about Paris"}]
    answer = sdk.chat.completions.create(model="m", messages=messages, max_tokens=50)
    text = answer.choices[0].message.content
    assert text and answer.choices[0].finish_reason == "stop"
    assert answer.model == f"{upstream}-model"  # who answered, relayed or translated alike
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 0 and answer.usage.completion_tokens > 0
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens

    stream = sdk.chat.completions.create(
        model="m", messages=messages, max_tokens=50, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == answer.usage.completion_tokens

    row = route_row(gw)  # spend accounting read the usage of both answers, stream included
    assert row["successes"] == 2
    assert row["output_tokens"] == 2 * answer.usage.completion_tokens
    assert row["input_tokens"] > 0 and row["spend_usd"] > 0


@pytest.mark.parametrize("upstream", ["openai", "anthropic", "local"])
def test_openai_sdk_tool_call_round_trip(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, client_protocol: SDKClients, upstream: str
) -> None:
    _, gw = start(mock_uv, gateway_uv, upstream)
    sdk = client_protocol.openai(gw.openai_base, api_key=KEY, max_retries=0)
    messages: Any = [{"role": "user", "content": "What is the weather in Lyon?"}]
    first = sdk.chat.completions.create(model="m", messages=messages, tools=[WEATHER_TOOL_OPENAI], max_tokens=100)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and "city" in json.loads(call.function.arguments)

    streamed = sdk.chat.completions.create(
        model="m", messages=messages, tools=[WEATHER_TOOL_OPENAI], max_tokens=100, stream=True
    )
    args = "".join(
        tc.function.arguments or ""
        for c in streamed if c.choices and c.choices[0].delta.tool_calls
        for tc in c.choices[0].delta.tool_calls
    )  # fmt: skip
    assert json.loads(args) == json.loads(call.function.arguments)

    messages += [
        choice.message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "18 C, cloudy"},
    ]
    final = sdk.chat.completions.create(model="m", messages=messages, tools=[WEATHER_TOOL_OPENAI], max_tokens=100)
    assert final.choices[0].finish_reason == "stop" and final.choices[0].message.content


@pytest.mark.parametrize("upstream", ["openai", "anthropic", "local"])
def test_openai_sdk_upstream_errors_are_typed(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, client_protocol: SDKClients, upstream: str
) -> None:
    server, gw = start(mock_uv, gateway_uv, upstream, error_rate=1.0, error_status=400, retry_after=2)
    sdk = client_protocol.openai(gw.openai_base, api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], max_tokens=5)
    assert bad.value.status_code == 400
    assert isinstance(bad.value.body, dict) and bad.value.body.get("message")
    server.config.error_status = 429
    with pytest.raises(openai.RateLimitError) as limited:
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], max_tokens=5)
    assert limited.value.status_code == 429
    assert limited.value.response.headers.get("retry-after")
    # The only route cools down for the provider's Retry-After, but a cooldown only shifts traffic to
    # other routes: the last one standing is still tried, and its own answer reaches the caller.
    seen = server.requests
    with pytest.raises(openai.RateLimitError) as again:
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], max_tokens=5)
    assert again.value.status_code == 429 and again.value.response.headers.get("retry-after")
    assert server.requests == seen + 1


def test_untranslatable_parameters_are_refused(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, client_protocol: SDKClients
) -> None:
    server, gw = start(mock_uv, gateway_uv, "anthropic")
    sdk = client_protocol.openai(gw.openai_base, api_key=KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], n=2)
    assert "n" in str(info.value.body)
    assert server.requests == 0


# The Anthropic SDK: against an Anthropic and an OpenAI provider


def anthropic_client(clients: SDKClients, gw: Any, **kwargs: Any) -> anthropic.Anthropic:
    return clients.anthropic(gw.url, api_key=KEY, max_retries=0, **kwargs)  # type: ignore[no-any-return]


@pytest.mark.parametrize("upstream", ["anthropic", "openai"])
@pytest.mark.parametrize("legacy_auth", [False, True])
def test_anthropic_sdk_messages_and_stream(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, client_protocol: SDKClients, upstream: str, legacy_auth: bool
) -> None:
    _, gw = start(mock_uv, gateway_uv, upstream)
    # anthropic 2.x sends Authorization: Bearer with 2026-10-21; older clients x-api-key with 2023-06-01.
    headers = {"x-api-key": KEY, "anthropic-version": "2023-06-01"} if legacy_auth else {}
    sdk = anthropic_client(client_protocol, gw, default_headers=headers)
    message = sdk.messages.create(
        model="m", max_tokens=64, system=SYSTEM, messages=[{"role": "user", "content": "Tell me about Rome"}]
    )
    text = "".join(b.text for b in message.content if b.type == "text")
    assert text and message.stop_reason == "end_turn" and message.model == f"{upstream}-model"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0

    with sdk.messages.stream(
        model="m", max_tokens=64, system=SYSTEM, messages=[{"role": "user", "content": "Tell me about Rome"}]
    ) as stream:
        streamed_text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert streamed_text == text
    assert final.usage.output_tokens == message.usage.output_tokens and final.stop_reason == "end_turn"

    raw_events = list(sdk.messages.create(
        model="m", max_tokens=64, messages=[{"role": "user", "content": "Tell me about Rome"}], stream=True
    ))  # fmt: skip
    assert raw_events[0].type == "message_start" and raw_events[-1].type == "message_stop"

    row = route_row(gw)
    assert row["successes"] == 3 and row["output_tokens"] == 3 * message.usage.output_tokens
    assert row["input_tokens"] > 0 and row["spend_usd"] > 0


@pytest.mark.parametrize("upstream", ["anthropic", "openai"])
def test_anthropic_sdk_tool_call_round_trip(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, client_protocol: SDKClients, upstream: str
) -> None:
    _, gw = start(mock_uv, gateway_uv, upstream)
    sdk = anthropic_client(client_protocol, gw)
    messages: Any = [{"role": "user", "content": "What is the weather in Lyon?"}]
    first = sdk.messages.create(model="m", max_tokens=100, tools=[WEATHER_TOOL_ANTHROPIC], messages=messages)
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and "city" in use.input

    with sdk.messages.stream(model="m", max_tokens=100, tools=[WEATHER_TOOL_ANTHROPIC], messages=messages) as stream:
        streamed = stream.get_final_message()
    assert next(b for b in streamed.content if b.type == "tool_use").input == use.input

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C, cloudy"}]},
    ]
    final = sdk.messages.create(model="m", max_tokens=100, tools=[WEATHER_TOOL_ANTHROPIC], messages=messages)
    assert final.stop_reason == "end_turn" and final.content[0].type == "text"


@pytest.mark.parametrize("upstream", ["anthropic", "openai"])
def test_anthropic_sdk_upstream_errors_are_typed(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, client_protocol: SDKClients, upstream: str
) -> None:
    server, gw = start(mock_uv, gateway_uv, upstream, error_rate=1.0, error_status=400, retry_after=2)
    sdk = anthropic_client(client_protocol, gw)
    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert bad.value.status_code == 400
    assert bad.value.body["type"] == "error"  # Anthropic's error shape, whatever the provider spoke
    server.config.error_status = 429
    with pytest.raises(anthropic.RateLimitError) as limited:
        sdk.messages.create(model="m", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert limited.value.status_code == 429


def test_anthropic_sdk_gateway_errors_are_in_anthropic_shape(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, client_protocol: SDKClients
) -> None:
    _, gw = start(mock_uv, gateway_uv, "anthropic")
    with pytest.raises(anthropic.NotFoundError) as info:
        anthropic_client(client_protocol, gw).messages.create(
            model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert info.value.body["error"]["type"] == "not_found_error"


def test_models_list_in_each_sdk_shape(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, client_protocol: SDKClients
) -> None:
    _, gw = start(mock_uv, gateway_uv, "anthropic")
    assert [m.id for m in client_protocol.openai(gw.openai_base, api_key=KEY).models.list()] == ["m"]
    page = anthropic_client(client_protocol, gw).models.list()
    assert [m.id for m in page.data] == ["m"] and page.data[0].type == "model"


def test_embeddings_pass_through(mock_uv: MockFactory, gateway_uv: GatewayFactory, client_protocol: SDKClients) -> None:
    _, gw = start(mock_uv, gateway_uv, "openai")
    result = client_protocol.openai(gw.openai_base, api_key=KEY, max_retries=0).embeddings.create(
        model="m", input=["hello", "world"]
    )
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0
