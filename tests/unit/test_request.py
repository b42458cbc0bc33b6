"""request: is a body a request the endpoint can serve? Table-driven over each endpoint's checks."""

from __future__ import annotations

import pytest

from proxy import request
from proxy.errors import BadRequestError

CHAT = b'{"model":"fast","messages":[{"role":"user","content":"hi"}]}'


@pytest.mark.parametrize(
    "body,parsed",
    [
        (CHAT, ("fast", False)),
        (b'{"model":"m","stream":true}', ("m", True)),
        (b'{"model":"m","stream":false}', ("m", False)),
        (b'{"model":"m","stream":null}', ("m", False)),
        (b'{"model":"openai/gpt-4o"}', ("openai/gpt-4o", False)),
    ],
)
def test_parse_body(body: bytes, parsed: tuple[str, bool]) -> None:
    payload, model, stream = request.parse_body(body)
    assert (model, stream) == parsed and payload["model"] == model


@pytest.mark.parametrize(
    "body,words,param",
    [
        (b"{not json", "not valid JSON", None),
        (b"", "not valid JSON", None),
        (b"[1]", "JSON object", None),
        (b'"x"', "JSON object", None),
        (b"{}", "'model'", "model"),
        (b'{"model":""}', "'model'", "model"),
        (b'{"model":42}', "'model'", "model"),
        (b'{"model":null}', "'model'", "model"),
        (b'{"model":"m","stream":"yes"}', "'stream'", "stream"),
        (b'{"model":"m","stream":1}', "'stream'", "stream"),
    ],
)
def test_parse_body_refuses(body: bytes, words: str, param: str | None) -> None:
    with pytest.raises(BadRequestError) as caught:
        request.parse_body(body)
    assert words in caught.value.message and caught.value.param == param and caught.value.status == 400


@pytest.mark.parametrize(
    "endpoint,body",
    [
        ("/chat/completions", CHAT),
        ("/messages", b'{"model":"m","max_tokens":1,"messages":[]}'),
        ("/embeddings", b'{"model":"m","input":"text"}'),
        ("/embeddings", b'{"model":"m","input":""}'),
    ],
)
def test_parse_accepts(endpoint: str, body: bytes) -> None:
    payload, model, _ = request.parse(endpoint, body)
    assert model == "m" or model == "fast"
    assert isinstance(payload, dict)


@pytest.mark.parametrize(
    "endpoint,body,param",
    [
        ("/chat/completions", b'{"model":"m"}', "messages"),
        ("/chat/completions", b'{"model":"m","messages":[]}', "messages"),
        ("/chat/completions", b'{"model":"m","messages":"hi"}', "messages"),
        ("/messages", b'{"model":"m","max_tokens":5}', "messages"),
        ("/messages", b'{"model":"m","messages":[]}', "max_tokens"),
        ("/messages", b'{"model":"m","messages":[],"max_tokens":0}', "max_tokens"),
        ("/messages", b'{"model":"m","messages":[],"max_tokens":true}', "max_tokens"),
        ("/messages", b'{"model":"m","messages":[],"max_tokens":1.5}', "max_tokens"),
        ("/messages", b'{"model":"m","messages":[],"max_tokens":"9"}', "max_tokens"),
        ("/embeddings", b'{"model":"m"}', "input"),
    ],
)
def test_parse_refuses_what_the_endpoint_needs(endpoint: str, body: bytes, param: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        request.parse(endpoint, body)
    assert caught.value.param == param


def test_every_api_endpoint_has_a_check() -> None:
    assert set(request.CHECKS) == {"/chat/completions", "/messages", "/embeddings"}


def test_nesting_deeper_than_orjson_reads_is_a_400() -> None:
    deep = b'{"model":"m","messages":[' + b"[" * 2000 + b"]" * 2000 + b"]}"
    with pytest.raises(BadRequestError):
        request.parse("/chat/completions", deep)  # orjson reads 1024 levels: deeper is not valid JSON to it
