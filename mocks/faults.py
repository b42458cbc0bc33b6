# A fault-injection provider: a raw asyncio HTTP/1.1 server that misbehaves on purpose.
#
# Every failure a real provider (or the network in front of it) can show the gateway, one name each:
# refusing and resetting connections, stalling at every stage of a response, error statuses with or
# without Retry-After, broken or conflicting framing, bodies that are not what they claim, bytes that
# are not HTTP, SSE streams that stop early or carry garbage, huge responses, and keep-alive
# connections closed while idle. `FAULTS` lists them with what each does.
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

FAULTS: dict[str, str] = {
    "ok": "a normal answer (JSON, or SSE when the request has stream=true); keep-alive; pad=N adds N bytes of text, "
    "written in the same write as the head",
    "refuse": "close the connection without a byte (on accept when it is the server default)",
    "reset": "abort the connection with a TCP RST (SO_LINGER 0), on accept when it is the server default",
    "stall_before_head": "read the request, then send nothing for stall_s seconds (default 60), then close",
    "stall_mid_head": "send half a response head, then stall",
    "stall_mid_body": "send a JSON head with its content-length and half the body, then stall",
    "stall_mid_stream": "send an SSE head and `after` events (default 2), then stall; cut=boundary|size|data "
    "stops between chunks, inside a chunk-size line, or inside a chunk's data",
    "close_mid_stream": "like stall_mid_stream, but close (FIN) instead of stalling",
    "reset_mid_stream": "like stall_mid_stream, but reset (RST) instead of stalling",
    "reset_mid_body": "like stall_mid_body, but reset (RST) instead of stalling",
    "status": "an error status: code (default 500), retry_after (seconds; absent = no header), "
    "body=json|html|empty (default json, in the API's error shape)",
    "truncated_body": "a JSON head whose content-length is larger than the body sent, then close",
    "conflicting_framing": "both content-length and transfer-encoding: chunked",
    "duplicate_length": "two different content-length headers",
    "bad_chunk": "an SSE head and `after` good chunks (default 1), then a chunk size that is not hex",
    "chunk_overflow": "an SSE head and `after` good chunks (default 1), then a chunk size that overflows 64 bits",
    "unknown_coding": "transfer-encoding: gzip (no chunked): the body is delimited by the close",
    "invalid_json_200": "a 200 whose JSON body is cut off",
    "html_200": "a 200 with an HTML page, as a misconfigured proxy in front of a provider sends",
    "empty_200": "a 200 with an empty body",
    "not_http": "`size` random bytes (default 512) instead of a response, then close",
    "huge_head": "a response head larger than any sane limit (`size` bytes of headers, default 256 KiB)",
    "interim_100": "a 100 Continue head and the real answer in one write",
    "sse_no_terminator": "a complete chunked SSE body without its terminator ([DONE] or message_stop)",
    "sse_garbage": "an SSE stream with garbage lines (bad JSON, NUL bytes, unknown fields) between events",
    "sse_bad_usage": "an SSE stream whose usage chunks are malformed (cut JSON, usage not an object, counts not numbers)",
    "huge_response": "a valid JSON answer of `size` bytes (default 50 MB), written as fast as the reader reads",
    "huge_stream": "a valid SSE stream of about `size` bytes (default 50 MB)",
    "drip": "an SSE head, then a `: ping` comment every interval_s (default 0.05) forever",
    "close_idle": "a normal answer, then close the keep-alive connection after after_s (default 0.05) idle; "
    "rst=1 resets instead",
    "echo_key": "a 401 whose body echoes the credential the request carried (a provider that reflects keys)",
}
CONNECTION_FAULTS = frozenset(("refuse", "reset"))
_STREAMING_FAULTS = frozenset(
    ("stall_mid_stream", "close_mid_stream", "reset_mid_stream", "bad_chunk", "chunk_overflow", "sse_no_terminator",
     "sse_garbage", "sse_bad_usage", "huge_stream", "drip")
)  # fmt: skip


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


