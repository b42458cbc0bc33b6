"""wire: precomputed bytes, chunk framing both ways, and the gateway's error answers in each API's shape."""

from __future__ import annotations

import orjson
import pytest

from proxy import errors, wire
from proxy.apis import ANTHROPIC, OPENAI
from tests.unit.protocol_harness import splits

BODY = b'3\r\nabc\r\n1;ext=1\r\nd\r\n10\r\n' + b"0123456789abcdef" + b"\r\n0\r\nx-trailer: 1\r\n\r\n"
PAYLOAD = b"abcd0123456789abcdef"


def test_status_lines_cover_every_status() -> None:
    assert wire.STATUS_LINE[200] == b"HTTP/1.1 200 OK\r\n"
    assert wire.STATUS_LINE[529] == b"HTTP/1.1 529 Overloaded\r\n"
    assert wire.STATUS_LINE[599] == b"HTTP/1.1 599 Unknown\r\n"
    assert set(wire.STATUS_LINE) == set(range(100, 600))
    for code, line in wire.STATUS_LINE.items():
        assert line.startswith(b"HTTP/1.1 %d " % code) and line.endswith(b"\r\n")


def test_header_constants_are_lines() -> None:
    for line in (wire.SERVER_HEADER, wire.JSON_TYPE, wire.CHUNKED, wire.CONNECTION_CLOSE, wire.NO_BUFFERING):
        assert line.endswith(b"\r\n") and line.count(b"\r\n") == 1 and b": " in line
    assert wire.SERVER_HEADER.startswith(b"server: llm-edge/")


@pytest.mark.parametrize("data", [b"a", b"hello world", bytes(range(256)) * 3])
def test_chunk_and_dechunk_round_trip(data: bytes) -> None:
    framed = wire.chunk(data)
    assert framed == b"%x\r\n%b\r\n" % (len(data), data)
    assert wire.dechunk(framed + wire.LAST_CHUNK) == data


def test_dechunk_drops_extensions_and_trailers() -> None:
    assert wire.dechunk(BODY) == PAYLOAD
    assert wire.dechunk(wire.LAST_CHUNK) == b""


@pytest.mark.parametrize("pieces", splits(BODY), ids=lambda p: f"{len(p)}:{len(p[0])}")
def test_dechunker_at_every_split(pieces: list[bytes]) -> None:
    dechunker = wire.Dechunker()
    out = b""
    fed = 0
    last_chunk_end = BODY.index(b"\r\n0\r\n") + 5
    for piece in pieces:
        out += dechunker.feed(piece)
        fed += len(piece)
        assert dechunker.done == (fed >= last_chunk_end)  # done at the last chunk's size line; trailers dropped
    assert out == PAYLOAD and dechunker.done


def test_dechunker_passes_chunk_data_on_as_it_arrives() -> None:
    dechunker = wire.Dechunker()
    assert dechunker.feed(b"a\r\n01234") == b"01234"  # half a chunk: its bytes go out now
    assert dechunker.feed(b"56789\r\n") == b"56789"
    assert dechunker.pending == b"" and not dechunker.done


def test_dechunker_ignores_what_follows_the_last_chunk() -> None:
    dechunker = wire.Dechunker()
    assert dechunker.feed(b"1\r\nz\r\n0\r\n\r\n1\r\nq\r\n") == b"z"
    assert dechunker.done and dechunker.feed(b"more") == b""


def test_dechunker_bounds_a_size_line() -> None:
    dechunker = wire.Dechunker()
    with pytest.raises(ValueError, match="1 KiB"):
        dechunker.feed(b"f" * 2000)


def test_dechunker_holds_only_a_partial_size_line() -> None:
    dechunker = wire.Dechunker()
    assert dechunker.feed(b"1") == b""
    assert dechunker.pending == b"1"
    assert dechunker.feed(b"0\r\n" + b"x" * 16 + b"\r\n") == b"x" * 16


def test_dechunker_refuses_a_bad_size() -> None:
    with pytest.raises(ValueError):
        wire.Dechunker().feed(b"zz\r\nab\r\n")


