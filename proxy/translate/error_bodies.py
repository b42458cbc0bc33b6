# proxy/translate/error_bodies.py: upstream error bodies -> the client format's error body.
#
# Owns: reading any upstream error body (OpenAI, Anthropic, Ollama, llama.cpp, vLLM's flat
# shape with int codes, FastAPI `detail`, HTML or plain-text proxy pages, empty bodies)
# and writing it back in the client's shape (API-FORMATS §1.6, §2.5, §3.8):
#   OpenAI:    {"error":{"message","type","param","code"}}   all four keys, code str|null
#   Anthropic: {"type":"error","error":{"type","message"}}    type from the status table
# The HTTP status is always kept: both SDKs pick exception class and retries from it.
# Also owns the error-type tables the stream machines use for mid-stream errors.
# Cold path (errors only); nothing here does I/O.
from __future__ import annotations

import re
from typing import Any, NamedTuple

import orjson

ANTHROPIC_TYPE_BY_STATUS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}

ANTHROPIC_TYPES = frozenset(ANTHROPIC_TYPE_BY_STATUS.values())

OPENAI_TYPE_BY_STATUS: dict[int, str] = {
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}

# OpenAI / local error types seen mid-stream (no status) -> Anthropic type.
_ANTHROPIC_TYPE_BY_OPENAI_TYPE: dict[str, str] = {
    "invalid_request_error": "invalid_request_error",
    "server_error": "api_error",
    "api_error": "api_error",
    "rate_limit_exceeded": "rate_limit_error",
    "tokens": "rate_limit_error",
    "requests": "rate_limit_error",
    "insufficient_quota": "billing_error",
    "not_found_error": "not_found_error",
    "authentication_error": "authentication_error",
    "permission_error": "permission_error",
}

_MAX_MESSAGE = 1000
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title>", re.IGNORECASE | re.DOTALL)
_SPACES = re.compile(r"\s+")


class UpstreamErrorInfo(NamedTuple):
    """What could be read from an upstream error body."""

    message: str
    type: str | None
    param: str | None
    code: str | None
    anthropic_shaped: bool


def anthropic_type_for_status(status: int) -> str:
    """Anthropic `error.type` for an HTTP status (LiteLLM's table plus 402/409/503/504)."""
    return ANTHROPIC_TYPE_BY_STATUS.get(status, "api_error")


def openai_type_for_status(status: int) -> str:
    """A reasonable OpenAI `error.type` when the upstream gave none (the field is free-form)."""
    t = OPENAI_TYPE_BY_STATUS.get(status)
    if t is not None:
        return t
    return "server_error" if status >= 500 else "invalid_request_error"


def anthropic_type_for_openai_error(err: Any) -> str:
    """Anthropic type for an OpenAI-style error object met mid-stream (no HTTP status)."""
    if not isinstance(err, dict):
        return "api_error"
    code = err.get("code")
    if type(code) is int and 400 <= code <= 599:  # vLLM / llama.cpp put the HTTP status here
        return anthropic_type_for_status(code)
    t = err.get("type")
    if isinstance(t, str):
        if t in ANTHROPIC_TYPES:
            return t
        return _ANTHROPIC_TYPE_BY_OPENAI_TYPE.get(t, "api_error")
    return "api_error"


def _str_or_none(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return orjson.dumps(value).decode()


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _clip(text: str) -> str:
    text = _SPACES.sub(" ", text).strip()
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def _non_json_message(status: int, body: bytes) -> str:
    stripped = body.strip()
    if not stripped:
        return f"upstream returned HTTP {status} with an empty body"
    if stripped[:1] == b"<":
        m = _TITLE.search(stripped)
        title = _clip(m.group(1).decode("utf-8", "replace")) if m else ""
        return f"upstream returned HTTP {status} with a non-JSON body" + (f": {title}" if title else "")
    return _clip(stripped.decode("utf-8", "replace"))


def read_upstream_error(status: int, body: bytes) -> UpstreamErrorInfo:
    """Read message/type/param/code out of any upstream error body. Never raises."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return UpstreamErrorInfo(_non_json_message(status, body), None, None, None, False)
    if not isinstance(doc, dict):
        return UpstreamErrorInfo(_clip(body.decode("utf-8", "replace")), None, None, None, False)
    err = doc.get("error")
    if isinstance(err, dict):
        message = err.get("message")
        etype = err.get("type")
        etype = etype if isinstance(etype, str) and etype else None
        if doc.get("type") == "error":  # Anthropic shape
            return UpstreamErrorInfo(_text(message if message is not None else ""), etype, None, None, True)
        if message is None:
            message = err.get("msg") or err.get("detail") or f"upstream returned HTTP {status}"
        return UpstreamErrorInfo(
            _text(message), etype, _str_or_none(err.get("param")), _str_or_none(err.get("code")), False
        )
    if isinstance(err, str):  # e.g. {"error": "model 'x' not found"}
        return UpstreamErrorInfo(err, None, None, None, False)
    if "message" in doc:  # vLLM's older flat shape: {"object":"error","message",...,"code":<int>}
        etype = doc.get("type")
        return UpstreamErrorInfo(
            _text(doc["message"]),
            etype if isinstance(etype, str) and etype else None,
            _str_or_none(doc.get("param")),
            _str_or_none(doc.get("code")),
            False,
        )
    if "detail" in doc:  # FastAPI-style validation errors
        return UpstreamErrorInfo(_clip(_text(doc["detail"])), None, None, None, False)
    return UpstreamErrorInfo(_clip(body.decode("utf-8", "replace")), None, None, None, False)


def to_openai_error(status: int, body: bytes) -> tuple[int, bytes]:
    """Upstream error (status, body) -> (same status, OpenAI error body bytes)."""
    info = read_upstream_error(status, body)
    return status, orjson.dumps(
        {
            "error": {
                "message": info.message,
                "type": info.type or openai_type_for_status(status),
                "param": info.param,
                "code": info.code,
            }
        }
    )


def to_anthropic_error(status: int, body: bytes, request_id: str | None = None) -> tuple[int, bytes]:
    """Upstream error (status, body) -> (same status, Anthropic error body bytes).

    An upstream body that is already Anthropic-shaped passes through unchanged.
    """
    info = read_upstream_error(status, body)
    if info.anthropic_shaped:
        return status, body
    doc: dict[str, Any] = {
        "type": "error",
        "error": {"type": anthropic_type_for_status(status), "message": info.message},
    }
    if request_id is not None:
        doc["request_id"] = request_id
    return status, orjson.dumps(doc)
