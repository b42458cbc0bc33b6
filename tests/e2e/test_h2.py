"""HTTP/2 with real clients: curl (h2c and TLS), h2load, the official SDKs on httpx's h2, and the
stream-level behaviours: reset cancels the upstream, a slow reader stalls nobody, drain, reload."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import anthropic
import h2.events
import httpx2
import openai
import orjson
import pytest
import trustme

from proxy import server
from tests.e2e.conftest import GatewayFactory, MockFactory, one_model, provider
from tests.e2e.test_h2_attacks import CHAT, H2Client
from tests.harness import RunningGateway, wait_for

STREAM = orjson.dumps({"model": "fast", "stream": True, "messages": [{"role": "user", "content": "hi"}]})


@pytest.fixture
def certs(tmp_path: Path) -> tuple[trustme.CA, Path, Path, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    return ca, cert_file, key_file, ca_file


def tls_gateway(mock: MockFactory, gateway: GatewayFactory, certs: Any, **mock_options: Any) -> RunningGateway:
    _, cert_file, key_file, _ = certs
    table = one_model(provider("local", mock(**mock_options)))
    return gateway({**table, "server": {"tls_cert_file": str(cert_file), "tls_key_file": str(key_file)}})


def curl(*args: str) -> str:
    done = subprocess.run(["curl", "-sS", "-i", "-H", "content-type: application/json", *args],
                          capture_output=True, timeout=20, check=True)  # fmt: skip
    return done.stdout.decode()


@pytest.mark.parametrize("body", [CHAT, STREAM], ids=["json", "sse"])
def test_curl_h2c_prior_knowledge(mock: MockFactory, gateway: GatewayFactory, body: bytes) -> None:
    gw = gateway(one_model(provider("local", mock())))
    out = curl("--http2-prior-knowledge", "-N", f"{gw.url}/v1/chat/completions", "-d", body.decode())
    assert out.startswith("HTTP/2 200")
    assert ("data: [DONE]" in out) if body is STREAM else ('"finish_reason":"stop"' in out)
    # HTTP/1.1 still works on the same port
    assert curl("--http1.1", f"{gw.url}/healthz").startswith("HTTP/1.1 200")


@pytest.mark.parametrize("body", [CHAT, STREAM], ids=["json", "sse"])
def test_curl_over_tls_gets_h2_by_alpn_and_http1_too(mock: MockFactory, gateway: GatewayFactory, certs: Any,
                                                     body: bytes) -> None:  # fmt: skip
    gw = tls_gateway(mock, gateway, certs)
    url, ca_file = f"https://localhost:{gw.port}", str(certs[3])
    out = curl("--http2", "--cacert", ca_file, "-N", f"{url}/v1/chat/completions", "-d", body.decode())
    assert out.startswith("HTTP/2 200")
    assert ("data: [DONE]" in out) if body is STREAM else ('"finish_reason":"stop"' in out)
    assert curl("--http1.1", "--cacert", ca_file, f"{url}/v1/chat/completions", "-d", body.decode()).startswith(
        "HTTP/1.1 200")


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) is not installed")
def test_h2load_many_streams_on_one_connection(mock: MockFactory, gateway: GatewayFactory, tmp_path: Path) -> None:
    gw = gateway(one_model(provider("local", mock())))
    body = tmp_path / "body.json"
    body.write_bytes(CHAT)
    done = subprocess.run(["h2load", "-n", "400", "-c", "1", "-m", "32", "-d", str(body), "-H",
                           "content-type: application/json", f"{gw.url}/v1/chat/completions"],
                          capture_output=True, timeout=60, check=True)  # fmt: skip
    out = done.stdout.decode()
    assert "400 succeeded, 0 failed, 0 errored" in out, out
    assert "status codes: 400 2xx" in out, out


def test_sdks_over_tls_with_httpx_http2(mock: MockFactory, gateway: GatewayFactory, certs: Any) -> None:
    gw = tls_gateway(mock, gateway, certs)
    verify = ssl.create_default_context(cafile=str(certs[3]))
    versions: list[str] = []
    hooks = {"response": [lambda r: versions.append(r.http_version)]}
    base = f"https://localhost:{gw.port}"
    with httpx2.Client(http2=True, verify=verify, event_hooks=hooks) as http:
        sdk = openai.OpenAI(base_url=f"{base}/v1", api_key="k", max_retries=0, http_client=http)
        messages: Any = [{"role": "user", "content": "hi"}]
        assert sdk.chat.completions.create(model="fast", messages=messages).choices[0].message.content
        chunks = sdk.chat.completions.create(model="fast", messages=messages, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text
    with httpx2.Client(http2=True, verify=verify, event_hooks=hooks) as http:
        claude = anthropic.Anthropic(base_url=base, api_key="k", max_retries=0, http_client=http)
        answer = claude.messages.create(model="fast", max_tokens=50, messages=messages)
        assert answer.content[0].text  # type: ignore[union-attr]
        with claude.messages.stream(model="fast", max_tokens=50, messages=messages) as stream:
            assert "".join(stream.text_stream)
    assert versions and set(versions) == {"HTTP/2"}


def test_reset_stream_cancels_the_upstream(mock: MockFactory, gateway: GatewayFactory) -> None:
    upstream = mock(token_delay_ms=50, tokens=200)
    gw = gateway(one_model(provider("local", upstream)))
    client = H2Client(gw.port)
    sid = client.start(STREAM)
    assert client.wait(lambda e: isinstance(e, h2.events.DataReceived) and e.stream_id == sid)
    assert upstream.open_connections == 1
    client.conn.reset_stream(sid)
    client.flush()
    assert wait_for(lambda: upstream.open_connections == 0)  # never pooled: its answer was not read to the end
    status, _ = client.response(client.start())  # and the connection goes on
    assert status == 200
    client.close()


def test_a_slow_reader_stalls_no_other_stream_and_pauses_its_upstream(mock: MockFactory,
                                                                      gateway: GatewayFactory) -> None:  # fmt: skip
    upstream = mock(tokens=4000)  # a long streamed answer: far more than one window
    gw = gateway({**one_model(provider("local", upstream)), "server": {"h2_stream_buffer_bytes": 16384}})
    client = H2Client(gw.port)
    slow = client.start(STREAM)
    # read its first window, acknowledging nothing: this stream's window closes
    client.conn.acknowledge_received_data = lambda *a, **k: None  # type: ignore[method-assign]
    assert client.wait(lambda e: isinstance(e, h2.events.DataReceived) and e.stream_id == slow)
    conn = next(iter(gw.gateway.connections))
    assert wait_for(lambda: gw.io.call(lambda: conn.streams[slow].paused is not None))
    del client.conn.acknowledge_received_data
    fast = client.start(CHAT)
    status, body = client.response(fast)
    assert status == 200 and orjson.loads(body)["choices"]
    assert gw.io.call(lambda: conn.streams[slow].paused is not None and not conn.streams[slow].ended)
    # the slow reader catches up: its upstream resumes and the stream ends
    client.conn.increment_flow_control_window(1 << 30)
    client.conn.increment_flow_control_window(1 << 30, slow)
    client.flush()
    status, body = client.response(slow)
    assert status == 200 and body.rstrip().endswith(b"data: [DONE]")
    client.close()


def test_drain_sends_goaway_and_lets_open_streams_finish(mock: MockFactory, gateway: GatewayFactory) -> None:
    gw = gateway(one_model(provider("local", mock(token_delay_ms=20, tokens=30))))
    client = subprocess.Popen(["curl", "-sS", "-N", "--http2-prior-knowledge", "-H", "content-type: application/json",
                               f"{gw.url}/v1/chat/completions", "-d", STREAM.decode()],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert client.stdout is not None
    first = client.stdout.readline()  # the first event is out: the stream is open
    assert first.startswith(b"data: ")
    stopping = asyncio.run_coroutine_threadsafe(gw.gateway.stop(10.0), gw.io.loop)
    rest, log = client.communicate(timeout=20)
    stopping.result(10)
    assert client.returncode == 0, log
    assert rest.rstrip().endswith(b"data: [DONE]")
    assert not gw.gateway.connections


def test_sighup_reloads_the_certificate(mock: MockFactory, gateway: GatewayFactory, certs: Any, tmp_path: Path) -> None:
    gw = tls_gateway(mock, gateway, certs)

    def served_ca(cafile: Path) -> bool:
        context = ssl.create_default_context(cafile=str(cafile))
        try:
            with httpx2.Client(http2=True, verify=context) as http:
                return http.get(f"https://localhost:{gw.port}/healthz").status_code == 200
        except httpx2.ConnectError:
            return False

    assert served_ca(certs[3])
    new_ca = trustme.CA()
    issued = new_ca.issue_cert("localhost")
    issued.private_key_and_cert_chain_pem.write_to_path(str(certs[1]))
    issued.private_key_pem.write_to_path(str(certs[2]))
    new_ca_file = tmp_path / "new-ca.pem"
    new_ca.cert_pem.write_to_path(str(new_ca_file))
    settings = gw.gateway.settings
    gw.io.call(server._reloader(gw.gateway, lambda: settings))  # what SIGHUP runs
    assert served_ca(new_ca_file) and not served_ca(certs[3])
    # a broken certificate file is refused: the last good one keeps serving
    Path(certs[1]).write_text("not a certificate")
    gw.io.call(server._reloader(gw.gateway, lambda: settings))
    assert served_ca(new_ca_file)
