"""End-to-end plumbing: an event loop in a background thread hosting mocks and gateways.

Servers bind port 0 and report the address they got; tests wait on that, never on a sleep.
Clients (the official SDKs, raw sockets, curl) run in the test's own thread, so every
request crosses a real socket. Exceptions that reach the loop's handler are recorded, and
the fixture fails the test if there are any.
"""

from __future__ import annotations

import asyncio
import gc
import http.client
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import orjson

from proxy import config
from proxy.server import Gateway, new_event_loop

T = TypeVar("T")


class LoopThread:
    """Runs one event loop (uvloop or asyncio) in a daemon thread."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.loop = new_event_loop(kind)
        self.errors: list[dict[str, Any]] = []
        self.loop.set_exception_handler(lambda loop, context: self.errors.append(context))
        self.thread = threading.Thread(target=self.loop.run_forever, name=f"io-{kind}", daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        """Run a coroutine on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 15.0) -> T:
        """Run a plain function on the loop thread (loop state is not thread-safe)."""

        async def wrapper() -> T:
            return fn()

        return self.run(wrapper(), timeout)

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        try:
            self.run(cancel_all(), timeout=5)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(5)
            self.loop.close()


class RunningGateway:
    """A gateway serving on port 0 inside a LoopThread."""

    def __init__(self, io: LoopThread, gateway: Gateway, host: str, port: int) -> None:
        self.io = io
        self.gateway = gateway
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base(self) -> str:
        return f"{self.url}/v1"

    def stats(self) -> dict[str, Any]:
        """`GET /stats`, over a real connection."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=5)
        try:
            connection.request("GET", "/stats")
            return orjson.loads(connection.getresponse().read())  # type: ignore[no-any-return]
        finally:
            connection.close()

    def pool(self, provider: int = 0) -> Any:
        return self.gateway.pools[provider]

    def stop(self) -> None:
        self.io.run(self.gateway.stop(1.0))


def start_gateway(io: LoopThread, table: dict[str, Any], env: dict[str, str] | None = None) -> RunningGateway:
    """Validate `table` as a config file would be, then serve it on 127.0.0.1:0."""
    table = dict(table)
    table["server"] = {"listen": "127.0.0.1:0", **table.get("server", {})}
    settings = config.from_table(table, env or {})

    async def start() -> RunningGateway:
        gateway = Gateway(settings, asyncio.get_running_loop())
        host, port = await gateway.start()
        return RunningGateway(io, gateway, host, port)

    return io.run(start())


def raw_exchange(port: int, data: bytes, *, read_until_close: bool = False, timeout: float = 5.0) -> bytes:
    """Send bytes on a fresh socket and return what comes back (until close, or one quiet moment)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        if read_until_close:
            while True:
                piece = sock.recv(65536)
                if not piece:
                    break
                chunks.append(piece)
        else:
            chunks.append(sock.recv(65536))
        return b"".join(chunks)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll a condition that another thread will make true (for state, not for startup)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


AsyncFactory = Callable[..., Awaitable[Any]]


# At rest: what a gateway must have given back once its requests are over. One helper per
# invariant, each reading today's structures (run on the loop thread); adapt them when fields move.

UNRETRIEVED = "Task exception was never retrieved"


class _AsyncioLog(logging.Handler):
    """Keeps the `asyncio` logger's "never retrieved" records (loops that have no handler of ours log them)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if UNRETRIEVED in record.getMessage():
            self.messages.append(record.getMessage())


ASYNCIO_LOG = _AsyncioLog()
logging.getLogger("asyncio").addHandler(ASYNCIO_LOG)


def _router_busy(gateway: Gateway) -> list[str]:
    """Route and provider in-flight counts, and half-open probe slots, are all given back."""
    table = gateway.gen.router.table
    problems = [f"route {r} in_flight={table.in_flight[r]}" for r in range(table.n) if table.in_flight[r]]
    problems += [f"route {r} probes_out={table.probes_out[r]}" for r in range(table.n) if table.probes_out[r]]
    problems += [f"provider {p} in_flight={n}" for p, n in enumerate(table.provider_in_flight) if n]
    return problems


def _pools_busy(gateway: Gateway) -> list[str]:
    """No pooled upstream connection is checked out (open = idle + connecting), connecting, or waited for."""
    problems = []
    for p, pool in enumerate(gateway.gen.pools):
        connecting = len(pool.tasks)
        checked_out = pool.open - len(pool.idle) - connecting
        if checked_out:
            problems.append(f"pool {p}: {checked_out} connection(s) checked out, of {pool.open} open")
        if connecting:
            problems.append(f"pool {p}: {connecting} connect task(s) still running")
        if pool.waiters:
            problems.append(f"pool {p}: {len(pool.waiters)} request(s) waiting for a connection")
    return problems


def _cache_leaders(gateway: Gateway) -> list[str]:
    """No cache leader is left in `cache.inflight` (later identical requests would follow it forever)."""
    if gateway.cache is None or not gateway.cache.inflight:
        return []
    return [f"cache.inflight holds {len(gateway.cache.inflight)} leader(s)"]


def _unsettled_keys(gateway: Gateway) -> list[str]:
    """Every admitted request of every gateway key was charged exactly once (admitted - charged = in flight)."""
    return [
        f"key {state.name!r}: admitted={state.admitted} charged={state.charged}"
        for state in gateway.gen.keys.states
        if state.admitted != state.charged
    ]


def _unretrieved(io: LoopThread) -> list[str]:
    """Nothing was logged as "Task exception was never retrieved" (collect first: such tasks sit in cycles)."""
    gc.collect()
    found = [str(c.get("message")) for c in io.errors if UNRETRIEVED in str(c.get("message"))]
    return [*found, *ASYNCIO_LOG.messages]


def assert_at_rest(gw: RunningGateway, timeout: float = 2.0) -> None:
    """The gateway has given back everything its requests held. Polls up to `timeout` (a last
    answer may still be finishing when the client returns), then names every invariant that is off."""
    gateway = gw.gateway
    problems: list[str] = []

    def settled() -> bool:
        problems[:] = gw.io.call(
            lambda: [*_router_busy(gateway), *_pools_busy(gateway), *_cache_leaders(gateway), *_unsettled_keys(gateway)]
        )
        return not problems

    wait_for(settled, timeout)
    problems += gw.io.call(lambda: _unretrieved(gw.io))
    assert not problems, "the gateway is not at rest: " + "; ".join(problems)


# A provider played by the test, byte for byte


CLOSE = "close"  # step: close the connection (FIN)
ABORT = "abort"  # step: reset the connection (RST)
Step = bytes | asyncio.Event | str
Script = Callable[[int, bytes, bytes], list[Step]]


class Scripted:
    """Answers request number `n` (from 0, over all connections) with `script(n, head, body)`: bytes
    to write, events to wait for (set them with `io.call(event.set)`), CLOSE or ABORT. After the
    last step the connection stays open for the next request."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body) of every request read
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> Scripted:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                for step in self.script(len(self.requests) - 1, head, body):
                    if isinstance(step, asyncio.Event):
                        await step.wait()
                    elif step == CLOSE:
                        writer.close()
                        return
                    elif step == ABORT:
                        writer.transport.abort()
                        return
                    else:
                        assert isinstance(step, bytes)
                        writer.write(step)
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()


def event(io: LoopThread) -> asyncio.Event:
    """An event the scripted provider can wait on; set it with `io.call(ev.set)`."""

    async def make() -> asyncio.Event:
        return asyncio.Event()

    return io.run(make())
