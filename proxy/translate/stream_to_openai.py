# proxy/translate/stream_to_openai.py: Anthropic SSE stream -> OpenAI chat.completion.chunk SSE.
#
# Owns: `AnthropicToOpenAIStream`, the state machine for "OpenAI client, Claude upstream"
# streams (API-FORMATS §3.3, framing §1.5). Fed raw upstream bytes as they arrive, it
# returns the bytes to send downstream. Output is only `data: <json>\n\n` frames (plus
# `: ping` comments for upstream pings) and, after a clean `message_stop`, `data: [DONE]`.
# Usage goes in a separate `choices: []` chunk, and only when the client asked for it.
# Upstream `event: error`, malformed data, or EOF before `message_stop` end the stream
# with an OpenAI error frame and no [DONE]: a cut stream must never look like success.
# Theory of operation: the chunk envelope (id, created, model) is fixed for the stream, so
# its bytes are built once; each delta costs one orjson.dumps of the new text plus a
# concatenation (~3.5x cheaper than dumping a whole chunk dict per delta, timeit).
# Usage is overwritten, never summed (§2.4). Nothing here does I/O.
from __future__ import annotations

from typing import Any

import orjson

from proxy.translate.frames import OPENAI_DONE, PING_COMMENT, openai_error_frame, openai_frame
from proxy.translate.ids import mint_id, now
from proxy.translate.reasons import finish_reason_from_anthropic
from proxy.translate.sse import SSEParser, SSETranslator
from proxy.translate.usage import UsageDetail, openai_usage

_dumps = orjson.dumps
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

_ROLE_DELTA = b'{"role":"assistant","content":""}'
_TEXT_DELTA_HEAD = b'{"content":'
_DELTA_CLOSE = b"}"
_ARGS_CLOSE = b"}}]}"


