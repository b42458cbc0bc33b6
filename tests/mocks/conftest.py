# Fixtures for the tests of the mock providers (`mocks/`); plain helpers live in mock_testing.py.
#
# Mocks run in a background thread (`MockThread`) so the synchronous SDKs and blocking sockets can
# talk to them; `MockThread.stop()` fails the test if the mock's loop logged any exception.

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme

from mocks import MockConfig, MockServer, MockThread


@pytest.fixture(params=["uvloop", "asyncio"])
def loop_name(request: pytest.FixtureRequest) -> str:
    """Run the test against a mock on each event loop implementation."""
    return str(request.param)


@pytest.fixture
def start() -> Iterator[Callable[..., MockServer]]:
    """`start(**config_fields) -> MockServer`, stopped (and checked for loop errors) after the test."""
    threads: list[MockThread] = []

    def _start(*, use_uvloop: bool = True, ssl_ctx: ssl.SSLContext | None = None, **fields: Any) -> MockServer:
        thread = MockThread(MockConfig(**fields), ssl=ssl_ctx, use_uvloop=use_uvloop)
        threads.append(thread)
        return thread.start()

    yield _start
    failures = []
    for thread in threads:
        try:
            thread.stop()
        except AssertionError as exc:
            failures.append(str(exc))
    assert not failures, failures


@pytest.fixture
def openai_mock(start: Callable[..., MockServer]) -> MockServer:
    return start(kind="openai")


@pytest.fixture
def anthropic_mock(start: Callable[..., MockServer]) -> MockServer:
    return start(kind="anthropic")


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def server_ssl(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ctx


@pytest.fixture(scope="session")
def client_ssl(ca: trustme.CA) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx
