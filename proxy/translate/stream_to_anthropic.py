# proxy/translate/stream_to_anthropic.py: OpenAI chunk SSE stream -> Anthropic Messages SSE.
#
# Owns: `OpenAIToAnthropicStream`, the state machine for "Anthropic client, OpenAI or local
# upstream" streams (API-FORMATS §3.5, framing §2.4). Fed raw upstream bytes as they
# arrive, it returns the bytes to send downstream: `event: <type>\ndata: <json>\n\n` pairs
# only, `message_start` first, dense block indexes 0, 1, 2…, each block start → deltas →
# stop, then `message_delta` (ALWAYS with `usage.output_tokens`) and `message_stop`.
# `message_delta` is held until `[DONE]` so the trailing usage chunk (`choices: []`) can be
# folded in. Upstream `data: {"error":…}`, malformed data, or EOF before `[DONE]` end the
# stream with `event: error`: a cut stream must never look like success.
# Theory of operation: one open block at a time (Anthropic blocks cannot interleave); the
# bytes up to a delta's value are built when its block opens, so each delta costs one
# orjson.dumps plus a concatenation. Only choice 0 is read. Nothing here does I/O.
from __future__ import annotations

from typing import Any

import orjson

from proxy.translate.error_bodies import anthropic_type_for_openai_error
from proxy.translate.frames import (
    BLOCK_DELTA_HEAD,
    DELTA_TAIL,
    JSON_DELTA_MID,
    MESSAGE_STOP,
    TEXT_DELTA_MID,
    anthropic_error_frame,
    anthropic_frame,
    block_stop,
)
from proxy.translate.ids import mint_id
from proxy.translate.reasons import stop_reason_from_openai
from proxy.translate.response_to_anthropic import anthropic_message_id
from proxy.translate.sse import SSEParser, SSETranslator
from proxy.translate.usage import UsageDetail, anthropic_usage, openai_usage_detail

_dumps = orjson.dumps
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError

_DONE = b"[DONE]"
_BLOCK_START_HEAD = b'event: content_block_start\ndata: {"type":"content_block_start","index":'
_TEXT_BLOCK_TAIL = b',"content_block":{"type":"text","text":""}}\n\n'

_NONE, _TEXT, _TOOL = 0, 1, 2  # kind of the open content block


