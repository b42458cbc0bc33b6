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


def make_gateway_with(table: dict[str, Any]) -> tuple[Gateway, FakeLoop]:
    """A gateway on a fake loop for a whole config table of the test's own."""
    table = {**table, "server": {"listen": "127.0.0.1:0", **table.get("server", {})}}
    loop = FakeLoop()
    return Gateway(config.from_table(table, env={}), loop), loop  # type: ignore[arg-type]


def at_rest_problems(gateway: Gateway) -> list[str]:
    """What a gateway on a fake loop still holds once its requests are over (see tests/harness.py)."""
    from tests.harness import _cache_leaders, _pools_busy, _router_busy, _unsettled_keys

    return [*_router_busy(gateway), *_pools_busy(gateway), *_cache_leaders(gateway), *_unsettled_keys(gateway)]


# Upstream connections and pools without a gateway: a recording handler and a scripted connect


def make_provider(**overrides: Any) -> config.ProviderSettings:
    """One `local` provider's settings, with `[[providers]]` keys overridden."""
    provider = {"name": "p", "kind": "local", "base_url": "http://127.0.0.1:9/v1", **overrides}
    table = {
        "server": {"listen": "127.0.0.1:0"},
        "providers": [provider],
        "models": [{"name": "m", "routes": [{"provider": "p", "model": "up"}]}],
    }
    return config.from_table(table, env={}).providers[0]


def make_route(provider: config.ProviderSettings | None = None) -> config.Route:
    """A route on `provider` (a fresh default one when not given)."""
    provider = provider or make_provider()
    return config.Route(
        id=0, model_id=0, model="m", provider=provider, upstream_model="up", upstream_model_json=b'"up"'
    )


