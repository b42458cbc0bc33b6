"""A gateway on a fake loop, with fake client and provider connections, for protocol unit tests."""

from __future__ import annotations

from typing import Any

from proxy import config
from proxy.downstream import DownstreamProtocol
from proxy.server import Gateway
from proxy.upstream import UpstreamProtocol
from tests.fakes import FakeLoop, FakeTransport

TABLE: dict[str, Any] = {
    "server": {"listen": "127.0.0.1:0"},
    "providers": [
        {"name": "local", "kind": "local", "base_url": "http://127.0.0.1:9/v1"},
        {"name": "openai", "kind": "openai", "base_url": "http://127.0.0.1:10/v1", "api_key": "sk-provider-SECRET"},
    ],
    "models": [
        {"name": "fast", "routes": [{"provider": "local", "model": "llama-3.1-8b-instruct"}]},
        {"name": "smart", "routes": [{"provider": "openai", "model": "gpt-4o-mini"}]},
    ],
}


def make_gateway(server: dict[str, Any] | None = None) -> tuple[Gateway, FakeLoop]:
    table = dict(TABLE)
    table["server"] = {**TABLE["server"], **(server or {})}
    loop = FakeLoop()
    return Gateway(config.from_table(table, env={}), loop), loop  # type: ignore[arg-type]


def connect_client(gateway: Gateway, loop: FakeLoop) -> tuple[DownstreamProtocol, FakeTransport]:
    proto = DownstreamProtocol(gateway)
    transport = FakeTransport(loop, proto)
    proto.connection_made(transport)  # type: ignore[arg-type]
    return proto, transport


def idle_upstream(gateway: Gateway, loop: FakeLoop, provider: int = 0) -> tuple[UpstreamProtocol, FakeTransport]:
    """An established, idle provider connection sitting in the pool."""
    pool = gateway.pools[provider]
    conn = UpstreamProtocol(pool)
    transport = FakeTransport(loop, conn)
    conn.connection_made(transport)  # type: ignore[arg-type]
    pool.open += 1
    pool.release(conn)
    return conn, transport


def feed(proto: Any, data: bytes, mode: str) -> None:
    """Feed bytes whole or one byte at a time."""
    if mode == "whole":
        proto.data_received(data)
    else:
        for i in range(len(data)):
            proto.data_received(data[i : i + 1])
