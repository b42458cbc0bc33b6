"""Which protocol a new client connection speaks: HTTP/1.1 or HTTP/2, on one port.

Over TLS, ALPN has already said so when the connection is made. In cleartext (and over TLS
without ALPN) the first bytes say so: HTTP/2 with prior knowledge starts with the 24-byte
connection preface, which no HTTP/1.1 request does. `ClientProtocol` is the listener's
protocol for the first moments only: it hands the transport to the real protocol
(`transport.set_protocol`) at once, or on the first bytes. The HTTP/1.1 protocol is built
up front, so its header timer guards a connection that sends nothing; the cost is per
connection, never per request (bench/h2.py measures it).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from proxy.downstream import DownstreamProtocol
from proxy.h2 import PREFACE, H2Protocol

if TYPE_CHECKING:
    from proxy.gateway import GatewayState as Gateway


class ClientProtocol(asyncio.Protocol):
    """Picks HTTP/1.1 or HTTP/2 for one new connection, then steps aside."""

    __slots__ = ("gateway", "transport", "h1", "seen")

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.transport: asyncio.Transport | None = None
        self.h1: DownstreamProtocol | None = None
        self.seen = b""  # a first read shorter than the preface, which it begins

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        ssl_object = transport.get_extra_info("ssl_object")
        alpn = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        if alpn == "h2":
            self._hand_over(H2Protocol(self.gateway), b"")
            return
        h1 = DownstreamProtocol(self.gateway)
        if alpn == "http/1.1":
            self._hand_over(h1, b"")
            return
        self.h1 = h1
        h1.connection_made(transport)  # registered, its header timer armed, until the first bytes decide

    def data_received(self, data: bytes) -> None:
        h1 = self.h1
        assert h1 is not None and self.transport is not None
        seen = self.seen + data if self.seen else data
        n = min(len(seen), 24)
        if seen[:n] != PREFACE[:n]:
            self.transport.set_protocol(h1)
            h1.data_received(seen)
        elif n < 24:
            self.seen = seen
        else:
            h1.connection_lost(None)  # unregisters it and cancels its timer: it never served a byte
            self._hand_over(H2Protocol(self.gateway), seen)

    def _hand_over(self, protocol: asyncio.Protocol, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if data:
            protocol.data_received(data)

    # before the first bytes, the HTTP/1.1 protocol owns the connection's fate

    def eof_received(self) -> bool | None:
        return self.h1.eof_received() if self.h1 is not None else False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.h1 is not None:
            self.h1.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.h1 is not None:
            self.h1.pause_writing()

    def resume_writing(self) -> None:
        if self.h1 is not None:
            self.h1.resume_writing()