class AnthropicToOpenAIStream(SSETranslator):
    """Translate one Anthropic Messages SSE stream into OpenAI chunk SSE, incrementally.

    After the stream ends (`done`), `finish_reason`, `input_tokens` (all prompt tokens,
    cache included), `output_tokens`, `cache_read_tokens` and `cache_write_tokens` hold
    what the upstream reported; `usage_final` tells whether the final count arrived.
    """

    __slots__ = (
        "_cache_read",
        "_cache_write",
        "_created",
        "_finish_sent",
        "_fixed_id",
        "_head",
        "_id",
        "_in",
        "_include_usage",
        "_model",
        "_out",
        "_parser",
        "_tail",
        "_tool_count",
        "_tool_heads",
        "complete",
        "done",
        "errored",
        "finish_reason",
        "upstream_stop_reason",
        "usage_final",
    )
    EOF_ERROR = ("upstream stream ended before message_stop", "server_error")

    def __init__(
        self, model: str, *, include_usage: bool, created: int | None = None, chunk_id: str | None = None
    ) -> None:
        """`model`: the name the client asked for. `include_usage`: the client's
        `stream_options.include_usage`. `chunk_id`: fixed chunk id (default: the upstream
        message id). `created`: unix seconds (default: now)."""
        self._model = model
        self._include_usage = include_usage
        self._created = now() if created is None else created
        self._fixed_id = chunk_id
        self._parser = SSEParser()
        self._id = chunk_id or mint_id("chatcmpl-")
        self._head = self._envelope_head()
        # Real OpenAI chunks carry "usage": null only when include_usage was requested.
        self._tail = b',"logprobs":null,"finish_reason":null}]' + (b',"usage":null}\n\n' if include_usage else b"}\n\n")
        self._tool_count = 0
        self._tool_heads: dict[Any, bytes] = {}  # Anthropic block index -> bytes up to the arguments value
        self._finish_sent = False
        self.done = False  # a terminator or an error frame was emitted: nothing more will be
        self.complete = False  # the upstream ended cleanly (message_stop)
        self.errored = False
        self.finish_reason: str | None = None  # as sent to the client (OpenAI vocabulary)
        self.upstream_stop_reason: str | None = None
        self.usage_final = False
        self._in = self._out = self._cache_read = self._cache_write = 0  # Anthropic convention

    # public interface

    @property
    def input_tokens(self) -> int:
        """All prompt tokens (uncached + cache read + cache write)."""
        return self._in + self._cache_read + self._cache_write

    @property
    def output_tokens(self) -> int:
        """Output tokens, as last reported (cumulative, overwritten)."""
        return self._out

    @property
    def cache_read_tokens(self) -> int:
        """Prompt tokens read from the cache."""
        return self._cache_read

    @property
    def cache_write_tokens(self) -> int:
        """Prompt tokens written to the cache."""
        return self._cache_write

    def error(self, message: str, type: str) -> bytes:
        """An OpenAI mid-stream error frame; ends the stream. b"" if it already ended."""
        if self.done:
            return b""
        self.done = self.errored = True
        return openai_error_frame(message, type)

    # internal

    def _envelope_head(self) -> bytes:
        return (
            b'data: {"id":'
            + _dumps(self._id)
            + b',"object":"chat.completion.chunk","created":'
            + str(self._created).encode()
            + b',"model":'
            + _dumps(self._model)
            + b',"choices":[{"index":0,"delta":'
        )

    def _event(self, payload: bytes, out: list[bytes]) -> None:
        try:
            ev = _loads(payload)
            etype = ev["type"]
        except (_JSONDecodeError, TypeError, KeyError):
            out.append(self.error("upstream sent a malformed stream event", "server_error"))
            return
        try:
            self._dispatch(etype, ev, out)
        except (AttributeError, TypeError, KeyError):  # an event of the wrong shape
            out.append(self.error("upstream sent a malformed stream event", "server_error"))

    def _dispatch(self, etype: Any, ev: dict[str, Any], out: list[bytes]) -> None:
        if etype == "content_block_delta":
            delta = ev.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta.get("text")
                if text:
                    out.append(self._head + _TEXT_DELTA_HEAD + _dumps(text) + _DELTA_CLOSE + self._tail)
            elif dtype == "input_json_delta":
                partial = delta.get("partial_json")
                head = self._tool_heads.get(ev.get("index"))
                if partial and head is not None:
                    out.append(head + _dumps(partial) + _ARGS_CLOSE + self._tail)
            # thinking, signature and citations deltas have no standard OpenAI slot.
        elif etype == "content_block_start":
            self._block_start(ev, out)
        elif etype == "ping":
            out.append(PING_COMMENT)
        elif etype == "message_start":
            self._message_start(ev, out)
        elif etype == "message_delta":
            self._message_delta(ev, out)
        elif etype == "message_stop":
            self._message_stop(out)
        elif etype == "error":
            err = ev.get("error")
            err = err if isinstance(err, dict) else {}
            out.append(self.error(str(err.get("message") or "upstream error"), str(err.get("type") or "api_error")))
        # content_block_stop and unknown event types need nothing.

    def _message_start(self, ev: dict[str, Any], out: list[bytes]) -> None:
        msg = ev.get("message")
        msg = msg if isinstance(msg, dict) else {}
        if self._fixed_id is None and isinstance(msg.get("id"), str) and msg["id"]:
            self._id = msg["id"]
            self._head = self._envelope_head()
        self._take_usage(msg.get("usage"))
        out.append(self._head + _ROLE_DELTA + self._tail)

    def _block_start(self, ev: dict[str, Any], out: list[bytes]) -> None:
        block = ev.get("content_block")
        block = block if isinstance(block, dict) else {}
        btype = block.get("type")
        if btype == "text":
            if block.get("text"):
                out.append(self._head + _TEXT_DELTA_HEAD + _dumps(block["text"]) + _DELTA_CLOSE + self._tail)
        elif btype == "tool_use":
            n = self._tool_count
            self._tool_count += 1
            head = self._head + b'{"tool_calls":[{"index":' + str(n).encode() + b',"function":{"arguments":'
            self._tool_heads[ev.get("index")] = head
            call = {
                "index": n,
                "id": block.get("id") or mint_id("toolu_"),
                "type": "function",
                "function": {"name": block.get("name") or "", "arguments": ""},
            }
            out.append(self._head + _dumps({"tool_calls": [call]}) + self._tail)
            if block.get("input"):  # normally {} with the JSON streamed as deltas
                out.append(head + _dumps(_dumps(block["input"]).decode()) + _ARGS_CLOSE + self._tail)

    def _message_delta(self, ev: dict[str, Any], out: list[bytes]) -> None:
        delta = ev.get("delta")
        reason = delta.get("stop_reason") if isinstance(delta, dict) else None
        self.upstream_stop_reason = reason if isinstance(reason, str) else None
        self._take_usage(ev.get("usage"))
        self.usage_final = True
        self._send_finish(finish_reason_from_anthropic(reason), out)

    def _send_finish(self, reason: str, out: list[bytes]) -> None:
        if self._finish_sent:
            return
        self._finish_sent = True
        self.finish_reason = reason
        usage_null = b',"usage":null}\n\n' if self._include_usage else b"}\n\n"
        out.append(self._head + b'{},"logprobs":null,"finish_reason":' + _dumps(reason) + b"}]" + usage_null)

    def _message_stop(self, out: list[bytes]) -> None:
        self._send_finish("stop", out)  # no-op after a message_delta, as it should be
        if self._include_usage:
            detail = UsageDetail(self.input_tokens, self._out, self._cache_read, self._cache_write)
            out.append(
                openai_frame(
                    {
                        "id": self._id,
                        "object": "chat.completion.chunk",
                        "created": self._created,
                        "model": self._model,
                        "choices": [],
                        "usage": openai_usage(detail),
                    }
                )
            )
        out.append(OPENAI_DONE)
        self.done = self.complete = True

    def _take_usage(self, usage: Any) -> None:
        # Counts are cumulative: overwrite whatever is present, never add (§2.4).
        if not isinstance(usage, dict):
            return
        v = usage.get("input_tokens")
        if type(v) is int:
            self._in = v
        v = usage.get("output_tokens")
        if type(v) is int:
            self._out = v
        v = usage.get("cache_read_input_tokens")
        if type(v) is int:
            self._cache_read = v
        v = usage.get("cache_creation_input_tokens")
        if type(v) is int:
            self._cache_write = v