class OpenAIToAnthropicStream(SSETranslator):
    """Translate one OpenAI chat.completion.chunk SSE stream into Anthropic SSE, incrementally.

    After the stream ends (`done`), `finish_reason` (Anthropic `stop_reason`),
    `input_tokens` (all prompt tokens, cache included), `output_tokens`,
    `cache_read_tokens` and `cache_write_tokens` hold what the upstream reported;
    `usage_final` tells whether a usage object arrived at all.
    """

    __slots__ = (
        "_delta_head",
        "_input_estimate",
        "_message_id",
        "_model",
        "_next_index",
        "_open",
        "_open_index",
        "_open_tool",
        "_open_tool_id",
        "_parser",
        "_seen_tools",
        "_started",
        "_stop_sequence",
        "cache_read_tokens",
        "cache_write_tokens",
        "complete",
        "done",
        "errored",
        "finish_reason",
        "input_tokens",
        "output_tokens",
        "upstream_finish_reason",
        "usage_final",
    )
    EOF_ERROR = ("upstream stream ended before [DONE]", "api_error")

    def __init__(self, model: str, *, message_id: str | None = None, input_tokens: int = 0) -> None:
        """`model`: the name the client asked for. `message_id`: fixed `msg_…` id (default:
        derived from the upstream chunk id). `input_tokens`: estimate reported in
        `message_start`; the real count, when the upstream sends one, follows in
        `message_delta` (the SDK overwrites it)."""
        self._model = model
        self._message_id = message_id
        self._input_estimate = input_tokens
        self._parser = SSEParser()
        self._started = False
        self._next_index = 0
        self._open = _NONE
        self._open_index = -1
        self._open_tool: Any = None
        self._open_tool_id: Any = None
        self._seen_tools: set[Any] = set()
        self._delta_head = b""
        self._stop_sequence: str | None = None
        self.done = False  # a terminator or an error frame was emitted: nothing more will be
        self.complete = False  # the upstream ended cleanly ([DONE])
        self.errored = False
        self.finish_reason: str | None = None  # as sent to the client (Anthropic vocabulary)
        self.upstream_finish_reason: str | None = None
        self.usage_final = False
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0

    # public interface

    def error(self, message: str, type: str) -> bytes:
        """An Anthropic `event: error` frame; ends the stream. b"" if it already ended."""
        if self.done:
            return b""
        self.done = self.errored = True
        return anthropic_error_frame(type, message)

    # internal

    def _event(self, payload: bytes, out: list[bytes]) -> None:
        if payload == _DONE:
            self._finish(out)
            return
        try:
            chunk = _loads(payload)
        except _JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            out.append(self.error("upstream sent a malformed stream chunk", "api_error"))
            return
        if "error" in chunk or chunk.get("object") == "error":
            err = chunk.get("error", chunk)
            message = err.get("message") if isinstance(err, dict) else err
            out.append(self.error(str(message or "upstream error"), anthropic_type_for_openai_error(err)))
            return
        try:
            self._chunk(chunk, out)
        except (AttributeError, TypeError, KeyError):  # a chunk of the wrong shape
            out.append(self.error("upstream sent a malformed stream chunk", "api_error"))

    def _chunk(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        if not self._started:
            self._start(chunk, out)
        usage = chunk.get("usage")
        if usage:
            self._take_usage(usage)
        choices = chunk.get("choices")
        if not choices:
            return
        for choice in choices:
            if choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if delta:
                text = delta.get("content")
                if text and isinstance(text, str):
                    self._text(text, out)
                refusal = delta.get("refusal")
                if refusal and isinstance(refusal, str):
                    self._text(refusal, out)
                calls = delta.get("tool_calls")
                if calls:
                    for call in calls:
                        self._tool(call, out)
                        if self.done:
                            return
            reason = choice.get("finish_reason")
            if reason:
                self._close_block(out)
                self.upstream_finish_reason = reason
                self.finish_reason, self._stop_sequence = stop_reason_from_openai(reason, choice.get("stop_reason"))

    def _start(self, chunk: dict[str, Any], out: list[bytes]) -> None:
        self._started = True
        msg_id = self._message_id or anthropic_message_id(chunk.get("id"))
        message: dict[str, Any] = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self._input_estimate, "output_tokens": 0},
        }
        out.append(anthropic_frame("message_start", {"type": "message_start", "message": message}))

    def _close_block(self, out: list[bytes]) -> None:
        if self._open != _NONE:
            out.append(block_stop(self._open_index))
            self._open = _NONE

    def _open_block(self, out: list[bytes]) -> bytes:
        self._close_block(out)
        index = self._next_index
        self._next_index += 1
        self._open_index = index
        return str(index).encode()

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._open != _TEXT:
            idx = self._open_block(out)
            out.append(_BLOCK_START_HEAD + idx + _TEXT_BLOCK_TAIL)
            self._open = _TEXT
            self._delta_head = BLOCK_DELTA_HEAD + idx + TEXT_DELTA_MID
        out.append(self._delta_head + _dumps(text) + DELTA_TAIL)

    def _tool(self, call: Any, out: list[bytes]) -> None:
        if not isinstance(call, dict):
            return
        tool_index = call.get("index", 0)
        call_id = call.get("id")
        fn = call.get("function")
        fn = fn if isinstance(fn, dict) else {}
        if (
            self._open != _TOOL
            or tool_index != self._open_tool
            or (call_id and self._open_tool_id and call_id != self._open_tool_id)
        ):
            if not call_id and tool_index in self._seen_tools:
                # Anthropic blocks cannot be reopened once stopped.
                out.append(self.error("upstream interleaved tool call arguments; cannot translate", "api_error"))
                return
            idx = self._open_block(out)
            self._open = _TOOL
            self._open_tool = tool_index
            self._open_tool_id = call_id
            self._seen_tools.add(tool_index)
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": call_id or mint_id("toolu_"),
                "name": fn.get("name") or "",
                "input": {},
            }
            out.append(
                anthropic_frame(
                    "content_block_start",
                    {"type": "content_block_start", "index": self._open_index, "content_block": block},
                )
            )
            self._delta_head = BLOCK_DELTA_HEAD + idx + JSON_DELTA_MID
        args = fn.get("arguments")
        if args and isinstance(args, str):
            out.append(self._delta_head + _dumps(args) + DELTA_TAIL)

    def _take_usage(self, usage: Any) -> None:
        # Counts are cumulative (vLLM may send them on every chunk): overwrite, never add.
        d = openai_usage_detail(usage)
        self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_tokens = d
        self.usage_final = True

    def _finish(self, out: list[bytes]) -> None:
        if not self._started:
            self._start({}, out)
        self._close_block(out)
        if self.finish_reason is None:
            self.finish_reason = "end_turn"
        if self.usage_final:
            usage: dict[str, Any] = anthropic_usage(
                UsageDetail(self.input_tokens, self.output_tokens, self.cache_read_tokens, self.cache_write_tokens)
            )
        else:
            usage = {"output_tokens": 0}  # required by the SDK even when unknown (§0.2 fact 5)
        payload = {
            "type": "message_delta",
            "delta": {"stop_reason": self.finish_reason, "stop_sequence": self._stop_sequence},
            "usage": usage,
        }
        out.append(anthropic_frame("message_delta", payload))
        out.append(MESSAGE_STOP)
        self.done = self.complete = True
