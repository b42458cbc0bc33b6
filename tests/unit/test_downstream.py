"""DownstreamProtocol with a fake transport: parsing, bounds, pipelining, timeouts, relaying."""

from __future__ import annotations

import orjson
import pytest

from proxy.upstream import ConnState
from tests import samples
from tests.unit.protocol_harness import connect_client, feed, idle_upstream, make_gateway

MODES = ["whole", "bytewise"]


def split_response(data: bytes) -> tuple[bytes, bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def dechunk(data: bytes) -> bytes:
    """The payload of a run of HTTP chunks (the terminator, if any, yields nothing)."""
    out = bytearray()
    while data:
        size_line, _, rest = data.partition(b"\r\n")
        size = int(size_line, 16)
        out += rest[:size]
        data = rest[size + 2 :]
    return bytes(out)


def status_of(data: bytes) -> int:
    return int(data.split(b" ", 2)[1])


@pytest.mark.parametrize("mode", MODES)
def test_healthz(mode: str) -> None:
    gateway, loop = make_gateway()
    proto, client = connect_client(gateway, loop)
    feed(proto, samples.HEALTHZ, mode)
    head, body = split_response(client.take())
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"content-length: 15" in head
    assert body == b'{"status":"ok"}'
    assert not client.closed


@pytest.mark.parametrize("mode", MODES)
def test_chat_is_forwarded_with_model_swapped_and_client_key_dropped(mode: str) -> None:
    gateway, loop = make_gateway()
    conn, upstream = idle_upstream(gateway, loop, provider=1)
    proto, client = connect_client(gateway, loop)
    body = b'{"model":"smart","messages":[{"role":"user","content":"hi"}]}'
    feed(proto, samples.post(b"/v1/chat/completions", body, b"Authorization: Bearer client-key\r\nOpenAI-Organization: org-1\r\nX-Custom: 1\r\n"), mode)
    sent = upstream.take()
    head, _, sent_body = sent.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert b"authorization: Bearer sk-provider-SECRET" in head
    assert b"client-key" not in sent
    assert b"openai-organization: org-1" in head.lower()  # allow-listed headers go upstream
    assert b"X-Custom" not in head  # others stay here
    assert orjson.loads(sent_body)["model"] == "gpt-4o-mini"
    assert sent_body == body.replace(b'"smart"', b'"gpt-4o-mini"')  # spliced, not re-encoded
    feed(conn, samples.UPSTREAM_OK, mode)
    head, out_body = split_response(client.take())
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"x-llm-edge-provider: openai" in head
    assert out_body == samples.UPSTREAM_JSON  # byte for byte
    assert conn.state == ConnState.IDLE and gateway.pools[1].idle == [conn]


@pytest.mark.parametrize("mode", MODES)
def test_stream_relays_each_event_as_it_arrives(mode: str) -> None:
    gateway, loop = make_gateway()
    conn, upstream = idle_upstream(gateway, loop)
    proto, client = connect_client(gateway, loop)
    feed(proto, samples.STREAM, mode)
    assert upstream.take().startswith(b"POST ")
    conn.data_received(samples.UPSTREAM_SSE_HEAD)
    assert client.take().startswith(b"HTTP/1.1 200 OK")  # the head goes out at once
    for event in samples.SSE_EVENTS:
        feed(conn, samples.chunked(event), mode)
        assert client.take() == samples.chunked(event)  # relayed as framed, before the next one arrives
    conn.data_received(b"0\r\n\r\n")
    assert client.take() == b"0\r\n\r\n"
    assert gateway.pools[0].idle == [conn]


def test_stream_head_carries_no_buffering_and_chunked() -> None:
    gateway, loop = make_gateway()
    conn, _ = idle_upstream(gateway, loop)
    proto, client = connect_client(gateway, loop)
    proto.data_received(samples.STREAM)
    conn.data_received(samples.UPSTREAM_SSE_HEAD + samples.chunked(samples.SSE_EVENTS[0]))
    head, _ = split_response(client.take())
    assert b"x-accel-buffering: no" in head and b"transfer-encoding: chunked" in head


def test_pipelined_requests_are_answered_in_order() -> None:
    gateway, loop = make_gateway()
    conn, upstream = idle_upstream(gateway, loop)
    proto, client = connect_client(gateway, loop)
    proto.data_received(samples.CHAT + samples.HEALTHZ + samples.get(b"/nope"))
    assert client.transport_paused if hasattr(client, "transport_paused") else client.read_paused
    assert client.take() == b""  # /healthz waits for the chat answer
    conn.data_received(samples.UPSTREAM_OK)
    data = client.take()
    first = data.find(samples.UPSTREAM_JSON)
    second = data.find(b'{"status":"ok"}')
    third = data.find(b"HTTP/1.1 404")
    assert 0 < first < second < third
    assert not client.read_paused


@pytest.mark.parametrize("mode", MODES)
def test_chunked_request_body(mode: str) -> None:
    gateway, loop = make_gateway()
    _, upstream = idle_upstream(gateway, loop)
    proto, _ = connect_client(gateway, loop)
    body = samples.CHAT_BODY
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
        + samples.chunked(body[:10]) + samples.chunked(body[10:]) + b"0\r\n\r\n"
    )  # fmt: skip
    feed(proto, request, mode)
    sent = upstream.take()
    assert sent.endswith(body.replace(b'"fast"', b'"llama-3.1-8b-instruct"'))
    assert b"content-length: %d" % (len(body) + len("llama-3.1-8b-instruct") - 4) in sent


