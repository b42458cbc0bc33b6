"""The gateway end to end: real clients, real sockets, real mock providers."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import httptools
import openai
import orjson
import pytest
import trustme

from tests.e2e.conftest import GatewayFactory, MockFactory, ScriptedFactory, SDKClients, one_model, provider
from tests.harness import LoopThread, event, raw_exchange, wait_for

CLIENT_KEY = "sk-client-key-not-for-upstream"
PROVIDER_KEY = "sk-provider-SECRET-123"


def client(gw, protocol: SDKClients, **kwargs) -> openai.OpenAI:  # type: ignore[no-untyped-def]
    """An OpenAI SDK client over `protocol` (the `client_protocol` fixture: HTTP/1.1 or h2)."""
    return protocol.openai(gw.openai_base, api_key=CLIENT_KEY, max_retries=0, **kwargs)  # type: ignore[no-any-return]


def post_bytes(body: dict | bytes, path: bytes = b"/v1/chat/completions", extra: bytes = b"") -> bytes:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return b"POST %b HTTP/1.1\r\nHost: gw\r\nContent-Length: %d\r\n%b\r\n%b" % (path, len(data), extra, data)


def chat(content: str, **extra: object) -> dict:
    return {"model": "fast", "messages": [{"role": "user", "content": content}], **extra}


class Responses:
    """Reads consecutive HTTP/1.1 responses off one socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.done: list[tuple[int, dict[bytes, bytes], bytes]] = []
        self.parser = httptools.HttpResponseParser(self)
        self._headers: dict[bytes, bytes] = {}
        self._body = bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        self.done.append((self.parser.get_status_code(), self._headers, bytes(self._body)))
        self._headers, self._body = {}, bytearray()

    def read(self, n: int) -> list[tuple[int, dict[bytes, bytes], bytes]]:
        while len(self.done) < n:
            data = self.sock.recv(65536)
            if not data:
                break
            self.parser.feed_data(data)
        out, self.done = self.done[:n], self.done[n:]
        return out


# Chat through the official SDK


def test_openai_sdk_non_streamed_and_streamed(
    mock: MockFactory, gateway: GatewayFactory, client_protocol: SDKClients
) -> None:
    upstream = mock(require_key=PROVIDER_KEY)
    gw = gateway(one_model(provider("local", upstream, kind="openai", api_key=PROVIDER_KEY)))
    sdk = client(gw, client_protocol)
    answer = sdk.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hello there"}])
    assert answer.choices[0].message.content
    assert answer.usage is not None and answer.usage.total_tokens > 0
    again = sdk.chat.completions.create(model="fast", messages=[{"role": "user", "content": "hello there"}])
    other = sdk.chat.completions.create(model="fast", messages=[{"role": "user", "content": "something else"}])
    assert again.choices[0].message.content == answer.choices[0].message.content
    assert other.choices[0].message.content != answer.choices[0].message.content

    stream = sdk.chat.completions.create(
        model="fast", messages=[{"role": "user", "content": "hello there"}], stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == answer.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0

    seen = upstream.last_request
    assert seen is not None
    headers = {k.lower(): v for k, v in seen.headers}
    assert headers[b"authorization"] == f"Bearer {PROVIDER_KEY}".encode()  # the provider's key, injected
    assert CLIENT_KEY.encode() not in b"".join(k + v for k, v in seen.headers)  # the client's, never forwarded
    assert orjson.loads(seen.body)["model"] == "local-upstream-model"


def test_response_headers_and_stats(mock: MockFactory, gateway: GatewayFactory, client_protocol: SDKClients) -> None:
    upstream = mock()
    gw = gateway(one_model(provider("local", upstream)))
    sdk = client(gw, client_protocol)
    raw = sdk.chat.completions.with_raw_response.create(model="fast", messages=[{"role": "user", "content": "x"}])
    assert raw.headers["x-llm-edge-provider"] == "local"
    assert raw.headers["x-llm-edge-attempts"] == "1"
    stats = gw.stats()
    assert stats["requests"] == 1 and stats["overhead_us"]["count"] == 1
    assert stats["overhead_us"]["p50"] > 0


def test_direct_provider_addressing(mock: MockFactory, gateway: GatewayFactory, client_protocol: SDKClients) -> None:
    upstream = mock()
    gw = gateway({"providers": [provider("local", upstream)]})
    sdk = client(gw, client_protocol)
    answer = sdk.chat.completions.create(model="local/some-model", messages=[{"role": "user", "content": "x"}])
    assert answer.choices[0].message.content
    assert orjson.loads(upstream.last_request.body)["model"] == "some-model"


def test_models_and_healthz(mock: MockFactory, gateway: GatewayFactory, client_protocol: SDKClients) -> None:
    gw = gateway(one_model(provider("local", mock())))
    assert [m.id for m in client(gw, client_protocol).models.list()] == ["fast"]
    assert b"200 OK" in raw_exchange(gw.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")


def test_curl_as_a_client(mock: MockFactory, gateway: GatewayFactory) -> None:
    gw = gateway(one_model(provider("local", mock())))
    body = orjson.dumps(chat("from curl"))
    out = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", "-H", "content-type: application/json", "--data-binary", body,
         f"{gw.openai_base}/chat/completions"],
        capture_output=True, timeout=10, check=True,
    )  # fmt: skip
    payload, _, code = out.stdout.rpartition(b"\n")
    assert code == b"200" and orjson.loads(payload)["object"] == "chat.completion"


