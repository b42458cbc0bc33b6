"""errors: every gateway error carries its status, type and code; names end in Error or Timeout;
upstream timeouts are told apart by phase."""

from __future__ import annotations

import inspect

import pytest

from proxy import errors

CLASSES = [
    c
    for _, c in inspect.getmembers(errors, inspect.isclass)
    if issubclass(c, Exception) and c.__module__ == errors.__name__
]
SIMPLE = [c for c in CLASSES if issubclass(c, errors.GatewayError) and c is not errors.AllRoutesFailedError]


def test_names_end_in_error_or_timeout() -> None:
    assert CLASSES
    assert [c.__name__ for c in CLASSES if not c.__name__.endswith(("Error", "Timeout"))] == []


@pytest.mark.parametrize("cls", SIMPLE)
def test_every_gateway_error_has_a_status_and_a_type(cls: type[errors.GatewayError]) -> None:
    exc = cls("why")
    assert 400 <= exc.status <= 599 and exc.type and exc.message == "why" and str(exc) == "why"
    assert exc.headers() == b""


@pytest.mark.parametrize(
    "cls,status,close",
    [
        (errors.BadRequestError, 400, False), (errors.MalformedHTTPError, 400, True),
        (errors.RequestTimeout, 408, True), (errors.PayloadTooLargeError, 413, True),
        (errors.URITooLongError, 414, True),
        (errors.HeadersTooLargeError, 431, True), (errors.ExpectationFailedError, 417, True),
        (errors.NotFoundError, 404, False), (errors.MethodNotAllowedError, 405, False),
        (errors.ConnectNotAllowedError, 405, True), (errors.UpstreamError, 502, False),
        (errors.FirstByteTimeout, 504, False), (errors.PoolTimeout, 503, False),
    ],
)  # fmt: skip
def test_status_and_close(cls: type[errors.GatewayError], status: int, close: bool) -> None:
    exc = cls("x")
    assert (exc.status, exc.close) == (status, close)


def test_param_and_code_override_per_instance() -> None:
    exc = errors.BadRequestError("x", param="model", code="bad")
    assert (exc.param, exc.code) == ("model", "bad")
    assert errors.BadRequestError("y").param is None  # the class default is untouched
    assert errors.ModelNotFoundError("z").param == "model" and errors.ModelNotFoundError("z").code == "model_not_found"


def test_upstream_timeouts_by_phase() -> None:
    phases = {cls.phase for cls in (errors.ConnectTimeout, errors.FirstByteTimeout, errors.StreamIdleTimeout,
                                    errors.TotalTimeout, errors.PoolTimeout)}  # fmt: skip
    assert phases == {"connect", "first_byte", "stream_idle", "total", "pool"}
    for cls in (errors.ConnectTimeout, errors.FirstByteTimeout, errors.StreamIdleTimeout, errors.TotalTimeout):
        assert issubclass(cls, errors.UpstreamTimeout) and cls("x").retryable


@pytest.mark.parametrize(
    "status,retry_after,final,headers,type_,code",
    [
        (429, 7, False, b"retry-after: 7\r\n", "rate_limit_error", "rate_limit_exceeded"),
        (503, None, False, b"", "server_error", "upstream_unavailable"),
        (504, 0, False, b"", "server_error", "upstream_timeout"),
        (502, None, True, b"x-should-retry: false\r\n", "server_error", "upstream_failed"),
        (502, None, False, b"", "server_error", "upstream_failed"),
        (502, 3, True, b"retry-after: 3\r\nx-should-retry: false\r\n", "server_error", "upstream_failed"),
    ],
)
def test_all_routes_failed(
    status: int, retry_after: int | None, final: bool, headers: bytes, type_: str, code: str
) -> None:
    exc = errors.AllRoutesFailedError("m", status=status, retry_after=retry_after, final=final)
    assert (exc.status, exc.type, exc.code, exc.headers()) == (status, type_, code, headers)


def test_config_error_is_not_a_gateway_error() -> None:
    assert not issubclass(errors.ConfigError, errors.GatewayError)
