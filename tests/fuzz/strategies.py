"""Hypothesis strategies for hostile input: HTTP/1.1 request streams and SSE streams.

Requests are drawn from a grammar that leans on what matters for a proxy (framing, the head's
syntax, bounds) and are then optionally mutated at the byte level, so most examples are nearly
valid: the interesting cases sit right at the edge of what the parser accepts.
"""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import strategies as st

# HEAD is left out: its answers carry a content-length and no body, which a response parser cannot
# frame without knowing the request.
METHODS = [b"GET"] * 4 + [b"POST"] * 8 + [b"PUT", b"OPTIONS", b"CONNECT", b"PRI", b"get", b"G\x00T", b"X" * 40]
TARGETS = [
    b"/healthz", b"/v1/models", b"/v1/chat/completions", b"/v1/chat/completions", b"/v1/messages", b"/v1/embeddings",
    b"/stats", b"/metrics", b"/v1/models/fast", b"*", b"http://127.0.0.1:9/v1/models", b"example.com:443", b"//x/y",
    b"/v1/chat/completions?x=1", b"/%00", b"/" + b"a" * 3000,
]  # fmt: skip
VERSIONS = [b"HTTP/1.1"] * 24 + [b"HTTP/1.0"] * 3 + [b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.1 "]
EOLS = [b"\r\n"] * 40 + [b"\n", b"\r", b"\r\r\n"]
INTERESTING = [b"\r", b"\n", b"\x00", b" ", b"\t", b":", b",", b";", b"\x7f", b"\x80", b"\xff", b"0", b"-", b"+", b"\"", b"\\"]
TE_VALUES = [b"chunked", b"Chunked", b" chunked", b"chunked ", b"chunked, chunked", b"gzip, chunked", b"chunked, gzip",
             b"identity", b"gzip", b", chunked", b"chunked,", b"xchunked", b"chunked;q=1", b"\tchunked"]  # fmt: skip
CL_TWEAKS = [b"%d"] * 16 + [b"+%d", b"0%d", b" %d ", b"%d, %d", b"0x%x", b"%d_", b"-%d", b"%d%d", b""]


def chat_body(model: str = "fast", **extra: Any) -> bytes:
    return orjson.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})


bodies = st.one_of(
    st.just(chat_body()),
    st.just(chat_body(stream=True)),
    st.just(chat_body("local/x")),
    st.just(orjson.dumps({"model": "fast", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})),
    st.just(b""),
    st.just(b"[]"),
    st.just(b'{"model":"fast","messages":' + b"[" * 2000 + b"]" * 2000 + b"}"),
    st.binary(max_size=200),
    st.builds(lambda s: orjson.dumps({"model": s, "messages": [{"role": "user", "content": s}]}), st.text(max_size=30)),
)


@st.composite
def header_lines(draw: st.DrawFn, body_len: int, framing: str) -> list[bytes]:
    lines: list[bytes] = []
    host = draw(st.sampled_from([1] * 20 + [0, 2]))
    lines += [b"Host: " + draw(st.sampled_from([b"gw", b"127.0.0.1:9", b"", b"evil.example"]))] * host
    if framing == "cl":
        tweak = draw(st.sampled_from(CL_TWEAKS))
        value = tweak % ((body_len,) * tweak.count(b"%")) if tweak.count(b"%") else tweak
        name = draw(st.sampled_from([b"Content-Length"] * 6 + [b"content-length", b"CONTENT-LENGTH", b"Content-Length "]))
        lines.append(name + b": " + value)
        if draw(st.integers(0, 19)) == 0:
            lines.append(b"Content-Length: %d" % draw(st.integers(0, body_len + 5)))
    elif framing == "chunked":
        lines.append(b"Transfer-Encoding: " + draw(st.sampled_from(TE_VALUES[:1] * 16 + TE_VALUES)))
        if draw(st.integers(0, 19)) == 0:
            lines.append(b"Content-Length: %d" % body_len)
    good = [b"Connection: close", b"Connection: keep-alive", b"Expect: 100-continue", b"X-Forwarded-Host: 127.0.0.1:9",
            b"Authorization: Bearer sk-client", b"OpenAI-Organization: org", b"Cache-Control: no-cache",
            b"X-Pad: " + b"p" * 100, b"Upgrade: websocket", b"Accept: */*"]  # fmt: skip
    bad = [b"Expect: nonsense", b"X-Fold: a\r\n b", b"Bad Header: x", b"X-Nul: a\x00b", b"Transfer-Encoding: chunked"]
    for _ in range(draw(st.integers(0, 3))):
        lines.append(draw(st.sampled_from(good * 4 + bad)))
    return draw(st.permutations(lines)) if lines else lines


def chunked(body: bytes, sizes: list[int], style: str, trailer: bytes) -> bytes:
    out = []
    i = 0
    for size in sizes:
        if i >= len(body):
            break
        piece = body[i : i + max(1, size)]
        i += len(piece)
        size_text = {"lower": b"%x", "upper": b"%X", "zeros": b"000%x", "ext": b"%x;ext=1"}[style] % len(piece)
        out.append(size_text + b"\r\n" + piece + b"\r\n")
    if i < len(body):
        out.append(b"%x\r\n%b\r\n" % (len(body) - i, body[i:]))
    out.append(b"0\r\n" + trailer + b"\r\n")
    return b"".join(out)


