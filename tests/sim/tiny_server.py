# tests/sim/tiny_server.py: a scriptable HTTP/1.1 server for load-generator tests.
#
# The path chooses the behaviour, so one server covers every case:
#   /ok              200, JSON, content-length
#   /sse             200, chunked event stream ending in `data: [DONE]` split across two chunks
#   /sse-cut         200, chunked event stream that ends without `data: [DONE]`
#   /status/NNN      that status, JSON body
#   /close           200 with `connection: close`, then closes
#   /reset           aborts the connection without answering
#   /hang            never answers
#   /delay/MS        200 after MS milliseconds (one request at a time per connection)
#   /garbage         bytes that are not HTTP
# It records arrival times (perf_counter), paths and the number of connections accepted.
from __future__ import annotations

import asyncio
import threading
from time import perf_counter

import httptools

_OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}"
_SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ntransfer-encoding: chunked\r\n\r\n"


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


_SSE_EVENTS = b"".join(_chunk(b'data: {"n":%d}\n\n' % i) for i in range(3))
_SSE_DONE = _SSE_HEAD + _SSE_EVENTS + _chunk(b"data: [DO") + _chunk(b"NE]\n\n") + b"0\r\n\r\n"
_SSE_CUT = _SSE_HEAD + _SSE_EVENTS + b"0\r\n\r\n"


class Recorder:
    """What the server saw."""

    def __init__(self) -> None:
        self.connections = 0
        self.arrivals: list[float] = []
        self.paths: list[bytes] = []


class _Proto(asyncio.Protocol):
    __slots__ = ("rec", "loop", "transport", "parser", "url")

    def __init__(self, rec: Recorder, loop: asyncio.AbstractEventLoop) -> None:
        self.rec = rec
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.rec.connections += 1

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()  # type: ignore[union-attr]

    def on_message_begin(self) -> None:
        self.url = b""

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_message_complete(self) -> None:
        self.rec.arrivals.append(perf_counter())
        self.rec.paths.append(self.url)
        self.respond(self.url)

    def respond(self, url: bytes) -> None:
        t = self.transport
        assert t is not None
        if t.is_closing():
            return
        if url == b"/ok":
            t.write(_OK)
        elif url == b"/sse":
            t.write(_SSE_DONE)
        elif url == b"/sse-cut":
            t.write(_SSE_CUT)
        elif url.startswith(b"/status/"):
            code = int(url[8:])
            t.write(b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}" % code)
        elif url == b"/close":
            t.write(_OK.replace(b"\r\n\r\n", b"\r\nconnection: close\r\n\r\n", 1))
            t.close()
        elif url == b"/reset":
            t.abort()
        elif url == b"/hang":
            pass
        elif url.startswith(b"/delay/"):
            self.loop.call_later(int(url[7:]) / 1000, self._late_ok)
        elif url == b"/garbage":
            t.write(b"NOT HTTP AT ALL\r\n\r\n")
        else:
            t.write(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n")

    def _late_ok(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_OK)


async def start(rec: Recorder | None = None) -> tuple[asyncio.AbstractServer, int, Recorder]:
    """Start the server on 127.0.0.1 port 0 in the running loop; return (server, port, recorder)."""
    rec = rec or Recorder()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Proto(rec, loop), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port, rec


class ThreadedServer:
    """The same server on its own loop in a background thread (for load in a child process)."""

    def __init__(self) -> None:
        self.rec = Recorder()
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.AbstractServer | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def boot() -> None:
            self._server, self.port, _ = await start(self.rec)

        self._loop.run_until_complete(boot())
        self._ready.set()
        self._loop.run_forever()
        self._server.close()  # type: ignore[union-attr]
        self._loop.run_until_complete(self._server.wait_closed())  # type: ignore[union-attr]
        self._loop.close()

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