BAD_REQUESTS = [
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc", 400),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    (b"GARBAGE\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\n\r\n", 400),  # no Host
    (b"GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    (b"GET http://evil.example/v1/models HTTP/1.1\r\nHost: evil.example\r\n\r\n", 400),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost : x\r\n\r\n", 400),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n", 400),
    (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: 1\r\n" * 101 + b"\r\n", 431),
    (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n", 431),
    (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999999\r\n\r\n", 413),
    (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 405),
]


@pytest.mark.parametrize("request_bytes,status", BAD_REQUESTS)
def test_malformed_requests_get_an_error_and_a_close(request_bytes: bytes, status: int) -> None:
    gateway, loop = make_gateway()
    proto, client = connect_client(gateway, loop)
    proto.data_received(request_bytes)
    data = client.take()
    assert status_of(data) == status, data[:200]
    head, body = split_response(data)
    assert b"connection: close" in head
    error = orjson.loads(body)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert client.closed
    assert not gateway.pools[0].tasks and not loop.tasks  # nothing was dialled


def test_a_head_that_never_ends_is_bounded() -> None:
    gateway, loop = make_gateway({"max_header_bytes": 1024})
    proto, client = connect_client(gateway, loop)
    proto.data_received(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Long: ")
    for _ in range(100):
        if client.closed:
            break
        proto.data_received(b"a" * 100)
    assert status_of(client.take()) == 431 and client.closed


@pytest.mark.parametrize(
    "body,status",
    [
        (b"{not json", 400),
        (b"[1,2]", 400),
        (b'{"messages":[{"role":"user","content":"x"}]}', 400),
        (b'{"model":42,"messages":[]}', 400),
        (b'{"model":"fast"}', 400),
        (b'{"model":"fast","messages":"nope"}', 400),
        (b'{"model":"fast","messages":[{"role":"user","content":"x"}],"stream":"yes"}', 400),
        (b'{"model":"no-such-model","messages":[{"role":"user","content":"x"}]}', 404),
        (b'{"model":"nobody/gpt","messages":[{"role":"user","content":"x"}]}', 404),
    ],
)
def test_bad_bodies_are_answered_and_the_connection_stays_usable(body: bytes, status: int) -> None:
    gateway, loop = make_gateway()
    proto, client = connect_client(gateway, loop)
    proto.data_received(samples.post(b"/v1/chat/completions", body))
    data = client.take()
    assert status_of(data) == status
    assert not client.closed
    proto.data_received(samples.HEALTHZ)
    assert status_of(client.take()) == 200


def test_wrong_method_and_unknown_path() -> None:
    gateway, loop = make_gateway()
    proto, client = connect_client(gateway, loop)
    proto.data_received(samples.get(b"/v1/chat/completions"))
    assert status_of(client.take()) == 405
    proto.data_received(samples.get(b"/v2/whatever"))
    assert status_of(client.take()) == 404


def test_expect_100_continue() -> None:
    gateway, loop = make_gateway()
    _, upstream = idle_upstream(gateway, loop)
    proto, client = connect_client(gateway, loop)
    body = samples.CHAT_BODY
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body)
    proto.data_received(head)
    assert client.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    proto.data_received(body)
    assert upstream.take().startswith(b"POST /v1/chat/completions")


def test_slow_head_times_out_with_408() -> None:
    gateway, loop = make_gateway({"header_timeout_s": 5})
    proto, client = connect_client(gateway, loop)
    proto.data_received(b"GET /healthz HTTP/1.1\r\nHo")
    loop.advance(4)
    assert client.take() == b""
    loop.advance(2)
    assert status_of(client.take()) == 408 and client.closed


def test_slow_body_times_out_with_408() -> None:
    gateway, loop = make_gateway({"body_timeout_s": 3})
    proto, client = connect_client(gateway, loop)
    proto.data_received(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
    loop.advance(3.5)
    assert status_of(client.take()) == 408 and client.closed


def test_idle_keepalive_connection_is_closed_quietly() -> None:
    gateway, loop = make_gateway({"keepalive_timeout_s": 7})
    proto, client = connect_client(gateway, loop)
    proto.data_received(samples.HEALTHZ)
    client.take()
    loop.advance(6)
    assert not client.closed
    loop.advance(2)
    assert client.closed and client.take() == b""
    loop.run_ready()
    assert proto not in gateway.connections
    assert not loop.pending_timers or all(t.callback.__self__ is not proto for t in loop.pending_timers)


def test_client_gone_mid_stream_closes_the_upstream_connection() -> None:
    gateway, loop = make_gateway()
    conn, upstream = idle_upstream(gateway, loop)
    proto, client = connect_client(gateway, loop)
    proto.data_received(samples.STREAM)
    conn.data_received(samples.UPSTREAM_SSE_HEAD + samples.chunked(samples.SSE_EVENTS[0]))
    proto.connection_lost(ConnectionResetError())
    loop.run_ready()
    assert upstream.closed
    assert conn not in gateway.pools[0].idle and gateway.pools[0].open == 0


def test_upstream_gone_mid_stream_ends_with_an_error_event() -> None:
    gateway, loop = make_gateway()
    conn, _ = idle_upstream(gateway, loop)
    proto, client = connect_client(gateway, loop)
    proto.data_received(samples.STREAM)
    conn.data_received(samples.UPSTREAM_SSE_HEAD + samples.chunked(samples.SSE_EVENTS[0]))
    client.take()
    conn.connection_lost(ConnectionResetError())
    tail = client.take()
    assert b'data: {"error":' in tail and tail.endswith(b"0\r\n\r\n")
    loop.run_ready()
    assert client.closed


def test_upstream_first_byte_timeout_is_a_504() -> None:
    gateway, loop = make_gateway()
    gateway.pools[0].provider.__class__  # settings are frozen; use the default 600 s
    conn, upstream = idle_upstream(gateway, loop)
    proto, client = connect_client(gateway, loop)
    proto.data_received(samples.CHAT)
    loop.advance(599)
    assert client.take() == b""
    loop.advance(2)
    assert status_of(client.take()) == 504
    assert upstream.closed


def test_stray_bytes_on_an_idle_upstream_connection_drop_it() -> None:
    gateway, loop = make_gateway()
    conn, upstream = idle_upstream(gateway, loop)
    conn.data_received(b"HTTP/1.1 200 OK\r\n")
    loop.run_ready()
    assert upstream.closed and gateway.pools[0].idle == [] and gateway.pools[0].open == 0


def test_invalid_upstream_response_is_a_502() -> None:
    gateway, loop = make_gateway()
    conn, upstream = idle_upstream(gateway, loop)
    proto, client = connect_client(gateway, loop)
    proto.data_received(samples.CHAT)
    conn.data_received(b"SSH-2.0-OpenSSH_9.0\r\n")
    assert status_of(client.take()) == 502
    loop.run_ready()
    assert upstream.closed and not client.closed


def test_unfinished_upstream_response_is_never_pooled() -> None:
    gateway, loop = make_gateway()
    conn, upstream = idle_upstream(gateway, loop)
    proto, client = connect_client(gateway, loop)
    proto.data_received(samples.CHAT)
    conn.data_received(samples.UPSTREAM_OK[:-10])
    conn.eof_received()
    loop.run_ready()
    assert upstream.closed and gateway.pools[0].idle == []
    # A non-streamed answer is held until whole, so a cut one never reaches the client: it gets a
    # clean 502 in its API's shape instead of half a body (issue 11, defect 12).
    assert status_of(client.take()) == 502


def test_stale_pooled_connection_is_retried_on_a_fresh_one() -> None:
    gateway, loop = make_gateway()
    conn, upstream = idle_upstream(gateway, loop)
    proto, client = connect_client(gateway, loop)
    proto.data_received(samples.CHAT)
    conn.eof_received()  # the provider had closed it while it sat idle
    loop.run_ready()
    assert client.take() == b""  # no error: a new connection is being opened
    assert len(loop.tasks) == 1
