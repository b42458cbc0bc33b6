"""ClientProtocol: HTTP/1.1 or HTTP/2 on one port, decided by ALPN or by the first bytes however they are split."""

from __future__ import annotations

import pytest

from proxy.downstream import DownstreamProtocol
from proxy.h2 import PREFACE, H2Protocol
from proxy.sniff import ClientProtocol
from tests import samples
from tests.unit.protocol_harness import SwitchingTransport, make_gateway


def connect(alpn: str | None = None) -> tuple[ClientProtocol, SwitchingTransport, object]:
    gateway, loop = make_gateway()
    sniffer = ClientProtocol(gateway)
    transport = SwitchingTransport(loop, sniffer, alpn)
    sniffer.connection_made(transport)  # type: ignore[arg-type]
    return sniffer, transport, gateway


@pytest.mark.parametrize("cut", [1, 5, 16, len(samples.HEALTHZ)])
def test_http_1_1_in_cleartext_at_any_split(cut: int) -> None:
    sniffer, transport, _ = connect()
    data = samples.HEALTHZ
    sniffer.data_received(data[:cut])
    if cut < len(data):
        transport.protocol.data_received(data[cut:])
    assert isinstance(transport.protocol, DownstreamProtocol)
    assert transport.take().startswith(b"HTTP/1.1 200 OK")


@pytest.mark.parametrize("cut", [1, 3, 23, 24])
def test_the_http_2_preface_at_any_split(cut: int) -> None:
    sniffer, transport, gateway = connect()
    sniffer.data_received(PREFACE[:cut])
    if cut < 24:
        assert transport.protocol is sniffer  # not decided yet
        sniffer.data_received(PREFACE[cut:])
    assert isinstance(transport.protocol, H2Protocol)
    assert len([c for c in gateway.connections if isinstance(c, DownstreamProtocol)]) == 0  # the h1 one stepped aside
    assert transport.writes  # the server's SETTINGS went out


def test_a_start_that_only_looks_like_the_preface_is_http_1_1() -> None:
    sniffer, transport, _ = connect()
    sniffer.data_received(b"P")  # the preface's first byte
    assert transport.protocol is sniffer
    sniffer.data_received(b"OST /healthz HTTP/1.1\r\nHost: gw\r\ncontent-length: 0\r\n\r\n")
    assert isinstance(transport.protocol, DownstreamProtocol)
    assert transport.take().startswith(b"HTTP/1.1 405")  # the whole request reached HTTP/1.1, its first byte too


@pytest.mark.parametrize("alpn,kind", [("h2", H2Protocol), ("http/1.1", DownstreamProtocol)])
def test_alpn_decides_at_once(alpn: str, kind: type) -> None:
    sniffer, transport, _ = connect(alpn)
    assert isinstance(transport.protocol, kind)


def test_a_connection_that_sends_nothing_is_guarded_by_the_http_1_1_timer() -> None:
    gateway, loop = make_gateway({"header_timeout_s": 2})
    sniffer = ClientProtocol(gateway)
    transport = SwitchingTransport(loop, sniffer)
    sniffer.connection_made(transport)  # type: ignore[arg-type]
    assert sniffer.h1 in gateway.connections
    loop.advance(3)
    assert transport.closed and transport.take() == b""  # nothing was asked: closed quietly
    assert sniffer.h1 not in gateway.connections


def test_a_client_that_leaves_before_speaking_is_forgotten() -> None:
    sniffer, transport, gateway = connect()
    sniffer.connection_lost(None)
    assert sniffer.h1 not in gateway.connections  # type: ignore[attr-defined]
