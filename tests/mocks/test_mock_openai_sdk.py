"""The OpenAI mock, driven by the official `openai` SDK (sync client, plus one async test)."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable

import openai
import pytest

from mocks import MockConfig, MockServer, start_mock
from tests.mocks.mock_testing import run

MSG = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def client(server: MockServer, **kw: object) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, **kw)


def test_chat_non_streamed(openai_mock: MockServer) -> None:
    with client(openai_mock) as c:
        r = c.chat.completions.create(model="gpt-4.1", messages=MSG)
    assert r.object == "chat.completion" and r.model == "gpt-4.1" and r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert len(choice.message.content.split()) == 16
    assert r.usage is not None
    assert r.usage.completion_tokens == 16
    assert r.usage.prompt_tokens == -(-len("What is the weather in Paris?") // 4)
    assert r.usage.total_tokens == r.usage.prompt_tokens + 16
    assert r._request_id is not None and r._request_id.startswith("req_")
    req = openai_mock.last_request
    assert req is not None and req.method == "POST" and req.path == "/v1/chat/completions"
    assert req.header("authorization") == b"Bearer sk-test"
    assert json.loads(req.body)["messages"] == MSG


def test_same_prompt_same_text_and_fresh_ids(openai_mock: MockServer) -> None:
    with client(openai_mock) as c:
        a = c.chat.completions.create(model="gpt-4.1", messages=MSG)
        b = c.chat.completions.create(model="gpt-4.1", messages=MSG)
        other = c.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": "Hi"}])
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.id != b.id
    assert other.choices[0].message.content != a.choices[0].message.content
    assert openai_mock.connections_opened == 1  # keep-alive reuse by the SDK's pool
    assert openai_mock.requests == 3 and openai_mock.requests_by_path == {"/v1/chat/completions": 3}


def test_chat_streamed_with_usage(openai_mock: MockServer) -> None:
    with client(openai_mock) as c:
        stream = c.chat.completions.create(
            model="gpt-4.1",
            messages=MSG,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    assert len({ch.id for ch in chunks}) == 1 and len({ch.created for ch in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert len(text.split()) == 16
    finals = [ch for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert [ch.choices[0].finish_reason for ch in finals] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 16
    assert len(chunks) == 1 + 16 + 1 + 1  # role, tokens, finish, usage


def test_stream_text_matches_non_streamed(openai_mock: MockServer) -> None:
    with client(openai_mock) as c:
        full = c.chat.completions.create(model="m", messages=MSG).choices[0].message.content
        chunks = list(c.chat.completions.create(model="m", messages=MSG, stream=True))
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks) == full
    assert all(ch.usage is None for ch in chunks)  # no include_usage: no usage chunk


def test_max_tokens_caps_with_length(openai_mock: MockServer) -> None:
    with client(openai_mock) as c:
        r = c.chat.completions.create(model="m", messages=MSG, max_completion_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage and r.usage.completion_tokens == 3


def test_tool_call_then_tool_result(openai_mock: MockServer) -> None:
    with client(openai_mock) as c:
        r = c.chat.completions.create(model="m", messages=MSG, tools=[WEATHER_TOOL])
        choice = r.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        call = choice.message.tool_calls[0]
        assert call.type == "function" and call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == {"city": "Paris"}

        # streamed: the SDK's accumulator rebuilds the same call
        with c.chat.completions.stream(model="m", messages=MSG, tools=[WEATHER_TOOL]) as s:
            final = s.get_final_completion()
        scall = final.choices[0].message.tool_calls[0]
        assert final.choices[0].finish_reason == "tool_calls"
        assert scall.function.name == "get_weather" and json.loads(scall.function.arguments) == {"city": "Paris"}

        history = [
            *MSG,
            choice.message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": call.id, "content": "18C, cloudy"},
        ]
        r2 = c.chat.completions.create(model="m", messages=history, tools=[WEATHER_TOOL])
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.content


def test_embeddings_base64_and_float_agree(openai_mock: MockServer) -> None:
    with client(openai_mock) as c:
        b64 = c.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])  # SDK asks for base64
        floats = c.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float")
        small = c.embeddings.create(model="text-embedding-3-small", input="alpha", dimensions=8)
    assert json.loads(openai_mock.history[0].body)["encoding_format"] == "base64"
    assert [d.index for d in b64.data] == [0, 1] and len(b64.data[0].embedding) == 1536
    assert b64.data[0].embedding == floats.data[0].embedding
    assert b64.data[0].embedding != b64.data[1].embedding
    assert len(small.data[0].embedding) == 8
    assert b64.usage.prompt_tokens == 2 + 1  # ceil(5/4) + ceil(4/4)


def test_models(openai_mock: MockServer) -> None:
    with client(openai_mock) as c:
        ids = [m.id for m in c.models.list()]
        one = c.models.retrieve("gpt-4.1")
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("no-such-model")
    assert "gpt-4.1" in ids and one.id == "gpt-4.1"


def test_injected_429(start: Callable[..., MockServer]) -> None:
    server = start(error_rate=1.0, error_status=429, retry_after=3)
    with client(server) as c, pytest.raises(openai.RateLimitError) as info:
        c.chat.completions.create(model="m", messages=MSG)
    assert info.value.response.headers["retry-after"] == "3"
    assert info.value.code == "rate_limit_exceeded"
    assert server.errors_injected == 1 and server.responses_by_status == {429: 1}
    server.config.error_rate = 0.0  # runtime change, seen by the next request
    with client(server) as c:
        assert c.chat.completions.create(model="m", messages=MSG).choices


def test_require_key(start: Callable[..., MockServer]) -> None:
    server = start(require_key="sk-right")
    wrong = openai.OpenAI(base_url=server.base_url, api_key="sk-wrong", max_retries=0)
    with wrong as c, pytest.raises(openai.AuthenticationError) as info:
        c.chat.completions.create(model="m", messages=MSG)
    assert info.value.code == "invalid_api_key"
    with openai.OpenAI(base_url=server.base_url, api_key="sk-right", max_retries=0) as c:
        assert c.chat.completions.create(model="m", messages=MSG).choices


def test_mid_stream_error(start: Callable[..., MockServer]) -> None:
    server = start(stream_error_after=2)
    seen: list[object] = []
    with client(server) as c, pytest.raises(openai.APIError):
        seen.extend(c.chat.completions.create(model="m", messages=MSG, stream=True))
    assert len(seen) == 3  # role + 2 tokens


def test_ttft_delays_the_answer(start: Callable[..., MockServer]) -> None:
    server = start(ttft_ms=150)
    with client(server) as c:
        c.models.list()  # connect first; model listing is not delayed
        t0 = time.perf_counter()
        c.chat.completions.create(model="m", messages=MSG)
        assert time.perf_counter() - t0 >= 0.14


def test_tls_with_trustme(
    start: Callable[..., MockServer], server_ssl: ssl.SSLContext, client_ssl: ssl.SSLContext
) -> None:
    server = start(ssl_ctx=server_ssl)
    assert server.base_url.startswith("https://")
    with client(server, http_client=openai.DefaultHttpxClient(verify=client_ssl)) as c:
        r = c.chat.completions.create(model="m", messages=MSG)
        list(c.chat.completions.create(model="m", messages=MSG, stream=True))
    assert r.choices[0].message.content and server.connections_opened == 1


def test_async_client_in_process() -> None:
    async def main() -> None:
        server = await start_mock(MockConfig(tokens=4, token_delay_ms=1))
        try:
            async with openai.AsyncOpenAI(base_url=server.base_url, api_key="k", max_retries=0) as c:
                stream = await c.chat.completions.create(model="m", messages=MSG, stream=True)
                text = "".join([ch.choices[0].delta.content or "" async for ch in stream])
            assert len(text.split()) == 4
        finally:
            await server.close()
        assert server.open_connections == 0

    run(main)
