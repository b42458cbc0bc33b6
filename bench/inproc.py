# bench/inproc.py: whole exchanges through the real gateway objects, in one process, with no sockets.
#
# A `Rig` is a Gateway on a hand-driven loop with one client connection and one pooled provider
# connection, both on transports that only count bytes. `exchange(i)` feeds request i into the
# DownstreamProtocol (parse -> pipeline -> cache lookup -> router -> pool -> upstream write), then the
# provider's response into the UpstreamProtocol (head -> relay -> done -> stats -> finish), and runs
# whatever was scheduled with call_soon. That is the gateway's whole per-request CPU path except the
# event loop and the kernel, with no network noise: the figure to optimise against, and the thing to
# profile (`python -m bench.inproc --profile`, or py-spy / valgrind --tool=callgrind around it).
# Requests are unique per index (the cache-miss path) unless `hit=True`.
from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from collections.abc import Callable
from typing import Any

import orjson

from proxy import config
from proxy.downstream import DownstreamProtocol
from proxy.server import Gateway
from proxy.upstream import UpstreamProtocol

UPSTREAM_JSON = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-upstream",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},'
    b'"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":19,"completion_tokens":9,"total_tokens":28}}'
)
UPSTREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: Thu, 01 Jan 2026 00:00:00 GMT\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nConnection: keep-alive\r\n\r\n" % len(UPSTREAM_JSON)
)
UPSTREAM_OK = UPSTREAM_HEAD + UPSTREAM_JSON
SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"


def sse_chunk(i: int) -> bytes:
    """One chunked SSE event of an OpenAI stream (token i)."""
    event = (b'data: {"id":"chatcmpl-b","object":"chat.completion.chunk","created":1700000000,"model":"m",'
             b'"choices":[{"index":0,"delta":{"content":"tok%d "},"finish_reason":null}]}\n\n' % i)  # fmt: skip
    return b"%x\r\n%b\r\n" % (len(event), event)


SSE_DONE = b"%x\r\n%b\r\n0\r\n\r\n" % (len(b"data: [DONE]\n\n"), b"data: [DONE]\n\n")

TABLE: dict[str, Any] = {
    "server": {"listen": "127.0.0.1:0"},
    "providers": [{"name": "static", "kind": "local", "base_url": "http://127.0.0.1:9/v1"}],
    "models": [{"name": "bench", "routes": [{"provider": "static", "model": "bench-upstream"}]}],
}


class _Handle:
    __slots__ = ("cancelled", "when_")

    def __init__(self, when: float) -> None:
        self.when_ = when
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def when(self) -> float:
        return self.when_


class BenchLoop:
    """Just enough of an event loop: a clock we move, timers never fire, call_soon runs on `run_ready()`."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.ready: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> _Handle:
        return _Handle(when)

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> _Handle:
        return _Handle(self.now + delay)

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> _Handle:
        self.ready.append((callback, args))
        return _Handle(self.now)

    def create_task(self, coro: Any) -> Any:
        coro.close()
        raise RuntimeError("the in-process rig never connects: a connection was missing from the pool")

    def get_debug(self) -> bool:
        return False

    def run_ready(self) -> None:
        ready = self.ready
        while ready:
            callback, args = ready.pop(0)
            callback(*args)


class CountingTransport:
    """A transport that keeps only a byte count (and, when asked, the last write)."""

    __slots__ = ("closed", "keep", "last", "written")

    def __init__(self, keep: bool = False) -> None:
        self.written = 0
        self.keep = keep
        self.last = b""
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written += len(data)
        if self.keep:
            self.last = bytes(data)

    def writelines(self, items: Any) -> None:
        for item in items:
            self.write(item)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def request(body: bytes) -> bytes:
    """A client request as an OpenAI SDK sends it (a few ordinary headers), keep-alive."""
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: llm-edge.internal:8080\r\nAccept-Encoding: gzip, deflate\r\n"
        b"Connection: keep-alive\r\nAccept: application/json\r\nContent-Type: application/json\r\n"
        b"User-Agent: OpenAI/Python 1.51.0\r\nAuthorization: Bearer sk-client-0000000000000000\r\n"
        b"Content-Length: %d\r\n\r\n%b" % (len(body), body)
    )


def chat_body(i: int, size: int = 1024, stream: bool = False, hit: bool = False) -> bytes:
    """A chat request of about `size` bytes, unique per `i` unless `hit`."""
    user = "Question cached: which novel next?" if hit else f"Question {i:08d}: which novel next?"
    doc: dict[str, Any] = {"model": "bench", "temperature": 0, "max_tokens": 64}
    if stream:
        doc["stream"] = True
    filler = "You are a helpful assistant for an online bookshop. " * (max(0, size - 150) // 52 + 1)
    doc["messages"] = [{"role": "system", "content": filler[: max(0, size - 150)]}, {"role": "user", "content": user}]
    return orjson.dumps(doc)


class Rig:
    """One gateway, one client connection, one idle provider connection; see the module header."""

    def __init__(self, table: dict[str, Any] | None = None, keep: bool = False) -> None:
        self.loop = BenchLoop()
        self.gateway = Gateway(config.from_table(table or TABLE, env={}), self.loop)  # type: ignore[arg-type]
        self.client = DownstreamProtocol(self.gateway)
        self.client_out = CountingTransport(keep)
        self.client.connection_made(self.client_out)  # type: ignore[arg-type]
        pool = self.gateway.pools[0]
        self.conn = UpstreamProtocol(pool)
        self.upstream_out = CountingTransport(keep)
        self.conn.connection_made(self.upstream_out)  # type: ignore[arg-type]
        pool.open += 1
        pool.release(self.conn)

    def exchange(self, req: bytes, response: tuple[bytes, ...] = (UPSTREAM_OK,)) -> None:
        """One whole exchange: the request in, the provider's response (in these reads) in, the reply out."""
        self.loop.now += 0.001
        self.client.data_received(req)
        if self.client.active is not None:  # answered from the cache otherwise
            for data in response:
                self.conn.data_received(data)
        self.loop.run_ready()

    def check(self, req: bytes, response: tuple[bytes, ...] = (UPSTREAM_OK,)) -> bytes:
        """Run one exchange and return what the client got (the rig must be built with keep=True)."""
        before = self.client_out.written
        self.exchange(req, response)
        if self.client_out.written == before or not self.client_out.last:
            raise AssertionError("the client got no response")
        return self.client_out.last


