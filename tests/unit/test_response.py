"""response: the rules for a provider's answer, as pure checks on bytes (table-driven)."""

from __future__ import annotations

import orjson
import pytest

from proxy import response
from proxy.apis import ANTHROPIC, OPENAI
from proxy.wire import LAST_CHUNK, chunk

CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
FINAL = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"
HINTS = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n"


@pytest.mark.parametrize(
    "head,expected",
    [
        (FINAL, (0, 0)),
        (CONTINUE + FINAL, (len(CONTINUE), 1)),
        (CONTINUE * 3 + FINAL, (3 * len(CONTINUE), 3)),
        (HINTS + FINAL, (len(HINTS), 1)),
        (CONTINUE + b"HTTP/1.1 100 Cont", (-1, 1)),  # an interim head still arriving
        (b"HTTP/1.1 100 Contin", (-1, 0)),
        (b"", (0, 0)),
    ],
)
def test_interim_heads_end(head: bytes, expected: tuple[int, int]) -> None:
    assert response.interim_heads_end(head) == expected


@pytest.mark.parametrize(
    "status,size,interim,problem",
    [
        (200, 100, 0, None),
        (599, 100, 8, None),
        (100, 10, 0, None),
        (600, 10, 0, "status 600"),
        (799, 10, 0, "status 799"),
        (99, 10, 0, "status 99"),
        (200, 1025, 0, "over 1024 bytes"),
        (200, 10, response.MAX_INTERIM_HEADS + 1, "interim"),
    ],
)
def test_head_problem(status: int, size: int, interim: int, problem: str | None) -> None:
    found = response.head_problem(status, size, interim, 1024)
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(
    "stream,status,head,problem",
    [
        (False, 200, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 5\r\n", None),
        (False, 200, b"HTTP/1.1 200 OK\r\ncontent-type: application/json; charset=utf-8\r\n", None),
        (False, 200, b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\n", "'text/html'"),
        (False, 200, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 0\r\n", "empty body"),
        (False, 200, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: gzip\r\n", "'gzip'"),
        (False, 200, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n", None),
        (False, 200, b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n", None),  # no type at all: the body is checked later
        (True, 200, b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n", None),
        (True, 200, b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n", "'application/json'"),
        (False, 404, b"HTTP/1.1 404 Not Found\r\ncontent-type: text/html\r\n", None),  # not a 2xx: another rule
        (False, 301, b"HTTP/1.1 301 Moved\r\ncontent-length: 0\r\n", None),
    ],
)
def test_not_an_answer(stream: bool, status: int, head: bytes, problem: str | None) -> None:
    found = response.not_an_answer(stream, status, head.lower() + b"\r\n")
    if problem is None:
        assert found is None
    else:
        assert found is not None and problem in found


@pytest.mark.parametrize(
    "name,value",
    [(b"content-type", b"application/json"), (b"x-missing", b""), (b"retry-after", b"5"), (b"x-spaced", b"a b")],
)
def test_header(name: bytes, value: bytes) -> None:
    lower = b"http/1.1 200 ok\r\ncontent-type: application/json\r\nretry-after:5\r\nx-spaced:   a b  \r\n\r\n"
    assert response.header(lower, name) == value


@pytest.mark.parametrize(
    "line,length",
    [(b"content-length: 12", 12), (b"content-length: 0", 0), (b"content-length: -1", -1), (b"x: 1", -1),
     (b"content-length: 1e3", -1)],
)  # fmt: skip
def test_content_length(line: bytes, length: int) -> None:
    assert response.content_length(b"http/1.1 200 ok\r\n" + line + b"\r\n\r\n") == length


PRIVATE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
    b"Set-Cookie: a=b\r\nOpenAI-Organization: org-secret\r\nopenai-project: proj\r\nServer: cloudflare\r\n"
    b"alt-svc: h3\r\nStrict-Transport-Security: max-age=1\r\nTE: trailers\r\nTrailer: x\r\nUpgrade: h2c\r\n"
    b"Proxy-Connection: x\r\nx-request-id: req-1\r\nopenai-processing-ms: 12\r\ncontent-length: 2\r\n\r\n"
)


def test_public_head_drops_hop_by_hop_and_account_headers() -> None:
    out = response.public_head(PRIVATE_HEAD, PRIVATE_HEAD.lower())
    lower = out.lower()
    gone = (b"connection", b"keep-alive", b"set-cookie", b"openai-organization", b"openai-project", b"server",
            b"alt-svc", b"strict-transport-security", b"te", b"trailer", b"upgrade", b"proxy-connection")  # fmt: skip
    for name in gone:
        assert b"\r\n" + name + b":" not in lower, name
    assert out == (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-request-id: req-1\r\nopenai-processing-ms: 12"
        b"\r\ncontent-length: 2\r\n\r\n"
    )


def test_public_head_drops_what_connection_lists() -> None:
    head = (
        b"HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Internal, x-debug\r\nX-Internal: 1\r\nx-debug: 2\r\n"
        b"x-debugger: 3\r\n\r\n"
    )
    out = response.public_head(head, head.lower())
    assert out == b"HTTP/1.1 200 OK\r\nx-debugger: 3\r\n\r\n"  # a longer name that starts the same stays


def test_public_head_keeps_what_it_should() -> None:
    head = (
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n"
        b"x-ratelimit-remaining: 9\r\n\r\n"
    )
    assert response.public_head(head, head.lower()) == head


@pytest.mark.parametrize("status,line", [(200, b"HTTP/1.1 200 OK\r\n"), (529, b"HTTP/1.1 529 Overloaded\r\n")])
def test_status_line(status: int, line: bytes) -> None:
    assert response.status_line(status) == line


def test_redacted_masks_the_key_at_the_same_length() -> None:
    data = b'{"error":"bad key sk-SECRET-1 given"}'
    out = response.redacted(b"sk-SECRET-1", data)
    assert b"sk-SECRET-1" not in out and len(out) == len(data) and b"***********" in out
    assert response.redacted(b"", data) is data
    assert response.redacted(b"other", data) is data


@pytest.mark.parametrize(
    "value,seconds",
    [(b"5", 5.0), (b"0.5", 0.5), (b"0", 0.0), (b"-3", 0.0), (b"inf", 300.0), (b"1e400", 300.0), (b"nan", 0.0),
     (b"Wed, 21 Oct 2015 07:28:00 GMT", 0.0), (b"", 0.0), (b"9999", 300.0)],
)  # fmt: skip
def test_retry_after_s(value: bytes, seconds: float) -> None:
    assert response.retry_after_s(value, 300.0) == seconds


def test_head_retry_after_s() -> None:
    head = b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 12\r\ncontent-length: 2\r\n\r\n"
    assert response.head_retry_after_s(head, head.lower(), 60.0) == 12.0
    assert response.head_retry_after_s(head, head.lower(), 5.0) == 5.0
    plain = b"HTTP/1.1 429 Too Many Requests\r\n\r\n"
    assert response.head_retry_after_s(plain, plain.lower(), 60.0) == 0.0


OPENAI_EVENT = b'data: {"choices":[{"delta":{"content":"a"}}]}\n\n'
OPENAI_DONE = b"data: [DONE]\n\n"
ANTHROPIC_EVENT = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n'
ANTHROPIC_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


@pytest.mark.parametrize(
    "api,recent,done",
    [
        (OPENAI, OPENAI_EVENT + OPENAI_DONE, True),
        (OPENAI, chunk(OPENAI_EVENT) + chunk(OPENAI_DONE) + LAST_CHUNK, True),
        (OPENAI, chunk(OPENAI_EVENT + OPENAI_DONE) + LAST_CHUNK, True),
        (OPENAI, OPENAI_EVENT, False),
        (OPENAI, b'data: {"choices":[{"delta":{"content":"data: [DONE]"}}]}\n\n', False),  # model output
        (OPENAI, OPENAI_DONE + OPENAI_EVENT, False),  # the terminator must be last
        (ANTHROPIC, ANTHROPIC_EVENT + ANTHROPIC_STOP, True),
        (ANTHROPIC, chunk(ANTHROPIC_EVENT + ANTHROPIC_STOP) + LAST_CHUNK, True),
        (ANTHROPIC, b'data: {"type":"message_stop"}\n\n', True),
        (ANTHROPIC, ANTHROPIC_EVENT, False),
        (ANTHROPIC, b'event: content_block_delta\ndata: {"delta":{"text":"event: message_stop"}}\n\n', False),
        (ANTHROPIC, ANTHROPIC_STOP + ANTHROPIC_EVENT, False),
    ],
)
def test_stream_completed(api: int, recent: bytes, done: bool) -> None:
    assert response.stream_completed(api, recent) is done


@pytest.mark.parametrize("recent", [chunk(ANTHROPIC_EVENT) + chunk(ANTHROPIC_STOP) + LAST_CHUNK,
                                    chunk(ANTHROPIC_EVENT)[-64:] + chunk(ANTHROPIC_STOP)])  # fmt: skip
def test_stream_completed_anthropic_one_event_per_chunk(recent: bytes) -> None:
    # message_stop in its own chunk, as Anthropic sends it: the chunk's size line is framing, not the event
    assert response.stream_completed(ANTHROPIC, recent)


@pytest.mark.parametrize(
    "recent,errored",
    [(b'event: error\ndata: {"type":"error"}\n\n', True), (b'data: {"error":{"message":"x"}}\n\n', True),
     (OPENAI_EVENT, False), (ANTHROPIC_STOP, False)],
)  # fmt: skip
def test_ended_with_error(recent: bytes, errored: bool) -> None:
    assert response.ended_with_error(recent) is errored


def test_cut_short_event_in_each_api() -> None:
    openai = response.cut_short_event(OPENAI)
    assert openai.startswith(b"data: ") and orjson.loads(openai[6:])["error"]["code"] == "upstream_stream_incomplete"
    anthropic = response.cut_short_event(ANTHROPIC)
    assert anthropic.startswith(b"event: error\ndata: ")
    assert orjson.loads(anthropic.split(b"data: ", 1)[1])["type"] == "error"


def test_with_cut_short_event_by_framing() -> None:
    event = response.cut_short_event(OPENAI)
    tail = chunk(OPENAI_EVENT) + LAST_CHUNK
    assert response.with_cut_short_event(OPENAI, tail, True, False) == chunk(OPENAI_EVENT) + chunk(event) + LAST_CHUNK
    assert response.with_cut_short_event(OPENAI, OPENAI_EVENT, False, True) == OPENAI_EVENT + event
    # mid-chunk, or a length-framed body: nothing can be added, the caller closes instead
    assert response.with_cut_short_event(OPENAI, chunk(OPENAI_EVENT), True, False) == chunk(OPENAI_EVENT)
    assert response.with_cut_short_event(OPENAI, OPENAI_EVENT, False, False) == OPENAI_EVENT
