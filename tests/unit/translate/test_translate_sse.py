"""SSEParser: WHATWG line rules, fed whole, byte by byte and at random splits."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.translate.sse import SSEParser

Events = list[tuple[bytes, bytes]]


def parse_whole(data: bytes) -> Events:
    p = SSEParser()
    return p.feed(data) + p.flush()


def parse_bytewise(data: bytes) -> Events:
    p = SSEParser()
    out: Events = []
    for i in range(len(data)):
        out += p.feed(data[i : i + 1])
    return out + p.flush()


CASES: list[tuple[bytes, Events]] = [
    (b"data: a\n\n", [(b"", b"a")]),
    (b"event: x\ndata: {}\n\n", [(b"x", b"{}")]),
    (b"event: x\r\ndata: 1\r\n\r\n", [(b"x", b"1")]),
    (b"event: x\rdata: 1\r\r", [(b"x", b"1")]),
    (b"data: a\ndata: b\n\n", [(b"", b"a\nb")]),
    (b": comment\ndata: a\n\n", [(b"", b"a")]),
    (b"data:no-space\n\n", [(b"", b"no-space")]),
    (b"data:  two spaces\n\n", [(b"", b" two spaces")]),
    (b"event: ping\n\n", []),  # an event without data is not dispatched
    (b"id: 7\nretry: 10\ndata: a\n\n", [(b"", b"a")]),
    (b"data\n\n", [(b"", b"")]),
    (b"\xef\xbb\xbfdata: a\n\n", [(b"", b"a")]),
    (b"data: a\n\n\n\ndata: b\n\n", [(b"", b"a"), (b"", b"b")]),
    (b"event: a\ndata: 1\n\ndata: 2\n\n", [(b"a", b"1"), (b"", b"2")]),  # event name resets
    (b"data: \xe2\x98\x80\n\n", [(b"", "☀".encode())]),
]


def test_golden_cases_all_feeding_modes() -> None:
    for data, expected in CASES:
        assert parse_whole(data) == expected, data
        assert parse_bytewise(data) == expected, data
        for cut in range(len(data) + 1):
            p = SSEParser()
            assert p.feed(data[:cut]) + p.feed(data[cut:]) + p.flush() == expected, (data, cut)


def test_crlf_split_between_cr_and_lf_is_one_line_end() -> None:
    p = SSEParser()
    assert p.feed(b"data: a\r") == []
    assert p.feed(b"\n") == []
    assert p.feed(b"\r") == [(b"", b"a")]
    assert p.feed(b"\n") == []
    assert p.feed(b"data: b\n\n") == [(b"", b"b")]


def test_flush_completes_unterminated_tail_only_once() -> None:
    p = SSEParser()
    assert p.feed(b"data: [DONE]") == []
    assert p.flush() == [(b"", b"[DONE]")]
    assert p.flush() == []


def test_long_line_in_many_pieces() -> None:
    body = b"x" * 100_000
    p = SSEParser()
    out: Events = []
    for i in range(0, len(body), 7):
        out += p.feed((b"data: " if i == 0 else b"") + body[i : i + 7])
    out += p.feed(b"\n\n")
    assert out == [(b"", body)]


_value = st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"").lstrip(b" "))
_event = st.tuples(st.sampled_from([b"", b"message_start", b"x"]), st.lists(_value, min_size=1, max_size=3))


@settings(max_examples=150, deadline=None)
@given(
    events=st.lists(_event, max_size=6),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_split_any_line_ending(events: list[tuple[bytes, list[bytes]]], eol: bytes, cuts: list[int]) -> None:
    wire = b""
    for name, datas in events:
        if name:
            wire += b"event: " + name + eol
        wire += b"".join(b"data: " + d + eol for d in datas) + eol
    expected = [(name, b"\n".join(datas)) for name, datas in events]
    p = SSEParser()
    got: Events = []
    prev = 0
    for c in sorted(x for x in cuts if x <= len(wire)) + [len(wire)]:
        got += p.feed(wire[prev:c])
        prev = c
    assert got + p.flush() == expected
