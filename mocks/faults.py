# A fault-injection provider: a raw asyncio HTTP/1.1 server that misbehaves on purpose.
#
# Every failure a real provider (or the network in front of it) can show the gateway, one name each:
# refusing and resetting connections, stalling at every stage of a response, error statuses with or
# without Retry-After, broken or conflicting framing, bodies that are not what they claim, bytes that
# are not HTTP, SSE streams that stop early or carry garbage, huge responses, and keep-alive
# connections closed while idle. `FAULTS` is the one table of them: name -> what it does (its doc)
# and the handler that does it, with the bytes built by mocks/wire.py.
#
# Choosing a fault. A fault is a *spec*: a name plus optional parameters, `name;key=value;key=value`
# (e.g. `status;code=529;retry_after=2`, `stall_mid_stream;after=3;cut=data`). Per request, the first
# of these that is present wins:
#   1. the request header `x-fault: <spec>` (the gateway forwards it only if configured to);
#   2. the request path `/fault/<spec>/...`: point a gateway provider's base_url at
#      `http://HOST:PORT/fault/<spec>/v1`, so each configured provider gets its own fault;
#   3. `FaultConfig.mix`, a weighted random choice per request (for the simulator's soak);
#   4. `FaultConfig.fault`, the server-wide default (`ok` unless set).
# The connection-level faults `refuse` and `reset` act on accept, before any request, when they are
# the server-wide default (or drawn from the mix); chosen per request they act once the request is in.
#
# In process: `server = await start_faulty(FaultConfig(fault="stall_before_head"))`, then
# `server.port`, the counters below, and `server.config` may be changed at any time.
# Out of process: `python -m mocks.faults --listen 127.0.0.1:0 --fault ... --mix ...` prints HOST:PORT
# on its first line; `GET/POST /_fault/config` and `GET /_fault/stats` change and read it at runtime.
#
# Answers come in OpenAI's shape, or Anthropic's when the request path ends in `/messages` (or the
# spec says `kind=anthropic`). This module is a test tool on the cold path: one Task per request,
# a hand-rolled parser that only needs to understand the gateway's well-formed requests.

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import signal
import socket
import struct
import sys
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

from mocks import wire

# Specs


@dataclass(frozen=True, slots=True)
class Fault:
    """A parsed fault spec: its name and its raw parameters."""

    name: str
    params: dict[str, str] = field(default_factory=dict)

    def num(self, key: str, default: float) -> float:
        value = self.params.get(key)
        return default if value is None else float(value)

    def integer(self, key: str, default: int) -> int:
        value = self.params.get(key)
        return default if value is None else int(float(value))

    def __str__(self) -> str:
        return ";".join([self.name, *(f"{k}={v}" for k, v in self.params.items())])


def parse_fault(spec: str) -> Fault:
    """`name;key=value;...` -> Fault. Raises ValueError for an unknown name or a malformed parameter."""
    name, *pairs = spec.strip().split(";")
    if name not in FAULTS:
        raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"fault parameter {pair!r} is not key=value")
        params[key] = value
    return Fault(name, params)


def parse_mix(text: str) -> dict[str, float]:
    """`spec=weight,spec=weight` -> {spec: weight}; the weight may be omitted (1)."""
    mix: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        spec, sep, weight = item.rpartition("=")
        if not sep or not _is_number(weight):
            spec, weight = item, "1"
        parse_fault(spec)
        mix[spec] = float(weight)
    return mix


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(slots=True)
class FaultConfig:
    """What the fault server does when a request does not name its own fault. Mutable at runtime."""

    fault: str = "ok"  # the server-wide default spec
    mix: dict[str, float] = field(default_factory=dict)  # spec -> weight; when set, drawn per request
    seed: int | None = None  # RNG seed for the mix and for random bytes
    tokens: int = 8  # tokens per normal answer

    def validate(self) -> None:
        parse_fault(self.fault)
        for spec, weight in self.mix.items():
            parse_fault(spec)
            if not weight >= 0 or math.isinf(weight):
                raise ValueError(f"mix weight of {spec!r} must be a finite number >= 0")

    def to_dict(self) -> dict[str, Any]:
        return {"fault": self.fault, "mix": dict(self.mix), "seed": self.seed, "tokens": self.tokens}


