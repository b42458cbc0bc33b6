"""The gateway process: the listening socket, signals, reload and drain.

`Gateway` adds to the shared state (`proxy.gateway`) what only a serving process does:
accepting client connections and, on shutdown, letting them finish.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import time
from collections.abc import Callable

from proxy import config, relay
from proxy.config import Settings
from proxy.errors import ConfigError
from proxy.gateway import GatewayState
from proxy.shared import SharedRoutes
from proxy.sniff import ClientProtocol
from proxy.tls import ServerTLS, server_tls

log = logging.getLogger("llm_edge")


class Gateway(GatewayState):
    """A serving gateway: the shared state plus its listener."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop, shared: SharedRoutes | None = None) -> None:
        super().__init__(settings, loop, relay, shared)  # type: ignore[arg-type]  # the module is the handler
        self.tls: ServerTLS | None = None  # [server] tls_cert_file: the listener's TLS, reloaded on SIGHUP

    async def start(self, sock: socket.socket | None = None) -> tuple[str, int]:
        """Bind (or take `sock`) and start accepting; returns the bound address (useful with port 0)."""
        server_settings = self.settings.server
        self.tls = server_tls(server_settings)
        ssl = self.tls.listener if self.tls is not None else None
        handshake = server_settings.header_timeout_s if ssl is not None else None
        if sock is not None:
            self.server = await self.loop.create_server(lambda: ClientProtocol(self), sock=sock, backlog=4096, ssl=ssl,
                                                        ssl_handshake_timeout=handshake)  # fmt: skip
        else:
            self.server = await self.loop.create_server(
                lambda: ClientProtocol(self), server_settings.host, server_settings.port, reuse_address=True,
                backlog=4096, ssl=ssl, ssl_handshake_timeout=handshake,
            )  # fmt: skip
        sock = self.server.sockets[0]
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        host, port = sock.getsockname()[:2]
        return host, port

    async def stop(self, timeout: float) -> None:
        """Stop accepting, let in-flight exchanges finish for up to `timeout` seconds, then close all."""
        self.draining = True
        if self.server is not None:
            self.server.close()
        deadline = self.loop.time() + timeout
        while self.loop.time() < deadline:
            for conn in list(self.connections):
                if conn.idle:
                    conn.close()
            if not self.connections:
                break
            await asyncio.sleep(0.05)
        for conn in list(self.connections):
            conn.close()
        for pool in self.pools:
            pool.close()
        if self.cache is not None and self.cache.l2 is not None:
            await self.cache.l2.close()
        if self.access_log is not None:
            self.access_log.flush(time.time(), time.perf_counter())
        self.ledger.close(time.time())
        if self.fleet is not None:
            await self.fleet.close()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self.shared is not None:
            self._share_handle.cancel()
        await asyncio.sleep(0)


def new_event_loop(kind: str = "uvloop") -> asyncio.AbstractEventLoop:
    """A uvloop loop, or stock asyncio's when asked (for A/B comparisons)."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(
    settings: Settings,
    loop_kind: str = "uvloop",
    reload: Callable[[], Settings] | None = None,
    sock: socket.socket | None = None,
    worker: int | None = None,
    shared: SharedRoutes | None = None,
) -> int:
    """Serve until SIGTERM or SIGINT, then drain and return the exit code.

    `reload` re-reads the configuration (SIGHUP); `sock` is a listening socket made by the
    parent of several workers (SO_REUSEPORT), `worker` this process's index among them.
    """
    loop = new_event_loop(loop_kind)
    asyncio.set_event_loop(loop)
    gateway = Gateway(settings, loop, shared)
    try:
        host, port = loop.run_until_complete(gateway.start(sock))
    except OSError as exc:
        log.error("cannot listen on %s:%d: %s", settings.server.host, settings.server.port, exc.strerror)
        return 1
    stopping = loop.create_future()
    def stop() -> None:
        if not stopping.done():
            stopping.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop)
    if reload is not None:
        loop.add_signal_handler(signal.SIGHUP, _reloader(gateway, reload))
    # Everything built so far lives as long as the process: move it out of the collector's sight, so
    # the young-generation collections that per-request garbage triggers no longer rescan it.
    gc.collect()
    gc.freeze()
    if worker is None:
        print(f"llm-edge listening on {host}:{port}", flush=True)
    log.info("serving %d model(s) over %d provider(s) from %s%s", len(settings.models), len(settings.providers),
             settings.source, f" (worker {worker})" if worker is not None else "")  # fmt: skip
    loop.run_until_complete(stopping)
    timeout = gateway.settings.server.shutdown_timeout_s
    log.info("shutting down: finishing in-flight requests (up to %.0fs)", timeout)
    loop.run_until_complete(gateway.stop(timeout))
    loop.close()
    return 0


def _reloader(gateway: Gateway, reload: Callable[[], Settings]) -> Callable[[], None]:
    def on_sighup() -> None:
        try:
            settings = reload()
        except ConfigError as exc:
            log.error("configuration not reloaded, the old one keeps serving: %s", exc)
            return
        if (settings.server.host, settings.server.port) != (gateway.settings.server.host, gateway.settings.server.port):
            log.warning("server.listen changed: it takes effect on restart; the rest is reloaded now")
            settings = config.with_listen(settings, f"{gateway.settings.server.host}:{gateway.settings.server.port}")
        gateway.reload(settings)
        for warning in settings.warnings:
            log.warning("%s", warning)
        if gateway.tls is not None:
            gateway.tls.reload(settings.server)  # new handshakes get the new certificate; a bad one is logged
        log.info("configuration reloaded from %s: %d model(s) over %d provider(s)", settings.source,
                 len(settings.models), len(settings.providers))  # fmt: skip

    return on_sighup
