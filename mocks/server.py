# A running mock provider: `start_mock()` and the `MockServer` handle it returns.
#
# Owns the listening socket, the set of open connections, the counters tests and the simulator read
# (`requests`, `requests_by_path`, `last_request`, ...), the RNG for jitter and error sampling, and
# the per-response unique ids. `dispatch` is the one entry point from the protocol: control requests
# (`/_mock/...`, see control.py) are answered here and not counted; everything else goes to the
# provider API (openai_api.py / anthropic_api.py). Runs on whatever loop calls `start_mock`
# (the CLI uses uvloop). Thread note: `close_idle_connections()` may be called from another thread
# (see threaded.py); everything else belongs to the loop's thread.

from __future__ import annotations

import asyncio
import os
import random
import ssl as ssl_module
import threading
from collections import deque
from typing import Any, Self

from . import control
from .anthropic_api import AnthropicApi
from .config import MockConfig
from .openai_api import OpenAIApi
from .protocol import MockProtocol
from .provider import ProviderApi
from .wire import Reply, Request

HISTORY = 256  # requests kept in `MockServer.history`


class MockServer:
    """A mock provider listening on `host:port`. Create it with `start_mock`.

    `config` may be changed at any time (the next request sees it). Counters: `requests` and
    `requests_by_path` (API requests by path, control requests excluded), `responses_by_status`,
    `errors_injected`, `connections_opened`, `open_connections`, `client_disconnects` (a client went
    away while its reply was still being written), `streams_aborted` (by `stream_abort_after`).
    `last_request` and `history` hold the parsed `Request`s as the provider saw them.
    """

    def __init__(self, config: MockConfig, loop: asyncio.AbstractEventLoop, ssl: ssl_module.SSLContext | None) -> None:
        self.config = config
        self.loop = loop
        self.ssl = ssl
        self.rng = random.Random(config.seed)
        self.api: ProviderApi = (OpenAIApi if config.kind == "openai" else AnthropicApi)(config, self.rng)
        self.host = ""
        self.port = 0
        # counters
        self.requests = 0
        self.requests_by_path: dict[str, int] = {}
        self.responses_by_status: dict[int, int] = {}
        self.connections_opened = 0
        self.client_disconnects = 0
        self.streams_aborted = 0
        self.last_request: Request | None = None
        self.history: deque[Request] = deque(maxlen=HISTORY)
        # internals
        self._connections: set[MockProtocol] = set()
        self._server: asyncio.base_events.Server | None = None
        self._seq = 0
        self._uid_prefix = os.urandom(4).hex().encode()
        self._thread_id = threading.get_ident()
        self._all_closed: asyncio.Future[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def _start(self, host: str, port: int) -> None:
        self._server = await self.loop.create_server(
            lambda: MockProtocol(self), host, port, ssl=self.ssl, backlog=1024, reuse_address=True
        )
        sockname = self._server.sockets[0].getsockname()
        self.host, self.port = sockname[0], sockname[1]
        self._thread_id = threading.get_ident()

    async def close(self) -> None:
        """Stop listening, close every connection and wait until they are gone (at most 5 s)."""
        server = self._server
        if server is None:
            return
        self._server = None
        server.close()
        for conn in list(self._connections):
            conn.close()
        if self._connections:
            self._all_closed = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._all_closed), 5.0)
            except TimeoutError:
                pass
        await server.wait_closed()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- addresses ---------------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """`host:port` (IPv6 hosts in brackets)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        """The root URL, e.g. `http://127.0.0.1:PORT` (the Anthropic SDK's `base_url`)."""
        return f"{'https' if self.ssl is not None else 'http'}://{self.address}"

    @property
    def base_url(self) -> str:
        """`url + "/v1"` (the OpenAI SDK's `base_url`)."""
        return self.url + "/v1"

    # -- called by MockProtocol --------------------------------------------------------------------

    def dispatch(self, req: Request) -> Reply:
        """Count the request and render its reply template."""
        if req.path.startswith("/_mock/"):
            return control.handle(self, req)
        self.requests += 1
        by_path = self.requests_by_path
        by_path[req.path] = by_path.get(req.path, 0) + 1
        self.last_request = req
        self.history.append(req)
        reply = self.api.handle(req)
        by_status = self.responses_by_status
        by_status[reply.status] = by_status.get(reply.status, 0) + 1
        return reply

    def next_uid(self) -> bytes:
        """A fresh 24-character id for one response (request id, message and call ids)."""
        self._seq += 1
        return b"%s%016x" % (self._uid_prefix, self._seq)

    def _connection_made(self, conn: MockProtocol) -> None:
        self._connections.add(conn)
        self.connections_opened += 1

    def _connection_lost(self, conn: MockProtocol) -> None:
        self._connections.discard(conn)
        done = self._all_closed
        if not self._connections and done is not None and not done.done():
            done.set_result(None)

    # -- control -----------------------------------------------------------------------------------

    @property
    def open_connections(self) -> int:
        """Connections currently open."""
        return len(self._connections)

    @property
    def errors_injected(self) -> int:
        """Requests answered with an injected error (`error_rate`)."""
        return self.api.errors_injected

    def apply_config(self, changes: dict[str, Any]) -> None:
        """Validate and apply setting changes (`ValueError` if bad); a new `seed` reseeds the RNG."""
        if "kind" in changes and changes["kind"] != self.config.kind:
            raise ValueError("'kind' cannot change while the mock runs")
        self.config.update(changes)
        if "seed" in changes:
            self.rng.seed(self.config.seed)

    def reset_stats(self) -> None:
        """Zero every counter and forget recorded requests (open connections stay open)."""
        self.requests = 0
        self.requests_by_path = {}
        self.responses_by_status = {}
        self.connections_opened = len(self._connections)
        self.client_disconnects = 0
        self.streams_aborted = 0
        self.api.errors_injected = 0
        self.last_request = None
        self.history.clear()

    def stats(self) -> dict[str, Any]:
        """Counters and settings as a JSON-ready dict (what `GET /_mock/stats` returns)."""
        return {
            "kind": self.config.kind,
            "address": self.address,
            "requests": self.requests,
            "requests_by_path": dict(self.requests_by_path),
            "responses_by_status": {str(k): v for k, v in sorted(self.responses_by_status.items())},
            "errors_injected": self.errors_injected,
            "connections_opened": self.connections_opened,
            "open_connections": self.open_connections,
            "client_disconnects": self.client_disconnects,
            "streams_aborted": self.streams_aborted,
            "cache_entries": self.api.cache_entries,
            "config": self.config.to_dict(),
        }

    def close_idle_connections(self) -> int:
        """Close every keep-alive connection that is between requests; returns how many.

        This is what a provider does to an idle pooled connection. Callable from any thread.
        """
        if threading.get_ident() == self._thread_id:
            return self._close_idle()
        return asyncio.run_coroutine_threadsafe(self._aclose_idle(), self.loop).result(10.0)

    async def _aclose_idle(self) -> int:
        return self._close_idle()

    def _close_idle(self) -> int:
        idle = [c for c in self._connections if c.is_idle]
        for conn in idle:
            conn.close()
        return len(idle)

    def __repr__(self) -> str:
        return (
            f"<MockServer {self.config.kind} {self.url} requests={self.requests} "
            f"open={self.open_connections} opened={self.connections_opened}>"
        )


async def start_mock(
    config: MockConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    ssl: ssl_module.SSLContext | None = None,
) -> MockServer:
    """Start a mock provider on the running loop and return once it is listening.

    `port=0` binds an ephemeral port; read it back from `.port`. `config.kind` picks the API
    (`"openai"` or `"anthropic"`); `ssl` serves HTTPS.
    """
    config = config if config is not None else MockConfig()
    config.validate()
    server = MockServer(config, asyncio.get_running_loop(), ssl)
    await server._start(host, port)
    return server
