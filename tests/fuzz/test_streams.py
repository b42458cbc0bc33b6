"""Property tests of the stream translators fed hostile upstream streams: garbage events, any line
ending, cut anywhere, split into any reads.

Whatever comes in, a translator never raises, writes only well-formed frames of its client's
format, writes its clean terminator at most once and only as the very end, and a stream that did
not end cleanly upstream ends in an error frame, never in a terminator.
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from proxy.translate import AnthropicToOpenAIStream, OpenAIToAnthropicStream
from tests.fuzz.driver import pieces
from tests.fuzz.strategies import ANTHROPIC_EVENTS, OPENAI_EVENTS, sse_stream

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _translate(machine: AnthropicToOpenAIStream | OpenAIToAnthropicStream, data: bytes, cuts: list[int]) -> bytes:
    out = b"".join(machine.feed(piece) for piece in pieces(data, cuts))
    return out + machine.close()


def _frames(out: bytes) -> list[bytes]:
    assert out == b"" or out.endswith(b"\n\n"), f"a frame is cut off: {out[-120:]!r}"
    return [f for f in out.split(b"\n\n") if f]


def check_openai_output(out: bytes) -> None:
    frames = _frames(out)
    for i, frame in enumerate(frames):
        if frame.startswith(b":"):
            continue  # a comment (ping)
        assert frame.startswith(b"data: ") and b"\n" not in frame, f"not an OpenAI frame: {frame[:120]!r}"
        data = frame[6:]
        if data == b"[DONE]":
            assert i == len(frames) - 1, "[DONE] before the end"
            continue
        payload = orjson.loads(data)
        assert isinstance(payload, dict)
        if "error" in payload:
            assert i == len(frames) - 1, "frames after an error"
            assert set(payload["error"]) >= {"message", "type"}
        else:
            assert payload["object"] == "chat.completion.chunk" and isinstance(payload["choices"], list)
    if frames:
        last = frames[-1]
        assert last == b"data: [DONE]" or b'"error"' in last, f"the stream ended without [DONE] or an error: {last[:120]!r}"


def check_anthropic_output(out: bytes) -> None:
    frames = _frames(out)
    for i, frame in enumerate(frames):
        if frame.startswith(b":"):
            continue
        event, sep, data = frame.partition(b"\ndata: ")
        assert sep and event.startswith(b"event: ") and b"\n" not in data, f"not an Anthropic frame: {frame[:120]!r}"
        payload = orjson.loads(data)
        assert payload["type"].encode() == event[7:], "the event name and the JSON type disagree"
        if payload["type"] in ("message_stop", "error"):
            assert i == len(frames) - 1, f"frames after {payload['type']}"
    if frames:
        last = frames[-1]
        assert b"event: message_stop" in last or b"event: error" in last, f"ended without message_stop or an error: {last[:120]!r}"


@SETTINGS
@given(data=sse_stream(ANTHROPIC_EVENTS), cuts=st.lists(st.integers(0, 3000), max_size=8), usage=st.booleans())
def test_anthropic_to_openai_survives_any_stream(data: bytes, cuts: list[int], usage: bool) -> None:
    machine = AnthropicToOpenAIStream("m", include_usage=usage, created=1, chunk_id="c")
    out = _translate(machine, data, cuts)
    check_openai_output(out)
    assert machine.done
    if b"message_stop" not in data:  # the upstream never ended cleanly: neither may we
        assert b"data: [DONE]" not in out


@SETTINGS
@given(data=sse_stream(OPENAI_EVENTS), cuts=st.lists(st.integers(0, 3000), max_size=8))
def test_openai_to_anthropic_survives_any_stream(data: bytes, cuts: list[int]) -> None:
    machine = OpenAIToAnthropicStream("m", message_id="msg_1")
    out = _translate(machine, data, cuts)
    check_anthropic_output(out)
    assert machine.done
    if b"[DONE]" not in data and b"finish_reason" not in data:
        assert b"event: message_stop" not in out
