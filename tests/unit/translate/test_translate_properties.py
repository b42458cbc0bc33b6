"""Property tests: a request translated to the other format and back keeps its meaning,
and the stream machines give the same output however the upstream bytes are split."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from proxy.translate import (
    AnthropicToOpenAIStream,
    OpenAIToAnthropicStream,
    anthropic_to_openai_request,
    openai_to_anthropic_request,
)
from tests.unit.translate.translate_samples import (
    ANTHROPIC_TEXT_STREAM,
    ANTHROPIC_TOOL_STREAM,
    OPENAI_TOOL_STREAM,
    OPENAI_VLLM_STREAM,
    feed_split,
    feed_whole,
)

SETTINGS = settings(max_examples=100, deadline=None)

# Texts are non-blank and carry no outer whitespace (Anthropic drops blank text blocks and
# right-strips a final assistant turn; neither changes meaning).
text = (
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=20)
    .map(str.strip)
    .filter(bool)
)
ident = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJ0123456789_-", min_size=1, max_size=12)
json_obj = st.dictionaries(ident, st.one_of(st.integers(-(2**53), 2**53), text, st.booleans(), st.none()), max_size=3)
stops = st.lists(text, min_size=1, max_size=4)


@st.composite
def tool_defs(draw: Any) -> list[tuple[str, str | None, dict[str, Any]]]:
    names = draw(st.lists(ident, max_size=3, unique=True))
    return [
        (
            n,
            draw(st.none() | text),
            {"type": "object", "properties": {k: {"type": "string"} for k in draw(st.lists(ident, max_size=2))}},
        )
        for n in names
    ]


# OpenAI -> Anthropic -> OpenAI


@st.composite
def openai_requests(draw: Any) -> dict[str, Any]:
    msgs: list[dict[str, Any]] = []
    for t in draw(st.lists(text, max_size=2)):
        role = draw(st.sampled_from(["system", "developer"]))
        msgs.append({"role": role, "content": draw(st.sampled_from([t, [{"type": "text", "text": t}]]))})
    call_n = 0
    for _ in range(draw(st.integers(1, 4))):
        parts = draw(st.lists(text, min_size=1, max_size=2))
        content: Any = (
            parts[0] if len(parts) == 1 and draw(st.booleans()) else [{"type": "text", "text": p} for p in parts]
        )
        msgs.append({"role": "user", "content": content})
        if draw(st.booleans()):
            calls = []
            for _ in range(draw(st.integers(1, 2))):
                call_n += 1
                calls.append(
                    {
                        "id": f"call_{call_n}",
                        "type": "function",
                        "function": {"name": draw(ident), "arguments": orjson.dumps(draw(json_obj)).decode()},
                    }
                )
            msgs.append({"role": "assistant", "content": draw(st.none() | text), "tool_calls": calls})
            for c in calls:
                msgs.append({"role": "tool", "tool_call_id": c["id"], "content": draw(text)})
        if draw(st.booleans()):
            msgs.append({"role": "assistant", "content": draw(text)})
    body: dict[str, Any] = {"model": "client-alias", "messages": msgs}
    tools = draw(tool_defs())
    if tools:
        body["tools"] = [
            {"type": "function", "function": {"name": n, **({"description": d} if d else {}), "parameters": p}}
            for n, d, p in tools
        ]
        body["tool_choice"] = draw(
            st.sampled_from(["auto", "none", "required", {"type": "function", "function": {"name": tools[0][0]}}])
        )
    key = draw(st.sampled_from([None, "max_tokens", "max_completion_tokens"]))
    if key:
        body[key] = draw(st.integers(1, 200_000))
    if draw(st.booleans()):
        s = draw(stops)
        body["stop"] = s[0] if len(s) == 1 and draw(st.booleans()) else s
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    return body


def openai_meaning(body: dict[str, Any]) -> dict[str, Any]:
    """What must survive: system text, turns (roles, texts, tool calls and results), tools, limits."""
    system: list[str] = []
    turns: list[Any] = []
    for m in body["messages"]:
        role, content = m["role"], m.get("content")
        texts = [content] if isinstance(content, str) else [p["text"] for p in content or []]
        if role in ("system", "developer"):
            system += texts
        elif role == "tool":
            turns.append(("tool", m["tool_call_id"], "".join(texts)))
        elif role == "user":
            if turns and turns[-1][0] == "user":
                turns[-1][1].extend(texts)
            else:
                turns.append(("user", list(texts)))
        else:
            calls = [
                (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"] or "{}"))
                for c in m.get("tool_calls") or []
            ]
            if turns and turns[-1][0] == "assistant":
                turns[-1] = ("assistant", turns[-1][1] + "".join(texts), turns[-1][2] + calls)
            else:
                turns.append(("assistant", "".join(texts), calls))
    stop = body.get("stop")
    return {
        "system": system,
        "turns": turns,
        "tools": [
            (t["function"]["name"], t["function"].get("description"), t["function"]["parameters"])
            for t in body.get("tools", [])
        ],
        "tool_choice": body.get("tool_choice"),
        "max": body.get("max_completion_tokens") or body.get("max_tokens") or body.get("max_completion_tokens") or 4096,
        "stop": [stop] if isinstance(stop, str) else stop,
        "temperature": body.get("temperature"),
        "stream": body.get("stream"),
    }


@SETTINGS
@given(body=openai_requests(), for_local=st.booleans())
def test_openai_request_round_trip_keeps_meaning(body: dict[str, Any], for_local: bool) -> None:
    anth = openai_to_anthropic_request(body, model="claude", anthropic_version="2023-06-01", default_max_tokens=4096)
    back = anthropic_to_openai_request(anth, model="gpt", for_local=for_local)
    expected = openai_meaning(body)
    got = openai_meaning(back)
    max_key = "max_tokens" if for_local else "max_completion_tokens"
    assert back[max_key] == expected["max"]
    got["max"] = expected["max"]
    if expected["stream"]:
        assert back["stream_options"] == {"include_usage": True}
    assert got == expected


# Anthropic -> OpenAI -> Anthropic


@st.composite
def anthropic_requests(draw: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "client-alias", "max_tokens": draw(st.integers(1, 64_000))}
    sys_texts = draw(st.lists(text, max_size=2))
    if sys_texts:
        body["system"] = (
            sys_texts[0]
            if len(sys_texts) == 1 and draw(st.booleans())
            else [{"type": "text", "text": t} for t in sys_texts]
        )
    msgs: list[dict[str, Any]] = []
    pending: list[str] = []
    n = 0
    for turn in range(draw(st.integers(1, 6))):
        if turn % 2 == 0:
            blocks: list[dict[str, Any]] = []
            for tid in pending:
                result = draw(st.one_of(st.none(), text, st.lists(text, min_size=1, max_size=2)))
                block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tid}
                if isinstance(result, list):
                    block["content"] = [{"type": "text", "text": r} for r in result]
                elif result is not None:
                    block["content"] = result
                blocks.append(block)
            pending = []
            blocks += [
                {"type": "text", "text": t} for t in draw(st.lists(text, min_size=0 if blocks else 1, max_size=2))
            ]
            if len(blocks) == 1 and blocks[0]["type"] == "text" and draw(st.booleans()):
                msgs.append({"role": "user", "content": blocks[0]["text"]})
            else:
                msgs.append({"role": "user", "content": blocks})
        else:
            blocks = [{"type": "text", "text": t} for t in draw(st.lists(text, max_size=2))]
            for _ in range(draw(st.integers(0 if blocks else 1, 2))):
                n += 1
                pending.append(f"toolu_{n}")
                blocks.append({"type": "tool_use", "id": f"toolu_{n}", "name": draw(ident), "input": draw(json_obj)})
            msgs.append({"role": "assistant", "content": blocks})
    body["messages"] = msgs
    tools = draw(tool_defs())
    if tools:
        body["tools"] = [{"name": n, **({"description": d} if d else {}), "input_schema": p} for n, d, p in tools]
        body["tool_choice"] = draw(
            st.sampled_from(
                [{"type": "auto"}, {"type": "any"}, {"type": "none"}, {"type": "tool", "name": tools[0][0]}]
            )
        )
    if draw(st.booleans()):
        body["stop_sequences"] = draw(stops)
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    return body


def anthropic_meaning(body: dict[str, Any]) -> dict[str, Any]:
    def blocks(content: Any) -> list[Any]:
        if isinstance(content, str):
            return [("text", content)]
        out: list[Any] = []
        for b in content:
            if b["type"] == "text":
                out.append(("text", b["text"]))
            elif b["type"] == "tool_use":
                out.append(("tool_use", b["id"], b["name"], b["input"]))
            else:
                c = b.get("content")
                texts = [] if c is None else [c] if isinstance(c, str) else [p["text"] for p in c]
                out.append(("tool_result", b["tool_use_id"], texts))
        return out

    turns = []
    for m in body["messages"]:
        bl = blocks(m["content"])
        if m["role"] == "assistant":  # OpenAI has one text slot per assistant turn
            txt = "".join(b[1] for b in bl if b[0] == "text")
            bl = ([("text", txt)] if txt else []) + [b for b in bl if b[0] != "text"]
        turns.append((m["role"], bl))
    system = body.get("system")
    return {
        "system": [] if system is None else [system] if isinstance(system, str) else [b["text"] for b in system],
        "turns": turns,
        "tools": body.get("tools"),
        "tool_choice": body.get("tool_choice"),
        "max_tokens": body["max_tokens"],
        "stop": body.get("stop_sequences"),
        "stream": body.get("stream"),
    }


@SETTINGS
@given(body=anthropic_requests(), for_local=st.booleans())
def test_anthropic_request_round_trip_keeps_meaning(body: dict[str, Any], for_local: bool) -> None:
    oa = anthropic_to_openai_request(body, model="gpt", for_local=for_local)
    back = openai_to_anthropic_request(oa, model="claude", anthropic_version="2023-06-01")
    assert anthropic_meaning(back) == anthropic_meaning(body)


# streams: any split of the upstream bytes gives the same downstream bytes


@SETTINGS
@given(
    which=st.sampled_from(["a-tool", "a-text", "o-tool", "o-vllm"]),
    cuts=st.lists(st.integers(min_value=0, max_value=5000), max_size=30),
    eol=st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_stream_output_independent_of_read_boundaries(which: str, cuts: list[int], eol: bytes) -> None:
    data, make = {
        "a-tool": (ANTHROPIC_TOOL_STREAM, lambda: AnthropicToOpenAIStream("m", include_usage=True, created=1)),
        "a-text": (ANTHROPIC_TEXT_STREAM, lambda: AnthropicToOpenAIStream("m", include_usage=False, created=1)),
        "o-tool": (OPENAI_TOOL_STREAM, lambda: OpenAIToAnthropicStream("m")),
        "o-vllm": (OPENAI_VLLM_STREAM, lambda: OpenAIToAnthropicStream("m")),
    }[which]
    wire = data.replace(b"\n", eol)
    assert feed_split(make, wire, [c for c in cuts if c <= len(wire)]) == feed_whole(make, data)
