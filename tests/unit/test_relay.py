"""The response side (relay), driven through the client protocol with scripted provider connections.

Fallback before the first byte, hedging winners and losers, held answers checked before they go
out, error events mid-stream in each API's shape; after each, the gateway is back at rest.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests import samples
from tests.unit.protocol_harness import at_rest_problems, connect_client, idle_upstream, make_gateway_with

SECRET = "sk-provider-SECRET-42"
TABLE: dict[str, Any] = {
    "providers": [
        {"name": "a", "kind": "local", "base_url": "http://127.0.0.1:9/v1"},
        {"name": "b", "kind": "local", "base_url": "http://127.0.0.1:10/v1"},
        {"name": "anth", "kind": "anthropic", "base_url": "http://127.0.0.1:11/v1", "api_key": "sk-ant-KEY"},
        {"name": "oa", "kind": "openai", "base_url": "http://127.0.0.1:12/v1", "api_key": SECRET},
    ],
    "models": [
        {"name": "duo", "routes": [{"provider": "a", "model": "m1"}, {"provider": "b", "model": "m2"}]},
        {"name": "hedged", "hedge_after_ms": 100,
         "routes": [{"provider": "a", "model": "m1"}, {"provider": "b", "model": "m2"}]},
        {"name": "solo", "routes": [{"provider": "a", "model": "m1"}]},
        {"name": "claude", "routes": [{"provider": "anth", "model": "claude-x"}]},
        {"name": "gpt", "routes": [{"provider": "oa", "model": "gpt-x"}]},
    ],
}  # fmt: skip
A, B, ANTH, OA = 0, 1, 2, 3

ANTHROPIC_EVENTS = [
    b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant",'
    b'"model":"claude-x","content":[],"stop_reason":null,"usage":{"input_tokens":3,"output_tokens":0}}}\n\n',
    b'event: content_block_start\ndata: {"type":"content_block_start","index":0,"content_block":{"type":"text",'
    b'"text":""}}\n\n',
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta",'
    b'"text":"hi"}}\n\n',
    b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n',
    b'event: message_delta\ndata: {"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":'
    b'{"output_tokens":1}}\n\n',
    b'event: message_stop\ndata: {"type":"message_stop"}\n\n',
]


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def chat(model: bytes, stream: bool = False, raw: bool = False) -> bytes:
    options = b',"stream_options":{"include_usage":true}' if raw else b""
    body = b'{"model":"%b","stream":%b%b,"messages":[{"role":"user","content":"hi"}]}' % (
        model, b"true" if stream else b"false", options
    )
    return samples.post(b"/v1/chat/completions", body)


def messages(model: bytes, stream: bool = False) -> bytes:
    body = b'{"model":"%b","max_tokens":16,"stream":%b,"messages":[{"role":"user","content":"hi"}]}' % (
        model, b"true" if stream else b"false"
    )
    return samples.post(b"/v1/messages", body)


def route(gw: Any, model: str, provider: str) -> dict[str, Any]:
    """The router's row for `model`'s route through `provider`."""
    index = [p.name for p in gw.settings.providers].index(provider)
    (row,) = [r for r in gw.router.snapshot() if r["model"] == model and r["provider"] == index]
    return row  # type: ignore[no-any-return]


def settle(gw: Any, loop: Any) -> list[str]:
    loop.run_ready()
    return at_rest_problems(gw)


def json_answer(body: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b\r\n%b" % (
        status, len(body), extra, body
    )


# fallback before the first byte


BAD_FIRST_ANSWERS = {
    "503": json_answer(b'{"error":{"message":"overloaded"}}', b"503 Service Unavailable"),
    "html 200": b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 6\r\n\r\n<html>",
    "empty 200": b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 0\r\n\r\n",
    "not json": json_answer(b"{not json"),
    "json array": json_answer(b"[1,2]"),
    "garbage": b"SSH-2.0-OpenSSH\r\n",
    "status 799": b"HTTP/1.1 799 Odd\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
    "oversized head": b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 70000 + b"\r\ncontent-length: 2\r\n\r\n{}",
    "interim flood": b"HTTP/1.1 100 Continue\r\n\r\n" * 20 + samples.UPSTREAM_OK,
}


@pytest.mark.parametrize("answer", list(BAD_FIRST_ANSWERS.values()), ids=list(BAD_FIRST_ANSWERS))
def test_a_bad_first_answer_falls_back_before_any_byte_reaches_the_client(answer: bytes) -> None:
    gw, loop = make_gateway_with(TABLE)
    conn_a, up_a = idle_upstream(gw, loop, A)
    conn_b, up_b = idle_upstream(gw, loop, B)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"duo"))
    assert b'"model":"m1"' in up_a.take()
    conn_a.data_received(answer)
    assert b'"model":"m2"' in up_b.take()  # the next route, tried at once
    assert client.take() == b""
    conn_b.data_received(samples.UPSTREAM_OK)
    data = client.take()
    head, _, body = data.partition(b"\r\n\r\n")
    assert status_of(data) == 200 and body == samples.UPSTREAM_JSON
    assert b"x-llm-edge-provider: b\r\n" in head and b"x-llm-edge-attempts: 2\r\n" in head
    assert route(gw, "duo", "a")["errors"] == 1 and route(gw, "duo", "b")["successes"] == 1
    assert up_a.closed and settle(gw, loop) == []


@pytest.mark.parametrize("answer", list(BAD_FIRST_ANSWERS.values())[1:], ids=list(BAD_FIRST_ANSWERS)[1:])
def test_a_bad_answer_from_the_only_route_is_a_502_in_the_clients_shape(answer: bytes) -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop, A)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"solo"))
    conn.data_received(answer)
    data = client.take()
    assert status_of(data) == 502
    assert set(orjson.loads(data.partition(b"\r\n\r\n")[2])["error"]) == {"message", "type", "param", "code"}
    assert not client.closed and settle(gw, loop) == []


def test_a_body_cut_short_of_its_length_is_a_502_not_half_a_body() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop, A)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"solo"))
    conn.data_received(samples.UPSTREAM_OK[:-5])
    conn.connection_lost(None)
    assert status_of(client.take()) == 502 and settle(gw, loop) == []


def test_the_only_routes_api_error_is_relayed_as_it_is_with_the_key_masked() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop, OA)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"gpt", raw=True))
    error = b'{"error":{"message":"Incorrect API key provided: %b","type":"invalid_request_error"}}' % SECRET.encode()
    conn.data_received(json_answer(error, b"400 Bad Request"))
    data = client.take()
    assert status_of(data) == 400
    assert SECRET.encode() not in data and b"Incorrect API key provided: " in data
    assert len(data.partition(b"\r\n\r\n")[2]) == len(error)  # masked at the same length: content-length holds
    assert settle(gw, loop) == []


def test_a_429_with_retry_after_inf_is_capped_and_answered() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop, A)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"solo"))
    slow_down = json_answer(b'{"error":{"message":"slow down"}}', b"429 Too Many Requests", b"retry-after: inf\r\n")
    conn.data_received(slow_down)
    data = client.take()
    assert status_of(data) == 429 and settle(gw, loop) == []


def test_a_retry_after_never_takes_the_last_route_out_of_service() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, up = idle_upstream(gw, loop, A)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"solo"))
    error = b'{"error":{"message":"slow down"}}'
    conn.data_received(json_answer(error, b"429 Too Many Requests", b"retry-after: 30\r\n"))
    assert status_of(client.take()) == 429
    up.take()
    proto.data_received(chat(b"solo"))  # the next request is still tried (issue 11, defect 14)
    assert up.take().startswith(b"POST ")
    conn.data_received(samples.UPSTREAM_OK)
    assert status_of(client.take()) == 200 and settle(gw, loop) == []


def test_provider_headers_that_are_not_the_clients_stay_here() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop, A)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"solo"))
    extra = (
        b"set-cookie: s=1\r\nopenai-organization: org-ops\r\nconnection: keep-alive, x-hop\r\nx-hop: 1\r\n"
        b"x-request-id: r1\r\n"
    )
    conn.data_received(json_answer(samples.UPSTREAM_JSON, extra=extra))
    head = client.take().partition(b"\r\n\r\n")[0].lower()
    assert b"set-cookie" not in head and b"org-ops" not in head and b"x-hop" not in head
    assert b"x-request-id: r1" in head


def test_a_chunked_answer_is_held_and_relayed_with_a_length() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop, A)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"solo"))
    json = samples.UPSTREAM_JSON
    conn.data_received(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n")
    conn.data_received(samples.chunked(json[:30]))
    assert client.take() == b""  # held until whole
    conn.data_received(samples.chunked(json[30:]) + b"0\r\n\r\n")
    data = client.take()
    head, _, body = data.partition(b"\r\n\r\n")
    assert body == json and b"content-length: %d" % len(json) in head and b"transfer-encoding" not in head
    assert b"\r\nx-llm-edge-cost: " in head  # accounted from the held body's usage
    assert settle(gw, loop) == []


def test_an_answer_bigger_than_the_hold_bound_is_relayed_as_it_arrives() -> None:
    gw, loop = make_gateway_with({**TABLE, "server": {"hold_answer_bytes": 64}})
    conn, _ = idle_upstream(gw, loop, A)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"solo"))
    json = b'{"pad":"' + b"x" * 300 + b'"}'
    answer = json_answer(json)
    head_end = answer.index(b"\r\n\r\n") + 4
    conn.data_received(answer[: head_end + 10])
    assert client.take() == b""
    conn.data_received(answer[head_end + 10 : head_end + 100])  # past the bound: out it goes
    first = client.take()
    assert status_of(first) == 200 and first.endswith(answer[head_end : head_end + 100])
    conn.data_received(answer[head_end + 100 :])
    assert client.take() == answer[head_end + 100 :]
    assert settle(gw, loop) == []


# hedging


def hedged_start() -> tuple[Any, Any, Any, Any, Any, Any, Any]:
    gw, loop = make_gateway_with(TABLE)
    conn_a, up_a = idle_upstream(gw, loop, A)
    conn_b, up_b = idle_upstream(gw, loop, B)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"hedged"))
    assert b'"model":"m1"' in up_a.take() and up_b.take() == b""
    loop.advance(0.05)
    assert up_b.take() == b""  # not yet
    loop.advance(0.1)
    assert b'"model":"m2"' in up_b.take()  # the hedge is racing now
    return gw, loop, client, conn_a, up_a, conn_b, up_b


def test_the_hedge_wins_and_the_slow_attempt_is_cancelled() -> None:
    gw, loop, client, conn_a, up_a, conn_b, up_b = hedged_start()
    conn_b.data_received(samples.UPSTREAM_OK)
    data = client.take()
    assert status_of(data) == 200 and b"x-llm-edge-provider: b\r\n" in data
    assert up_a.closed and not up_b.closed
    slow, fast = route(gw, "hedged", "a"), route(gw, "hedged", "b")
    assert slow["cancelled"] == 1 and slow["errors"] == 0 and fast["successes"] == 1
    conn_a.data_received(samples.UPSTREAM_OK)  # the loser's late answer reaches nobody
    assert client.take() == b""
    assert settle(gw, loop) == [] and gw.stats.requests == 1


def test_the_first_attempt_wins_and_the_hedge_is_cancelled() -> None:
    gw, loop, client, conn_a, up_a, conn_b, up_b = hedged_start()
    conn_a.data_received(samples.UPSTREAM_OK)
    data = client.take()
    assert status_of(data) == 200 and b"x-llm-edge-provider: a\r\n" in data
    assert up_b.closed
    assert route(gw, "hedged", "b")["cancelled"] == 1 and route(gw, "hedged", "a")["successes"] == 1
    assert settle(gw, loop) == [] and gw.stats.requests == 1


def test_a_failed_hedge_leaves_the_first_attempt_running() -> None:
    gw, loop, client, conn_a, up_a, conn_b, up_b = hedged_start()
    conn_b.data_received(b"SSH-2.0\r\n")
    assert client.take() == b"" and not up_a.closed
    conn_a.data_received(samples.UPSTREAM_OK)
    assert status_of(client.take()) == 200
    assert route(gw, "hedged", "b")["errors"] == 1 and route(gw, "hedged", "a")["successes"] == 1
    assert settle(gw, loop) == []


def test_a_failed_first_attempt_hands_over_to_the_hedge() -> None:
    gw, loop, client, conn_a, up_a, conn_b, up_b = hedged_start()
    conn_a.data_received(b"SSH-2.0\r\n")
    assert client.take() == b""
    conn_b.data_received(samples.UPSTREAM_OK)
    data = client.take()
    assert status_of(data) == 200 and b"x-llm-edge-provider: b\r\n" in data
    assert settle(gw, loop) == [] and gw.stats.requests == 1


def test_the_client_leaving_during_a_race_cancels_both() -> None:
    gw, loop, client, conn_a, up_a, conn_b, up_b = hedged_start()
    client.protocol.connection_lost(None)
    loop.run_ready()
    assert up_a.closed and up_b.closed
    assert route(gw, "hedged", "a")["cancelled"] == 1 and route(gw, "hedged", "b")["cancelled"] == 1
    assert settle(gw, loop) == []


# streams: relayed, checked at the end, errors in the client's shape


def stream_through(gw: Any, loop: Any, provider: int, request: bytes, events: list[bytes], end: bytes) -> bytes:
    conn, _ = idle_upstream(gw, loop, provider)
    proto, client = connect_client(gw, loop)
    proto.data_received(request)
    conn.data_received(samples.UPSTREAM_SSE_HEAD)
    for event in events:
        conn.data_received(samples.chunked(event))
    if end == b"lost":
        conn.connection_lost(None)
    else:
        conn.data_received(end)
    loop.run_ready()
    return client.take()


def test_a_stream_without_its_terminator_gets_an_error_event_and_counts_as_a_failure() -> None:
    gw, loop = make_gateway_with(TABLE)
    out = stream_through(gw, loop, A, chat(b"solo", True, raw=True), samples.SSE_EVENTS[:2], b"0\r\n\r\n")
    assert b'data: {"error":' in out and b"upstream_stream_incomplete" in out and out.endswith(b"0\r\n\r\n")
    assert route(gw, "solo", "a")["errors"] == 1 and route(gw, "solo", "a")["successes"] == 0
    assert at_rest_problems(gw) == []


def test_model_output_that_mentions_the_terminator_does_not_end_the_stream() -> None:
    gw, loop = make_gateway_with(TABLE)
    tricky = b'data: {"choices":[{"index":0,"delta":{"content":"data: [DONE]"}}]}\n\n'
    out = stream_through(gw, loop, A, chat(b"solo", True, raw=True), [tricky], b"0\r\n\r\n")
    assert b"upstream_stream_incomplete" in out  # truncated after it: still an error (issue 11, defect 8)
    assert route(gw, "solo", "a")["successes"] == 0


def test_a_complete_openai_stream_counts_as_a_success() -> None:
    gw, loop = make_gateway_with(TABLE)
    out = stream_through(gw, loop, A, chat(b"solo", True, raw=True), samples.SSE_EVENTS, b"0\r\n\r\n")
    assert b"error" not in out and route(gw, "solo", "a")["successes"] == 1 and at_rest_problems(gw) == []


@pytest.mark.parametrize(
    "provider,request_bytes,events,shape",
    [
        (A, chat(b"solo", True, raw=True), samples.SSE_EVENTS[:1], b'data: {"error":'),  # OpenAI, relayed
        (A, chat(b"solo", True), samples.SSE_EVENTS[:1], b'data: {"error":'),  # OpenAI, usage stripped
        (ANTH, messages(b"claude", True), ANTHROPIC_EVENTS[:3], b"event: error\ndata: "),  # Anthropic, relayed
        (ANTH, chat(b"claude", True), ANTHROPIC_EVENTS[:3], b'data: {"error":'),  # OpenAI client, translated
        (A, messages(b"solo", True), samples.SSE_EVENTS[:1], b"event: error\ndata: "),  # Anthropic client, translated
    ],
    ids=["openai-raw", "openai-usage", "anthropic-raw", "openai-from-anthropic", "anthropic-from-openai"],
)
def test_an_upstream_gone_mid_stream_ends_with_an_error_event_in_the_clients_shape(
    provider: int, request_bytes: bytes, events: list[bytes], shape: bytes
) -> None:
    gw, loop = make_gateway_with(TABLE)
    out = stream_through(gw, loop, provider, request_bytes, events, b"lost")
    assert shape in out and out.endswith(b"0\r\n\r\n")
    assert out.count(b"0\r\n\r\n") >= 1
    assert at_rest_problems(gw) == []


def test_a_complete_anthropic_stream_relayed_event_per_chunk_is_clean() -> None:
    gw, loop = make_gateway_with(TABLE)
    out = stream_through(gw, loop, ANTH, messages(b"claude", True), ANTHROPIC_EVENTS, b"0\r\n\r\n")
    assert b"event: error" not in out
    assert route(gw, "claude", "anth")["successes"] == 1


def test_a_translated_stream_completes_cleanly() -> None:
    gw, loop = make_gateway_with(TABLE)
    out = stream_through(gw, loop, ANTH, chat(b"claude", True), ANTHROPIC_EVENTS, b"0\r\n\r\n")
    assert b"data: [DONE]" in out and b"error" not in out
    assert route(gw, "claude", "anth")["successes"] == 1 and at_rest_problems(gw) == []


# the translated path's odd answers (issue 11, defects 3 and 5)


@pytest.mark.parametrize(
    "answer",
    [
        json_answer(b'{"type":"message","content":[{"type":"text","text":42}],"usage":{"input_tokens":1}}'),
        json_answer(b"not json"),
        b"HTTP/1.1 799 Odd\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
    ],
    ids=["text-is-a-number", "not-json", "status-799"],
)
def test_an_odd_answer_on_the_translated_path_is_a_502(answer: bytes) -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop, ANTH)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"claude"))
    conn.data_received(answer)
    data = client.take()
    assert status_of(data) == 502 and not client.closed
    assert settle(gw, loop) == []


def test_retry_after_inf_on_the_translated_path_is_answered() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, _ = idle_upstream(gw, loop, ANTH)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"claude"))
    body = b'{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}'
    conn.data_received(json_answer(body, b"429 Too Many Requests", b"retry-after: inf\r\n"))
    data = client.take()
    assert status_of(data) == 429 and b"retry-after: " in data
    assert settle(gw, loop) == []


def test_a_translated_answer_is_rebuilt_in_the_clients_shape() -> None:
    gw, loop = make_gateway_with(TABLE)
    conn, up = idle_upstream(gw, loop, ANTH)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"claude"))
    assert b"POST /v1/messages " in up.take()
    body = (
        b'{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[{"type":"text","text":"hi"}],'
        b'"stop_reason":"end_turn","usage":{"input_tokens":3,"output_tokens":1}}'
    )
    conn.data_received(json_answer(body))
    data = client.take()
    answer = orjson.loads(data.partition(b"\r\n\r\n")[2])
    assert status_of(data) == 200 and answer["choices"][0]["message"]["content"] == "hi"
    assert answer["usage"]["prompt_tokens"] == 3
    assert settle(gw, loop) == []


def test_a_crash_while_relaying_is_a_failed_attempt_that_falls_back(monkeypatch: pytest.MonkeyPatch) -> None:
    from proxy import relay, response

    calls = []

    def broken(stream: bool, status: int, lower: bytes) -> str | None:
        calls.append(status)
        if len(calls) == 1:
            raise RuntimeError("bug in the head check")
        return None

    monkeypatch.setattr(response, "not_an_answer", broken)
    assert relay.response is response
    gw, loop = make_gateway_with(TABLE)
    conn_a, up_a = idle_upstream(gw, loop, A)
    conn_b, up_b = idle_upstream(gw, loop, B)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"duo"))
    conn_a.data_received(samples.UPSTREAM_OK)
    assert up_b.take() != b""  # tried elsewhere
    conn_b.data_received(samples.UPSTREAM_OK)
    assert status_of(client.take()) == 200
    assert settle(gw, loop) == [] and gw.stats.requests == 1


SSE_BAD_HEADS = {
    "interim flood": b"HTTP/1.1 100 Continue\r\n\r\n" * 20 + samples.UPSTREAM_SSE_HEAD,
    "oversized head": b"HTTP/1.1 200 OK\r\nx-big: " + b"a" * 70000 + b"\r\n" + samples.UPSTREAM_SSE_HEAD[17:],
}


@pytest.mark.xfail(
    strict=True,
    reason="bug (issue 11 defect 13 on the decoded path, which every OpenAI streaming client takes for usage "
    "stripping): upstream.py _decode bounds only a head still incomplete after a read, and counts no interim heads",
)
@pytest.mark.parametrize("answer", list(SSE_BAD_HEADS.values()), ids=list(SSE_BAD_HEADS))
def test_a_bad_head_in_one_read_falls_back_on_a_usage_stripped_stream(answer: bytes) -> None:
    gw, loop = make_gateway_with(TABLE)
    conn_a, _ = idle_upstream(gw, loop, A)
    conn_b, up_b = idle_upstream(gw, loop, B)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(b"duo", stream=True))
    conn_a.data_received(answer)
    assert client.take() == b"" and up_b.take().startswith(b"POST ")
