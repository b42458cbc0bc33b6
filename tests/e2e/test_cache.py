"""The response cache end to end: outcomes, replay across modes, bounds, coalescing, and the Redis tier."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import redis

from tests.e2e.conftest import GatewayFactory, MockFactory, provider
from tests.e2e.test_gateway import Responses, post_bytes
from tests.harness import wait_for

KEY = "sk-client"
GREEDY = {"temperature": 0}


def config(server: Any, kind: str = "local", cache_table: dict[str, Any] | None = None, **model: Any) -> dict[str, Any]:
    table: dict[str, Any] = {
        "providers": [provider("up", server, kind=kind, **({"api_key": "sk-up"} if kind == "anthropic" else {}))],
        "models": [{"name": "m", "routes": [{"provider": "up", "model": "upstream-model"}], **model}],
    }
    if cache_table is not None:
        table["cache"] = cache_table
    return table


def ask(gw: Any, content: str = "hello", headers: dict[str, str] | None = None, **params: Any) -> Any:
    sdk = openai.OpenAI(base_url=gw.openai_base, api_key=KEY, max_retries=0, default_headers=headers or {})
    return sdk.chat.completions.with_raw_response.create(
        model="m", messages=[{"role": "user", "content": content}], **params
    )


def test_hit_miss_bypass_refresh(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    upstream = mock_uv()
    gw = gateway_uv(config(upstream))
    first = ask(gw, **GREEDY)
    assert first.headers["x-cache"] == "MISS"
    second = ask(gw, **GREEDY)
    assert second.headers["x-cache"] == "HIT"
    assert second.parse().choices[0].message.content == first.parse().choices[0].message.content
    assert upstream.requests == 1
    assert ask(gw, temperature=0.7).headers["x-cache"] == "BYPASS"  # not deterministic: the default policy skips it
    assert ask(gw, headers={"cache-control": "no-cache"}, **GREEDY).headers["x-cache"] == "REFRESH"
    assert ask(gw, headers={"cache-control": "no-store"}, **GREEDY).headers["x-cache"] == "BYPASS"
    assert upstream.requests == 4
    assert ask(gw, **GREEDY).headers["x-cache"] == "HIT"
    stats = gw.stats()["cache"]
    assert stats["hits"] == 2 and stats["entries"] == 1


def test_key_ignores_key_order_stream_and_user_but_not_parameters(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    upstream = mock_uv()
    gw = gateway_uv(config(upstream))
    ask(gw, **GREEDY)
    assert ask(gw, user="someone", **GREEDY).headers["x-cache"] == "HIT"
    assert ask(gw, max_tokens=7, **GREEDY).headers["x-cache"] == "MISS"
    assert ask(gw, seed=1, temperature=0.0).headers["x-cache"] == "MISS"
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:  # same request, keys in another order
        body = b'{"temperature":0,"messages":[{"content":"hello","role":"user"}],"model":"m"}'
        sock.sendall(post_bytes(body))
        [(status, headers, _)] = Responses(sock).read(1)
    assert status == 200 and headers[b"x-cache"] == b"HIT"


def test_policy_per_model(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    upstream = mock_uv()
    gw = gateway_uv(config(upstream, cache="always"))
    ask(gw, temperature=0.9)
    assert ask(gw, temperature=0.9).headers["x-cache"] == "HIT"
    never = gateway_uv(config(upstream, cache="never"))
    assert ask(never, **GREEDY).headers["x-cache"] == "BYPASS"


def test_stream_stored_then_served_as_json_and_as_stream(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    upstream = mock_uv(tokens=12)
    gw = gateway_uv(config(upstream))
    sdk = openai.OpenAI(base_url=gw.openai_base, api_key=KEY, max_retries=0)
    messages: Any = [{"role": "user", "content": "stream me"}]
    chunks = list(sdk.chat.completions.create(
        model="m", messages=messages, stream=True, stream_options={"include_usage": True}, **GREEDY
    ))  # fmt: skip
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    usage = chunks[-1].usage
    as_json = sdk.chat.completions.with_raw_response.create(model="m", messages=messages, **GREEDY)
    assert as_json.headers["x-cache"] == "HIT"
    answer = as_json.parse()
    assert answer.choices[0].message.content == text and answer.choices[0].finish_reason == "stop"
    assert answer.usage.completion_tokens == usage.completion_tokens  # usage survives the replay
    replayed = list(sdk.chat.completions.create(
        model="m", messages=messages, stream=True, stream_options={"include_usage": True}, **GREEDY
    ))  # fmt: skip
    assert "".join(c.choices[0].delta.content or "" for c in replayed if c.choices) == text
    assert replayed[-1].usage.completion_tokens == usage.completion_tokens
    assert upstream.requests == 1


def test_json_stored_then_served_as_a_stream_anthropic(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    upstream = mock_uv(kind="anthropic")
    params: Any = {"model": "m", "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}
    # anthropic 2.x speaks API version 2026-10-21, which has no temperature: the default policy can't
    # tell it is deterministic, so this model caches always.
    gw = gateway_uv(config(upstream, kind="anthropic", cache="always"))
    sdk = anthropic.Anthropic(base_url=gw.url, api_key=KEY, max_retries=0)
    message = sdk.messages.create(**params)
    with sdk.messages.stream(**params) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == message.content[0].text
    assert final.stop_reason == message.stop_reason and final.usage.output_tokens == message.usage.output_tokens
    assert upstream.requests == 1


def test_errors_are_never_stored(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    upstream = mock_uv(error_rate=1.0, error_status=400)
    gw = gateway_uv(config(upstream))
    for _ in range(2):
        with pytest.raises(openai.BadRequestError):
            ask(gw, **GREEDY)
    assert upstream.requests == 2
    assert gw.stats()["cache"]["entries"] == 0


def test_entry_and_byte_bounds_hold(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    upstream = mock_uv()
    gw = gateway_uv(config(upstream, cache_table={"max_entries": 3}))
    for i in range(8):
        ask(gw, content=f"prompt {i}", **GREEDY)
    stats = gw.stats()["cache"]
    assert stats["entries"] <= 3 and stats["evictions"] >= 5
    small = gateway_uv(config(upstream, cache_table={"max_bytes": 6000}))
    for i in range(8):
        ask(small, content=f"prompt {i}", **GREEDY)
    stats = small.stats()["cache"]
    assert stats["bytes"] <= 6000 and stats["entries"] < 8


def test_per_request_ttl_shortens_the_entry(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    upstream = mock_uv()
    gw = gateway_uv(config(upstream))
    ask(gw, headers={"x-llm-edge-cache-ttl": "1"}, **GREEDY)
    assert ask(gw, **GREEDY).headers["x-cache"] == "HIT"
    time.sleep(1.1)
    assert ask(gw, **GREEDY).headers["x-cache"] == "MISS"


# Coalescing: identical requests in flight together go upstream once


def _send_identical(gw: Any, upstream: Any, n: int, stream: bool) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    request = post_bytes({"model": "m", "messages": [{"role": "user", "content": "same"}], "stream": stream, **GREEDY})
    sockets = [socket.create_connection(("127.0.0.1", gw.port), timeout=10) for _ in range(n)]
    try:
        sockets[0].sendall(request)
        assert wait_for(lambda: upstream.requests == 1)  # the leader is in flight
        for sock in sockets[1:]:
            sock.sendall(request)
        return [Responses(sock).read(1)[0] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


@pytest.mark.parametrize("stream", [False, True])
def test_fifty_identical_requests_reach_the_provider_once(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, stream: bool
) -> None:
    upstream = mock_uv(ttft_ms=400, token_delay_ms=5, tokens=8)
    gw = gateway_uv(config(upstream))
    responses = _send_identical(gw, upstream, 50, stream)
    assert upstream.requests == 1
    assert {status for status, _, _ in responses} == {200}
    assert len({body for _, _, body in responses}) == 1  # everyone got the same answer
    assert [h[b"x-cache"] for _, h, _ in responses].count(b"HIT") == 49
    assert gw.stats()["cache"]["coalesced"] == 49


def test_followers_of_a_failed_leader_are_answered(mock_uv: MockFactory, gateway_uv: GatewayFactory) -> None:
    upstream = mock_uv(ttft_ms=300, error_rate=1.0, error_status=500)
    gw = gateway_uv(config(upstream, breaker_failures=100))
    responses = _send_identical(gw, upstream, 10, stream=False)
    assert all(status >= 500 for status, _, _ in responses)  # each answered by the router's rules, none left hanging
    assert upstream.requests == 10


# The shared tier: a real redis-server


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        pytest.skip("redis-server is not installed")
    sock_path = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(sock_path), "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert wait_for(sock_path.exists, timeout=10)
        yield f"unix://{sock_path}", proc
    finally:
        proc.kill()
        proc.wait()


def test_two_gateways_share_answers_through_redis(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, redis_url: tuple[str, Any]
) -> None:
    url, _ = redis_url
    upstream = mock_uv()
    cache = {"redis_url": url, "redis_timeout_ms": 200}
    first, second = gateway_uv(config(upstream, cache_table=cache)), gateway_uv(config(upstream, cache_table=cache))
    answer = ask(first, **GREEDY)
    assert answer.headers["x-cache"] == "MISS"
    store = redis.Redis.from_url(url)
    try:
        assert wait_for(lambda: store.dbsize() == 1)  # the first gateway's write to the shared tier has landed
    finally:
        store.close()
    shared = ask(second, **GREEDY)
    assert shared.headers["x-cache"] == "HIT"
    assert shared.parse().choices[0].message.content == answer.parse().choices[0].message.content
    assert upstream.requests_by_path.get("/v1/chat/completions") == 1  # only the first answer went upstream


def test_redis_dying_mid_run_costs_no_client_errors(
    mock_uv: MockFactory, gateway_uv: GatewayFactory, redis_url: tuple[str, Any]
) -> None:
    url, proc = redis_url
    upstream = mock_uv()
    gw = gateway_uv(config(upstream, cache_table={"redis_url": url, "redis_timeout_ms": 50}))
    for i in range(5):
        assert ask(gw, content=f"before {i}", **GREEDY).parse().choices
    proc.kill()
    proc.wait()
    for i in range(20):
        assert ask(gw, content=f"after {i}", **GREEDY).parse().choices  # L1 only now, and never an error
    assert gw.stats()["cache"]["l2_errors"] >= 1