# Connections


def test_keepalive_reuse_on_both_sides(mock: MockFactory, gateway: GatewayFactory) -> None:
    upstream = mock()
    gw = gateway(one_model(provider("local", upstream)))
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        reader = Responses(sock)
        for i in range(5):
            sock.sendall(post_bytes(chat(f"request {i}")))
            [(status, _, _)] = reader.read(1)
            assert status == 200
    assert upstream.connections_opened == 1
    assert gw.pool().opened_total == 1


def test_pipelined_requests_are_answered_in_order(
    mock: MockFactory, gateway: GatewayFactory, client_protocol: SDKClients
) -> None:
    gw = gateway(one_model(provider("local", mock())))
    sdk = client(gw, client_protocol)
    expected = [sdk.chat.completions.create(**chat(f"prompt {i}")).choices[0].message.content for i in range(4)]
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(b"".join(post_bytes(chat(f"prompt {i}")) for i in range(4)) + b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        responses = Responses(sock).read(5)
    got = [orjson.loads(body)["choices"][0]["message"]["content"] for _, _, body in responses[:4]]
    assert got == expected
    assert responses[4][2] == b'{"status":"ok"}'


def test_chunked_request_body(mock: MockFactory, gateway: GatewayFactory) -> None:
    upstream = mock()
    gw = gateway(one_model(provider("local", upstream)))
    body = orjson.dumps(chat("chunked please"))
    framed = b"".join(b"%x\r\n%b\r\n" % (len(body[i : i + 7]), body[i : i + 7]) for i in range(0, len(body), 7))
    request = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + framed + b"0\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(request)
        [(status, _, payload)] = Responses(sock).read(1)
    assert status == 200 and orjson.loads(payload)["choices"]
    assert orjson.loads(upstream.last_request.body)["messages"][0]["content"] == "chunked please"


def test_upstream_closing_an_idle_pooled_connection(
    mock: MockFactory, gateway: GatewayFactory, client_protocol: SDKClients
) -> None:
    upstream = mock()
    gw = gateway(one_model(provider("local", upstream)))
    sdk = client(gw, client_protocol)
    sdk.chat.completions.create(**chat("one"))
    assert upstream.close_idle_connections() == 1
    assert wait_for(lambda: gw.pool().open == 0)  # the pool noticed at once, from the EOF
    assert sdk.chat.completions.create(**chat("two")).choices[0].message.content
    assert upstream.connections_opened == 2


def test_a_stale_pooled_connection_is_retried_transparently(
    mock: MockFactory, gateway: GatewayFactory, client_protocol: SDKClients
) -> None:
    upstream = mock()
    gw = gateway(one_model(provider("local", upstream)))
    sdk = client(gw, client_protocol)
    sdk.chat.completions.create(**chat("one"))
    # Close the mock's side without the gateway noticing first: the next request hits a dead socket.
    gw.io.call(lambda: [c.transport.pause_reading() for c in gw.pool().idle])
    upstream.close_idle_connections()
    time.sleep(0.05)
    gw.io.call(lambda: [c.transport.resume_reading() for c in gw.pool().idle])
    assert sdk.chat.completions.create(**chat("two")).choices[0].message.content


def test_client_leaving_mid_stream_closes_its_upstream_connection(mock: MockFactory, gateway: GatewayFactory) -> None:
    upstream = mock(tokens=200, token_delay_ms=20)
    gw = gateway(one_model(provider("local", upstream)))
    with socket.create_connection(("127.0.0.1", gw.port)) as sock:
        sock.sendall(post_bytes(chat("long story", stream=True)))
        assert b"data:" in sock.recv(65536) + sock.recv(65536)
    assert wait_for(lambda: upstream.client_disconnects == 1)
    assert gw.pool().open == 0 and gw.pool().idle_count == 0  # closed, not pooled
    assert gw.stats()["by_status"].get("499") == 1


def test_stream_first_byte_is_not_delayed(io: LoopThread, scripted: ScriptedFactory, gateway: GatewayFactory) -> None:
    """Each SSE event is relayed as it arrives: the first token reaches the client while the provider
    still holds the second, which it sends only once the client has the first. (How long the relay
    takes is a figure for bench/, the `ttfb` scenario, not an assertion.)"""
    second_may_go = event(io)

    def sse(data: bytes) -> bytes:
        framed = b"data: " + data + b"\n\n"
        return b"%x\r\n%b\r\n" % (len(framed), framed)

    def token(text: str) -> bytes:
        choice = {"index": 0, "delta": {"content": text}, "finish_reason": None}
        return sse(orjson.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                                 "choices": [choice]}))  # fmt: skip

    head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
    up = scripted(lambda n, h, b: [head, token("first"), second_may_go, token("second"), sse(b"[DONE]"), b"0\r\n\r\n"])
    gw = gateway({"providers": [{"name": "local", "kind": "local", "base_url": up.base_url}],
                  "models": [{"name": "fast", "routes": [{"provider": "local", "model": "m"}]}]})  # fmt: skip
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(post_bytes(chat("ttfb", stream=True, stream_options={"include_usage": True})))
        data = b""
        while b"first" not in data:  # a gateway holding it back for more would time out here
            piece = sock.recv(65536)
            assert piece, data
            data += piece
        assert b"second" not in data
        io.call(second_may_go.set)  # only now does the provider send the second token
        while b"[DONE]" not in data:
            piece = sock.recv(65536)
            assert piece, data
            data += piece
    assert data.index(b"first") < data.index(b"second") < data.index(b"[DONE]")


