"""Pure pieces of the mocks (content, config, wire framing) and the protocol driven by a fake transport."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import orjson
import pytest

from mocks import MockConfig, start_mock
from mocks.content import argument_word, embedding, floats, fragments, prompt_tokens, reply_tokens
from mocks.protocol import MockProtocol
from mocks.server import MockServer
from mocks.wire import CHUNK_END, PH_CREATED, PH_ID, Reply, chunk, fill, fill_whole, stream_parts
from tests.mocks.mock_testing import request_bytes, run

# -- content ---------------------------------------------------------------------------------------


def test_reply_tokens_deterministic_prefixes() -> None:
    a = reply_tokens(42, 16)
    assert a == reply_tokens(42, 16) and reply_tokens(42, 5) == a[:5]
    assert a != reply_tokens(43, 16)
    assert a[0][0].isupper() and all(t.startswith(" ") for t in a[1:])
    assert reply_tokens(1, 0) == []


def test_usage_and_arguments() -> None:
    assert prompt_tokens("") == 1 and prompt_tokens("abcd") == 1 and prompt_tokens("abcde") == 2
    assert prompt_tokens("é" * 4) == 2  # bytes, not characters
    assert argument_word("What's the weather in Paris?", 0) == "Paris"
    assert argument_word("42 !!", 0).isalpha()
    assert "".join(fragments('{"city":"Paris"}', 5)) == '{"city":"Paris"}'


def test_embedding_unit_length_and_deterministic() -> None:
    v = floats(embedding(b"x", 64))
    assert len(v) == 64 and abs(sum(x * x for x in v) - 1.0) < 1e-5
    assert v == floats(embedding(b"x", 64)) and v != floats(embedding(b"y", 64))


# -- config ----------------------------------------------------------------------------------------


def test_config_update_validates_atomically() -> None:
    c = MockConfig()
    c.update({"error_rate": "0.5", "ttft_ms": 10, "require_key": "k", "seed": None})
    assert (c.error_rate, c.ttft_ms, c.require_key) == (0.5, 10.0, "k")
    for bad in (
        {"error_rate": 1.5},
        {"tokens": -1},
        {"error_status": 99},
        {"ttft_ms": True},
        {"x": 1},
        {"ttft_ms": 1, "kind": "grpc"},
    ):
        with pytest.raises(ValueError):
            c.update(bad)
    assert c.ttft_ms == 10.0 and c.kind == "openai"
    assert not hasattr(c, "__dict__")  # slotted


# -- wire ------------------------------------------------------------------------------------------


def test_stream_parts_grouping() -> None:
    ev = [(False, b"pre"), (True, b"t0"), (False, b"mid"), (True, b"t1"), (False, b"post")]
    assert stream_parts(b"H", ev) == (b"Hpre", b"t0mid", b"t1post" + CHUNK_END)
    assert stream_parts(b"H", [(False, b"only")]) == (b"Honly" + CHUNK_END,)
    assert chunk(b"hello") == b"5\r\nhello\r\n"


def test_fill_keeps_lengths() -> None:
    tpl = (b'{"id":"x-' + PH_ID + b'","created":' + PH_CREATED + b"}",)
    out = fill(tpl, b"0123456789abcdef01234567", b"1700000000")
    assert len(out[0]) == len(tpl[0])
    assert orjson.loads(out[0]) == {"id": "x-0123456789abcdef01234567", "created": 1700000000}


def test_fill_whole_matches_fill() -> None:
    part = b"[" + PH_ID + b"|" + PH_CREATED + b"]"
    reply = Reply(200, (b"head" + part, part, b"tail" + PH_ID), stream=True)
    args = (b"u" * 24, b"1700000000")
    assert fill_whole(reply, *args) == b"".join(fill(reply.parts, *args))
    assert PH_ID not in fill_whole(reply, *args) and b"@" not in fill_whole(reply, *args)


# -- protocol with a fake transport ---------------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.paused_reading = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused_reading = True

    def resume_reading(self) -> None:
        self.paused_reading = False


def test_stream_stalls_while_writing_is_paused() -> None:
    async def main() -> None:
        server = MockServer(MockConfig(tokens=5, token_delay_ms=1), asyncio.get_running_loop(), None)
        proto = MockProtocol(server)
        t = FakeTransport()
        proto.connection_made(t)
        proto.pause_writing()
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
        proto.data_received(request_bytes("POST", "/v1/chat/completions", body))
        assert len(t.writes) == 1 and t.writes[0].count(b"data: ") == 1  # head + role delta, then stall
        await asyncio.sleep(0.01)
        assert len(t.writes) == 1  # stalled
        proto.resume_writing()
        await asyncio.sleep(0)
        assert len(t.writes) == 2  # the first token, right away
        await asyncio.sleep(0.1)
        assert len(t.writes) == 1 + 5 and t.writes[-1].endswith(b"data: [DONE]\n\n\r\n0\r\n\r\n")
        proto.connection_lost(None)
        assert server.client_disconnects == 0 and server.open_connections == 0

    run(main)


def test_disconnect_cancels_timers_and_pipeline_pauses_reading() -> None:
    async def main() -> None:
        server = MockServer(MockConfig(ttft_ms=50), asyncio.get_running_loop(), None)
        proto = MockProtocol(server)
        t = FakeTransport()
        proto.connection_made(t)
        body = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
        proto.data_received(request_bytes("POST", "/v1/chat/completions", body) * 20)
        assert t.writes == [] and t.paused_reading  # 1 waiting + 19 queued > high-water mark
        proto.connection_lost(ConnectionResetError())
        await asyncio.sleep(0.08)
        assert t.writes == [] and server.client_disconnects == 1  # the timer was cancelled

    run(main)


def test_in_process_server_sets_tcp_nodelay() -> None:
    async def main() -> None:
        server = await start_mock(MockConfig())
        try:
            _reader, writer = await asyncio.open_connection(server.host, server.port)
            writer.write(request_bytes("GET", "/v1/models"))
            await _reader.readuntil(b"\r\n\r\n")
            (conn,) = server._connections
            sock = conn._transport.get_extra_info("socket")
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            writer.close()
            await writer.wait_closed()
        finally:
            await server.close()

    run(main)
    run(main, use_uvloop=False)
