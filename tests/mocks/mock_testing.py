# Helpers for the tests of the mock providers: a loop runner that fails on loop exceptions, and a
# raw HTTP/1.1 client (request bytes, response reader) deliberately independent of the code under test.
# A uniquely named module (not conftest) so imports cannot pick up another directory's conftest.

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable, Coroutine
from typing import Any, BinaryIO

import uvloop

from mocks import MockServer


def run(coro_fn: Callable[[], Coroutine[Any, Any, Any]], *, use_uvloop: bool = True) -> Any:
    """Run `coro_fn()` on a fresh loop; fail if the loop's exception handler was called."""
    errors: list[dict[str, Any]] = []

    async def main() -> Any:
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        return await coro_fn()

    factory = uvloop.new_event_loop if use_uvloop else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        result = runner.run(main())
    assert not errors, errors
    return result


# -- raw HTTP/1.1 ----------------------------------------------------------------------------------


def connect(server: MockServer, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection((server.host, server.port), timeout=timeout)
    return sock


def request_bytes(method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> bytes:
    data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    lines = [f"{method} {path} HTTP/1.1", "host: mock"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines += ["content-type: application/json", f"content-length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


class RawResponse:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes, chunks: list[bytes]) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.chunks = chunks  # the HTTP chunks of a chunked body, as received

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k == name.lower()), None)

    def json(self) -> Any:
        return json.loads(self.body)


def read_response(f: BinaryIO) -> RawResponse:
    """Read one response from a buffered socket file (content-length or chunked body)."""
    status_line = f.readline()
    assert status_line.startswith(b"HTTP/1.1 "), status_line
    status = int(status_line.split()[1])
    headers = []
    while True:
        line = f.readline()
        assert line, "connection closed inside the head"
        if line == b"\r\n":
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip().lower(), value.strip()))
    hdrs = dict(headers)
    chunks: list[bytes] = []
    if hdrs.get("transfer-encoding") == "chunked":
        while True:
            size_line = f.readline()
            assert size_line, "connection closed inside a chunked body"
            size = int(size_line.strip(), 16)
            data = f.read(size + 2)
            assert data.endswith(b"\r\n")
            if size == 0:
                break
            chunks.append(data[:-2])
        body = b"".join(chunks)
    else:
        body = f.read(int(hdrs.get("content-length", "0")))
    return RawResponse(status, headers, body, chunks)


def roundtrip(
    server: MockServer, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> RawResponse:
    """One request on a fresh connection."""
    with connect(server) as sock, sock.makefile("rb") as f:
        sock.sendall(request_bytes(method, path, body, headers))
        return read_response(f)