# Errors, each in OpenAI's shape with the right status


@pytest.mark.parametrize(
    "request_bytes,status",
    [
        (b"THIS IS NOT HTTP\r\n\r\n", 400),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n", 400),
        (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413),
        (b"GET /" + b"u" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Filler: 1\r\n" * 200 + b"\r\n", 431),
        (post_bytes(b"{nope"), 400),
        (post_bytes({"messages": [{"role": "user", "content": "x"}]}), 400),
        (post_bytes({"model": "fast", "messages": "x"}), 400),
        (post_bytes(chat("x") | {"model": "unknown-model"}), 404),
        (b"GET /v1/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n", 405),
        (b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 405),
        (b"GET http://example.com/v1/models HTTP/1.1\r\nHost: example.com\r\n\r\n", 400),
    ],
)
def test_client_errors(mock: MockFactory, gateway: GatewayFactory, request_bytes: bytes, status: int) -> None:
    upstream = mock()
    gw = gateway(one_model(provider("local", upstream)))
    with socket.create_connection(("127.0.0.1", gw.port), timeout=5) as sock:
        sock.sendall(request_bytes)
        [(got, headers, body)] = Responses(sock).read(1)
    assert got == status
    assert headers[b"content-type"] == b"application/json"
    assert set(orjson.loads(body)["error"]) == {"message", "type", "param", "code"}
    assert upstream.requests == 0  # nothing reached the provider
    assert b"200 OK" in raw_exchange(gw.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # and it goes on serving


def test_unreachable_upstream_is_a_502(gateway: GatewayFactory, client_protocol: SDKClients) -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]  # bound but not listening: connections are refused
        gw = gateway({"providers": [{"name": "gone", "kind": "local", "base_url": f"http://127.0.0.1:{port}/v1"}],
                      "models": [{"name": "fast", "routes": [{"provider": "gone", "model": "m"}]}]})  # fmt: skip
        with pytest.raises(openai.InternalServerError) as info:
            client(gw, client_protocol).chat.completions.create(**chat("x"))
    assert info.value.status_code == 502
    assert "gone" in info.value.message


def test_upstream_timeout_is_a_504(mock: MockFactory, gateway: GatewayFactory, client_protocol: SDKClients) -> None:
    upstream = mock(ttft_ms=3000)
    gw = gateway(one_model(provider("slow", upstream, first_byte_timeout_s=0.2)))
    with pytest.raises(openai.APIStatusError) as info:
        client(gw, client_protocol).chat.completions.create(**chat("x"))
    assert info.value.status_code == 504
    # The deadline held the client, not the provider: the gateway hung up on the provider while its
    # answer was still pending (the mock counts a peer gone before its reply was written).
    assert wait_for(lambda: upstream.client_disconnects == 1)


# TLS to a provider with its own CA


@pytest.fixture(scope="module")
def tls_ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[trustme.CA, Path]:
    ca = trustme.CA()
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return ca, path


def test_tls_upstream_with_its_own_ca(
    mock: MockFactory, gateway: GatewayFactory, client_protocol: SDKClients, tls_ca: tuple[trustme.CA, Path]
) -> None:
    ca, ca_path = tls_ca
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    upstream = mock(ssl=server_context)
    gw = gateway(one_model(provider("tls", upstream, kind="openai", api_key=PROVIDER_KEY, ca_file=str(ca_path))))
    answer = client(gw, client_protocol).chat.completions.create(**chat("over tls"))
    assert answer.choices[0].message.content
    assert gw.pool().opened_total == 1


def test_tls_upstream_with_an_untrusted_certificate_is_a_502(
    mock: MockFactory, gateway: GatewayFactory, client_protocol: SDKClients
) -> None:
    stranger = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    stranger.issue_cert("localhost").configure_cert(server_context)
    upstream = mock(ssl=server_context)
    gw = gateway(one_model(provider("tls", upstream, kind="openai", api_key=PROVIDER_KEY)))
    with pytest.raises(openai.InternalServerError) as info:
        client(gw, client_protocol).chat.completions.create(**chat("x"))
    assert info.value.status_code == 502
    assert PROVIDER_KEY not in info.value.message