class RecordingHandler:
    """An `upstream.ResponseHandler` that records each call as a tuple, first item the call's name.

    `raise_on[name]` makes that call raise after recording. A raw head without framing is marked
    close-delimited, as the relay does."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.raise_on: dict[str, BaseException] = {}

    def _record(self, name: str, *args: Any) -> None:
        self.events.append((name, *args))
        exc = self.raise_on.get(name)
        if exc is not None:
            raise exc

    def names(self) -> list[str]:
        return [event[0] for event in self.events]

    def of(self, name: str) -> list[tuple[Any, ...]]:
        return [event for event in self.events if event[0] == name]

    def on_upstream_head(self, owner: Any, conn: UpstreamProtocol, head: bytes, rest: bytes) -> None:
        lower = head.lower()
        conn.close_delimited = b"\r\ncontent-length:" not in lower and b"\r\ntransfer-encoding:" not in lower
        self._record("head", owner, head, rest)

    def on_upstream_data(self, owner: Any, data: bytes, last: bool) -> None:
        self._record("data", owner, data, last)

    def on_upstream_done(self, owner: Any, conn: UpstreamProtocol, reusable: bool) -> None:
        self._record("done", owner, reusable)

    def on_upstream_error(self, owner: Any, conn: UpstreamProtocol, exc: Exception) -> None:
        self._record("error", owner, exc)

    def on_decoded_head(self, owner: Any, conn: UpstreamProtocol) -> None:
        self._record("decoded_head", owner, conn.status)

    def on_decoded_body(self, owner: Any, conn: UpstreamProtocol, data: bytes) -> None:
        self._record("decoded_body", owner, data)

    def on_decoded_read(self, owner: Any, conn: UpstreamProtocol) -> None:
        self._record("decoded_read", owner)

    def on_connected(self, owner: Any, conn: UpstreamProtocol, route: Any) -> None:
        self._record("connected", owner, conn, route)

    def on_connect_failed(self, owner: Any, route: Any, exc: Exception) -> None:
        self._record("connect_failed", owner, route, exc)

    def on_crash(self, owner: Any, exc: BaseException, conn: UpstreamProtocol | None) -> None:
        self._record("crash", owner, exc, conn)


class FakeOwner:
    """An `upstream.ConnectionOwner` (a pool's part a connection sees) that records what it is told."""

    def __init__(self, provider: config.ProviderSettings | None = None, loop: FakeLoop | None = None) -> None:
        self.provider = provider or make_provider()
        self.loop = loop or FakeLoop()
        self.handler = RecordingHandler()
        self.request_prefixes: dict[str, bytes] = {}
        self.released: list[UpstreamProtocol] = []
        self.discarded: list[UpstreamProtocol] = []

    def release(self, conn: UpstreamProtocol) -> None:
        self.released.append(conn)

    def discard(self, conn: UpstreamProtocol) -> None:
        self.discarded.append(conn)


def connected(owner: Any) -> tuple[UpstreamProtocol, FakeTransport]:
    """A connection of `owner`'s, established on a fake transport."""
    conn = UpstreamProtocol(owner)
    transport = FakeTransport(owner.loop, conn)
    conn.connection_made(transport)  # type: ignore[arg-type]
    return conn, transport


def splits(data: bytes) -> list[list[bytes]]:
    """`data` as it may arrive: whole, a byte at a time, and in two pieces at every boundary."""
    ways = [[data], [data[i : i + 1] for i in range(len(data))]]
    ways += [[data[:i], data[i:]] for i in range(1, len(data))]
    return ways


class Waiting:
    """A `pool.Waiter`: what the pool reads of an exchange waiting for a connection."""

    def __init__(self) -> None:
        self.done = False
        self.t_waited = 0.0


class DoneTask:
    """What `Pool._task_done` reads of a finished connect task."""

    def __init__(self, exc: BaseException | None = None, cancelled: bool = False) -> None:
        self._exc = exc
        self._cancelled = cancelled

    def cancelled(self) -> bool:
        return self._cancelled

    def exception(self) -> BaseException | None:
        return self._exc


class ConnectingLoop(FakeLoop):
    """A fake loop whose `create_connection` follows a script, and whose tasks are kept to be run.

    `outcomes` holds, per connect, an exception to raise, "ok" for a connection that stays up, or
    "closed" for one the provider closes at once. Run the kept coroutines with `run_connects`."""

    def __init__(self, outcomes: list[BaseException | str]) -> None:
        super().__init__()
        self.outcomes = list(outcomes)
        self.coros: list[Any] = []
        self.transports: list[FakeTransport] = []
        self.dialled: list[tuple[str, int]] = []

    def create_task(self, coro: Any) -> Any:
        self.coros.append(coro)
        task = _KeptTask()
        self.tasks.append(task)
        return task

    async def create_connection(self, factory: Any, host: str, port: int, **_: Any) -> tuple[FakeTransport, Any]:
        self.dialled.append((host, port))
        outcome = self.outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        protocol = factory()
        transport = FakeTransport(self, protocol)
        protocol.connection_made(transport)
        self.transports.append(transport)
        if outcome == "closed":
            transport.close()
            self.run_ready()
        return transport, protocol

    def run_connects(self) -> list[BaseException | None]:
        """Run every kept connect coroutine to its end; what each raised (None: returned)."""
        import asyncio

        results: list[BaseException | None] = []
        while self.coros:
            coro = self.coros.pop(0)

            async def run(c: Any = coro) -> None:
                await c

            try:
                asyncio.run(run())
                results.append(None)
            except BaseException as exc:  # noqa: BLE001 - the test asserts on it
                results.append(exc)
        return results


class _KeptTask:
    def __init__(self) -> None:
        self.callbacks: list[Any] = []
        self.cancels = 0

    def add_done_callback(self, fn: Any) -> None:
        self.callbacks.append(fn)

    def cancel(self) -> None:
        self.cancels += 1


class RedisServer:
    """A real redis-server on a unix socket in `tmp` (no TCP port to collide on), for the tiers that use it."""

    def __init__(self, tmp: Any) -> None:
        self.sock = tmp / "redis.sock"
        self.proc: Any = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> None:
        import subprocess

        from tests.harness import wait_for

        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.sock), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert wait_for(self.sock.exists, timeout=10), "redis-server did not start"

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self.sock.exists():
            self.sock.unlink()


# The gateway as a process (server and workers), started and stopped by pid


class GatewayProcess:
    """`python -m proxy` with the given arguments; `port` is read from its first line."""

    def __init__(self, args: list[str]) -> None:
        import subprocess
        import sys

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "proxy", "--log-level", "warning", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode()
        assert "listening on" in line, line + self.proc.stderr.read().decode() if self.proc.stderr else line
        self.port = int(line.rsplit(":", 1)[1])

    def get(self, path: str) -> tuple[int, bytes]:
        import http.client

        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            return answer.status, answer.read()
        finally:
            connection.close()

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Make sure it is gone (only this process, by its pid)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class SwitchingTransport(FakeTransport):
    """A fake transport that can change hands (`set_protocol`), with an optional ALPN answer."""

    def __init__(self, loop: FakeLoop, protocol: Any = None, alpn: str | None = None) -> None:
        super().__init__(loop, protocol)
        self.alpn = alpn

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol

    def get_protocol(self) -> Any:
        return self.protocol

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object" and self.alpn is not None:
            alpn = self.alpn

            class _SSLObject:
                def selected_alpn_protocol(self) -> str:
                    return alpn

            return _SSLObject()
        return default
