# proxy/cache/assemble.py: a complete upstream SSE body -> the JSON answer it streamed.
#
# A streamed answer is stored once, as the body a non-streamed request would have got, so it can be
# served in either mode (proxy/cache/replay.py renders it back to SSE). Input is the whole raw SSE body
# (bytes); output is a dict ready for orjson.dumps, or None when the stream must not be cached:
# truncated (no `data: [DONE]` / `message_stop`, a half event at the end, a choice or block left open,
# no finish/stop reason), carrying an error event, malformed JSON, or anything we cannot rebuild
# faithfully (unknown Anthropic delta type, conflicting tool-call ids). None is always the safe answer.
# Merging follows what the official SDKs' own accumulators do: strings concatenate, lists extend,
# usage is overwritten (Anthropic usage is cumulative). Runs once per stored answer, off the hit path.
# Nothing here does I/O.
from __future__ import annotations

from typing import Any

from orjson import JSONDecodeError, loads

Event = tuple[bytes, bytes]  # (event name or b"", data)


def parse_sse(raw: bytes) -> list[Event] | None:
    """Split a complete SSE body into (event, data) pairs; None if it ends in the middle of an event."""
    if b"\r" in raw:
        raw = raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    blocks = raw.split(b"\n\n")
    tail = blocks.pop()  # whatever follows the last blank line: must hold no unfinished field
    for line in tail.split(b"\n"):
        if line and not line.startswith(b":"):
            return None
    events: list[Event] = []
    for block in blocks:
        name = b""
        data: list[bytes] = []
        for line in block.split(b"\n"):
            if not line or line[0] == 58:  # b":" comment / keep-alive
                continue
            field, _, value = line.partition(b":")
            if value[:1] == b" ":
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                name = value
        if data:  # per the SSE spec, an event without data is not dispatched
            events.append((name, b"\n".join(data)))
    return events


# --- OpenAI chat completion chunks ----------------------------------------------------------------


class _Choice:
    __slots__ = ("finish_reason", "logprobs", "message", "texts", "tools")

    def __init__(self) -> None:
        self.message: dict[str, Any] = {"role": "assistant"}
        self.texts: dict[str, list[str]] = {}  # string fields (content, refusal, reasoning...) in pieces
        self.tools: dict[int, dict[str, Any]] = {}
        self.logprobs: dict[str, Any] | None = None
        self.finish_reason: str | None = None

    def merge(self, delta: dict[str, Any]) -> bool:
        """Fold one delta in; False when it cannot be rebuilt faithfully."""
        message, texts = self.message, self.texts
        for k, v in delta.items():
            if k == "tool_calls":
                if v is not None and not self._merge_tools(v):
                    return False
            elif k == "role":
                if v:
                    message["role"] = v
            elif v is None:
                if k not in texts:
                    message.setdefault(k, None)
            elif type(v) is str:
                texts.setdefault(k, []).append(v)
            elif type(v) is list:
                old = message.get(k)
                if old is None:
                    message[k] = list(v)  # our own copy, extended in place by later deltas
                else:
                    old.extend(v)
            elif k == "function_call" and type(v) is dict:
                fc = message.get("function_call") or {"name": "", "arguments": ""}
                for f in ("name", "arguments"):
                    piece = v.get(f)
                    if type(piece) is str:
                        fc[f] += piece
                message["function_call"] = fc
            else:
                message[k] = v
        return True

    def _merge_tools(self, calls: Any) -> bool:
        if type(calls) is not list:
            return False
        for call in calls:
            if type(call) is not dict or type(call.get("index")) is not int:
                return False
            acc = self.tools.get(call["index"])
            if acc is None:
                acc = self.tools[call["index"]] = {"id": None, "type": "function", "name": [], "arguments": []}
            cid = call.get("id")
            if cid:
                if acc["id"] is None:
                    acc["id"] = cid
                elif acc["id"] != cid:
                    return False  # two calls share an index (a known local-server bug): ambiguous
            if call.get("type"):
                acc["type"] = call["type"]
            fn = call.get("function")
            if type(fn) is dict:
                for f in ("name", "arguments"):
                    piece = fn.get(f)
                    if type(piece) is str:
                        acc[f].append(piece)
        return True

    def merge_logprobs(self, lp: Any) -> None:
        if type(lp) is not dict:
            return
        acc = self.logprobs
        if acc is None:
            acc = self.logprobs = {}
        for k, v in lp.items():
            old = acc.get(k)
            if type(v) is list:
                if old is None:
                    acc[k] = list(v)  # our own copy: extended in place below, never quadratic
                else:
                    old.extend(v)
            elif v is not None or k not in acc:
                acc[k] = v

    def build(self, index: int) -> dict[str, Any]:
        message = self.message
        for k, parts in self.texts.items():
            message[k] = "".join(parts)
        message.setdefault("content", None)
        message.setdefault("refusal", None)
        if self.tools:
            message["tool_calls"] = [
                {
                    "id": t["id"],
                    "type": t["type"],
                    "function": {"name": "".join(t["name"]), "arguments": "".join(t["arguments"])},
                }
                for _, t in sorted(self.tools.items())
            ]
        return {"index": index, "message": message, "logprobs": self.logprobs, "finish_reason": self.finish_reason}


_HEAD_FIELDS = ("id", "created", "model")
_OPTIONAL_HEAD_FIELDS = ("service_tier", "system_fingerprint")


