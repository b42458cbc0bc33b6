"""The Anthropic mock, driven by the official `anthropic` SDK (2.x: Bearer auth, version 2026-10-21)."""

from __future__ import annotations

import ssl
from collections.abc import Callable

import anthropic
import pytest

from mocks import MockServer
from tests.mocks.mock_testing import roundtrip

MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
VERSION = {"anthropic-version": "2023-06-01"}


def client(server: MockServer, **kw: object) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="sk-ant-test", max_retries=0, **kw)


def test_message_non_streamed(anthropic_mock: MockServer) -> None:
    with client(anthropic_mock) as c:
        m = c.messages.create(model="claude-test", max_tokens=100, messages=MSG)
    assert m.type == "message" and m.role == "assistant" and m.id.startswith("msg_")
    assert m.stop_reason == "end_turn" and m.model == "claude-test"
    assert [b.type for b in m.content] == ["text"] and len(m.content[0].text.split()) == 16
    assert m.usage.output_tokens == 16 and m.usage.input_tokens == 8
    assert m._request_id is not None and m._request_id.startswith("req_")
    req = anthropic_mock.last_request
    assert req is not None and req.path == "/v1/messages"
    assert req.header("authorization") == b"Bearer sk-ant-test" and req.header("anthropic-version")


def test_stream_final_message_and_usage(anthropic_mock: MockServer) -> None:
    with client(anthropic_mock) as c:
        with c.messages.stream(model="claude-test", max_tokens=100, messages=MSG) as s:
            pieces = list(s.text_stream)
            final = s.get_final_message()
        full = c.messages.create(model="claude-test", max_tokens=100, messages=MSG)
    assert len(pieces) == 16
    assert final.content[0].text == "".join(pieces) == full.content[0].text
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == 16 and final.usage.input_tokens == 8


def test_raw_event_sequence(anthropic_mock: MockServer) -> None:
    with client(anthropic_mock) as c:
        events = [e.type for e in c.messages.create(model="m", max_tokens=2, messages=MSG, stream=True)]
    assert events == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]  # ping is dropped by the SDK


def test_max_tokens_cap(anthropic_mock: MockServer) -> None:
    with client(anthropic_mock) as c:
        m = c.messages.create(model="m", max_tokens=5, messages=MSG)
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 5


def test_same_words_as_the_openai_mock(anthropic_mock: MockServer, openai_mock: MockServer) -> None:
    import openai

    with client(anthropic_mock) as c:
        a = c.messages.create(model="m", max_tokens=100, system="Be terse.", messages=MSG)
    with openai.OpenAI(base_url=openai_mock.base_url, api_key="k", max_retries=0) as oc:
        o = oc.chat.completions.create(model="m", messages=[{"role": "system", "content": "Be terse."}, *MSG])
    assert a.content[0].text == o.choices[0].message.content


def test_tool_use_then_tool_result(anthropic_mock: MockServer) -> None:
    with client(anthropic_mock) as c:
        m = c.messages.create(model="m", max_tokens=100, messages=MSG, tools=[WEATHER_TOOL])
        assert m.stop_reason == "tool_use"
        assert [b.type for b in m.content] == ["text", "tool_use"]
        use = m.content[1]
        assert use.name == "get_weather" and use.input == {"city": "Paris"}

        with c.messages.stream(model="m", max_tokens=100, messages=MSG, tools=[WEATHER_TOOL]) as s:
            final = s.get_final_message()
        assert final.stop_reason == "tool_use" and final.content[1].input == {"city": "Paris"}
        assert final.usage.output_tokens == m.usage.output_tokens

        history = [
            *MSG,
            {"role": "assistant", "content": [b.model_dump() for b in m.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C"}]},
        ]
        r = c.messages.create(model="m", max_tokens=100, messages=history, tools=[WEATHER_TOOL])
    assert r.stop_reason == "end_turn" and [b.type for b in r.content] == ["text"]


def test_models_list_terminates(anthropic_mock: MockServer) -> None:
    with client(anthropic_mock) as c:
        ids = [m.id for m in c.models.list()]
    assert ids and all(i.startswith("claude-") for i in ids)
    assert anthropic_mock.requests == 1


def test_injected_429(start: Callable[..., MockServer]) -> None:
    server = start(kind="anthropic", error_rate=1.0, error_status=429)
    with client(server) as c, pytest.raises(anthropic.RateLimitError) as info:
        c.messages.create(model="m", max_tokens=10, messages=MSG)
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.body["error"]["type"] == "rate_limit_error"
    assert info.value.request_id is not None


def test_require_key_bearer_or_x_api_key(start: Callable[..., MockServer]) -> None:
    server = start(kind="anthropic", require_key="sk-ant-right")
    with client(server) as c, pytest.raises(anthropic.AuthenticationError):
        c.messages.create(model="m", max_tokens=10, messages=MSG)
    with anthropic.Anthropic(base_url=server.url, api_key="sk-ant-right", max_retries=0) as c:
        assert c.messages.create(model="m", max_tokens=10, messages=MSG).content
    body = {"model": "m", "max_tokens": 5, "messages": MSG}
    ok = roundtrip(server, "POST", "/v1/messages", body, {"x-api-key": "sk-ant-right", **VERSION})
    bad = roundtrip(server, "POST", "/v1/messages", body, {"x-api-key": "nope", **VERSION})
    assert ok.status == 200 and bad.status == 401
    assert bad.json()["error"]["type"] == "authentication_error" and bad.header("request-id")


def test_rejects_like_the_real_api(anthropic_mock: MockServer) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": MSG}
    no_version = roundtrip(anthropic_mock, "POST", "/v1/messages", body)
    no_max = roundtrip(anthropic_mock, "POST", "/v1/messages", {"model": "m", "messages": MSG}, VERSION)
    for r in (no_version, no_max):
        assert r.status == 400 and r.header("content-type") == "application/json"
        assert r.json()["type"] == "error" and r.json()["error"]["type"] == "invalid_request_error"
    with client(anthropic_mock) as c, pytest.raises(anthropic.BadRequestError):  # SDK 2.x sends 2026-10-21
        c.messages.create(model="m", max_tokens=10, messages=MSG, extra_body={"temperature": 0.5})
    old = roundtrip(anthropic_mock, "POST", "/v1/messages", {**body, "temperature": 0.5}, VERSION)
    assert old.status == 200


def test_mid_stream_error_event(start: Callable[..., MockServer]) -> None:
    server = start(kind="anthropic", stream_error_after=1)
    with (
        client(server) as c,
        pytest.raises(anthropic.APIStatusError) as info,
        c.messages.stream(model="m", max_tokens=10, messages=MSG) as s,
    ):
        s.get_final_message()
    assert "overloaded" in str(info.value).lower()


def test_count_tokens(anthropic_mock: MockServer) -> None:
    with client(anthropic_mock) as c:
        n = c.messages.count_tokens(model="m", messages=MSG)
    assert n.input_tokens == 8


def test_tls(start: Callable[..., MockServer], server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext) -> None:
    server = start(kind="anthropic", ssl_ctx=server_ssl)
    with (
        client(server, http_client=anthropic.DefaultHttpxClient(verify=client_ssl)) as c,
        c.messages.stream(model="m", max_tokens=10, messages=MSG) as s,
    ):
        assert s.get_final_message().usage.output_tokens == 10
