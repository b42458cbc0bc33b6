"""The gateway process: listening, draining, reloading (in process on a real loop), and the whole
process under its signals (SIGHUP reloads, SIGTERM drains and exits 0)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from pathlib import Path
from typing import Any

import pytest

from proxy import config, server
from tests.harness import wait_for
from tests.unit.protocol_harness import GatewayProcess

TABLE: dict[str, Any] = {
    "server": {"listen": "127.0.0.1:0"},
    "providers": [{"name": "a", "kind": "local", "base_url": "http://127.0.0.1:9/v1"}],
    "models": [{"name": "fast", "routes": [{"provider": "a", "model": "m1"}]}],
}


def settings(table: dict[str, Any] = TABLE) -> config.Settings:
    return config.from_table(table, env={})


@pytest.mark.parametrize("kind", ["uvloop", "asyncio"])
def test_new_event_loop(kind: str) -> None:
    loop = server.new_event_loop(kind)
    try:
        assert ("uvloop" in type(loop).__module__) == (kind == "uvloop")
    finally:
        loop.close()


def test_start_serves_on_port_0_and_stop_closes_everything() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        gateway = server.Gateway(settings(), loop)
        host, port = await gateway.start()
        assert host == "127.0.0.1" and port > 0
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 OK")
        await reader.readexactly(15)
        assert len(gateway.connections) == 1
        await gateway.stop(1.0)
        assert gateway.draining and not gateway.connections
        assert await reader.read() == b""  # the idle keep-alive connection was closed
        writer.close()
        with pytest.raises(OSError):
            await asyncio.open_connection(host, port)  # no longer listening

    asyncio.run(scenario())


def test_start_on_a_given_socket() -> None:
    async def scenario() -> None:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        gateway = server.Gateway(settings(), asyncio.get_running_loop())
        _, port = await gateway.start(sock)
        assert port == sock.getsockname()[1]
        await gateway.stop(0.1)

    asyncio.run(scenario())


def test_the_reloader_keeps_the_old_config_when_the_new_one_is_bad(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        gateway = server.Gateway(settings(), asyncio.get_running_loop())
        old = gateway.gen

        def bad() -> config.Settings:
            raise config.ConfigError("providers[0].kind: expected one of openai, anthropic, local, got 'azure'")

        with caplog.at_level(logging.ERROR, logger="llm_edge"):
            server._reloader(gateway, bad)()
        assert gateway.gen is old
        assert "the old one keeps serving" in caplog.text and "providers[0].kind" in caplog.text
        await gateway.stop(0.1)

    asyncio.run(scenario())


def test_the_reloader_swaps_the_config_but_not_the_address(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        gateway = server.Gateway(settings(), asyncio.get_running_loop())
        new_model = {"name": "new", "routes": [{"provider": "a", "model": "m2"}]}
        moved = {**TABLE, "server": {"listen": "127.0.0.1:1"}, "models": [*TABLE["models"], new_model]}
        with caplog.at_level(logging.WARNING, logger="llm_edge"):
            server._reloader(gateway, lambda: settings(moved))()
        assert "new" in gateway.settings.models
        assert gateway.settings.server.port == 0  # listen changes wait for a restart
        assert "takes effect on restart" in caplog.text
        await gateway.stop(0.1)

    asyncio.run(scenario())


CONFIG = """
[server]
listen = "127.0.0.1:0"
shutdown_timeout_s = 5

[[providers]]
name = "a"
kind = "local"
base_url = "http://127.0.0.1:9/v1"

[[models]]
name = "fast"
routes = [{ provider = "a", model = "m1" }]
"""


def test_the_process_reloads_on_sighup_and_drains_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "llm-edge.toml"
    path.write_text(CONFIG)
    gateway = GatewayProcess(["--config", str(path)])
    try:
        assert gateway.get("/healthz")[0] == 200
        assert b'"fast"' in gateway.get("/v1/models")[1] and b'"later"' not in gateway.get("/v1/models")[1]
        path.write_text(CONFIG + '\n[[models]]\nname = "later"\nroutes = [{ provider = "a", model = "m2" }]\n')
        gateway.signal(signal.SIGHUP)
        assert wait_for(lambda: b'"later"' in gateway.get("/v1/models")[1], timeout=10)
        path.write_text("not toml [")
        gateway.signal(signal.SIGHUP)
        assert gateway.get("/healthz")[0] == 200
        assert b'"later"' in gateway.get("/v1/models")[1]
        gateway.signal(signal.SIGTERM)
        assert gateway.wait() == 0
        assert gateway.proc.stderr is not None
        log = gateway.proc.stderr.read().decode()
        assert "configuration not reloaded, the old one keeps serving" in log  # the bad file: logged, ignored
    finally:
        gateway.stop()