def test_json_response_is_complete_and_exact() -> None:
    answer = wire.json_response(201, b'{"a":1}', close=True, extra=b"x-a: 1\r\n", date=b"date: today\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert body == b'{"a":1}'
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 201 Created"
    assert lines[1:] == [
        wire.SERVER_HEADER[:-2], b"date: today", b"content-type: application/json", b"content-length: 7", b"x-a: 1",
        b"connection: close",
    ]  # fmt: skip


def test_json_response_keeps_alive_by_default() -> None:
    assert b"connection:" not in wire.json_response(200, b"{}")


def test_openai_error_body_shape() -> None:
    body = orjson.loads(wire.openai_error_body("m", "t", "c", "p"))
    assert body == {"error": {"message": "m", "type": "t", "param": "p", "code": "c"}}
    assert orjson.loads(wire.openai_error_body("m", "t")) == {"error": {"message": "m", "type": "t", "param": None,
                                                                         "code": None}}  # fmt: skip


@pytest.mark.parametrize(
    "status,kind",
    [(400, "invalid_request_error"), (404, "not_found_error"), (429, "rate_limit_error"), (529, "overloaded_error")],
)
def test_anthropic_error_body_shape(status: int, kind: str) -> None:
    body = orjson.loads(wire.anthropic_error_body(status, "why"))
    assert body == {"type": "error", "error": {"type": kind, "message": "why"}}


ERRORS = [
    errors.BadRequestError("'model' must be a non-empty string", param="model"),
    errors.ModelNotFoundError("no such model"),
    errors.PayloadTooLargeError("too big"),
    errors.AllRoutesFailedError("all failed", status=429, retry_after=7, final=False),
    errors.AllRoutesFailedError("all failed", status=502, retry_after=None, final=True),
    errors.FirstByteTimeout("slow"),
]


@pytest.mark.parametrize("exc", ERRORS, ids=lambda e: type(e).__name__ + str(e.status))
def test_error_answer_openai(exc: errors.GatewayError) -> None:
    answer = wire.error_answer(OPENAI, exc, exc.close, b"")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(wire.STATUS_LINE[exc.status])
    assert exc.headers() in head + b"\r\n"
    assert (b"connection: close" in head) == exc.close
    error = orjson.loads(body)["error"]
    assert error == {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}
    assert b"content-length: %d\r\n" % len(body) in head + b"\r\n"


@pytest.mark.parametrize("exc", ERRORS, ids=lambda e: type(e).__name__ + str(e.status))
def test_error_answer_anthropic(exc: errors.GatewayError) -> None:
    answer = wire.error_answer(ANTHROPIC, exc, True, b"date: d\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(wire.STATUS_LINE[exc.status]) and b"\r\ndate: d" in head and b"connection: close" in head
    parsed = orjson.loads(body)
    assert parsed["type"] == "error" and parsed["error"]["message"] == exc.message


def test_error_answer_carries_retry_after() -> None:
    exc = errors.AllRoutesFailedError("busy", status=429, retry_after=7, final=False)
    assert b"\r\nretry-after: 7\r\n" in wire.error_answer(OPENAI, exc, False, b"")


@pytest.mark.parametrize("exc", ERRORS, ids=lambda e: type(e).__name__ + str(e.status))
def test_stream_error_event_in_each_api(exc: errors.GatewayError) -> None:
    openai = wire.stream_error_event(OPENAI, exc)
    assert openai.startswith(b"data: ") and openai.endswith(b"\n\n") and openai.count(b"\n\n") == 1
    assert orjson.loads(openai[6:])["error"]["message"] == exc.message
    anthropic = wire.stream_error_event(ANTHROPIC, exc)
    assert anthropic.startswith(b"event: error\ndata: ") and anthropic.endswith(b"\n\n")
    assert orjson.loads(anthropic.split(b"data: ", 1)[1])["error"]["message"] == exc.message


def test_error_response_is_openai_shaped() -> None:
    answer = wire.error_response(418, "teapot", "invalid_request_error", "tea", close=True)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 418 ") and b"connection: close" in head
    assert orjson.loads(body)["error"]["code"] == "tea"
