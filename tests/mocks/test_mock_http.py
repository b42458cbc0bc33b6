"""HTTP/1.1 behaviour of the mocks over raw sockets, on both event loops: keep-alive, pipelining,
request framing, routing errors, timing, faults, disconnects and the /_mock control endpoints."""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable

import pytest

from mocks import MockServer
from tests.mocks.mock_testing import connect, read_response, request_bytes, roundtrip

CHAT = "/v1/chat/completions"


def chat(prompt: str, **extra: object) -> dict[str, object]:
    return {"model": "gpt-4.1", "messages": [{"role": "user", "content": prompt}], **extra}


def test_keep_alive_reuse(start: Callable[..., MockServer], loop_name: str) -> None:
    server = start(use_uvloop=loop_name == "uvloop")
    conn = http.client.HTTPConnection(server.host, server.port, timeout=5)
    try:
        for i in range(3):
            conn.request("POST", CHAT, json.dumps(chat(f"q{i}")), {"content-type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("content-type") == "application/json"
            assert json.loads(resp.read())["object"] == "chat.completion"
    finally:
        conn.close()
    assert server.connections_opened == 1 and server.requests == 3


def test_pipelined_requests_answered_in_order(start: Callable[..., MockServer], loop_name: str) -> None:
    # The first answer is slow and streamed, the others are instant: order must still hold.
    server = start(use_uvloop=loop_name == "uvloop", token_delay_ms=5, tokens=4)
    reqs = [
        request_bytes("POST", CHAT, chat("first", stream=True)),
        request_bytes("GET", "/v1/models"),
        request_bytes("POST", CHAT, chat("third")),
        request_bytes("GET", "/v1/nope"),
    ]
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(b"".join(reqs))
        answers = [read_response(f) for _ in reqs]
    assert [a.status for a in answers] == [200, 200, 200, 404]
    assert answers[0].header("content-type").startswith("text/event-stream")
    assert answers[0].body.endswith(b"data: [DONE]\n\n")
    assert answers[1].json()["object"] == "list"
    assert answers[2].json()["object"] == "chat.completion"
    ids = [int(a.header("x-request-id")[-16:], 16) for a in answers]
    assert ids == sorted(ids)
    assert server.connections_opened == 1


def test_one_http_chunk_per_sse_event(start: Callable[..., MockServer]) -> None:
    server = start(tokens=3)
    r = roundtrip(server, "POST", CHAT, chat("x", stream=True))
    assert r.header("transfer-encoding") == "chunked" and r.header("content-length") is None
    assert all(c.startswith(b"data: ") and c.endswith(b"\n\n") and c.count(b"\n\n") == 1 for c in r.chunks)
    assert len(r.chunks) == 1 + 3 + 1 + 1  # role, tokens, finish, [DONE]


def test_timed_and_one_go_streams_send_the_same_events(start: Callable[..., MockServer]) -> None:
    fast = roundtrip(start(tokens=5), "POST", CHAT, chat("same", stream=True))
    timed = roundtrip(start(tokens=5, token_delay_ms=1), "POST", CHAT, chat("same", stream=True))

    def strip(chunks: list[bytes]) -> list[dict[str, object]]:
        out = []
        for c in chunks[:-1]:  # all but [DONE]
            obj = json.loads(c[len(b"data: ") :])
            del obj["id"], obj["created"]
            out.append(obj)
        return out

    assert len(fast.chunks) == len(timed.chunks) == 1 + 5 + 1 + 1
    assert strip(fast.chunks) == strip(timed.chunks)


def test_chunked_request_body(start: Callable[..., MockServer], loop_name: str) -> None:
    server = start(use_uvloop=loop_name == "uvloop")
    body = json.dumps(chat("chunked body please")).encode()
    head = f"POST {CHAT} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-type: application/json\r\n\r\n"
    framed = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (body[:10], body[10:])) + b"0\r\n\r\n"
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(head.encode())
        sock.sendall(framed)
        r = read_response(f)
    assert r.status == 200
    assert server.last_request is not None and server.last_request.body == body


def test_expect_100_continue(start: Callable[..., MockServer]) -> None:
    server = start()
    body = json.dumps(chat("hi")).encode()
    head = f"POST {CHAT} HTTP/1.1\r\nhost: x\r\nexpect: 100-continue\r\ncontent-length: {len(body)}\r\n\r\n"
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(head.encode())
        assert f.readline() == b"HTTP/1.1 100 Continue\r\n" and f.readline() == b"\r\n"
        sock.sendall(body)
        assert read_response(f).status == 200


def test_routing_and_validation_errors(start: Callable[..., MockServer]) -> None:
    server = start()
    cases = [
        (("GET", CHAT, None), 405),
        (("POST", "/v2/whatever", {}), 404),
        (("POST", CHAT, b"{not json"), 400),
        (("POST", CHAT, {"messages": [{"role": "user", "content": "x"}]}), 400),  # no model
        (("POST", CHAT, {"model": "m"}), 400),  # no messages
        (("POST", CHAT, chat("x", max_tokens=-1)), 400),
    ]
    for (method, path, body), status in cases:
        r = roundtrip(server, method, path, body)
        assert r.status == status, (method, path, body)
        assert r.header("content-type") == "application/json" and r.header("x-request-id")
        assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    # any prefix before /v1 works, like an SDK base_url of http://host/openai/v1
    assert roundtrip(server, "POST", "/openai/v1/chat/completions?x=1", chat("x")).status == 200
    assert server.requests_by_path["/openai/v1/chat/completions"] == 1


def test_malformed_http_gets_400_and_close(start: Callable[..., MockServer]) -> None:
    server = start()
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(b"NOT HTTP AT ALL\r\n\r\n")
        r = read_response(f)
        assert r.status == 400 and r.header("connection") == "close"
        assert f.read() == b""


def test_connection_close_request(start: Callable[..., MockServer]) -> None:
    server = start()
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(request_bytes("GET", "/v1/models", headers={"connection": "close"}))
        r = read_response(f)
        assert r.status == 200 and r.header("connection") == "close"
        assert f.read() == b""


def test_token_timing(start: Callable[..., MockServer], loop_name: str) -> None:
    server = start(use_uvloop=loop_name == "uvloop", ttft_ms=60, token_delay_ms=30, tokens=4)
    with connect(server) as sock, sock.makefile("rb") as f:
        t0 = time.perf_counter()
        sock.sendall(request_bytes("POST", CHAT, chat("timing", stream=True)))
        f.readline()  # status line arrives with the first token, after the TTFT
        t_first = time.perf_counter() - t0
        rest = read_response_rest(f)
        t_total = time.perf_counter() - t0
    assert 0.055 <= t_first < 0.5
    assert t_total - t_first >= 3 * 0.030 * 0.9  # three more token gaps
    assert rest.count(b"data: ") == 1 + 4 + 1 + 1


def read_response_rest(f: object) -> bytes:
    out = b""
    while not out.endswith(b"0\r\n\r\n"):
        line = f.readline()
        assert line
        out += line
    return out


def test_stream_abort_after(start: Callable[..., MockServer]) -> None:
    server = start(stream_abort_after=2)
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(request_bytes("POST", CHAT, chat("abort", stream=True)))
        data = f.read()  # until the mock closes
    assert data.count(b"data: ") == 1 + 2 and not data.endswith(b"0\r\n\r\n")
    assert server.streams_aborted == 1 and server.client_disconnects == 0


def test_client_disconnect_mid_stream(start: Callable[..., MockServer], loop_name: str) -> None:
    server = start(use_uvloop=loop_name == "uvloop", token_delay_ms=10, tokens=500)
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(request_bytes("POST", CHAT, chat("bye", stream=True)))
        assert f.readline().startswith(b"HTTP/1.1 200")
    wait_for(lambda: server.open_connections == 0)
    assert server.client_disconnects == 1
    # the fixture's MockThread.stop() fails the test if the loop logged anything


def test_keepalive_timeout_closes_idle(start: Callable[..., MockServer], loop_name: str) -> None:
    server = start(use_uvloop=loop_name == "uvloop", keepalive_timeout_s=0.15)
    with connect(server) as sock, sock.makefile("rb") as f:
        for _ in range(2):  # busy connections stay up across several timeouts' worth of time
            sock.sendall(request_bytes("GET", "/v1/models"))
            assert read_response(f).status == 200
            time.sleep(0.1)
        t0 = time.perf_counter()
        assert f.read() == b""  # EOF once idle for 0.15 s
        assert time.perf_counter() - t0 < 1.0
    assert server.connections_opened == 1


def test_close_idle_connections(start: Callable[..., MockServer]) -> None:
    server = start(ttft_ms=300)
    with connect(server) as idle, connect(server) as busy, idle.makefile("rb") as fi, busy.makefile("rb") as fb:
        idle.sendall(request_bytes("GET", "/v1/models"))
        assert read_response(fi).status == 200
        busy.sendall(request_bytes("POST", CHAT, chat("slow")))
        wait_for(lambda: server.requests == 2)
        assert server.close_idle_connections() == 1  # called from this (non-loop) thread
        assert fi.read() == b""
        assert read_response(fb).status == 200  # the in-flight request is unaffected
    wait_for(lambda: server.open_connections == 0)


def test_control_endpoints(start: Callable[..., MockServer]) -> None:
    server = start()
    roundtrip(server, "POST", CHAT, chat("x"))
    stats = roundtrip(server, "GET", "/_mock/stats").json()
    assert stats["requests"] == 1 and stats["requests_by_path"] == {CHAT: 1}
    assert stats["connections_opened"] >= 1 and "open_connections" in stats and stats["kind"] == "openai"

    r = roundtrip(server, "POST", "/_mock/config", {"error_rate": 1.0, "error_status": 503, "ttft_ms": 5})
    assert r.status == 200 and r.json()["error_rate"] == 1.0
    assert server.config.error_status == 503
    failed = roundtrip(server, "POST", CHAT, chat("x"))
    assert failed.status == 503 and failed.header("retry-after") == "1"
    assert failed.json()["error"]["type"] == "server_error"

    bad = roundtrip(server, "POST", "/_mock/config", {"error_rate": 2})
    assert bad.status == 400 and server.config.error_rate == 1.0  # nothing changed
    assert roundtrip(server, "POST", "/_mock/config", {"nope": 1}).status == 400
    assert roundtrip(server, "POST", "/_mock/config", {"kind": "anthropic"}).status == 400
    assert roundtrip(server, "GET", "/_mock/config").json()["error_status"] == 503

    assert roundtrip(server, "POST", "/_mock/reset").json() == {"ok": True}
    assert roundtrip(server, "GET", "/_mock/stats").json()["requests"] == 0
    assert roundtrip(server, "POST", "/_mock/close_idle").json() == {"closed": 0}
    assert roundtrip(server, "GET", "/_mock/nope").status == 404


def test_error_rate_is_a_fraction_and_seeded(start: Callable[..., MockServer]) -> None:
    def failures(server: MockServer) -> list[int]:
        with connect(server) as sock, sock.makefile("rb") as f:
            sock.sendall(b"".join(request_bytes("GET", "/v1/models") for _ in range(200)))
            return [read_response(f).status for _ in range(200)]

    a = failures(start(error_rate=0.25, seed=7))
    b = failures(start(error_rate=0.25, seed=7))
    assert a == b and 25 <= a.count(500) <= 75


def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        time.sleep(0.005)
