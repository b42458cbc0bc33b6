# A mock provider on its own event loop in a background thread, for synchronous tests.
#
# Synchronous SDK clients block the calling thread, so a mock on the same loop would never answer.
# `MockThread` runs `start_mock` on a fresh loop (uvloop by default) in a daemon thread and hands back
# the `MockServer`. Reading counters and assigning `server.config` fields from the test thread is
# safe (plain attribute access); `server.close_idle_connections()` hops to the loop thread by itself.
# Loop exceptions (bugs in the mock) are recorded in `errors` and re-raised by `stop()`.

from __future__ import annotations

import asyncio
import ssl as ssl_module
import threading
from typing import Any

from .config import MockConfig
from .server import MockServer, start_mock


class MockThread:
    """Run a mock provider in a background thread: `with MockThread(MockConfig()) as server: ...`."""

    def __init__(
        self,
        config: MockConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl: ssl_module.SSLContext | None = None,
        use_uvloop: bool = True,
    ) -> None:
        self.config = config if config is not None else MockConfig()
        self.errors: list[dict[str, Any]] = []
        self._host = host
        self._port = port
        self._ssl = ssl
        self._use_uvloop = use_uvloop
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: MockServer | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None

    @property
    def server(self) -> MockServer:
        """The running mock (after `start`)."""
        assert self._server is not None, "MockThread not started"
        return self._server

    def start(self) -> MockServer:
        """Start the loop thread and return once the mock listens."""
        self._thread = threading.Thread(target=self._run, name="mock-provider", daemon=True)
        self._thread.start()
        self._started.wait(10.0)
        if self._start_error is not None:
            raise self._start_error
        return self.server

    def stop(self) -> None:
        """Close the mock, stop the loop and join the thread. Raises if the loop saw an exception."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if self._server is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(self._server.close(), loop).result(10.0)
            loop.call_soon_threadsafe(loop.stop)
        thread.join(10.0)
        self._loop = self._thread = None
        if self.errors:
            raise AssertionError(f"mock provider loop errors: {self.errors}")

    def __enter__(self) -> MockServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop: asyncio.AbstractEventLoop
        if self._use_uvloop:
            import uvloop

            loop = uvloop.new_event_loop()
        else:
            loop = asyncio.new_event_loop()
        self._loop = loop
        loop.set_exception_handler(lambda _loop, context: self.errors.append(context))
        try:
            try:
                self._server = loop.run_until_complete(start_mock(self.config, self._host, self._port, self._ssl))
            except BaseException as exc:  # noqa: BLE001 (handed to start(), never leave it waiting)
                self._start_error = exc
                return
            finally:
                self._started.set()
            loop.run_forever()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
