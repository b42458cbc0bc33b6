"""An exception injected at each phase of the request path in turn: every exchange still ends.

For each phase, the first call raises; the client must still get an answer, an error event or a
close (never a hang), the gateway must be back at rest (no in-flight count, checked-out
connection or cache leader left), nothing may reach the loop's exception handler, and the next
request must be served normally.
"""

from __future__ import annotations

import socket
from typing import Any

import orjson
import pytest

from proxy import adapt, caching, pipeline, relay
from proxy.routing import Router
from proxy.stats import Stats
from tests.e2e.conftest import GatewayFactory, MockFactory, one_model, provider
from tests.harness import assert_at_rest

PHASES = ["parse", "cache", "pick", "connect", "send", "head", "body", "translation", "finish"]


class Boom(RuntimeError):
    """The injected fault."""


def inject(monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> list[int]:
    """Make `owner.name` raise on its first call only; returns a one-item call counter."""
    original = getattr(owner, name)
    calls = [0]

    def once(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1:
            raise Boom(f"injected into {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, once)
    return calls


def targets(phase: str, stream: bool) -> tuple[Any, str]:
    """Where each phase is entered. Streams to an OpenAI client go the decoded path (the gateway
    strips the usage chunk it asks for), JSON answers the raw one."""
    return {
        "parse": (pipeline, "parse"),
        "cache": (caching, "lookup"),
        "pick": (Router, "pick"),
        "connect": (relay, "on_connected"),  # the connect task's hand-over (the pool is emptied first)
        "send": (adapt, "upstream_request"),
        "head": (relay, "on_decoded_head" if stream else "on_upstream_head"),
        "body": (relay, "on_decoded_body" if stream else "_relay_held"),  # a small JSON answer comes in one read
        "translation": (adapt.Translation, "body"),
        "finish": (Stats, "record"),
    }[phase]


def request(port: int, stream: bool) -> bytes:
    """One chat request on a fresh connection; everything that came back until the gateway closed
    or finished the answer. A hang fails the test by the socket timeout."""
    body = orjson.dumps({"model": "fast", "messages": [{"role": "user", "content": "hi"}], "stream": stream,
                         "temperature": 0.5})  # fmt: skip
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head + b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body) + body)
        out = b""
        while True:
            piece = sock.recv(65536)
            if not piece:
                return out
            out += piece


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("phase", PHASES)
def test_an_exception_in_any_phase_still_ends_the_exchange(
    mock: MockFactory, gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, phase: str, stream: bool
) -> None:
    kind = "anthropic" if phase == "translation" else "local"
    upstream = mock(tokens=4, kind=kind if kind == "anthropic" else "openai")
    gw = gateway(one_model(provider("p", upstream, kind=kind, api_key="sk-test")))
    request(gw.port, stream)  # warm: a pooled connection
    if phase == "connect":  # cold: the next attempt opens a new connection
        gw.io.call(lambda: [conn.close() for conn in list(gw.pool().idle)])
    owner, name = targets(phase, stream)
    calls = inject(monkeypatch, owner, name)
    answer = request(gw.port, stream)
    assert calls[0] >= 1, f"the {phase} phase was never reached"
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]  # an answer (or its start), then a close: no hang
    status = int(answer[9:12])
    if status >= 400:
        assert b'"error"' in answer  # in the client's API shape
    assert_at_rest(gw)
    again = request(gw.port, stream)
    assert again.startswith(b"HTTP/1.1 200"), again[:300]
    assert_at_rest(gw)


def test_an_injected_fault_is_logged_once_with_its_traceback(
    mock: MockFactory, gateway: GatewayFactory, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = mock()
    gw = gateway(one_model(provider("p", upstream)))
    inject(monkeypatch, relay, "on_upstream_head")
    answer = request(gw.port, False)
    assert int(answer[9:12]) in (500, 502)
    crashes = [r for r in caplog.records if r.exc_info and "Boom" in repr(r.exc_info[1])]
    assert len(crashes) == 1