@st.composite
def request(draw: st.DrawFn) -> bytes:
    method = draw(st.sampled_from(METHODS))
    target = draw(st.sampled_from(TARGETS))
    version = draw(st.sampled_from(VERSIONS))
    eol = draw(st.sampled_from(EOLS))
    body = draw(bodies) if method in (b"POST", b"PUT") or draw(st.integers(0, 9)) == 0 else b""
    framing = draw(st.sampled_from(["cl", "cl", "cl", "chunked", "chunked", "none"] if body else ["none", "none", "cl"]))
    lines = draw(header_lines(len(body), framing))
    head = method + b" " + target + b" " + version + eol + b"".join(line + eol for line in lines) + eol
    if framing == "chunked":
        sizes = draw(st.lists(st.integers(1, 64), max_size=6))
        style = draw(st.sampled_from(["lower", "lower", "upper", "zeros", "ext"]))
        trailer = draw(st.sampled_from([b"", b"", b"X-Trailer: 1\r\n", b"Content-Length: 5\r\n"]))
        return head + chunked(body, sizes, style, trailer)
    return head + body


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with a few byte-level edits: inserts of interesting bytes, deletions, duplications."""
    buf = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        if not buf:
            buf += draw(st.sampled_from(INTERESTING))
            continue
        at = draw(st.integers(0, len(buf)))
        op = draw(st.sampled_from(["insert", "delete", "dup", "replace"]))
        if op == "insert":
            buf[at:at] = draw(st.sampled_from(INTERESTING))
        elif op == "delete":
            del buf[at : at + draw(st.integers(1, 4))]
        elif op == "dup":
            buf[at:at] = buf[at : at + draw(st.integers(1, 16))]
        else:
            buf[at : at + 1] = draw(st.sampled_from(INTERESTING))
    return bytes(buf)


@st.composite
def request_stream(draw: st.DrawFn) -> bytes:
    """One to three pipelined requests, maybe mutated, maybe with junk after them."""
    messages = draw(st.lists(request(), min_size=1, max_size=3))
    data = b"".join(messages)
    kind = draw(st.sampled_from(["clean"] * 4 + ["mutated"] * 3 + ["junk", "random"]))
    if kind == "mutated":
        data = draw(mutated(data))
    elif kind == "junk":
        data += draw(st.binary(max_size=64))
    elif kind == "random":
        data = draw(st.binary(min_size=1, max_size=300))
    return data


def splits(data: bytes) -> st.SearchStrategy[list[int]]:
    """Where to cut `data` into reads."""
    return st.lists(st.integers(0, max(0, len(data))), max_size=8).map(sorted)


# SSE streams for the translators


def _openai_chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    payload = {"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}  # fmt: skip
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def _anthropic_event(payload: dict[str, Any]) -> bytes:
    return b"event: " + str(payload.get("type", "x")).encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


OPENAI_EVENTS = [
    _openai_chunk({"role": "assistant", "content": ""}),
    _openai_chunk({"content": "hello "}),
    _openai_chunk({"content": "wörld \u2028"}),
    _openai_chunk({"tool_calls": [{"index": 0, "id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}]}),
    _openai_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
    _openai_chunk({"tool_calls": [{"index": 1, "function": {"arguments": "1}"}}]}),
    _openai_chunk({}, "stop"),
    _openai_chunk({}, "tool_calls"),
    _openai_chunk({}, "length"),
    b'data: {"id":"c","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}\n\n',
    b"data: [DONE]\n\n",
    b'data: {"error":{"message":"boom","type":"server_error"}}\n\n',
]
ANTHROPIC_EVENTS = [
    _anthropic_event({"type": "message_start", "message": {"id": "m1", "type": "message", "role": "assistant", "model": "m",
                                                            "content": [], "usage": {"input_tokens": 3, "output_tokens": 0}}}),
    _anthropic_event({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
    _anthropic_event({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi "}}),
    _anthropic_event({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {}}}),
    _anthropic_event({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"a\":1}"}}),
    _anthropic_event({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm"}}),
    _anthropic_event({"type": "content_block_stop", "index": 0}),
    _anthropic_event({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}),
    _anthropic_event({"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 7}}),
    _anthropic_event({"type": "ping"}),
    _anthropic_event({"type": "message_stop"}),
    _anthropic_event({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
]  # fmt: skip
GARBAGE_EVENTS = [
    b"data: {not json\n\n", b"data: \xff\xfe\n\n", b"\x00\x01\n\n", b": comment\n\n", b"event: bogus\n\n",
    b"data: 42\n\n", b"data: null\n\n", b"data: []\n\n", b'data: {"choices":"x"}\n\n', b'data: {"type":5}\n\n',
    b'data: {"choices":[{"delta":{"content":7}}]}\n\n', b'data: {"type":"content_block_delta","index":"x"}\n\n',
    b'data: {"type":"content_block_delta","index":99,"delta":{"type":"text_delta","text":null}}\n\n',
    b'data: {"choices":[{"index":0,"delta":{"tool_calls":[{"index":-1}]}}]}\n\n',
    b'data: {"type":"message_delta","usage":{"output_tokens":"many"}}\n\n', b"retry: x\nid: \x00\n\n",
    b"data: [DONE]x\n\n", b"\xef\xbb\xbfdata: {}\n\n", b"data:" + b"x" * 5000 + b"\n\n",
]  # fmt: skip


@st.composite
def sse_stream(draw: st.DrawFn, events: list[bytes]) -> bytes:
    """A stream of real and garbage events in any order, with any line ending, maybe cut short."""
    picked = draw(st.lists(st.sampled_from(events + GARBAGE_EVENTS), max_size=12))
    eol = draw(st.sampled_from([b"\n", b"\n", b"\r\n", b"\r"]))
    data = b"".join(picked).replace(b"\n", eol)
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return data


json_values = st.recursive(  # what orjson.loads can return (integers within 64 bits)
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=25,
)