# Bytes


def answer_body(kind: str, model: str, text: str) -> bytes:
    """A complete non-streamed answer in the API's shape."""
    out = max(1, len(text) // 4)
    if kind == "anthropic":
        return orjson.dumps({
            "id": "msg_fault", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": out},
        })  # fmt: skip
    return orjson.dumps({
        "id": "chatcmpl-fault", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": out, "total_tokens": 1 + out},
    })  # fmt: skip


def error_body(kind: str, status: int, message: str) -> bytes:
    if kind == "anthropic":
        etype = {429: "rate_limit_error", 529: "overloaded_error", 401: "authentication_error"}.get(status, "api_error")
        return orjson.dumps({"type": "error", "error": {"type": etype, "message": message}})
    etype = {429: "rate_limit_exceeded", 401: "invalid_request_error"}.get(status, "server_error")
    return orjson.dumps({"error": {"message": message, "type": etype, "param": None, "code": None}})


class Events:
    """The SSE events of one streamed answer, as bytes, in the API's format."""

    def __init__(self, kind: str, model: str) -> None:
        self.kind = kind
        self.model = model

    def prelude(self) -> list[bytes]:
        if self.kind == "anthropic":
            start = {"type": "message_start", "message": {
                "id": "msg_fault", "type": "message", "role": "assistant", "model": self.model, "content": [],
                "stop_reason": None, "stop_sequence": None,
                "usage": {"input_tokens": 1, "output_tokens": 0}}}  # fmt: skip
            block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            return [self._anthropic(start), self._anthropic(block)]
        return [self._openai({"role": "assistant", "content": ""}, None)]

    def token(self, text: str) -> bytes:
        if self.kind == "anthropic":
            delta = {"type": "text_delta", "text": text}
            return self._anthropic({"type": "content_block_delta", "index": 0, "delta": delta})
        return self._openai({"content": text}, None)

    def finish(self) -> list[bytes]:
        if self.kind == "anthropic":
            return [
                self._anthropic({"type": "content_block_stop", "index": 0}),
                self._anthropic({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                 "usage": {"output_tokens": 8}}),
            ]  # fmt: skip
        return [self._openai({}, "stop")]

    def terminator(self) -> bytes:
        if self.kind == "anthropic":
            return self._anthropic({"type": "message_stop"})
        return b"data: [DONE]\n\n"

    def _openai(self, delta: dict[str, Any], finish: str | None) -> bytes:
        return b"data: " + orjson.dumps({
            "id": "chatcmpl-fault", "object": "chat.completion.chunk", "created": 1700000000, "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }) + b"\n\n"  # fmt: skip

    def _anthropic(self, payload: dict[str, Any]) -> bytes:
        return b"event: " + payload["type"].encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


# The server


class FaultRequest:
    """One request as the fault server read it."""

    __slots__ = ("body", "headers", "keep_alive", "method", "path", "target")

    def __init__(self, method: str, target: str, headers: list[tuple[str, str]], body: bytes, keep_alive: bool) -> None:
        self.method = method
        self.target = target
        self.path = target.partition("?")[0]
        self.headers = headers
        self.body = body
        self.keep_alive = keep_alive

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


class FaultServer:
    """A running fault provider. Counters: `requests`, `faults` (Counter by fault name),
    `connections_opened`, `open_connections`, `peer_closed_mid_fault` (the client, i.e. the
    gateway, closed while a response was still going), `bytes_sent`, `last_request`."""

    def __init__(self, config: FaultConfig, loop: asyncio.AbstractEventLoop) -> None:
        self.config = config
        self.loop = loop
        self.rng = random.Random(config.seed)
        self.host = ""
        self.port = 0
        self.requests = 0
        self.faults: Counter[str] = Counter()
        self.connections_opened = 0
        self.peer_closed_mid_fault = 0
        self.bytes_sent = 0
        self.last_request: FaultRequest | None = None
        self.connections: set[FaultProtocol] = set()
        self._server: asyncio.Server | None = None

    @property
    def open_connections(self) -> int:
        return len(self.connections)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def base_url(self, spec: str | None = None) -> str:
        """The provider base_url that selects `spec` by path (or the server default with None)."""
        prefix = f"/fault/{spec}" if spec else ""
        return f"http://{self.address}{prefix}/v1"

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for conn in list(self.connections):
            conn.abort()
        await server.wait_closed()
        await asyncio.sleep(0)

    def stats(self) -> dict[str, Any]:
        return {
            "address": self.address, "requests": self.requests, "faults": dict(self.faults),
            "connections_opened": self.connections_opened, "open_connections": self.open_connections,
            "peer_closed_mid_fault": self.peer_closed_mid_fault, "bytes_sent": self.bytes_sent,
            "config": self.config.to_dict(),
        }  # fmt: skip

    def choose(self, req: FaultRequest | None) -> Fault:
        """The fault for a request (or, with None, for a connection being accepted)."""
        if req is not None:
            spec = req.header("x-fault")
            if spec:
                return parse_fault(spec)
            if req.path.startswith("/fault/"):
                return parse_fault(req.path[7:].partition("/")[0])
        mix = self.config.mix
        if mix:
            specs = list(mix)
            return parse_fault(self.rng.choices(specs, weights=[mix[s] for s in specs])[0])
        return parse_fault(self.config.fault)

    async def _start(self, host: str, port: int) -> None:
        self._server = await self.loop.create_server(lambda: FaultProtocol(self), host, port, backlog=4096,
                                                     reuse_address=True)  # fmt: skip
        self.host, self.port = self._server.sockets[0].getsockname()[:2]


async def start_faulty(config: FaultConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> FaultServer:
    """Start a fault provider on the running loop; returns once it listens (read `.port`)."""
    config = config if config is not None else FaultConfig()
    config.validate()
    server = FaultServer(config, asyncio.get_running_loop())
    await server._start(host, port)
    return server


_MAX_HEAD = 256 * 1024


class FaultProtocol(asyncio.Protocol):
    """One connection to the fault server: reads requests in order, answers each with its fault."""

    def __init__(self, server: FaultServer) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.task: asyncio.Task[None] | None = None
        self.idle_handle: asyncio.TimerHandle | None = None
        self.writable: asyncio.Future[None] | None = None
        self.closed = False

    # asyncio.Protocol interface

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        server = self.server
        server.connections.add(self)
        server.connections_opened += 1
        if not server.config.mix and server.config.fault.partition(";")[0] not in CONNECTION_FAULTS:
            return
        fault = server.choose(None)
        if fault.name == "refuse":
            server.faults[fault.name] += 1
            self.transport.close()
        elif fault.name == "reset":
            server.faults[fault.name] += 1
            self.abort()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.idle_handle is not None:
            self.idle_handle.cancel()
            self.idle_handle = None
        if self.task is None:
            self._next()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        if self.idle_handle is not None:
            self.idle_handle.cancel()
        if self.task is not None and not self.task.done():
            self.server.peer_closed_mid_fault += 1
            self.task.cancel()
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    def pause_writing(self) -> None:
        if self.writable is None or self.writable.done():
            self.writable = self.server.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)

    # writing

    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None and not self.transport.is_closing():
            self.server.bytes_sent += len(data)
            self.transport.write(data)

    async def drain(self) -> None:
        if self.writable is not None and not self.writable.done():
            await self.writable

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        """Close with a TCP RST: linger 0, then abort."""
        transport = self.transport
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()

    # requests

    def _next(self) -> None:
        """Start answering the next buffered request, if a whole one is in."""
        if self.closed:
            return
        req = self._parse()
        if req is None:
            return
        self.task = self.server.loop.create_task(self._answer(req))

    def _parse(self) -> FaultRequest | None:
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD:
                self.close()
            return None
        lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3:
            self.close()
            return None
        method, target, version = parts
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        length = 0
        for name, value in headers:
            if name == "content-length" and value.isdigit():
                length = int(value)
            elif name == "transfer-encoding":
                self.close()  # the gateway always sends a content-length
                return None
        if len(buf) < end + 4 + length:
            return None
        body = bytes(buf[end + 4 : end + 4 + length])
        del buf[: end + 4 + length]
        connection = next((v.lower() for n, v in headers if n == "connection"), "")
        keep_alive = "close" not in connection and version == "HTTP/1.1"
        return FaultRequest(method, target, headers, body, keep_alive)

    async def _answer(self, req: FaultRequest) -> None:
        server = self.server
        keep_going = False
        try:
            if req.path.startswith("/_fault/"):
                self._control(req)
                keep_going = req.keep_alive
            else:
                server.requests += 1
                server.last_request = req
                try:
                    fault = server.choose(req)
                except ValueError as exc:
                    body = error_body("openai", 400, str(exc))
                    self.write(wire.json_head(400, len(body)) + body)
                    keep_going = req.keep_alive
                else:
                    server.faults[fault.name] += 1
                    keep_going = await self._run(fault, req) and req.keep_alive
        except (asyncio.CancelledError, ConnectionError):
            return
        finally:
            self.task = None
        if not keep_going:
            self.close()
        elif self.buffer:
            self._next()

    def _control(self, req: FaultRequest) -> None:
        server = self.server
        action = req.path[len("/_fault/") :].rstrip("/")
        status, payload = 200, None
        if action == "stats":
            payload = server.stats()
        elif action == "config" and req.method == "POST":
            try:
                changes = orjson.loads(req.body)
                config = FaultConfig(**{**server.config.to_dict(), **changes})
                config.validate()
            except (orjson.JSONDecodeError, TypeError, ValueError) as exc:
                status, payload = 400, {"error": str(exc)}
            else:
                server.config = config
                if "seed" in changes:
                    server.rng.seed(config.seed)
                payload = config.to_dict()
        elif action == "config":
            payload = server.config.to_dict()
        else:
            status, payload = 404, {"error": f"unknown control endpoint {req.path}"}
        body = orjson.dumps(payload)
        self.write(wire.json_head(status, len(body)) + body)

    async def _run(self, fault: Fault, req: FaultRequest) -> bool:
        """Play one fault; True when the connection may carry another request."""
        return await FAULTS[fault.name].play(Play(self, fault, req))


# The faults: one handler each, and the table


class Play:
    """One fault being played on one request: the connection to write to and what the answer is made of."""

    __slots__ = ("body", "conn", "events", "fault", "gap_s", "kind", "model", "pad", "req", "stall_s", "stream",
                 "tokens")  # fmt: skip

    def __init__(self, conn: FaultProtocol, fault: Fault, req: FaultRequest) -> None:
        self.conn = conn
        self.fault = fault
        self.req = req
        self.kind = fault.params.get("kind") or ("anthropic" if req.path.endswith("/messages") else "openai")
        try:
            payload = orjson.loads(req.body) if req.body else {}
        except orjson.JSONDecodeError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        self.model = str(payload.get("model", "fault-model"))
        self.stream = payload.get("stream") is True or FAULTS[fault.name].streams
        self.events = Events(self.kind, self.model)
        self.tokens = fault.integer("tokens", conn.server.config.tokens)
        self.pad = "x" * fault.integer("pad", 0)
        self.body = answer_body(self.kind, self.model, " ".join(f"tok{i}" for i in range(self.tokens)) + self.pad)
        self.stall_s = fault.num("stall_s", 60.0)
        self.gap_s = fault.num("gap_s", 0.02)  # between the writes of a fault, so they arrive as separate reads

    def write(self, data: bytes) -> None:
        self.conn.write(data)

    async def gap(self) -> None:
        await asyncio.sleep(self.gap_s)

    def prelude(self) -> bytes:
        """The SSE head and the events before the first token, chunk-framed."""
        return wire.sse_head() + b"".join(wire.chunk(e) for e in self.events.prelude())

    def token(self, i: int | str) -> bytes:
        return wire.chunk(self.events.token(i if isinstance(i, str) else f"tok{i} "))

    def finish(self, terminator: bool = True) -> bytes:
        """The events after the last token, the terminator unless told otherwise, and the last chunk."""
        end = [wire.chunk(e) for e in self.events.finish()]
        if terminator:
            end.append(wire.chunk(self.events.terminator()))
        return b"".join(end) + wire.CHUNK_END


async def _ok(p: Play) -> bool:
    if p.stream:
        p.write(p.prelude() + (p.token(p.pad) if p.pad else b""))
        for i in range(p.tokens):
            p.write(p.token(i))
        p.write(p.finish())
    else:
        p.write(wire.json_head(200, len(p.body)) + p.body)
    return True


async def _close_idle(p: Play) -> bool:
    await _ok(p)
    conn = p.conn
    conn.idle_handle = conn.server.loop.call_later(p.fault.num("after_s", 0.05),
                                                   conn.abort if p.fault.params.get("rst") == "1" else conn.close)
    return True


async def _refuse(p: Play) -> bool:
    p.conn.close()
    return False


async def _reset(p: Play) -> bool:
    p.conn.abort()
    return False


async def _stall_before_head(p: Play) -> bool:
    await asyncio.sleep(p.stall_s)
    return False


async def _stall_mid_head(p: Play) -> bool:
    p.write(wire.status_line(200) + b"content-type: application/json\r\ncontent-le")
    await asyncio.sleep(p.stall_s)
    return False


def _half_body(then: str) -> Callable[[Play], Awaitable[bool]]:
    """A JSON head with its content-length and half the body; then stall, reset or close."""

    async def play(p: Play) -> bool:
        p.write(wire.json_head(200, len(p.body)) + p.body[: len(p.body) // 2])
        await p.gap()
        if then == "stall":
            await asyncio.sleep(p.stall_s)
        elif then == "reset":
            p.conn.abort()
        return False

    return play


def _mid_stream(then: str) -> Callable[[Play], Awaitable[bool]]:
    """An SSE head and `after` events, cut where `cut=` says; then stall, close or reset."""

    async def play(p: Play) -> bool:
        p.write(p.prelude())
        for i in range(p.fault.integer("after", 2)):
            await p.gap()
            p.write(p.token(i))
        await p.gap()
        cut = p.fault.params.get("cut", "boundary")
        piece = p.token("cut ")
        if cut == "size":
            p.write(piece[:1])  # the first digit of the next chunk's size line
        elif cut == "data":
            p.write(piece[: len(piece) // 2])
        await p.gap()
        if then == "stall":
            await asyncio.sleep(p.stall_s)
        elif then == "reset":
            p.conn.abort()
        return False

    return play


async def _status(p: Play) -> bool:
    code = p.fault.integer("code", 500)
    extra = b""
    if "retry_after" in p.fault.params:
        extra = b"retry-after: %b\r\n" % p.fault.params["retry_after"].encode("latin-1")
    what = p.fault.params.get("body", "json")
    if what == "html":
        page = b"<html><body><h1>%d</h1>upstream error</body></html>" % code
        p.write(wire.status_line(code) + b"content-type: text/html\r\ncontent-length: %d\r\n%b\r\n%b"
                % (len(page), extra, page))  # fmt: skip
    elif what == "empty":
        p.write(wire.status_line(code) + b"content-length: 0\r\n" + extra + b"\r\n")
    else:
        err = error_body(p.kind, code, f"injected {code}")
        p.write(wire.json_head(code, len(err), extra) + err)
    return True


async def _conflicting_framing(p: Play) -> bool:
    p.write(wire.status_line(200) + b"content-type: application/json\r\ncontent-length: %d\r\n"
            b"transfer-encoding: chunked\r\n\r\n%b%b" % (len(p.body), wire.chunk(p.body), wire.CHUNK_END))  # fmt: skip
    return False


async def _duplicate_length(p: Play) -> bool:
    p.write(wire.status_line(200) + b"content-type: application/json\r\ncontent-length: %d\r\n"
            b"content-length: %d\r\n\r\n%b" % (len(p.body), len(p.body) + 10, p.body))  # fmt: skip
    return False


def _bad_chunk_size(size_line: bytes) -> Callable[[Play], Awaitable[bool]]:
    """An SSE head and `after` good chunks, then `size_line` where a chunk size belongs."""

    async def play(p: Play) -> bool:
        p.write(wire.sse_head())
        for i in range(p.fault.integer("after", 1)):
            await p.gap()
            p.write(p.token(i))
        await p.gap()
        p.write(size_line)
        await p.gap()
        return False

    return play


async def _unknown_coding(p: Play) -> bool:
    p.write(wire.status_line(200) + b"content-type: text/event-stream\r\ntransfer-encoding: gzip\r\n\r\n")
    await p.gap()
    p.write(b"".join(p.events.prelude()) + p.events.token("tok "))
    await p.gap()
    return False


async def _invalid_json_200(p: Play) -> bool:
    broken = p.body[: len(p.body) // 2]
    p.write(wire.json_head(200, len(broken)) + broken)
    return True


async def _html_200(p: Play) -> bool:
    page = b"<!doctype html><html><body>Welcome to nginx!</body></html>"
    p.write(wire.status_line(200) + b"content-type: text/html\r\ncontent-length: %d\r\n\r\n%b" % (len(page), page))
    return True


async def _empty_200(p: Play) -> bool:
    p.write(wire.json_head(200, 0))
    return True


async def _not_http(p: Play) -> bool:
    p.write(p.conn.server.rng.randbytes(p.fault.integer("size", 512)))
    await p.gap()
    return False


async def _huge_head(p: Play) -> bool:
    size = p.fault.integer("size", 256 * 1024)
    filler = b"".join(b"x-filler-%d: %b\r\n" % (i, b"f" * 1000) for i in range(size // 1000 + 1))
    p.write(wire.status_line(200) + filler)
    await p.gap()
    p.write(b"content-length: %d\r\n\r\n%b" % (len(p.body), p.body))
    return False


async def _interim_100(p: Play) -> bool:
    p.write(wire.CONTINUE_100 + wire.json_head(200, len(p.body)) + p.body)
    return True


async def _sse_no_terminator(p: Play) -> bool:
    p.write(p.prelude())
    for i in range(p.fault.integer("after", 3)):
        p.write(p.token(i))
    p.write(p.finish(terminator=False))
    return True


_GARBAGE = (b"data: {not json\n\n", b"\x00\xff\xfe garbage\n\n", b"event: bogus\nretry: x\nid: \x01\n\n",
            b"just text without a field\n\n", b"data: [DONE]x\n\n", b":\n\n")  # fmt: skip


async def _sse_garbage(p: Play) -> bool:
    out = [p.prelude()]
    for i, junk in enumerate(_GARBAGE):
        out += [p.token(i), wire.chunk(junk)]
    p.write(b"".join(out) + p.finish())
    return True


_BAD_USAGE = (b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":\n\n',
              b'data: {"id":"x","choices":[],"usage":5}\n\n',
              b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":"many","completion_tokens":[1]}}\n\n',
              b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":1e400}}\n\n')  # fmt: skip


async def _sse_bad_usage(p: Play) -> bool:
    p.write(p.prelude() + p.token("tok ") + b"".join(wire.chunk(b) for b in _BAD_USAGE) + p.finish())
    return True


_HUGE_HEAD = (b'{"id":"chatcmpl-fault","object":"chat.completion","created":1700000000,"model":"m",'
              b'"choices":[{"index":0,"message":{"role":"assistant","content":"')  # fmt: skip
_HUGE_TAIL = b'"},"finish_reason":"stop"}]}'


async def _huge_response(p: Play) -> bool:
    filler = max(0, p.fault.integer("size", 50_000_000) - len(_HUGE_HEAD) - len(_HUGE_TAIL))
    p.write(wire.json_head(200, len(_HUGE_HEAD) + filler + len(_HUGE_TAIL)) + _HUGE_HEAD)
    block = b"a" * 65536
    while filler > 0:
        await p.conn.drain()
        piece = block if filler >= len(block) else block[:filler]
        p.write(piece)
        filler -= len(piece)
    await p.conn.drain()
    p.write(_HUGE_TAIL)
    return True


async def _huge_stream(p: Play) -> bool:
    size = p.fault.integer("size", 50_000_000)
    p.write(p.prelude())
    sixteen = p.token("x" * 4000) * 16
    sent = 0
    while sent < size:
        await p.conn.drain()
        p.write(sixteen)
        sent += len(sixteen)
    p.write(p.finish())
    return True


async def _drip(p: Play) -> bool:
    interval = p.fault.num("interval_s", 0.05)
    p.write(p.prelude())
    ping = wire.chunk(b": ping\n\n")
    while True:
        await asyncio.sleep(interval)
        p.write(ping)


async def _echo_key(p: Play) -> bool:
    credential = p.req.header("authorization") or p.req.header("x-api-key") or ""
    err = error_body(p.kind, 401, f"Incorrect API key provided: {credential}")
    p.write(wire.json_head(401, len(err)) + err)
    return True


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What a fault does (`doc`), the handler that does it, and two facts about it: `streams`, it always
    answers with an SSE stream; `on_accept`, as the server default it acts on accept, before any request."""

    doc: str
    play: Callable[[Play], Awaitable[bool]]  # True: the connection may carry another request
    streams: bool = False
    on_accept: bool = False


FAULTS: dict[str, Behaviour] = {
    "ok": Behaviour("a normal answer (JSON, or SSE when the request has stream=true); keep-alive; pad=N adds N "
                    "bytes of text, written in the same write as the head", _ok),
    "refuse": Behaviour("close the connection without a byte (on accept when it is the server default)", _refuse,
                        on_accept=True),
    "reset": Behaviour("abort the connection with a TCP RST (SO_LINGER 0), on accept when it is the server default",
                       _reset, on_accept=True),
    "stall_before_head": Behaviour("read the request, then send nothing for stall_s seconds (default 60), then close",
                                   _stall_before_head),
    "stall_mid_head": Behaviour("send half a response head, then stall", _stall_mid_head),
    "stall_mid_body": Behaviour("send a JSON head with its content-length and half the body, then stall",
                                _half_body("stall")),
    "stall_mid_stream": Behaviour("send an SSE head and `after` events (default 2), then stall; cut=boundary|size|data "
                                  "stops between chunks, inside a chunk-size line, or inside a chunk's data",
                                  _mid_stream("stall"), streams=True),
    "close_mid_stream": Behaviour("like stall_mid_stream, but close (FIN) instead of stalling", _mid_stream("close"),
                                  streams=True),
    "reset_mid_stream": Behaviour("like stall_mid_stream, but reset (RST) instead of stalling", _mid_stream("reset"),
                                  streams=True),
    "reset_mid_body": Behaviour("like stall_mid_body, but reset (RST) instead of stalling", _half_body("reset")),
    "status": Behaviour("an error status: code (default 500; any number, even outside 100-599), retry_after "
                        "(seconds; absent = no header), body=json|html|empty (default json, in the API's error "
                        "shape)", _status),
    "truncated_body": Behaviour("a JSON head whose content-length is larger than the body sent, then close",
                                _half_body("close")),
    "conflicting_framing": Behaviour("both content-length and transfer-encoding: chunked", _conflicting_framing),
    "duplicate_length": Behaviour("two different content-length headers", _duplicate_length),
    "bad_chunk": Behaviour("an SSE head and `after` good chunks (default 1), then a chunk size that is not hex",
                           _bad_chunk_size(b"zz\r\nnot a chunk\r\n"), streams=True),
    "chunk_overflow": Behaviour("an SSE head and `after` good chunks (default 1), then a chunk size that overflows "
                                "64 bits", _bad_chunk_size(b"1" + b"0" * 20 + b"\r\nxx\r\n"), streams=True),
    "unknown_coding": Behaviour("transfer-encoding: gzip (no chunked): the body is delimited by the close",
                                _unknown_coding),
    "invalid_json_200": Behaviour("a 200 whose JSON body is cut off", _invalid_json_200),
    "html_200": Behaviour("a 200 with an HTML page, as a misconfigured proxy in front of a provider sends", _html_200),
    "empty_200": Behaviour("a 200 with an empty body", _empty_200),
    "not_http": Behaviour("`size` random bytes (default 512) instead of a response, then close", _not_http),
    "huge_head": Behaviour("a response head larger than any sane limit (`size` bytes of headers, default 256 KiB)",
                           _huge_head),
    "interim_100": Behaviour("a 100 Continue head and the real answer in one write", _interim_100),
    "sse_no_terminator": Behaviour("a complete chunked SSE body without its terminator ([DONE] or message_stop)",
                                   _sse_no_terminator, streams=True),
    "sse_garbage": Behaviour("an SSE stream with garbage lines (bad JSON, NUL bytes, unknown fields) between events",
                             _sse_garbage, streams=True),
    "sse_bad_usage": Behaviour("an SSE stream whose usage chunks are malformed (cut JSON, usage not an object, counts "
                               "not numbers)", _sse_bad_usage, streams=True),
    "huge_response": Behaviour("a valid JSON answer of `size` bytes (default 50 MB), written as fast as the reader "
                               "reads", _huge_response),
    "huge_stream": Behaviour("a valid SSE stream of about `size` bytes (default 50 MB)", _huge_stream, streams=True),
    "drip": Behaviour("an SSE head, then a `: ping` comment every interval_s (default 0.05) forever", _drip,
                      streams=True),
    "close_idle": Behaviour("a normal answer, then close the keep-alive connection after after_s (default 0.05) "
                            "idle; rst=1 resets instead", _close_idle),
    "echo_key": Behaviour("a 401 whose body echoes the credential the request carried (a provider that reflects "
                          "keys)", _echo_key),
}  # fmt: skip
CONNECTION_FAULTS = frozenset(name for name, b in FAULTS.items() if b.on_accept)


# Helpers for addresses that misbehave below HTTP


@contextlib.contextmanager
def refusing_port() -> Iterator[int]:
    """A local port that refuses connections (bound, never listening)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@contextlib.contextmanager
def blackhole_port() -> Iterator[int]:
    """A local port where connecting hangs: a listener with a full accept queue, never accepting.

    Linux drops SYNs to a listener whose accept queue is full, so the connect neither succeeds nor
    fails until the client's own timeout.
    """
    with contextlib.ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):  # fill the accept queue (backlog 0 holds one or two)
            filler = stack.enter_context(socket.socket())
            filler.setblocking(False)
            try:
                filler.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
        yield port


# CLI: python -m mocks.faults


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m mocks.faults", description="Run a fault-injection provider.",
                                epilog="faults: " + ", ".join(FAULTS))  # fmt: skip
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT",
                   help="address to bind (default: %(default)s)")
    p.add_argument("--fault", default="ok", metavar="SPEC",
                   help="default fault spec, e.g. 'status;code=529;retry_after=1'")
    p.add_argument("--mix", default="", metavar="SPEC=W,...",
                   help="weighted faults drawn per request, e.g. 'ok=8,reset=1'")
    p.add_argument("--seed", type=int, default=None, help="RNG seed for the mix and random bytes")
    p.add_argument("--tokens", type=int, default=8, help="tokens per normal answer")
    p.add_argument("--list", action="store_true", help="list the faults and exit")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop implementation")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, behaviour in FAULTS.items():
            print(f"{name:20} {behaviour.doc}")
        return 0
    host, sep, port = args.listen.rpartition(":")
    if not sep or not port.isdigit():
        parser.error(f"--listen: expected HOST:PORT, got {args.listen!r}")
    try:
        config = FaultConfig(fault=args.fault, mix=parse_mix(args.mix), seed=args.seed, tokens=args.tokens)
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))
    loop_factory: Callable[[], asyncio.AbstractEventLoop] = asyncio.new_event_loop
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(config, host.strip("[]"), int(port)))
    return 0


async def _serve(config: FaultConfig, host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await start_faulty(config, host, port)
    stop: asyncio.Future[None] = loop.create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: stop.done() or stop.set_result(None))
    sys.stdout.write(server.address + "\n")
    sys.stdout.flush()
    try:
        await stop
    finally:
        await server.close()


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "CONNECTION_FAULTS", "FAULTS", "Fault", "FaultConfig", "FaultServer", "blackhole_port", "parse_fault", "parse_mix",
    "refusing_port", "start_faulty",
]  # fmt: skip