_REASONS = {200: "OK", 100: "Continue", 401: "Unauthorized", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 529: "Overloaded"}  # fmt: skip
_SSE_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


def status_line(status: int) -> bytes:
    return f"HTTP/1.1 {status} {_REASONS.get(status, 'Unknown')}\r\n".encode("ascii")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


def json_head(status: int, length: int, extra: bytes = b"") -> bytes:
    return status_line(status) + b"content-type: application/json\r\ncontent-length: %d\r\n%b\r\n" % (length, extra)


def answer_body(kind: str, model: str, text: str) -> bytes:
    """A complete non-streamed answer in the API's shape."""
    if kind == "anthropic":
        return orjson.dumps({
            "id": "msg_fault", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": text}], "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": max(1, len(text) // 4)},
        })  # fmt: skip
    return orjson.dumps({
        "id": "chatcmpl-fault", "object": "chat.completion", "created": 1700000000, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": max(1, len(text) // 4), "total_tokens": 1 + max(1, len(text) // 4)},
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
                "stop_reason": None, "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 0}}}  # fmt: skip
            block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            return [self._anthropic(start), self._anthropic(block)]
        return [self._openai({"role": "assistant", "content": ""}, None)]

    def token(self, text: str) -> bytes:
        if self.kind == "anthropic":
            return self._anthropic({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})
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
                    self.write(json_head(400, len(body)) + body)
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
        self.write(json_head(status, len(body)) + body)

    async def _run(self, fault: Fault, req: FaultRequest) -> bool:
        """Play one fault; True when the connection may carry another request."""
        kind = fault.params.get("kind") or ("anthropic" if req.path.endswith("/messages") else "openai")
        try:
            payload = orjson.loads(req.body) if req.body else {}
        except orjson.JSONDecodeError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        model = str(payload.get("model", "fault-model"))
        stream = payload.get("stream") is True or fault.name in _STREAMING_FAULTS
        events = Events(kind, model)
        tokens = fault.integer("tokens", self.server.config.tokens)
        pad = "x" * fault.integer("pad", 0)
        text = " ".join(f"tok{i}" for i in range(tokens)) + pad
        body = answer_body(kind, model, text)
        stall_s = fault.num("stall_s", 60.0)
        gap_s = fault.num("gap_s", 0.02)  # between the writes of a fault, so they arrive as separate reads
        name = fault.name

        if name == "ok" or name == "close_idle":
            if stream:
                first = chunk(events.token(pad)) if pad else b""
                self.write(_SSE_HEAD + b"".join(chunk(e) for e in events.prelude()) + first)
                for i in range(tokens):
                    self.write(chunk(events.token(f"tok{i} ")))
                self.write(b"".join(chunk(e) for e in events.finish()) + chunk(events.terminator()) + _LAST_CHUNK)
            else:
                self.write(json_head(200, len(body)) + body)
            if name == "close_idle":
                rst = fault.params.get("rst") == "1"
                self.idle_handle = self.server.loop.call_later(
                    fault.num("after_s", 0.05), self.abort if rst else self.close
                )
            return True
        if name == "refuse":
            self.close()
            return False
        if name == "reset":
            self.abort()
            return False
        if name == "stall_before_head":
            await asyncio.sleep(stall_s)
            return False
        if name == "stall_mid_head":
            self.write(status_line(200) + b"content-type: application/json\r\ncontent-le")
            await asyncio.sleep(stall_s)
            return False
        if name in ("stall_mid_body", "reset_mid_body", "truncated_body"):
            self.write(json_head(200, len(body)) + body[: len(body) // 2])
            await asyncio.sleep(gap_s)
            if name == "stall_mid_body":
                await asyncio.sleep(stall_s)
            elif name == "reset_mid_body":
                self.abort()
            return False
        if name in ("stall_mid_stream", "close_mid_stream", "reset_mid_stream"):
            after = fault.integer("after", 2)
            self.write(_SSE_HEAD + b"".join(chunk(e) for e in events.prelude()))
            for i in range(after):
                await asyncio.sleep(gap_s)
                self.write(chunk(events.token(f"tok{i} ")))
            await asyncio.sleep(gap_s)
            cut = fault.params.get("cut", "boundary")
            piece = chunk(events.token("cut "))
            if cut == "size":
                self.write(piece[:1])  # the first digit of the next chunk's size line
            elif cut == "data":
                self.write(piece[: len(piece) // 2])
            await asyncio.sleep(gap_s)
            if name == "stall_mid_stream":
                await asyncio.sleep(stall_s)
            elif name == "reset_mid_stream":
                self.abort()
            return False
        if name == "status":
            code = fault.integer("code", 500)
            extra = b""
            if "retry_after" in fault.params:
                extra = b"retry-after: %b\r\n" % fault.params["retry_after"].encode("latin-1")
            what = fault.params.get("body", "json")
            if what == "html":
                page = b"<html><body><h1>%d</h1>upstream error</body></html>" % code
                self.write(status_line(code) + b"content-type: text/html\r\ncontent-length: %d\r\n%b\r\n%b"
                           % (len(page), extra, page))  # fmt: skip
            elif what == "empty":
                self.write(status_line(code) + b"content-length: 0\r\n" + extra + b"\r\n")
            else:
                err = error_body(kind, code, f"injected {code}")
                self.write(json_head(code, len(err), extra) + err)
            return True
        if name == "conflicting_framing":
            self.write(status_line(200) + b"content-type: application/json\r\ncontent-length: %d\r\n"
                       b"transfer-encoding: chunked\r\n\r\n%b%b" % (len(body), chunk(body), _LAST_CHUNK))  # fmt: skip
            return False
        if name == "duplicate_length":
            self.write(status_line(200) + b"content-type: application/json\r\ncontent-length: %d\r\n"
                       b"content-length: %d\r\n\r\n%b" % (len(body), len(body) + 10, body))  # fmt: skip
            return False
        if name in ("bad_chunk", "chunk_overflow"):
            self.write(_SSE_HEAD)
            for i in range(fault.integer("after", 1)):
                await asyncio.sleep(gap_s)
                self.write(chunk(events.token(f"tok{i} ")))
            await asyncio.sleep(gap_s)
            self.write(b"zz\r\nnot a chunk\r\n" if name == "bad_chunk" else b"1" + b"0" * 20 + b"\r\nxx\r\n")
            await asyncio.sleep(gap_s)
            return False
        if name == "unknown_coding":
            self.write(status_line(200) + b"content-type: text/event-stream\r\ntransfer-encoding: gzip\r\n\r\n")
            await asyncio.sleep(gap_s)
            self.write(b"".join(events.prelude()) + events.token("tok "))
            await asyncio.sleep(gap_s)
            return False
        if name == "invalid_json_200":
            broken = body[: len(body) // 2]
            self.write(json_head(200, len(broken)) + broken)
            return True
        if name == "html_200":
            page = b"<!doctype html><html><body>Welcome to nginx!</body></html>"
            self.write(status_line(200) + b"content-type: text/html\r\ncontent-length: %d\r\n\r\n%b" % (len(page), page))
            return True
        if name == "empty_200":
            self.write(status_line(200) + b"content-type: application/json\r\ncontent-length: 0\r\n\r\n")
            return True
        if name == "not_http":
            self.write(self.server.rng.randbytes(fault.integer("size", 512)))
            await asyncio.sleep(gap_s)
            return False
        if name == "huge_head":
            size = fault.integer("size", 256 * 1024)
            filler = b"".join(b"x-filler-%d: %b\r\n" % (i, b"f" * 1000) for i in range(size // 1000 + 1))
            self.write(status_line(200) + filler)
            await asyncio.sleep(gap_s)
            self.write(b"content-length: %d\r\n\r\n%b" % (len(body), body))
            return False
        if name == "interim_100":
            self.write(status_line(100) + b"\r\n" + json_head(200, len(body)) + body)
            return True
        if name == "sse_no_terminator":
            self.write(_SSE_HEAD + b"".join(chunk(e) for e in events.prelude()))
            for i in range(fault.integer("after", 3)):
                self.write(chunk(events.token(f"tok{i} ")))
            self.write(b"".join(chunk(e) for e in events.finish()) + _LAST_CHUNK)
            return True
        if name == "sse_garbage":
            garbage = [b"data: {not json\n\n", b"\x00\xff\xfe garbage\n\n", b"event: bogus\nretry: x\nid: \x01\n\n",
                       b"just text without a field\n\n", b"data: [DONE]x\n\n", b":\n\n"]  # fmt: skip
            out = [chunk(e) for e in events.prelude()]
            for i, junk in enumerate(garbage):
                out.append(chunk(events.token(f"tok{i} ")))
                out.append(chunk(junk))
            out += [chunk(e) for e in events.finish()]
            self.write(_SSE_HEAD + b"".join(out) + chunk(events.terminator()) + _LAST_CHUNK)
            return True
        if name == "sse_bad_usage":
            bad = [b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":\n\n', b'data: {"id":"x","choices":[],"usage":5}\n\n',
                   b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":"many","completion_tokens":[1]}}\n\n',
                   b'data: {"id":"x","choices":[],"usage":{"prompt_tokens":1e400}}\n\n']  # fmt: skip
            out = [chunk(e) for e in events.prelude()] + [chunk(events.token("tok "))] + [chunk(b) for b in bad]
            out += [chunk(e) for e in events.finish()]
            self.write(_SSE_HEAD + b"".join(out) + chunk(events.terminator()) + _LAST_CHUNK)
            return True
        if name == "huge_response":
            size = fault.integer("size", 50_000_000)
            head = b'{"id":"chatcmpl-fault","object":"chat.completion","created":1700000000,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"'
            tail = b'"},"finish_reason":"stop"}]}'
            filler = max(0, size - len(head) - len(tail))
            self.write(json_head(200, len(head) + filler + len(tail)) + head)
            block = b"a" * 65536
            while filler > 0:
                await self.drain()
                piece = block if filler >= len(block) else block[:filler]
                self.write(piece)
                filler -= len(piece)
            await self.drain()
            self.write(tail)
            return True
        if name == "huge_stream":
            size = fault.integer("size", 50_000_000)
            self.write(_SSE_HEAD + b"".join(chunk(e) for e in events.prelude()))
            token = chunk(events.token("x" * 4000))
            sent = 0
            while sent < size:
                await self.drain()
                self.write(token * 16)
                sent += len(token) * 16
            self.write(b"".join(chunk(e) for e in events.finish()) + chunk(events.terminator()) + _LAST_CHUNK)
            return True
        if name == "drip":
            interval = fault.num("interval_s", 0.05)
            self.write(_SSE_HEAD + b"".join(chunk(e) for e in events.prelude()))
            while True:
                await asyncio.sleep(interval)
                self.write(chunk(b": ping\n\n"))
        if name == "echo_key":
            credential = req.header("authorization") or req.header("x-api-key") or ""
            err = error_body(kind, 401, f"Incorrect API key provided: {credential}")
            self.write(json_head(401, len(err)) + err)
            return True
        raise AssertionError(f"fault {name!r} has no behaviour")  # FAULTS and this function disagree


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
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="address to bind (default: %(default)s)")
    p.add_argument("--fault", default="ok", metavar="SPEC", help="default fault spec, e.g. 'status;code=529;retry_after=1'")
    p.add_argument("--mix", default="", metavar="SPEC=W,...", help="weighted faults drawn per request, e.g. 'ok=8,reset=1'")
    p.add_argument("--seed", type=int, default=None, help="RNG seed for the mix and random bytes")
    p.add_argument("--tokens", type=int, default=8, help="tokens per normal answer")
    p.add_argument("--list", action="store_true", help="list the faults and exit")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop implementation")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        for name, doc in FAULTS.items():
            print(f"{name:20} {doc}")
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
