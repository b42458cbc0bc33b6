"""Upstream error bodies -> client error bodies, status kept."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from proxy.translate import to_anthropic_error, to_openai_error

OPENAI_BODY = (
    b'{"error":{"message":"Incorrect API key provided","type":"invalid_request_error",'
    b'"param":null,"code":"invalid_api_key"}}'
)
ANTHROPIC_BODY = b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}'


def openai_err(status: int, body: bytes) -> dict[str, Any]:
    s, out = to_openai_error(status, body)
    assert s == status
    doc = orjson.loads(out)
    assert set(doc) == {"error"} and set(doc["error"]) == {"message", "type", "param", "code"}
    assert doc["error"]["code"] is None or isinstance(doc["error"]["code"], str)
    return doc["error"]


def anthropic_err(status: int, body: bytes, **kw: Any) -> dict[str, Any]:
    s, out = to_anthropic_error(status, body, **kw)
    assert s == status
    doc = orjson.loads(out)
    assert doc["type"] == "error" and set(doc["error"]) >= {"type", "message"}
    return doc


def test_anthropic_error_to_openai() -> None:
    assert openai_err(529, ANTHROPIC_BODY) == {
        "message": "Overloaded",
        "type": "overloaded_error",
        "param": None,
        "code": None,
    }


def test_openai_error_to_openai_keeps_fields() -> None:
    assert openai_err(401, OPENAI_BODY) == {
        "message": "Incorrect API key provided",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }


def test_openai_error_to_anthropic_uses_status_table() -> None:
    doc = anthropic_err(401, OPENAI_BODY, request_id="req_9")
    assert doc == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided"},
        "request_id": "req_9",
    }


def test_anthropic_body_passes_through_unchanged() -> None:
    assert to_anthropic_error(529, ANTHROPIC_BODY) == (529, ANTHROPIC_BODY)


@pytest.mark.parametrize(
    ("status", "etype"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (402, "billing_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (409, "conflict_error"),
        (413, "request_too_large"),
        (422, "api_error"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (502, "api_error"),
        (503, "overloaded_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_type_by_status(status: int, etype: str) -> None:
    assert anthropic_err(status, OPENAI_BODY)["error"]["type"] == etype


def test_vllm_flat_shape_and_int_code() -> None:
    flat = b'{"object":"error","message":"max_tokens too large","type":"BadRequestError","param":null,"code":400}'
    assert openai_err(400, flat) == {
        "message": "max_tokens too large",
        "type": "BadRequestError",
        "param": None,
        "code": "400",
    }
    assert anthropic_err(400, flat)["error"] == {"type": "invalid_request_error", "message": "max_tokens too large"}
    nested = b'{"error":{"message":"boom","type":"server_error","code":500}}'
    assert openai_err(500, nested)["code"] == "500"


def test_other_json_shapes() -> None:
    assert openai_err(404, b'{"error":"model \\"x\\" not found"}')["message"] == 'model "x" not found'
    assert openai_err(404, b'{"error":"nope"}')["type"] == "not_found_error"
    detail = openai_err(422, b'{"detail":[{"loc":["body","model"],"msg":"field required"}]}')
    assert "field required" in detail["message"] and detail["type"] == "invalid_request_error"
    assert openai_err(500, b"[1,2]")["message"] == "[1,2]"
    assert openai_err(500, b'{"unexpected":true}')["type"] == "server_error"


def test_html_plain_and_empty_bodies() -> None:
    html = b"<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"
    assert openai_err(502, html)["message"] == "upstream returned HTTP 502 with a non-JSON body: 502 Bad Gateway"
    assert anthropic_err(502, html)["error"] == {
        "type": "api_error",
        "message": "upstream returned HTTP 502 with a non-JSON body: 502 Bad Gateway",
    }
    assert (
        openai_err(503, b"  upstream connect error\n or disconnect ")["message"]
        == "upstream connect error or disconnect"
    )
    assert openai_err(500, b"")["message"] == "upstream returned HTTP 500 with an empty body"
    assert openai_err(500, b"\xff\xfe garbage")["message"].endswith("garbage")
    long = openai_err(500, b"x" * 5000)["message"]
    assert len(long) == 1000