def request_maker(size: int = 1024, stream: bool = False, hit: bool = False) -> Callable[[int], bytes]:
    """i -> request i: unique per i (a fixed-width counter spliced into one template) unless `hit`.

    Building one costs a concatenation (about 0.1 µs at 1 KiB, 3 µs at 50 KiB), never a JSON encode,
    and requests never repeat, so a cache can never answer them (the miss path).
    """
    if hit:
        fixed = request(chat_body(0, size, stream, hit=True))
        return lambda i: fixed
    body = chat_body(0, size, stream)
    head = request(body)[: -len(body)]
    before, _, after = body.partition(b"Question 00000000")
    before = head + before + b"Question "
    return lambda i: b"%b%08d%b" % (before, i % 100_000_000, after)


STREAM_RESPONSE = (SSE_HEAD + sse_chunk(0), *(sse_chunk(i) for i in range(1, 16)), SSE_DONE)
VARIANTS: dict[str, tuple[dict[str, bool], tuple[bytes, ...]]] = {
    "json-miss": ({}, (UPSTREAM_OK,)),
    "json-hit": ({"hit": True}, (UPSTREAM_OK,)),
    "sse-miss-16-chunks": ({"stream": True}, STREAM_RESPONSE),
}


def measure(variant: str, seconds: float = 2.0, size: int = 1024) -> float:
    """Mean CPU µs per exchange of a variant over about `seconds` of CPU time.

    CPU time (time.process_time), not wall time: on a shared machine the wall clock also counts the
    time other processes held the core.
    """
    options, response = VARIANTS[variant]
    make = request_maker(size, **options)
    rig = Rig()
    for i in range(200):
        rig.exchange(make(i), response)
    done, i = 0, 200
    t0 = time.process_time()
    deadline = t0 + seconds
    while True:
        for _ in range(500):
            rig.exchange(make(i), response)
            i += 1
        done += 500
        now = time.process_time()
        if now >= deadline:
            return (now - t0) / done * 1e6


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.inproc [--profile VARIANT]`: µs per whole exchange, in-process."""
    p = argparse.ArgumentParser(prog="python -m bench.inproc", description=__doc__)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--body-bytes", type=int, default=1024)
    p.add_argument("--profile", metavar="VARIANT", help="cProfile one variant and print the top functions")
    a = p.parse_args(argv)
    if a.profile:
        options, response = VARIANTS[a.profile]
        make = request_maker(a.body_bytes, **options)
        rig = Rig()
        prof = cProfile.Profile()
        prof.enable()
        for k in range(20000):
            rig.exchange(make(k), response)
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        return 0
    for variant in VARIANTS:
        print(f"{variant:<20} {measure(variant, a.seconds, a.body_bytes):8.1f} µs of CPU per exchange")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
