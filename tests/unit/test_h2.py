"""proxy/h2.py's pure parts: response-head conversion, request validation, the token bucket and
the header-block guard, fed whole and byte by byte."""

from __future__ import annotations

import struct

import pytest
from hpack import Encoder

from proxy.h2 import PREFACE, HeaderBlockGuard, TokenBucket, request_problem, response_headers

GOOD = [(b":method", b"POST"), (b":scheme", b"https"), (b":path", b"/v1/chat/completions"), (b":authority", b"gw"),
        (b"content-type", b"application/json"), (b"te", b"trailers")]  # fmt: skip


def test_response_head_becomes_h2_headers() -> None:
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nx-cache: MISS\r\nUpgrade: h2c")  # fmt: skip
    headers, length, chunked = response_headers(head)
    assert headers == [(b":status", b"200"), (b"content-type", b"text/event-stream"), (b"x-cache", b"MISS")]
    assert length == -1 and chunked


def test_content_length_is_kept_and_read() -> None:
    headers, length, chunked = response_headers(b"HTTP/1.1 404 Not Found\r\ncontent-length: 12\r\nconnection: close")
    assert headers == [(b":status", b"404"), (b"content-length", b"12")] and length == 12 and not chunked


def test_a_good_request_passes() -> None:
    assert request_problem(GOOD) is None


@pytest.mark.parametrize("headers", [
    GOOD[1:],  # no :method
    [(b":status", b"200"), *GOOD],
    [*GOOD, (b":path", b"/again")],
    [GOOD[0], (b"x", b"1"), *GOOD[1:]],
    [*GOOD, (b"Content-Type", b"x")],
    [*GOOD, (b"transfer-encoding", b"chunked")],
    [*GOOD, (b"te", b"gzip")],
    [*GOOD, (b"x-a", b"1\r\nx-b: 2")],
    [*GOOD, (b"x-a", b"\x00")],
    [*GOOD, (b"bad name", b"1")],
])  # fmt: skip
def test_malformed_requests_are_named(headers: list[tuple[bytes, bytes]]) -> None:
    assert request_problem(headers)


def test_token_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = TokenBucket(rate=10.0, burst=5, now=0.0)
    assert all(bucket.take(0.0) for _ in range(5))
    assert not bucket.take(0.0)
    assert bucket.take(1.0)  # ten more tokens a second later (capped at the burst)
    assert sum(bucket.take(1.0) for _ in range(10)) == 4


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", sid) + payload


@pytest.mark.parametrize("mode", ["whole", "bytewise"])
def test_header_block_guard_sizes_an_open_block(mode: str) -> None:
    block = Encoder().encode(GOOD)
    stream = (PREFACE + frame(4, 0, 0, b"") + frame(1, 0x5, 1, block) + frame(0, 1, 1, b"{}")
              + frame(1, 0, 3, block) + frame(9, 0, 3, b"x" * 100) + frame(9, 0, 3, b"y" * 50))  # fmt: skip
    guard = HeaderBlockGuard()
    if mode == "whole":
        size = guard.feed(stream)
    else:
        for i in range(len(stream)):
            size = guard.feed(stream[i : i + 1])
    assert size == len(block) + 150
    assert guard.feed(frame(9, 0x4, 3, b"z")) == 0  # END_HEADERS closes it
