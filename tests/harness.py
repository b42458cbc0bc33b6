"""End-to-end plumbing: an event loop in a background thread hosting mocks and gateways.

Servers bind port 0 and report the address they got; tests wait on that, never on a sleep.
Clients (the official SDKs, raw sockets, curl) run in the test's own thread, so every
request crosses a real socket. Exceptions that reach the loop's handler are recorded, and
the fixture fails the test if there are any.
"""

from __future__ import annotations

import asyncio
import http.client
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


def rest_problems(gateway: Gateway) -> list[str]:
    """What keeps a gateway from being at rest (run on its loop thread): in-flight counts, probe
    slots, checked-out or connecting upstream connections, waiters, cache leaders, key reservations."""
    problems = []
    table = gateway.gen.router.table
    for r in range(table.n):
        if table.in_flight[r]:
            problems.append(f"route {r} has in_flight={table.in_flight[r]}")
        if table.probes_out[r]:
            problems.append(f"route {r} has {table.probes_out[r]} half-open probe slot(s) taken")
    for p, count in enumerate(table.provider_in_flight):
        if count:
            problems.append(f"provider {p} has in_flight={count}")
    for pool in gateway.gen.pools:
        if pool.open != len(pool.idle) or pool.waiters or pool.tasks:
            problems.append(f"pool {pool!r}: connections checked out, connecting or waited for")
    if gateway.cache is not None and gateway.cache.inflight:
        problems.append(f"cache leaders still in flight: {len(gateway.cache.inflight)}")
    reserved = getattr(gateway.gen.keys, "reserved", None)
    if callable(reserved) and reserved():
        problems.append(f"gateway keys hold unsettled reservations: {reserved()}")
    return problems


def assert_at_rest(gw: RunningGateway, timeout: float = 2.0) -> None:
    """The gateway has settled everything its requests held (a last answer may still be finishing)."""
    problems: list[str] = []

    def settled() -> bool:
        problems[:] = gw.io.call(lambda: rest_problems(gw.gateway))
        return not problems

    wait_for(settled, timeout)
    assert not problems, "the gateway is not at rest: " + "; ".join(problems)
