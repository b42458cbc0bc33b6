# What the OpenAI and Anthropic mocks share: the request path through one provider API.
#
# Order, for every API request: route (404 / 405) -> API key (401, when `require_key` is set) ->
# provider pre-checks (e.g. Anthropic's `anthropic-version`) -> error injection (`error_rate`) ->
# the endpoint's handler. Handlers render `Reply` templates (see wire.py); successful renders are
# cached per (endpoint, config.tokens, anthropic-version, body hash) in a bounded dict, so a repeated
# prompt costs one dict lookup plus `wire.fill`. No I/O here: the protocol does the timing and writes.

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import orjson
import xxhash

from .config import MockConfig
from .wire import Reply, Request

Handler = Callable[[Request], Reply]

CACHE_ENTRIES = 1024  # rendered templates kept per provider; oldest evicted first
CACHE_MAX_BYTES = 256 * 1024  # larger renders (big embedding batches) are not kept


class ApiError(Exception):
    """A request the provider rejects; rendered in the provider's error shape by `error_reply`."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


class ProviderApi:
    """Base class of one provider's mock API. Subclasses fill `routes` and the error hooks."""

    __slots__ = ("_cache", "_injected", "config", "errors_injected", "rng", "routes")

    def __init__(self, config: MockConfig, rng: random.Random) -> None:
        self.config = config
        self.rng = rng
        self.errors_injected = 0
        # suffix after "/v1" -> {method: handler}
        self.routes: dict[str, dict[str, Handler]] = {}
        self._cache: dict[tuple[Any, ...], Reply] = {}
        self._injected: dict[tuple[int, float], Reply] = {}

    # -- the request path --------------------------------------------------------------------------

    def handle(self, req: Request) -> Reply:
        """Answer one API request with a `Reply` template (placeholders still in it)."""
        path = req.path
        i = path.find("/v1/")
        methods = self.route(path[i + 3 :].rstrip("/")) if i >= 0 else None
        if methods is None:
            return self.error_reply(404, f"Invalid URL ({req.method} {path})")
        handler = methods.get(req.method)
        if handler is None:
            return self.error_reply(405, f"Method {req.method} not allowed for {path}")
        cfg = self.config
        if cfg.require_key is not None and not self.authorized(req, cfg.require_key.encode()):
            return self.auth_error()
        early = self.precheck(req)
        if early is not None:
            return early
        if cfg.error_rate > 0.0 and self.rng.random() < cfg.error_rate:
            self.errors_injected += 1
            key = (cfg.error_status, cfg.retry_after)
            reply = self._injected.get(key)
            if reply is None:
                reply = self._injected[key] = self.injected_error(cfg.error_status, cfg.retry_after)
            return reply
        try:
            return handler(req)
        except ApiError as exc:
            return self.error_reply(exc.status, exc.message, param=exc.param, code=exc.code)

    def route(self, suffix: str) -> dict[str, Handler] | None:
        """The handlers for `suffix` (the path after `/v1`), plus `/models/{id}`; None for an unknown path."""
        methods = self.routes.get(suffix)
        if methods is None and suffix.startswith("/models/"):
            return {"GET": self.model}
        return methods

    def model(self, req: Request) -> Reply:
        """GET /v1/models/{id}: each API answers in its own shape."""
        raise NotImplementedError

    def cached(self, endpoint: str, req: Request, render: Callable[[dict[str, Any], Request], Reply]) -> Reply:
        """The rendered template for this request's body, rendering (and caching) on a miss."""
        key = (endpoint, self.config.tokens, req.anthropic_version, xxhash.xxh3_64_intdigest(req.body))
        reply = self._cache.get(key)
        if reply is not None:
            return reply
        reply = render(parse_json(req.body), req)
        if reply.size <= CACHE_MAX_BYTES:
            cache = self._cache
            if len(cache) >= CACHE_ENTRIES:
                del cache[next(iter(cache))]
            cache[key] = reply
        return reply

    @property
    def cache_entries(self) -> int:
        """How many rendered templates are cached."""
        return len(self._cache)

    def clear_cache(self) -> None:
        """Forget all rendered templates."""
        self._cache.clear()
        self._injected.clear()

    # -- provider hooks ----------------------------------------------------------------------------

    def authorized(self, req: Request, key: bytes) -> bool:
        """True when the request carries `key` in the way this provider accepts."""
        return bearer(req.authorization) == key

    def precheck(self, req: Request) -> Reply | None:
        """A provider-specific rejection that comes before error injection, or None."""
        return None

    def auth_error(self) -> Reply:
        """The 401 answer."""
        raise NotImplementedError

    def error_reply(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> Reply:
        """An error answer in the provider's shape."""
        raise NotImplementedError

    def injected_error(self, status: int, retry_after: float) -> Reply:
        """The answer to a request picked by `error_rate`."""
        raise NotImplementedError


def bearer(value: bytes | None) -> bytes | None:
    """The token of an `Authorization: Bearer <token>` value, or None."""
    if value is None:
        return None
    scheme, _, token = value.partition(b" ")
    return token.strip() if scheme.lower() == b"bearer" else None


def parse_json(body: bytes) -> dict[str, Any]:
    """The body as a JSON object; `ApiError` 400 if it is not one."""
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise ApiError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(obj, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return obj


def retry_after_header(status: int, seconds: float) -> bytes:
    """The `retry-after` line sent with injected 429/503/529 answers (empty for other statuses)."""
    if status in (429, 503, 529) and seconds > 0:
        return b"retry-after: %s\r\n" % (b"%d" % seconds if seconds == int(seconds) else b"%g" % seconds)
    return b""


def max_tokens_field(body: dict[str, Any], *names: str) -> int | None:
    """The first present token cap among `names`; `ApiError` 400 if it is not a non-negative int."""
    for name in names:
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ApiError(400, f"Invalid '{name}': expected a non-negative integer.", param=name)
        return value
    return None
