"""Request-body surgery: change the model name in a JSON body without re-encoding it.

The gateway has already parsed the body (to validate it and read `model`), but it only
forwards it, so re-serialising the whole document would be wasted work that grows with the
prompt. Instead the top-level `"model": "..."` value is spliced out and the upstream name
spliced in.

The splice is only done when it is provably the top-level key:
1. the byte string `"model"` occurs exactly once in the body; since the parsed document has a
   top-level `model` key, that single occurrence is it, unless the key was written with
   `\\u` escapes, so
2. the body contains no `\\u006` escape (every letter of "model" is U+006x), and
3. the value that follows is a plain string literal with no backslash, equal to the parsed name.
Anything else (duplicate keys, escapes, odd spacing) falls back to orjson re-encoding of the
parsed dict, which is always correct. Nothing here does I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

_KEY = b'"model"'
_ESCAPE = b"\\u006"
_WHITESPACE = b" \t\r\n"


def replace_model(body: bytes, payload: dict[str, Any], new_model_json: bytes) -> bytes:
    """Return `body` with its top-level model replaced by `new_model_json` (a JSON string literal)."""
    span = _model_value_span(body, payload["model"])
    if span is None:
        payload = dict(payload)
        payload["model"] = orjson.loads(new_model_json)
        return orjson.dumps(payload)
    start, end = span
    return b"%b%b%b" % (body[:start], new_model_json, body[end:])


def _model_value_span(body: bytes, model: str) -> tuple[int, int] | None:
    """Where the top-level model's string literal (quotes included) sits in `body`, if safe to say."""
    at = body.find(_KEY)
    if at < 0 or body.find(_KEY, at + 7) >= 0 or _ESCAPE in body:
        return None
    i = at + 7
    n = len(body)
    while i < n and body[i] in _WHITESPACE:
        i += 1
    if i >= n or body[i] != 58:  # ':'
        return None
    i += 1
    while i < n and body[i] in _WHITESPACE:
        i += 1
    if i >= n or body[i] != 34:  # '"'
        return None
    end = body.find(b'"', i + 1)
    if end < 0:
        return None
    literal = body[i + 1 : end]
    if b"\\" in literal or literal != model.encode("utf-8"):
        return None
    return i, end + 1
