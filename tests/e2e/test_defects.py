"""Regression tests for the defects of issue 11, one (or a few) per defect, end to end where it shows on the wire.

Each test failed on 0b4a142 (checked in a clean worktree) and passes now. Most play the provider with `Scripted`, a tiny asyncio server on the
test's loop that sends exact bytes, can wait on an event the test sets, and records each request
it read; the others use the mocks (`mocks/`, `mocks/faults.py`). Clients are raw sockets, so what
the gateway wrote is seen as it is. Every read has a socket timeout: a hang fails in seconds.
Order of events, never timings: where a test needs the gateway to have done something first, it
waits for a fact it can observe (a request the provider read, a count on the loop thread).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httptools
import orjson
import pytest

from mocks.faults import FaultConfig, FaultServer, start_faulty
from proxy.errors import ConfigError, UpstreamProtocolError
from proxy.translate.sse import SSEParser
from tests.e2e.conftest import GatewayFactory, MockFactory, ScriptedFactory, provider
from tests.harness import (
    ABORT,
    LoopThread,
    RunningGateway,
    Script,
    Scripted,
    Step,
    assert_at_rest,
    event,
    wait_for,
)

HANG_S = 3.0  # a socket read that waits longer than this is a hang
GATEWAY_KEY = "sk-gw-defects-0001"
ROUTER = {"explore_ratio": 0.0}  # routes are tried in the order listed


# A provider played by the test


@pytest.fixture
def faulty(io: LoopThread) -> Iterator[Callable[[], FaultServer]]:
    started: list[FaultServer] = []

    def make() -> FaultServer:
        server = io.run(start_faulty(FaultConfig()))
        started.append(server)
        return server

    yield make
    for server in started:
        io.run(server.close())


# What providers send


def http_json(obj: Any, status: int = 200, reason: bytes = b"OK", extra: bytes = b"") -> bytes:
    body = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    head = b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\ncontent-length: %d\r\n%b\r\n"
    return head % (status, reason, len(body), extra) + body


def openai_answer(text: str = "fine") -> dict[str, Any]:
    return {
        "id": "chatcmpl-s", "object": "chat.completion", "created": 1700000000, "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
    }  # fmt: skip


def anthropic_answer(text: Any = "fine") -> dict[str, Any]:
    return {
        "id": "msg_s", "type": "message", "role": "assistant", "model": "m",
        "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
        "usage": {"input_tokens": 3, "output_tokens": 2},
    }  # fmt: skip


SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
LAST_CHUNK = b"0\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def openai_event(content: str | None = None, finish: str | None = None, usage: bool = False) -> bytes:
    payload: dict[str, Any] = {"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1700000000,
                               "model": "m", "choices": []}  # fmt: skip
    if usage:
        payload["usage"] = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    else:
        delta = {} if content is None else {"role": "assistant", "content": content}
        payload["choices"] = [{"index": 0, "delta": delta, "finish_reason": finish}]
    return chunk(b"data: " + orjson.dumps(payload) + b"\n\n")


def openai_stream(*texts: str) -> list[Step]:
    return [SSE_HEAD, *(openai_event(t) for t in texts), openai_event(finish="stop"), openai_event(usage=True),
            chunk(b"data: [DONE]\n\n"), LAST_CHUNK]  # fmt: skip


def anthropic_event(name: str, payload: dict[str, Any]) -> bytes:
    return chunk(b"event: %b\ndata: %b\n\n" % (name.encode(), orjson.dumps({"type": name, **payload})))


def anthropic_prelude() -> list[bytes]:
    usage = {"input_tokens": 3, "output_tokens": 1}
    message = {"id": "msg_s", "type": "message", "role": "assistant", "model": "m", "content": [],
               "stop_reason": None, "stop_sequence": None, "usage": usage}  # fmt: skip
    block = {"index": 0, "content_block": {"type": "text", "text": ""}}
    return [
        SSE_HEAD,
        anthropic_event("message_start", {"message": message}),
        anthropic_event("content_block_start", block),
    ]


def anthropic_delta(text: Any) -> bytes:
    return anthropic_event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}})


def anthropic_stream(*texts: str) -> list[Step]:
    return [*anthropic_prelude(), *(anthropic_delta(t) for t in texts),
            anthropic_event("content_block_stop", {"index": 0}),
            anthropic_event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                              "usage": {"output_tokens": 2}}),
            anthropic_event("message_stop", {}), LAST_CHUNK]  # fmt: skip


# What clients send, and what they get


def chat(stream: bool = False, model: str = "fast", temperature: float = 0.0, **extra: Any) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hello"}], "stream": stream,
                         "temperature": temperature, **extra})  # fmt: skip


def post(body: bytes, path: bytes = b"/v1/chat/completions", version: bytes = b"1.1", close: bool = True,
         headers: bytes = b"") -> bytes:  # fmt: skip
    head = b"POST %b HTTP/%b\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (
        path,
        version,
        len(body),
    )
    if close:
        head += b"connection: close\r\n"
    return head + headers + b"\r\n" + body


def anthropic_post(body: bytes, close: bool = True) -> bytes:
    return post(body, b"/v1/messages", close=close, headers=b"x-api-key: anything\r\nanthropic-version: 2023-06-01\r\n")


def anthropic_chat(stream: bool = False) -> bytes:
    return orjson.dumps({"model": "fast", "max_tokens": 64, "messages": [{"role": "user", "content": "hello"}],
                         "stream": stream, "temperature": 0})  # fmt: skip


@dataclass
class Response:
    status: int = 0
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False


class Parsed:
    """Every response in a byte string, as httptools reads them."""

    def __init__(self, raw: bytes) -> None:
        self.responses: list[Response] = []
        self.error: str | None = None
        self._parser = httptools.HttpResponseParser(self)
        try:
            self._parser.feed_data(raw)
        except httptools.HttpParserError as exc:
            self.error = str(exc)

    def on_message_begin(self) -> None:
        self.responses.append(Response())

    def on_header(self, name: bytes, value: bytes) -> None:
        self.responses[-1].headers[name.lower()] = value

    def on_headers_complete(self) -> None:
        self.responses[-1].status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        self.responses[-1].body += body

    def on_message_complete(self) -> None:
        self.responses[-1].complete = True


def parse(raw: bytes) -> Parsed:
    return Parsed(raw)


def read_until(sock: socket.socket, done: Callable[[bytes], bool], raw: bytes = b"", timeout: float = HANG_S) -> bytes:
    """Read until `done(raw)` or the peer closes; a longer wait than `timeout` is a hang and fails."""
    sock.settimeout(timeout)
    while not done(raw):
        try:
            piece = sock.recv(262144)
        except TimeoutError:
            raise AssertionError(
                f"hang: nothing more within {timeout} s; got {raw[:300]!r} ... {raw[-200:]!r}"
            ) from None
        except ConnectionResetError:
            return raw
        if not piece:
            return raw
        raw += piece
    return raw


def talk(port: int, data: bytes, timeout: float = HANG_S) -> bytes:
    """Send on a fresh connection and read until the gateway closes it (the request says close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_until(sock, lambda raw: False, timeout=timeout)


def one(raw: bytes) -> Response:
    parsed = parse(raw)
    assert parsed.responses, f"no response: {raw[:300]!r}"
    return parsed.responses[0]


def assert_openai_error(resp: Response, status: int | None = None) -> dict[str, Any]:
    assert resp.complete, resp
    if status is not None:
        assert resp.status == status, resp.body[:300]
    error = orjson.loads(resp.body)["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    return error


def assert_clean_200(gw: RunningGateway) -> None:
    """The gateway still serves a plain request."""
    resp = one(talk(gw.port, post(chat(temperature=0.5))))
    assert resp.status == 200 and resp.complete, resp.body[:300]
    assert orjson.loads(resp.body)["choices"]


def rst(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def single(p: dict[str, Any], **model: Any) -> dict[str, Any]:
    return {"providers": [p], "models": [{"name": "fast", "routes": [{"provider": p["name"], "model": "m"}],
                                          **ROUTER, **model}]}  # fmt: skip


def two(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    routes = [
        {"provider": first["name"], "model": "m"},
        {"provider": second["name"], "model": "m", "input_per_mtok": 1.0},
    ]
    return {"providers": [first, second], "models": [{"name": "fast", "routes": routes, **ROUTER}]}


def scripted_provider(server: Scripted, name: str = "s", kind: str = "openai", **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": kind, "base_url": server.base_url, "api_key": "sk-up", **extra}


def always(steps: list[Step]) -> Script:
    return lambda n, head, body: list(steps)


# 1. A cache leader whose client leaves, then an upstream failure


def test_1_followers_of_an_abandoned_leader_whose_upstream_fails_get_an_end(
    io: LoopThread, scripted: ScriptedFactory, gateway: GatewayFactory
) -> None:
    head_gate, fail_gate = event(io), event(io)

    def script(n: int, head: bytes, body: bytes) -> list[Step]:
        if n == 0:  # the leader's attempt: hold the head, send a first event, then fail mid-stream
            return [head_gate, SSE_HEAD, openai_event("partial"), fail_gate, ABORT]
        return openai_stream("whole", "answer")

    up = scripted(script)
    table = single(scripted_provider(up))
    table["auth"] = {"keys": [{"name": "team", "key": GATEWAY_KEY}]}
    gw = gateway(table)
    request = post(chat(stream=True, stream_options={"include_usage": True}),
                   headers=b"authorization: Bearer %b\r\n" % GATEWAY_KEY.encode())  # fmt: skip
    open_connections = lambda: gw.io.call(lambda: len(gw.gateway.connections))  # noqa: E731
    leader = socket.create_connection(("127.0.0.1", gw.port), timeout=HANG_S)
    leader.sendall(request)
    assert wait_for(lambda: len(up.requests) == 1), "the leader never reached the provider"
    follower = socket.create_connection(("127.0.0.1", gw.port), timeout=HANG_S)
    follower.sendall(request)
    assert wait_for(lambda: gw.io.call(lambda: gw.gateway.cache.coalesced) == 1), "the follower never joined"
    io.call(head_gate.set)  # the leader's first byte, after the follower joined
    read_until(leader, lambda raw: b"partial" in raw)
    before = open_connections()
    rst(leader)  # the leader's client leaves
    assert wait_for(lambda: open_connections() == before - 1), "the gateway never saw the leader's client leave"
    io.call(fail_gate.set)  # now the upstream fails
    try:
        raw = read_until(follower, lambda raw: raw.endswith(LAST_CHUNK))
    finally:
        follower.close()
    resp = one(raw)
    assert resp.status == 200
    if resp.complete:  # a clean end only with a whole answer or an error event
        assert b"data: [DONE]" in resp.body or b'"error"' in resp.body, resp.body[-300:]
    assert_at_rest(gw)  # the leader left cache.inflight, and the key was charged
    again = one(talk(gw.port, request))
    assert again.complete and b"data: [DONE]" in again.body, again.body[-300:]


# 2. An exception other than GatewayError while building the upstream request


def deep(levels: int = 300) -> bytes:
    return b"[" * levels + b"]" * levels


def reencoded_deep_body() -> bytes:
    """A body the gateway cannot splice (an escape in it) that nests deeper than orjson writes (254)."""
    return b'{"model":"fast","messages":[{"role":"user","content":"\\u0061"}],"temperature":0.5,"x":' + deep() + b"}"


def test_2_deep_body_on_a_cold_pool_is_answered(mock: MockFactory, gateway: GatewayFactory) -> None:
    upstream = mock()
    gw = gateway(single(provider("p", upstream, kind="openai", api_key="sk-up")))
    resp = one(talk(gw.port, post(reencoded_deep_body())))
    assert resp.complete and resp.status in (200, 400, 413, 422, 500, 502), resp
    if resp.status != 200:
        assert_openai_error(resp)
    assert_at_rest(gw)
    assert_clean_200(gw)


def test_2_deep_bodies_on_a_warm_pool_leak_nothing(mock: MockFactory, gateway: GatewayFactory) -> None:
    upstream = mock()
    gw = gateway(single(provider("p", upstream, kind="openai", api_key="sk-up", max_in_flight=2)))
    assert_clean_200(gw)  # warm: a pooled connection
    for _ in range(2):
        resp = one(talk(gw.port, post(reencoded_deep_body())))
        assert resp.complete and resp.status != 503, resp
    assert_at_rest(gw)
    for _ in range(3):  # with max_in_flight = 2, two leaked slots would make these 503
        assert_clean_200(gw)


def test_2_deep_body_translated_for_another_api_is_answered(mock: MockFactory, gateway: GatewayFactory) -> None:
    upstream = mock(kind="anthropic")
    gw = gateway(single(provider("p", upstream, kind="anthropic", api_key="sk-up")))
    parameters = b'{"type":"object","x":' + deep() + b"}"  # written by hand: orjson cannot
    body = (
        b'{"model":"fast","messages":[{"role":"user","content":"hi"}],"tools":[{"type":"function",'
        b'"function":{"name":"f","parameters":' + parameters + b"}}]}"
    )
    resp = one(talk(gw.port, post(body)))
    assert resp.complete and resp.status != 503, resp
    if resp.status != 200:
        assert_openai_error(resp)
    assert_at_rest(gw)
    assert_clean_200(gw)


# 3. An odd provider answer on the translated path


def test_3_anthropic_text_that_is_a_number_is_an_answer_or_a_502(
    scripted: ScriptedFactory, gateway: GatewayFactory
) -> None:
    up = scripted(always([http_json(anthropic_answer(5))]))
    gw = gateway(single(scripted_provider(up, kind="anthropic")))
    resp = one(talk(gw.port, post(chat())))
    if resp.status == 200:
        assert orjson.loads(resp.body)["choices"]
    else:  # the provider's answer is broken: a bad gateway, not the gateway's own failure
        assert_openai_error(resp, 502)
    assert_at_rest(gw)


# 4. Two identical cacheable requests pipelined on one connection


def test_4_pipelined_repeats_go_upstream_once(mock: MockFactory, gateway: GatewayFactory) -> None:
    upstream = mock()
    gw = gateway(single(provider("p", upstream, kind="openai", api_key="sk-up")))
    raw = talk(gw.port, post(chat(), close=False) + post(chat()))
    parsed = parse(raw)
    assert [r.status for r in parsed.responses] == [200, 200] and all(r.complete for r in parsed.responses), raw[:500]
    first, second = parsed.responses
    assert orjson.loads(first.body)["choices"] == orjson.loads(second.body)["choices"]
    assert second.headers.get(b"x-cache") == b"HIT"
    assert upstream.requests == 1, upstream.stats()


# 5. Statuses outside 100-599, and Retry-After: inf


@pytest.mark.parametrize(
    "kind,stream",
    [("openai", False), ("openai", True), ("anthropic", False)],
    ids=["relayed", "rebuilt-stream", "rebuilt-translated"],
)
def test_5_status_799_is_a_502(scripted: ScriptedFactory, gateway: GatewayFactory, kind: str,
                                stream: bool) -> None:  # fmt: skip
    up = scripted(always([http_json({"error": {"message": "odd"}}, status=799, reason=b"Odd")]))
    gw = gateway(single(scripted_provider(up, kind=kind)))
    resp = one(talk(gw.port, post(chat(stream=stream))))  # a stream without include_usage: the status line is rebuilt
    assert_openai_error(resp, 502)
    assert_at_rest(gw)


def test_5_retry_after_inf_on_the_translated_path(scripted: ScriptedFactory, gateway: GatewayFactory) -> None:
    error = {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}}
    up = scripted(always([http_json(error, status=429, reason=b"Too Many Requests", extra=b"retry-after: inf\r\n")]))
    gw = gateway(single(scripted_provider(up, kind="anthropic")))
    resp = one(talk(gw.port, post(chat())))
    assert resp.status in (429, 502, 503), resp
    assert_openai_error(resp)
    retry_after = resp.headers.get(b"retry-after")
    assert retry_after is None or retry_after.isdigit(), retry_after
    assert_at_rest(gw)


# 6. 100 Continue while another response on the connection is streaming


def test_6_100_continue_waits_for_the_streaming_response(mock: MockFactory, gateway: GatewayFactory) -> None:
    upstream = mock(tokens=20, token_delay_ms=20)
    gw = gateway(single(provider("p", upstream, kind="openai", api_key="sk-up")))
    second_body = chat(temperature=0.5)
    second_head = post(second_body, headers=b"expect: 100-continue\r\n")[: -len(second_body)]
    with socket.create_connection(("127.0.0.1", gw.port), timeout=HANG_S) as sock:
        sock.sendall(post(chat(stream=True, temperature=0.5, stream_options={"include_usage": True}), close=False))
        raw = read_until(sock, lambda raw: b"data: {" in raw)  # the first response is streaming
        sock.sendall(second_head)  # a second request, waiting for 100 Continue
        raw = read_until(sock, lambda raw: b"[DONE]" in raw and raw.find(LAST_CHUNK, raw.find(b"[DONE]")) >= 0, raw)
        first_end = raw.find(LAST_CHUNK, raw.find(b"[DONE]")) + len(LAST_CHUNK)
        sock.sendall(second_body)  # sent anyway, as a client does when no 100 comes
        raw = read_until(sock, lambda raw: False, raw)
    interim = raw.find(b"HTTP/1.1 100")
    assert interim == -1 or interim >= first_end, (
        f"100 Continue inside the stream: {raw[max(0, interim - 80) : interim + 40]!r}"
    )
    parsed = parse(raw)
    assert parsed.error is None, parsed.error
    assert [r.status for r in parsed.responses if r.status != 100] == [200, 200]


# 7. HTTP/1.0 clients


@pytest.mark.parametrize("kind", ["openai", "anthropic"], ids=["relayed", "translated"])
def test_7_http_1_0_stream_is_not_chunked(mock: MockFactory, gateway: GatewayFactory, kind: str) -> None:
    upstream = mock(kind=kind, tokens=4)
    gw = gateway(single(provider("p", upstream, kind=kind, api_key="sk-up")))
    raw = talk(gw.port, post(chat(stream=True, temperature=0.5), version=b"1.0", close=False))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], head
    assert b"transfer-encoding" not in head.lower(), head
    assert body.startswith(b"data: ") and body.rstrip().endswith(b"data: [DONE]"), body[:200]


# 8. Model output that looks like the end of a stream


@pytest.mark.parametrize(
    "mode",
    [
        "openai-relayed",
        "openai-usage-stripped",
        "anthropic-relayed",
    ],
)
def test_8_terminator_in_model_output_is_not_the_end(
    scripted: ScriptedFactory, gateway: GatewayFactory, mode: str
) -> None:
    """The provider ends its stream (the last chunk) without its terminator; its last event has it as model output."""
    if mode.startswith("openai"):
        steps: list[Step] = [SSE_HEAD, openai_event("one"), openai_event("the end is data: [DONE]"), LAST_CHUNK]
        extra = {"stream_options": {"include_usage": True}} if mode == "openai-relayed" else {}
        request = post(chat(stream=True, **extra))
    else:
        steps = [*anthropic_prelude(), anthropic_delta("one"), anthropic_delta("event: message_stop"), LAST_CHUNK]
        request = anthropic_post(anthropic_chat(stream=True))
    up = scripted(always(steps))
    gw = gateway(single(scripted_provider(up, kind=mode.split("-")[0])))
    resp = one(talk(gw.port, request))
    assert resp.status == 200
    if resp.complete:  # the truncation must show: an error event, never a clean end
        events = [e for e in resp.body.split(b"\n\n") if e.strip()]
        assert b'"error"' in events[-1], f"the stream ended cleanly after a truncation: {events[-1][:200]!r}"
    route = gw.stats()["routes"][0]
    assert (route["successes"], route["errors"]) == (0, 1), route  # the route failed


# 9. Unbounded buffers


@pytest.mark.parametrize("kind", ["openai", "anthropic"], ids=["usage-stripped", "translated"])
def test_9_capture_of_a_rebuilt_stream_is_bounded(
    io: LoopThread, scripted: ScriptedFactory, gateway: GatewayFactory, kind: str
) -> None:
    bound = 64 * 1024
    gate = event(io)
    text = "x" * 4096
    full = openai_stream(*[text] * 48) if kind == "openai" else anthropic_stream(*[text] * 48)
    tail = 4  # the events after the text, in both APIs: held back until the test has looked
    up = scripted(always([*full[:-tail], gate, *full[-tail:]]))
    table = single(scripted_provider(up, kind=kind))
    table["cache"] = {"max_bytes": bound}
    gw = gateway(table)
    with socket.create_connection(("127.0.0.1", gw.port), timeout=HANG_S) as sock:
        sock.sendall(post(chat(stream=True)))  # no include_usage: the usage chunk is taken out, event by event
        read_until(sock, lambda raw: raw.count(text.encode()) >= 48)  # all the text went through the gateway

        def held() -> int:
            leaders = list(gw.gateway.cache.inflight.values())
            assert len(leaders) == 1
            capture = leaders[0].capture
            return 0 if capture is None else sum(map(len, capture))

        kept = gw.io.call(held)
        io.call(gate.set)
        read_until(sock, lambda raw: False)
    assert kept <= bound, f"the capture holds {kept} bytes, over max_entry_bytes {bound}"


def test_9_sse_parser_bounds_a_partial_line() -> None:
    parser = SSEParser()
    piece = b"x" * (1024 * 1024)
    fed = 0
    with pytest.raises(UpstreamProtocolError):
        while fed < 64 * 1024 * 1024:
            parser.feed(b"data: " + piece if not fed else piece)
            fed += len(piece)
    assert fed < 64 * 1024 * 1024, "64 MiB without a newline were held"


# 10. Provider response headers


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_10_operator_and_cookie_headers_stay(scripted: ScriptedFactory, gateway: GatewayFactory,
                                             stream: bool) -> None:  # fmt: skip
    extra = b"openai-organization: org-operator\r\nopenai-project: proj_operator\r\nset-cookie: __cf_bm=abc; path=/\r\n"
    steps = openai_stream("hi") if stream else [http_json(openai_answer(), extra=extra)]
    if stream:
        steps[0] = SSE_HEAD[:-2] + extra + b"\r\n"
    up = scripted(always(steps))
    gw = gateway(single(scripted_provider(up)))
    body = chat(stream=True, stream_options={"include_usage": True}) if stream else chat()
    resp = one(talk(gw.port, post(body)))
    assert resp.status == 200 and resp.complete
    leaked = {b"openai-organization", b"openai-project", b"set-cookie"} & set(resp.headers)
    assert not leaked, f"provider headers relayed: {sorted(leaked)}"


def test_10_connection_listed_headers_are_hop_by_hop(scripted: ScriptedFactory, gateway: GatewayFactory) -> None:
    extra = b"connection: keep-alive, x-hop-secret\r\nx-hop-secret: between-us\r\nkeep-alive: timeout=5\r\n"
    up = scripted(always([http_json(openai_answer(), extra=extra)]))
    gw = gateway(single(scripted_provider(up)))
    resp = one(talk(gw.port, post(chat())))
    assert resp.status == 200 and resp.complete
    assert b"x-hop-secret" not in resp.headers and b"keep-alive" not in resp.headers, resp.headers


# 11. A provider key with a trailing newline or spaces


@pytest.mark.parametrize(
    "kind,value",
    [("openai", "sk-up-secret-0042\n"), ("openai", "  sk-up-secret-0042  "), ("anthropic", "sk-up-secret-0042\r\n")],
    ids=["newline", "spaces", "anthropic-crlf"],
)  # fmt: skip
def test_11_provider_key_whitespace_is_trimmed_or_refused(
    scripted: ScriptedFactory, gateway: GatewayFactory, kind: str, value: str
) -> None:
    up = scripted(always([http_json(anthropic_answer() if kind == "anthropic" else openai_answer())]))
    p = {"name": "s", "kind": kind, "base_url": up.base_url, "api_key_env": "UPSTREAM_KEY"}
    try:
        gw = gateway(single(p), env={"UPSTREAM_KEY": value})
    except ConfigError as exc:  # refused at start: the variable is named, the value never shown
        assert "UPSTREAM_KEY" in str(exc) and "sk-up-secret" not in str(exc), str(exc)
        return
    resp = one(talk(gw.port, post(chat())))
    assert resp.status == 200, resp.body[:300]
    head = up.requests[0][0]
    lines = head.split(b"\r\n")
    assert all(b"\n" not in line and b"\r" not in line for line in lines), head
    expected = b"authorization: bearer sk-up-secret-0042" if kind == "openai" else b"x-api-key: sk-up-secret-0042"
    assert expected in [line.lower() for line in lines], head


# 12. A 2xx that is not a completion


NOT_A_COMPLETION = ["invalid_json_200", "truncated_body"]  # html_200 and empty_200 failed over already


@pytest.mark.parametrize("spec", NOT_A_COMPLETION)
def test_12_non_completion_on_a_single_route_is_a_502(
    faulty: Callable[[], FaultServer], gateway: GatewayFactory, spec: str
) -> None:
    flaky = faulty()
    gw = gateway(single({"name": "flaky", "kind": "openai", "api_key": "sk-up", "base_url": flaky.base_url(spec)}))
    assert_openai_error(one(talk(gw.port, post(chat()))), 502)
    assert_at_rest(gw)


@pytest.mark.parametrize("spec", NOT_A_COMPLETION)
def test_12_non_completion_falls_back(
    faulty: Callable[[], FaultServer], mock: MockFactory, gateway: GatewayFactory, spec: str
) -> None:
    flaky, upstream = faulty(), mock()
    gw = gateway(two({"name": "flaky", "kind": "openai", "api_key": "sk-up", "base_url": flaky.base_url(spec)},
                     provider("healthy", upstream, kind="openai", api_key="sk-up")))  # fmt: skip
    resp = one(talk(gw.port, post(chat())))
    assert resp.status == 200 and resp.complete, resp.body[:300]
    assert resp.headers[b"x-llm-edge-provider"] == b"healthy" and resp.headers[b"x-llm-edge-attempts"] == b"2"
    assert orjson.loads(resp.body)["choices"]


@pytest.mark.parametrize("body", [b"[]", b'"a string"', b"null"], ids=["array", "string", "null"])
def test_12_json_that_is_not_an_object_falls_back(
    scripted: ScriptedFactory, mock: MockFactory, gateway: GatewayFactory, body: bytes
) -> None:
    up, healthy = scripted(always([http_json(body)])), mock()
    gw = gateway(two(scripted_provider(up), provider("healthy", healthy, kind="openai", api_key="sk-up")))
    resp = one(talk(gw.port, post(chat())))
    assert resp.status == 200 and resp.complete, resp.body[:300]
    assert resp.headers[b"x-llm-edge-provider"] == b"healthy" and resp.headers[b"x-llm-edge-attempts"] == b"2"


# 13. Response-head bounds when the head arrives in one read


def huge_head() -> bytes:
    pad = b"".join(b"x-pad-%d: %b\r\n" % (i, b"v" * 90) for i in range(1100))  # about 100 KiB of headers
    body = orjson.dumps(openai_answer())
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        + pad
        + b"content-length: %d\r\n\r\n" % len(body)
        + body
    )


def many_interim_heads() -> bytes:
    return b"HTTP/1.1 100 Continue\r\n\r\n" * 5000 + http_json(openai_answer())


@pytest.mark.parametrize("answer", [huge_head, many_interim_heads], ids=["100KiB-head", "5000-interim-heads"])
def test_13_head_bounds_hold_in_one_read(
    scripted: ScriptedFactory, mock: MockFactory, gateway: GatewayFactory, answer: Callable[[], bytes]
) -> None:
    up, healthy = scripted(always([answer()])), mock()
    gw = gateway(two(scripted_provider(up), provider("healthy", healthy, kind="openai", api_key="sk-up")))
    resp = one(talk(gw.port, post(chat())))
    assert resp.status == 200 and resp.complete, resp.body[:300]
    assert resp.headers[b"x-llm-edge-provider"] == b"healthy" and resp.headers[b"x-llm-edge-attempts"] == b"2"
    assert not any(name.startswith(b"x-pad-") for name in resp.headers)
    assert len(up.requests) == 1 and healthy.requests == 1


# 14. Retry-After on the last route


def rate_limited(retry_after: int = 30) -> bytes:
    error = {"error": {"message": "slow down", "type": "rate_limit_error", "param": None, "code": None}}
    return http_json(error, status=429, reason=b"Too Many Requests", extra=b"retry-after: %d\r\n" % retry_after)


def test_14_retry_after_from_the_only_route_does_not_refuse_others(
    scripted: ScriptedFactory, gateway: GatewayFactory
) -> None:
    up = scripted(lambda n, head, body: [rate_limited() if n == 0 else http_json(openai_answer())])
    gw = gateway(single(scripted_provider(up)))
    first = one(talk(gw.port, post(chat(temperature=0.5))))
    assert first.status == 429 and first.headers.get(b"retry-after") == b"30", first
    for n in range(2, 4):  # every later request is tried, and served
        again = one(talk(gw.port, post(chat(temperature=0.5))))
        assert again.status == 200, again.body[:300]
        assert len(up.requests) == n


def test_14_every_route_rate_limited_is_a_429_with_retry_after(
    scripted: ScriptedFactory, gateway: GatewayFactory
) -> None:
    a, b = scripted(always([rate_limited()])), scripted(always([rate_limited()]))
    gw = gateway(two(scripted_provider(a, name="a"), scripted_provider(b, name="b")))
    for _ in range(3):
        resp = one(talk(gw.port, post(chat(temperature=0.5))))
        assert_openai_error(resp, 429)
        retry_after = resp.headers.get(b"retry-after", b"")
        assert retry_after.isdigit() and 1 <= int(retry_after) <= 30, resp.headers
