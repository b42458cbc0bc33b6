"""Fixtures for end-to-end tests: mocks and gateways on real sockets, on both event loops."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mocks.config import MockConfig
from mocks.server import MockServer, start_mock
from tests.harness import ASYNCIO_LOG, LoopThread, RunningGateway, Script, Scripted, assert_at_rest, start_gateway


@pytest.fixture(autouse=True)
def close_sdk_clients(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Close every official-SDK client a test made, so their pooled sockets never outlive it."""
    import anthropic
    import openai

    made: list[Any] = []
    for cls in (openai.OpenAI, anthropic.Anthropic):
        original = cls.__init__

        def init(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> None:
            __original(self, *args, **kwargs)
            made.append(self)

        monkeypatch.setattr(cls, "__init__", init)
    yield
    for client in made:
        client.close()


@pytest.fixture(params=["uvloop", "asyncio"])
def io(request: pytest.FixtureRequest) -> Iterator[LoopThread]:
    """An event loop in a background thread; the test fails if anything reached its exception handler."""
    thread = LoopThread(request.param)
    yield thread
    errors = list(thread.errors)
    thread.stop()
    assert not errors, f"unhandled exceptions on the loop: {errors}"


@pytest.fixture
def io_uv() -> Iterator[LoopThread]:
    """Like `io`, on uvloop only (for slower scenarios where one loop is enough)."""
    thread = LoopThread("uvloop")
    yield thread
    errors = list(thread.errors)
    thread.stop()
    assert not errors, f"unhandled exceptions on the loop: {errors}"


MockFactory = Callable[..., MockServer]
GatewayFactory = Callable[..., RunningGateway]


def _mock_factory(io: LoopThread) -> Iterator[MockFactory]:
    started: list[MockServer] = []

    def make(ssl: Any = None, **options: Any) -> MockServer:
        server = io.run(start_mock(MockConfig(**options), ssl=ssl))
        started.append(server)
        return server

    yield make
    for server in started:
        io.run(server.close())


AtRest = Callable[[RunningGateway], None]
CALL_REPORT = pytest.StashKey[pytest.TestReport]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Keep the call phase's report, so the at-rest check knows whether the test itself passed."""
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT] = report
    return report


@pytest.fixture(autouse=True)
def at_rest(request: pytest.FixtureRequest) -> Iterator[AtRest]:
    """After every test, each gateway it started must be back at rest (`assert_at_rest`), checked by
    the gateway factories before they stop it. Not after a failed test (one error is enough), and
    not for tests marked `leaks_known`: known leaks on today's code, listed for the lead to fix."""
    ASYNCIO_LOG.messages.clear()
    spared = request.node.get_closest_marker("leaks_known") is not None

    def check(gw: RunningGateway) -> None:
        report = request.node.stash.get(CALL_REPORT, None)
        if not spared and report is not None and report.passed:
            assert_at_rest(gw)

    yield check


def _gateway_factory(io: LoopThread, at_rest: AtRest) -> Iterator[GatewayFactory]:
    started: list[RunningGateway] = []

    def make(table: dict[str, Any], env: dict[str, str] | None = None) -> RunningGateway:
        gateway = start_gateway(io, table, env)
        started.append(gateway)
        return gateway

    yield make
    try:
        for gateway in started:
            at_rest(gateway)  # before it stops: stopping would give everything back
    finally:
        for gateway in started:
            gateway.stop()


@pytest.fixture
def mock(io: LoopThread) -> Iterator[MockFactory]:
    yield from _mock_factory(io)


@pytest.fixture
def gateway(io: LoopThread, at_rest: AtRest) -> Iterator[GatewayFactory]:
    yield from _gateway_factory(io, at_rest)


ScriptedFactory = Callable[[Script], Scripted]


@pytest.fixture
def scripted(io: LoopThread) -> Iterator[ScriptedFactory]:
    """Providers played by the test byte for byte (`tests.harness.Scripted`), on the test's loop."""
    started: list[Scripted] = []

    def make(script: Script) -> Scripted:
        server = io.run(Scripted(script).start())
        started.append(server)
        return server

    yield make
    for server in started:
        io.run(server.close())


@pytest.fixture
def mock_uv(io_uv: LoopThread) -> Iterator[MockFactory]:
    yield from _mock_factory(io_uv)


@pytest.fixture
def gateway_uv(io_uv: LoopThread, at_rest: AtRest) -> Iterator[GatewayFactory]:
    yield from _gateway_factory(io_uv, at_rest)


class SDKClients:
    """The official SDKs' clients over one client protocol: HTTP/1.1, or HTTP/2 with prior knowledge
    (httpx's own h2 engine, as `http2=True` users get it). Every response is checked to have come
    over that protocol."""

    def __init__(self, protocol: str) -> None:
        self.protocol = protocol
        self.versions: list[str] = []
        self.http_clients: list[Any] = []

    def _http_client(self, timeout: Any = None) -> Any:
        if self.protocol == "http/1.1":
            return None  # the SDK's own default client
        import httpx2

        def record(response: Any) -> None:
            self.versions.append(response.http_version)

        options: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        client = httpx2.Client(http1=False, http2=True, event_hooks={"response": [record]}, **options)
        self.http_clients.append(client)
        return client

    def openai(self, base_url: str, **kwargs: Any) -> Any:
        import openai

        http_client = self._http_client(kwargs.get("timeout"))
        return openai.OpenAI(base_url=base_url, **kwargs, **({"http_client": http_client} if http_client else {}))

    def anthropic(self, base_url: str, **kwargs: Any) -> Any:
        import anthropic

        http_client = self._http_client(kwargs.get("timeout"))
        return anthropic.Anthropic(base_url=base_url, **kwargs, **({"http_client": http_client} if http_client else {}))

    def close(self) -> None:
        for client in self.http_clients:
            client.close()
        if self.protocol == "h2":
            assert set(self.versions) <= {"HTTP/2"}, f"an SDK request did not go over h2: {self.versions}"


@pytest.fixture(params=["http/1.1", "h2"])
def client_protocol(request: pytest.FixtureRequest) -> Iterator[SDKClients]:
    """SDK clients over HTTP/1.1 or HTTP/2: the end-to-end API tests run over both."""
    clients = SDKClients(request.param)
    yield clients
    clients.close()


def provider(name: str, server: MockServer, kind: str = "local", **extra: Any) -> dict[str, Any]:
    """A `[[providers]]` table pointing at a mock."""
    scheme = "https" if server.ssl else "http"
    host = "localhost" if server.ssl else "127.0.0.1"
    return {"name": name, "kind": kind, "base_url": f"{scheme}://{host}:{server.port}/v1", **extra}


def one_model(*providers: dict[str, Any], name: str = "fast", **model: Any) -> dict[str, Any]:
    """A config with `providers` and one model routed over them in order."""
    routes = [{"provider": p["name"], "model": f"{p['name']}-upstream-model"} for p in providers]
    return {"providers": list(providers), "models": [{"name": name, "routes": routes, **model}]}