def assemble_openai_chat(raw: bytes) -> dict[str, Any] | None:
    """Rebuild the `chat.completion` body from a complete `chat.completion.chunk` SSE body, or None."""
    events = parse_sse(raw)
    if events is None:
        return None
    head: dict[str, Any] | None = None
    choices: dict[int, _Choice] = {}
    usage: Any = None
    done = False
    for _, data in events:
        if done:
            return None  # nothing may follow [DONE]
        if data == b"[DONE]":
            done = True
            continue
        try:
            chunk = loads(data)
        except JSONDecodeError:
            return None
        if type(chunk) is not dict or "error" in chunk or chunk.get("object") == "error":
            return None
        if head is None:
            head = {"id": chunk.get("id"), "object": "chat.completion"}
            for f in _HEAD_FIELDS[1:]:
                head[f] = chunk.get(f)
        for f in _OPTIONAL_HEAD_FIELDS:
            if chunk.get(f) is not None:
                head[f] = chunk[f]
        if chunk.get("usage") is not None:
            usage = chunk["usage"]  # cumulative where servers repeat it: the last one wins
        for ch in chunk.get("choices") or ():
            if type(ch) is not dict or type(ch.get("index", 0)) is not int:
                return None
            state = choices.get(ch.get("index", 0))
            if state is None:
                state = choices[ch.get("index", 0)] = _Choice()
            delta = ch.get("delta")
            if delta is not None and (type(delta) is not dict or not state.merge(delta)):
                return None
            if ch.get("logprobs") is not None:
                state.merge_logprobs(ch["logprobs"])
            if ch.get("finish_reason") is not None:
                state.finish_reason = ch["finish_reason"]
    if not done or head is None or not choices:
        return None
    if any(c.finish_reason is None for c in choices.values()):
        return None
    body = head
    body["choices"] = [choices[i].build(i) for i in sorted(choices)]
    if usage is not None:
        body["usage"] = usage
    return body


# --- Anthropic message events ---------------------------------------------------------------------

_TEXT_FIELD: dict[object, tuple[str, str]] = {
    "text_delta": ("text", "text"),
    "thinking_delta": ("thinking", "thinking"),
}


def assemble_anthropic_messages(raw: bytes) -> dict[str, Any] | None:
    """Rebuild the `message` body from a complete Anthropic event stream, or None."""
    events = parse_sse(raw)
    if events is None:
        return None
    message: dict[str, Any] | None = None
    blocks: list[dict[str, Any]] = []
    parts: list[list[str] | None] = []  # per block: text / thinking / partial_json pieces; None once closed
    open_blocks = 0
    stopped = False
    for name, data in events:
        try:
            ev = loads(data)
        except JSONDecodeError:
            return None
        if type(ev) is not dict:
            return None
        kind = ev.get("type")
        if name and name.decode("utf-8", "replace") != kind:
            return None  # `event:` and `type` must agree
        if kind == "ping":
            continue
        if kind == "error" or stopped:
            return None
        if kind == "message_start":
            if message is not None or type(ev.get("message")) is not dict or ev["message"].get("content"):
                return None
            message = ev["message"]
            continue
        if message is None:
            return None  # the SDK also refuses anything before message_start
        if kind == "content_block_start":
            block = ev.get("content_block")
            if ev.get("index") != len(blocks) or type(block) is not dict:
                return None  # indexes must be dense and in order
            blocks.append(block)
            parts.append([])
            open_blocks += 1
        elif kind == "content_block_delta":
            i = ev.get("index")
            delta = ev.get("delta")
            if type(i) is not int or not 0 <= i < len(blocks) or type(delta) is not dict:
                return None
            if not _merge_block_delta(blocks[i], parts[i], delta):
                return None
        elif kind == "content_block_stop":
            i = ev.get("index")
            if type(i) is not int or not 0 <= i < len(blocks) or not _finish_block(blocks[i], parts[i]):
                return None
            parts[i] = None
            open_blocks -= 1
        elif kind == "message_delta":
            delta = ev.get("delta")
            if type(delta) is dict:
                message.update(delta)
            usage = ev.get("usage")
            if type(usage) is dict:
                acc = message.get("usage")
                if type(acc) is not dict:
                    acc = message["usage"] = {}
                for k, v in usage.items():
                    if v is not None:  # cumulative totals: overwrite, never add
                        acc[k] = v
        elif kind == "message_stop":
            stopped = True
        # Unknown event types are ignored, as clients must.
    if message is None or not stopped or open_blocks or message.get("stop_reason") is None:
        return None
    message["content"] = blocks
    return message


def _merge_block_delta(block: dict[str, Any], parts: list[str] | None, delta: dict[str, Any]) -> bool:
    if parts is None:
        return False  # delta after content_block_stop
    kind = delta.get("type")
    text_field = _TEXT_FIELD.get(kind)
    if text_field is not None:
        block_type, field = text_field
        piece = delta.get(field)
        if block.get("type") != block_type or type(piece) is not str:
            return False
        parts.append(piece)
    elif kind == "input_json_delta":
        piece = delta.get("partial_json")
        if "input" not in block or type(piece) is not str:
            return False
        parts.append(piece)
    elif kind == "signature_delta":
        if block.get("type") != "thinking" or type(delta.get("signature")) is not str:
            return False
        block["signature"] = delta["signature"]  # sent whole, as the SDK assumes
    elif kind == "citations_delta":
        if block.get("type") != "text" or "citation" not in delta:
            return False
        block["citations"] = (block.get("citations") or []) + [delta["citation"]]
    else:
        return False  # a delta we cannot rebuild: do not cache
    return True


def _finish_block(block: dict[str, Any], parts: list[str] | None) -> bool:
    if parts is None:
        return False  # stopped twice
    if not parts:
        return True
    kind = block.get("type")
    if kind == "text" or kind == "thinking":
        block[kind] = (block.get(kind) or "") + "".join(parts)
        return True
    try:
        block["input"] = loads("".join(parts))
    except JSONDecodeError:
        return False
    return True
