"""endpoints: what each path serves, in which API's shape, and the errors for everything else."""

from __future__ import annotations

import pytest

from proxy import endpoints
from proxy.apis import ANTHROPIC, OPENAI
from proxy.errors import ConnectNotAllowedError, MethodNotAllowedError, NotFoundError


@pytest.mark.parametrize(
    "method,url,expected",
    [
        (b"POST", b"/v1/chat/completions", ("/chat/completions", OPENAI, True, "")),
        (b"POST", b"/v1/messages", ("/messages", ANTHROPIC, True, "")),
        (b"POST", b"/v1/embeddings", ("/embeddings", OPENAI, True, "")),
        (b"POST", b"/v1/messages?beta=true", ("/messages", ANTHROPIC, True, "beta=true")),
        (b"GET", b"/v1/models", ("models", OPENAI, True, "")),
        (b"HEAD", b"/v1/models", ("models", OPENAI, True, "")),
        (b"GET", b"/healthz", ("healthz", OPENAI, False, "")),
        (b"GET", b"/healthz?detail=1", ("healthz", OPENAI, False, "detail=1")),
        (b"GET", b"/stats", ("stats", OPENAI, False, "")),
        (b"GET", b"/metrics", ("metrics", OPENAI, False, "")),
        (b"GET", b"/v1/models/gpt-4o", ("model", OPENAI, True, "gpt-4o")),
        (b"GET", b"/v1/models/openai%2Fgpt-4o", ("model", OPENAI, True, "openai/gpt-4o")),
        (b"DELETE", b"/admin/keys/k1", ("admin", OPENAI, False, "/admin/keys/k1")),
        (b"POST", b"/admin/keys", ("admin", OPENAI, False, "/admin/keys")),
    ],
)
def test_route(method: bytes, url: bytes, expected: tuple[str, int, bool, str]) -> None:
    assert endpoints.route(method, url) == expected


@pytest.mark.parametrize(
    "method,url,error",
    [
        (b"GET", b"/v1/chat/completions", MethodNotAllowedError),
        (b"PUT", b"/v1/messages", MethodNotAllowedError),
        (b"POST", b"/healthz", MethodNotAllowedError),
        (b"HEAD", b"/v1/messages", MethodNotAllowedError),
        (b"GET", b"/v2/whatever", NotFoundError),
        (b"GET", b"/", NotFoundError),
        (b"GET", b"/v1/modelsX", NotFoundError),
        (b"CONNECT", b"evil.example:443", ConnectNotAllowedError),
    ],
)
def test_route_refuses(method: bytes, url: bytes, error: type) -> None:
    with pytest.raises(error) as caught:
        endpoints.route(method, url)
    assert type(caught.value) is error


def test_connect_closes_the_connection() -> None:
    with pytest.raises(ConnectNotAllowedError) as caught:
        endpoints.route(b"CONNECT", b"x:443")
    assert caught.value.close and caught.value.status == 405


def test_an_unknown_path_is_named_and_bounded_in_the_message() -> None:
    with pytest.raises(NotFoundError) as caught:
        endpoints.route(b"GET", b"/" + b"x" * 1000)
    assert len(caught.value.message) < 250 and "xxx" in caught.value.message


def test_usual_holds_exactly_the_fixed_paths() -> None:
    for (method, path), answer in endpoints.USUAL.items():
        assert endpoints.route(method, path) == answer
    assert len(endpoints.USUAL) == len(endpoints.ENDPOINTS)
