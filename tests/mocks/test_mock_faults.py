"""mocks/faults.py: the one table of faults, each played over a real socket against a fault server.

Every entry of `FAULTS` is exercised here by name, so a handler that no longer does what its doc
says, or a name without a handler, fails this module before any gateway test trips on it.
"""
from __future__ import annotations

import asyncio
from collections.abc import Callable

import orjson
import pytest

from mocks import wire
from mocks.faults import CONNECTION_FAULTS, FAULTS, Behaviour, FaultConfig, parse_fault, parse_mix, start_faulty
from tests.mocks.mock_testing import run

READ_S = 0.6  # how long a client waits for what a fault sends; only the drip runs that long

Check = Callable[[bytes], bool]


def head_status(data: bytes) -> int:
    return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.1 ") else 0


def json_200(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    return head_status(data) == 200 and orjson.loads(body)["object"] == "chat.completion"


def whole_stream(data: bytes) -> bool:
    return head_status(data) == 200 and b"data: [DONE]" in data and data.endswith(wire.CHUNK_END)


# spec -> what a client must read from it (status, framing, or nothing at all)
EXPECT: dict[str, Check] = {
    "ok": json_200,
    "ok;stream=1": whole_stream,  # stream chosen by the request body below, the name is only a label
    "refuse": lambda d: d == b"",
    "reset": lambda d: d == b"",
    "stall_before_head;stall_s=0.05": lambda d: d == b"",
    "stall_mid_head;stall_s=0.05": lambda d: d.endswith(b"content-le"),
    "stall_mid_body;stall_s=0.05": lambda d: head_status(d) == 200 and not d.endswith(b"}"),
    "stall_mid_stream;stall_s=0.05;gap_s=0": lambda d: d.count(b"tok") == 2 and b"[DONE]" not in d,
    "close_mid_stream;cut=data;gap_s=0": lambda d: b"[DONE]" not in d and not d.endswith(b"\r\n"),
    "reset_mid_stream;gap_s=0": lambda d: b"[DONE]" not in d,
    "reset_mid_body;gap_s=0": lambda d: d == b"" or head_status(d) == 200,  # an RST may discard what was sent
    "status;code=529;retry_after=2": lambda d: head_status(d) == 529 and b"retry-after: 2\r\n" in d,
    "status;code=799;body=empty": lambda d: d.startswith(b"HTTP/1.1 799 Unknown\r\n"),
    "status;code=503;body=html": lambda d: head_status(d) == 503 and b"text/html" in d,
    "truncated_body;gap_s=0": lambda d: head_status(d) == 200 and not d.endswith(b"}"),
    "conflicting_framing": lambda d: b"content-length" in d and b"transfer-encoding: chunked" in d,
    "duplicate_length": lambda d: d.count(b"content-length:") == 2,
    "bad_chunk;gap_s=0": lambda d: b"zz\r\nnot a chunk" in d,
    "chunk_overflow;gap_s=0": lambda d: b"1" + b"0" * 20 in d,
    "unknown_coding;gap_s=0": lambda d: b"transfer-encoding: gzip" in d,
    "invalid_json_200": lambda d: head_status(d) == 200 and not d.endswith(b"}"),
    "html_200": lambda d: head_status(d) == 200 and b"<!doctype html>" in d,
    "empty_200": lambda d: head_status(d) == 200 and d.endswith(b"content-length: 0\r\n\r\n"),
    "not_http;size=64;gap_s=0": lambda d: len(d) == 64,
    "huge_head;size=20000;gap_s=0": lambda d: len(d.partition(b"\r\n\r\n")[0]) > 20000,
    "interim_100": lambda d: d.startswith(wire.CONTINUE_100 + b"HTTP/1.1 200 OK"),
    "sse_no_terminator": lambda d: head_status(d) == 200 and b"[DONE]" not in d and d.endswith(wire.CHUNK_END),
    "sse_garbage": lambda d: whole_stream(d) and b"data: {not json" in d,
    "sse_bad_usage": lambda d: whole_stream(d) and b'"usage":5' in d,
    "huge_response;size=300000": lambda d: json_200(d) and len(d) > 300000,
    "huge_stream;size=100000": lambda d: whole_stream(d) and len(d) > 100000,
    "drip;interval_s=0.01": lambda d: d.count(b": ping") >= 3,
    "close_idle": json_200,
    "echo_key": lambda d: head_status(d) == 401 and b"sk-the-client-key" in d,
}


def request(stream: bool, spec: str) -> bytes:
    body = orjson.dumps({"model": "m", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer sk-the-client-key\r\n"
            b"x-fault: %b\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%b"
            % (spec.encode(), len(body), body))  # fmt: skip


async def read_all(port: int, payload: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    out = bytearray()
    try:
        async with asyncio.timeout(READ_S):
            while chunk := await reader.read(65536):
                out += chunk
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    return bytes(out)


def test_the_table_is_one_table() -> None:
    assert all(isinstance(b, Behaviour) and b.doc and callable(b.play) for b in FAULTS.values())
    assert CONNECTION_FAULTS == {"refuse", "reset"}
    named = {parse_fault(spec).name for spec in EXPECT}
    assert named == set(FAULTS), "every fault in the table is played below, and nothing else"


def test_specs_are_parsed_and_refused() -> None:
    assert parse_fault("status;code=529;retry_after=2").params == {"code": "529", "retry_after": "2"}
    assert str(parse_fault("stall_mid_stream;after=3")) == "stall_mid_stream;after=3"
    with pytest.raises(ValueError, match="unknown fault"):
        parse_fault("no_such_fault")
    with pytest.raises(ValueError, match="key=value"):
        parse_fault("status;code")
    assert parse_mix("ok=8,reset,status;code=500=2") == {"ok": 8.0, "reset": 1.0, "status;code=500": 2.0}
    with pytest.raises(ValueError):
        FaultConfig(mix={"ok": float("inf")}).validate()


@pytest.mark.parametrize("spec", list(EXPECT))
def test_each_fault_sends_what_its_doc_says(spec: str) -> None:
    async def go() -> tuple[bytes, dict[str, int]]:
        server = await start_faulty(FaultConfig(tokens=4))
        try:
            data = await read_all(server.port, request(spec.startswith("ok;stream"), spec))
            return data, dict(server.faults)
        finally:
            await server.close()

    data, counted = run(go)
    assert EXPECT[spec](data), data[:600]
    assert counted == {parse_fault(spec).name: 1}


def test_connection_faults_act_on_accept_as_the_server_default() -> None:
    async def go() -> tuple[bytes, int]:
        server = await start_faulty(FaultConfig(fault="reset"))
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            try:
                data = await asyncio.wait_for(reader.read(100), READ_S)
            except ConnectionError:
                data = b""
            writer.close()
            return data, server.requests
        finally:
            await server.close()

    data, requests = run(go)
    assert data == b"" and requests == 0  # nothing was even read: the connection was reset on accept
