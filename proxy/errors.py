"""Exceptions, arranged by the phase that failed.

Every error that can reach a client carries the HTTP status to answer with and an
OpenAI-style `type`/`code`, so turning an error into a response lives in one place
(`wire.error_response`). Nothing here does I/O. Messages never contain provider keys:
they are built from our own words and from configured names only.
"""

from __future__ import annotations


class ConfigError(Exception):
    """The configuration is invalid. The message names the bad key."""


class GatewayError(Exception):
    """An error answered to the client with `status` in its API's error shape."""

    status = 500
    type = "server_error"
    code: str | None = None
    param: str | None = None
    close = False  # True when the connection cannot be trusted for another request

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if param is not None:
            self.param = param
        if code is not None:
            self.code = code

    def headers(self) -> bytes:
        """Extra response header lines for this error (e.g. Retry-After)."""
        return b""


# Downstream: the client's request is wrong.


class BadRequestError(GatewayError):
    status = 400
    type = "invalid_request_error"


class MalformedHTTPError(BadRequestError):
    """The request is not valid HTTP/1.1, or its framing is ambiguous. Answer and close."""

    close = True


class RequestTimeout(GatewayError):
    status = 408
    type = "invalid_request_error"
    code = "request_timeout"
    close = True


class PayloadTooLargeError(GatewayError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"
    close = True


class URITooLongError(GatewayError):
    status = 414
    type = "invalid_request_error"
    close = True


class HeadersTooLargeError(GatewayError):
    status = 431
    type = "invalid_request_error"
    close = True


class ExpectationFailedError(GatewayError):
    status = 417
    type = "invalid_request_error"
    close = True


class NotFoundError(GatewayError):
    status = 404
    type = "invalid_request_error"


class ModelNotFoundError(NotFoundError):
    code = "model_not_found"
    param = "model"


class MethodNotAllowedError(GatewayError):
    status = 405
    type = "invalid_request_error"


class ConnectNotAllowedError(MethodNotAllowedError):
    close = True  # whatever follows a CONNECT is meant for a tunnel, not for us


# Upstream: the provider could not be used.


class UpstreamError(GatewayError):
    """The provider failed. `retryable` is True when another route may succeed."""

    status = 502
    type = "server_error"
    code = "bad_gateway"
    retryable = True


class ConnectError(UpstreamError):
    code = "upstream_connect_error"


class UpstreamProtocolError(UpstreamError):
    code = "upstream_protocol_error"


class UpstreamClosedError(UpstreamError):
    code = "upstream_closed"


class UpstreamTimeout(UpstreamError):
    """A provider phase took too long; `phase` names which (reported by phase in /metrics)."""

    status = 504
    code = "upstream_timeout"
    phase = "other"


class ConnectTimeout(UpstreamTimeout):
    code = "upstream_connect_timeout"
    phase = "connect"


class FirstByteTimeout(UpstreamTimeout):
    """No response head within the first-byte timeout (or the model's attempt deadline)."""

    phase = "first_byte"


class StreamIdleTimeout(UpstreamTimeout):
    """The response stopped arriving for longer than the stream idle timeout."""

    phase = "stream_idle"


class TotalTimeout(UpstreamTimeout):
    """The whole response took longer than the total timeout."""

    phase = "total"


class AllRoutesFailedError(UpstreamError):
    """Every attempt failed: answered with the most telling status the attempts add up to."""

    code = "upstream_failed"

    def __init__(self, message: str, *, status: int, retry_after: int | None, final: bool) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.final = final
        self.type = "rate_limit_error" if status == 429 else "server_error"
        self.code = {429: "rate_limit_exceeded", 503: "upstream_unavailable", 504: "upstream_timeout"}.get(
            status, "upstream_failed"
        )

    def headers(self) -> bytes:
        out = b"retry-after: %d\r\n" % self.retry_after if self.retry_after else b""
        if self.final and self.status == 502:
            out += b"x-should-retry: false\r\n"  # the gateway already tried every route
        return out


class PoolTimeout(UpstreamTimeout):
    status = 503
    code = "upstream_pool_exhausted"
    phase = "pool"
