"""The request side of the pipeline, driven through the client protocol on a fake loop.

Every path ends through `finish` exactly once (the stats count one request per request) and
leaves the gateway at rest: router in-flight counts back to 0, no pooled connection checked
out, no cache leader left, every key's reservation settled.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy import adapt, caching, errors, pipeline
from tests import samples
from tests.unit.protocol_harness import at_rest_problems, connect_client, idle_upstream, make_gateway_with

GATEWAY_KEY = "gk-team-0123456789"
TABLE: dict[str, Any] = {
    "providers": [
        {"name": "a", "kind": "local", "base_url": "http://127.0.0.1:9/v1"},
        {"name": "b", "kind": "local", "base_url": "http://127.0.0.1:10/v1", "max_in_flight": 1},
    ],
    "models": [
        {"name": "fast", "routes": [{"provider": "a", "model": "llama"}]},
        {"name": "busy", "routes": [{"provider": "b", "model": "qwen"}]},
    ],
}


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


def body_of(data: bytes) -> Any:
    return orjson.loads(data.partition(b"\r\n\r\n")[2])


def gateway(**extra: Any):  # type: ignore[no-untyped-def]
    return make_gateway_with({**TABLE, **extra})


def chat(model: bytes = b"fast", stream: bool = False, extra: bytes = b"", raw: bool = False) -> bytes:
    """A chat request; `raw`: a stream the client asked usage for, relayed byte for byte (no usage stripping)."""
    options = b',"stream_options":{"include_usage":true}' if raw else b""
    body = b'{"model":"%b","stream":%b%b,"messages":[{"role":"user","content":"hi"}]}' % (
        model, b"true" if stream else b"false", options
    )
    return samples.post(b"/v1/chat/completions", body, extra)


def test_a_forwarded_request_finishes_once_and_leaves_the_gateway_at_rest() -> None:
    gw, loop = gateway()
    conn, upstream = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat())
    ex = proto.active
    assert ex is not None and ex.route is not None and gw.router.table.in_flight[ex.route.id] == 1
    conn.data_received(samples.UPSTREAM_OK)
    assert status_of(client.take()) == 200
    assert ex.done and gw.stats.requests == 1
    assert at_rest_problems(gw) == []
    assert gw.pools[0].idle == [conn]


@pytest.mark.parametrize(
    "request_bytes,status",
    [
        (samples.post(b"/v1/chat/completions", b"{nope"), 400),
        (chat(b"no-such-model"), 404),
        (samples.get(b"/v1/chat/completions"), 405),
        (samples.get(b"/nowhere"), 404),
        (samples.post(b"/v1/messages", b'{"model":"fast","messages":[]}'), 400),  # no max_tokens
    ],
)
def test_requests_the_gateway_refuses_are_answered_and_never_dialled(request_bytes: bytes, status: int) -> None:
    gw, loop = gateway()
    proto, client = connect_client(gw, loop)
    proto.data_received(request_bytes)
    assert status_of(client.take()) == status
    assert gw.stats.requests == 1 and not loop.tasks and at_rest_problems(gw) == []


def test_an_anthropic_client_gets_errors_in_its_own_shape() -> None:
    gw, loop = gateway()
    proto, client = connect_client(gw, loop)
    proto.data_received(samples.post(b"/v1/messages", b'{"model":"nope","max_tokens":5,"messages":[]}'))
    data = client.take()
    assert status_of(data) == 404
    assert body_of(data)["type"] == "error" and body_of(data)["error"]["type"] == "not_found_error"


def test_head_gets_the_head_only() -> None:
    gw, loop = gateway()
    proto, client = connect_client(gw, loop)
    proto.data_received(b"HEAD /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
    data = client.take()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"\r\n\r\n")
    assert b"content-length: 15\r\n" in data


def test_no_route_is_a_503_with_retry_after_and_takes_nothing() -> None:
    gw, loop = gateway()
    conn, _ = idle_upstream(gw, loop, provider=1)
    first, first_client = connect_client(gw, loop)
    first.data_received(chat(b"busy"))  # provider b is at max_in_flight = 1 now
    second, second_client = connect_client(gw, loop)
    second.data_received(chat(b"busy"))
    data = second_client.take()
    assert status_of(data) == 503 and b"\r\nretry-after: " in data
    assert "no route" in body_of(data)["error"]["message"] and "max_in_flight" in body_of(data)["error"]["message"]
    conn.data_received(samples.UPSTREAM_OK)
    assert status_of(first_client.take()) == 200
    assert gw.stats.requests == 2 and at_rest_problems(gw) == []


def test_the_client_leaving_before_the_answer_cancels_the_attempt() -> None:
    gw, loop = gateway()
    conn, upstream = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat())
    ex = proto.active
    proto.connection_lost(ConnectionResetError())
    loop.run_ready()
    assert ex is not None and ex.done and ex.status == 499
    assert upstream.closed and gw.pools[0].idle == []  # half-read: never pooled
    assert gw.router.snapshot()[0]["cancelled"] == 1 and gw.router.snapshot()[0]["errors"] == 0
    assert gw.stats.requests == 1 and at_rest_problems(gw) == []


def test_the_client_leaving_mid_stream_aborts_once() -> None:
    gw, loop = gateway()
    conn, upstream = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(stream=True))
    conn.data_received(samples.UPSTREAM_SSE_HEAD + samples.chunked(samples.SSE_EVENTS[0]))
    proto.connection_lost(None)
    loop.run_ready()
    conn.connection_lost(None)  # whatever the provider does next changes nothing
    loop.run_ready()
    assert gw.stats.requests == 1 and at_rest_problems(gw) == []


def test_a_crash_building_the_upstream_request_is_a_500_and_gives_everything_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any) -> Any:
        raise TypeError("Recursion limit reached")  # what orjson raises on 255 levels (issue 11, defect 2)

    monkeypatch.setattr(adapt, "upstream_request", broken)
    gw, loop = gateway()
    conn, upstream = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat())
    data = client.take()
    assert status_of(data) == 500 and body_of(data)["error"]["message"] == "internal gateway error"
    assert upstream.take() == b""  # nothing was sent
    assert gw.pools[0].idle == [conn]  # the unused connection went back
    assert gw.stats.requests == 1 and at_rest_problems(gw) == []
    proto.data_received(samples.HEALTHZ)  # the client connection still works
    assert status_of(client.take()) == 200


def test_a_crash_in_the_cache_step_is_a_500(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("cache bug")

    monkeypatch.setattr(caching, "lookup", broken)
    gw, loop = gateway()
    proto, client = connect_client(gw, loop)
    proto.data_received(chat())
    assert status_of(client.take()) == 500
    assert gw.stats.requests == 1 and at_rest_problems(gw) == []


def test_a_crash_is_logged_once_with_its_traceback(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("cache bug")

    monkeypatch.setattr(caching, "lookup", broken)
    gw, loop = gateway()
    proto, client = connect_client(gw, loop)
    with caplog.at_level("ERROR", logger="llm_edge.pipeline"):
        proto.data_received(chat())
    (record,) = caplog.records
    assert record.exc_info is not None and "cache bug" in str(record.exc_info[1])


def test_finish_runs_once_however_often_it_is_called() -> None:
    gw, loop = gateway()
    conn, upstream = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat())
    ex = proto.active
    assert ex is not None
    pipeline.finish(ex)  # e.g. a timer and a callback both ending it
    pipeline.finish(ex)
    loop.run_ready()
    assert gw.stats.requests == 1 and ex.done
    assert upstream.closed  # the attempt still open was settled: dropped, never pooled
    assert at_rest_problems(gw) == []
    conn.data_received(samples.UPSTREAM_OK)  # a late answer reaches nobody
    assert client.take() == b"" and gw.stats.requests == 1


def test_fail_after_a_streamed_head_ends_with_an_error_event_and_a_close() -> None:
    gw, loop = gateway()
    conn, _ = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(stream=True))
    conn.data_received(samples.UPSTREAM_SSE_HEAD + samples.chunked(samples.SSE_EVENTS[0]))
    client.take()
    ex = proto.active
    pipeline.fail(ex, errors.UpstreamError("went wrong"))  # type: ignore[arg-type]
    tail = client.take()
    assert b'data: {"error":{"message":"went wrong"' in tail and tail.endswith(b"0\r\n\r\n")
    loop.run_ready()
    assert client.closed and gw.stats.requests == 1 and at_rest_problems(gw) == []
    pipeline.fail(ex, errors.UpstreamError("again"))  # type: ignore[arg-type]  # a second failure: nothing more
    assert client.take() == b"" and gw.stats.requests == 1


def test_upstream_gone_mid_chunk_closes_without_a_torn_event() -> None:
    gw, loop = gateway()
    conn, _ = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(stream=True, raw=True))
    assert proto.active is not None and proto.active.translation is None
    conn.data_received(samples.UPSTREAM_SSE_HEAD + samples.chunked(samples.SSE_EVENTS[0])[:20])  # inside a chunk
    client.take()
    conn.connection_lost(None)
    loop.run_ready()
    assert b"error" not in client.take()  # an event here would land inside the chunk
    assert client.closed and at_rest_problems(gw) == []


def test_pipelined_requests_each_finish_once() -> None:
    gw, loop = gateway()
    conn, _ = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat() + chat(b"no-such-model") + samples.HEALTHZ)
    conn.data_received(samples.UPSTREAM_OK)
    data = client.take()
    assert data.count(b"HTTP/1.1 ") == 3
    assert gw.stats.requests == 3 and at_rest_problems(gw) == []


def test_http_1_0_clients_never_get_chunks() -> None:
    gw, loop = gateway()
    conn, _ = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    body = b'{"model":"fast","stream":true,"messages":[{"role":"user","content":"hi"}]}'
    head = b"POST /v1/chat/completions HTTP/1.0\r\nHost: gw\r\nContent-Length: %d\r\n\r\n"
    proto.data_received(head % len(body) + body)
    conn.data_received(samples.UPSTREAM_SSE_HEAD)
    for event in samples.SSE_EVENTS:
        conn.data_received(samples.chunked(event))
    conn.data_received(b"0\r\n\r\n")
    data = client.take()
    head, _, out = data.partition(b"\r\n\r\n")
    assert b"transfer-encoding" not in head.lower()
    assert out == b"".join(samples.SSE_EVENTS)
    loop.run_ready()
    assert client.closed and at_rest_problems(gw) == []


def test_expect_100_continue_waits_while_another_response_streams() -> None:
    gw, loop = gateway()
    conn, _ = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    proto.data_received(chat(stream=True))
    conn.data_received(samples.UPSTREAM_SSE_HEAD + samples.chunked(samples.SSE_EVENTS[0]))
    client.take()
    body = samples.CHAT_BODY
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
    proto.data_received(head % len(body))
    assert b"100 Continue" not in client.take()  # it would land inside the stream's body (issue 11, defect 6)
    conn.data_received(samples.chunked(samples.SSE_EVENTS[2]) + b"0\r\n\r\n")
    assert client.take().endswith(b"0\r\n\r\n" + b"HTTP/1.1 100 Continue\r\n\r\n")


# gateway keys


def keyed() -> Any:
    return make_gateway_with({**TABLE, "auth": {"keys": [{"name": "team", "key": GATEWAY_KEY}]}})


def test_a_missing_gateway_key_is_refused_before_any_upstream_contact() -> None:
    gw, loop = keyed()
    proto, client = connect_client(gw, loop)
    proto.data_received(chat())
    data = client.take()
    assert status_of(data) == 401 and not loop.tasks
    assert GATEWAY_KEY.encode() not in data
    assert at_rest_problems(gw) == []


def test_an_admitted_key_is_charged_once_whatever_the_outcome() -> None:
    gw, loop = keyed()
    conn, _ = idle_upstream(gw, loop)
    proto, client = connect_client(gw, loop)
    auth = b"Authorization: Bearer %b\r\n" % GATEWAY_KEY.encode()
    proto.data_received(chat(extra=auth))
    ex = proto.active
    assert ex is not None and ex.key_index == 0 and ex.tenant
    conn.data_received(b"SSH-2.0-nope\r\n")  # the only route fails
    assert status_of(client.take()) == 502
    state = gw.gen.keys.states[0]
    assert state.admitted == state.charged == 1
    loop.run_ready()  # the failed connection's connection_lost
    assert at_rest_problems(gw) == []
