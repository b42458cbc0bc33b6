# sim/soak/answers.py: reading a response off a client socket, and judging its body.
#
# Rules: the checks are pure; only `read_head`/`read_body` await a stream reader. A check returns
# "ok", "error_event" (a stream ended by an error event, text so far right), "cut" (the body was cut,
# text so far right) or "bad: <why>". Right means exactly the deterministic answer (sim/soak/mix.py
# `expected_text`), so a mixed-up, stale or cross-wired answer is caught, and a stream must end with
# its terminator (`data: [DONE]` / `event: message_stop`) and nothing after it.
from __future__ import annotations

import asyncio

import orjson

from sim.soak.mix import HEAD_LIMIT, Kind


class CutError(Exception):
    """The connection ended before the response did."""


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    """Read one response head: (status, lowercased headers)."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise CutError("closed before a response head" if not exc.partial else "closed inside the head") from None
    except asyncio.LimitOverrunError:
        raise ValueError(f"a response head over {HEAD_LIMIT} bytes") from None
    lines = raw[:-4].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"bad status line {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError(f"bad header line {line[:60]!r}")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    """Read a body framed by chunked coding, content-length, or the close."""
    try:
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts: list[bytes] = []
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                        pass
                    return b"".join(parts)
                data = await reader.readexactly(size + 2)
                if data[-2:] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                parts.append(data[:-2])
        if "content-length" in headers:
            return await reader.readexactly(int(headers["content-length"]))
        return await reader.read()
    except (asyncio.IncompleteReadError, ConnectionError) as exc:
        raise CutError(f"closed inside the body ({type(exc).__name__})") from None
    except asyncio.LimitOverrunError:
        raise ValueError("a chunk-size line too long") from None


def check_openai_json(body: bytes, expected: str) -> str:
    """"ok", or "bad: why" for a non-streamed OpenAI answer."""
    try:
        doc = orjson.loads(body)
        if doc.get("object") != "chat.completion":
            return f"bad: object {doc.get('object')!r}"
        choice = doc["choices"][0]
        text = choice["message"]["content"]
        if choice.get("finish_reason") != "stop":
            return f"bad: finish_reason {choice.get('finish_reason')!r}"
        usage = doc["usage"]
        if not isinstance(usage.get("completion_tokens"), int):
            return "bad: no usage"
    except (orjson.JSONDecodeError, KeyError, IndexError, TypeError, AttributeError) as exc:
        return f"bad: not a chat completion ({type(exc).__name__})"
    return "ok" if text == expected else "bad: wrong answer text"


def check_anthropic_json(body: bytes, expected: str) -> str:
    """"ok", or "bad: why" for a non-streamed Anthropic answer."""
    try:
        doc = orjson.loads(body)
        if doc.get("type") != "message" or doc.get("role") != "assistant":
            return f"bad: type {doc.get('type')!r}"
        text = "".join(b["text"] for b in doc["content"] if b.get("type") == "text")
        if doc.get("stop_reason") != "end_turn":
            return f"bad: stop_reason {doc.get('stop_reason')!r}"
        if not isinstance(doc["usage"].get("output_tokens"), int):
            return "bad: no usage"
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
        return f"bad: not a message ({type(exc).__name__})"
    return "ok" if text == expected else "bad: wrong answer text"


def sse_events(body: bytes) -> list[tuple[str, str]]:
    """(event name, data) per SSE event; comments skipped, multi-line data joined."""
    out = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = "", []
        for line in block.decode("utf-8", "replace").split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" "))
        if name or data:
            out.append((name, "\n".join(data)))
    return out


def _stream_verdict(text: str, expected: str, ended: bool, error: bool, cut: bool, order: str) -> str:
    if order:
        return f"bad: {order}"
    if not expected.startswith(text):
        return "bad: wrong answer text"
    if ended and not error:
        return "ok" if text == expected else "bad: answer cut short before the terminator"
    if error:
        return "error_event"
    return "cut" if cut else "bad: stream ended without its terminator"


def check_openai_stream(body: bytes, expected: str, cut: bool = False) -> str:
    """"ok", "error_event", "cut" (the body was cut, text so far right) or "bad: why"."""
    text, ended, error, order, finished = [], False, False, "", False
    for _name, data in sse_events(body):
        if ended:
            order = "events after data: [DONE]"
            break
        if data == "[DONE]":
            ended = True
            continue
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            order = "an event that is not JSON"
            break
        if not isinstance(doc, dict):
            order = "an event that is not an object"
            break
        if "error" in doc:
            error = True
            continue
        if doc.get("object") != "chat.completion.chunk":
            order = f"a chunk of object {doc.get('object')!r}"
            break
        for choice in doc.get("choices") or ():
            content = (choice.get("delta") or {}).get("content")
            if isinstance(content, str):
                text.append(content)
            if choice.get("finish_reason"):
                finished = True
    if ended and not error and not finished and not order:
        order = "no finish_reason before data: [DONE]"
    return _stream_verdict("".join(text), expected, ended, error, cut, order)


def check_anthropic_stream(body: bytes, expected: str, cut: bool = False) -> str:
    """Like check_openai_stream, for Anthropic's event stream (ends with message_stop)."""
    text, ended, error, order, started = [], False, False, "", False
    for name, data in sse_events(body):
        if ended:
            order = "events after message_stop"
            break
        if name == "error":
            error = True
            continue
        try:
            doc = orjson.loads(data)
        except orjson.JSONDecodeError:
            order = "an event that is not JSON"
            break
        if not isinstance(doc, dict) or doc.get("type") != name:
            order = f"event {name!r} with data of another type"
            break
        if name == "message_start":
            started = True
        elif not started and name != "ping":
            order = f"{name} before message_start"
            break
        elif name == "content_block_delta":
            delta = doc.get("delta") or {}
            if delta.get("type") == "text_delta":
                text.append(delta.get("text", ""))
        elif name == "message_stop":
            ended = True
    return _stream_verdict("".join(text), expected, ended, error, cut, order)


def check_body(kind: Kind, body: bytes, expected: str, cut: bool = False) -> str:
    """The outcome of a 200 response of `kind` (see Result)."""
    if kind.stream:
        check = check_anthropic_stream if kind.api == "anthropic" else check_openai_stream
        return check(body, expected, cut)
    if cut:
        return "cut"
    return (check_anthropic_json if kind.api == "anthropic" else check_openai_json)(body, expected)


