"""The per-request context: one `Exchange` per request/response pair, slotted.

Its fields are grouped by the one module that writes them: the client protocol fills the
request group as it parses, the cache step (`caching`) its own group, and the pipeline the
rest. Everyone else only reads. It holds plain values and does no I/O.

Timestamps are `time.perf_counter()` seconds. The gateway's own overhead is
    (sent - start - waited) + (relayed - upstream_first)
that is, the time from having the whole request to having written it upstream, less any
time spent waiting for a new upstream connection, plus the time from the first upstream
response byte arriving to its first byte being written to the client.

The objects an exchange points at from higher layers (its client connection, the gateway)
are described here by the `typing.Protocol`s the request path uses, so this module imports
nothing above it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from proxy.accesslog import AccessLog
    from proxy.cache import CacheEntry, Outcome, Plan
    from proxy.config import Route
    from proxy.errors import GatewayError
    from proxy.generation import Generation
    from proxy.response_cache import Cache
    from proxy.stats import Stats
    from proxy.upstream import UpstreamProtocol


class ClientConnection(Protocol):
    """What the pipeline needs of the connection a request came on (HTTP/1.1 or HTTP/2)."""

    def write(self, data: bytes) -> None: ...

    def writelines(self, parts: tuple[bytes, ...]) -> None: ...

    def exchange_done(self, ex: Exchange) -> None: ...

    def close(self) -> None: ...


class GatewayState(Protocol):
    """What the request path reads of the gateway-wide state (see `proxy.gateway`)."""

    loop: asyncio.AbstractEventLoop
    gen: Generation
    stats: Stats
    cache: Cache | None
    access_log: AccessLog | None
    date_header: bytes
    attempt_headers: list[bytes]
    draining: bool

    def next_request_id(self) -> str: ...


class Exchange:
    """Everything known about one request while the gateway answers it."""

    __slots__ = (
        # written by the client protocol, as it parses the request
        "client", "method", "url", "keep_alive", "forward_headers", "body_parts", "body_size", "body",
        "content_length", "chunked", "upgrade", "header_bytes", "header_count", "host_count", "expect_continue",
        "cache_control", "cache_ttl", "anthropic_version", "anthropic_beta", "client_key", "request_id", "error",
        "t_start",
        # written by the pipeline: the request as understood
        "gateway", "gen", "api", "payload", "model", "stream", "endpoint", "key_index", "tenant", "reserved_tokens",
        # written by the pipeline: attempts
        "model_id", "route", "main_open", "attempts", "attempts_left", "attempt_deadline_s", "tried", "outcomes", "upstream",
        "t_attempt", "hedge_after_s", "hedge_timer", "hedge", "hedge_route", "t_hedge",
        # written by the cache step
        "cache_outcome", "cache_key", "cache_plan", "cache_entry", "capture", "capture_size", "capture_chunked", "followers", "leader",
        "follows_live",
        # written by the pipeline: the response
        "status", "clean", "tokens_in", "tokens_out", "cost_nusd", "head_sent", "chunked_out", "close_delimited",
        "first_body", "tail", "tail_prev", "held", "held_size", "translation", "close_after", "done",
        "t_sent", "t_waited", "t_upstream", "t_relayed", "t_end",
    )  # fmt: skip

    def __init__(self, gateway: GatewayState, client: ClientConnection) -> None:
        # the request, as parsed
        self.client = client
        self.method = b""
        self.url = b""
        self.keep_alive = True
        self.forward_headers: list[bytes] = []
        self.body_parts: list[bytes] = []
        self.body_size = 0
        self.body = b""
        self.content_length = -1
        self.chunked = False
        self.upgrade = False
        self.header_bytes = 0
        self.header_count = 0
        self.host_count = 0
        self.expect_continue = False
        self.cache_control = b""
        self.cache_ttl = b""
        self.anthropic_version = b""
        self.anthropic_beta = b""
        self.client_key = b""  # the gateway key the client presented (never forwarded, never logged)
        self.request_id = b""
        self.error: GatewayError | None = None
        self.t_start = 0.0

        # the request, as understood
        self.gateway = gateway
        self.gen = gateway.gen  # the config this request started on: it finishes on it too
        self.api = 0  # apis.OPENAI or apis.ANTHROPIC: the client's API, for errors and framing
        self.payload: dict[str, Any] | None = None
        self.model = ""
        self.stream = False
        self.endpoint = ""
        self.key_index = -1  # which configured gateway key the client presented
        self.tenant = b""  # that key's name: part of the cache key
        self.reserved_tokens = 0  # what admission reserved against the key's tokens-per-minute

        # attempts
        self.model_id = -1
        self.route: Route | None = None  # the main attempt's route
        self.main_open = False  # the router has not yet heard the main attempt's outcome
        self.attempts = 0
        self.attempts_left = 0
        self.attempt_deadline_s = 0.0  # how long each attempt has to produce its response head
        self.tried = 0  # bit mask of route ids tried
        self.outcomes: list[tuple[int, float]] | None = None  # (failure kind, retry-after) per failed attempt
        self.upstream: UpstreamProtocol | None = None
        self.t_attempt = 0.0  # loop time the main attempt started
        self.hedge_after_s = 0.0
        self.hedge_timer: asyncio.TimerHandle | None = None
        self.hedge: UpstreamProtocol | None = None  # a second attempt racing the first
        self.hedge_route: Route | None = None
        self.t_hedge = 0.0

        # the cache step
        self.cache_outcome: Outcome | None = None  # None: not a cacheable endpoint
        self.cache_key: bytes | None = None
        self.cache_plan: Plan | None = None
        self.cache_entry: CacheEntry | None = None
        self.capture: list[bytes] | None = None  # the answer's payload in the client's format, to be stored
        self.capture_size = 0
        self.capture_chunked = False  # the capture holds chunk framing, removed when it is stored
        self.followers: list[Exchange] | None = None  # a cache leader's coalesced followers
        self.leader: Exchange | None = None  # a follower's leader
        self.follows_live = False

        # the response
        self.status = 0
        self.clean = False  # the upstream response completed normally
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_nusd = 0  # usage × the route's prices, in nano-dollars
        self.head_sent = False
        self.chunked_out = False  # the client's answer is chunked (what an error event must be framed as)
        self.close_delimited = False
        self.first_body = b""  # the first piece of the response body (Anthropic streams start with usage)
        self.tail = b""  # the latest piece of the response body, and the one before it
        self.tail_prev = b""
        self.held: list[bytes] | None = None  # a non-streamed answer, held whole to be checked before relaying
        self.held_size = 0
        self.translation: Any = None  # an `adapt.Translation` when the provider's API differs from the client's
        self.close_after = False
        self.done = False
        self.t_sent = 0.0
        self.t_waited = 0.0
        self.t_upstream = 0.0
        self.t_relayed = 0.0
        self.t_end = 0.0

    def overhead(self) -> float:
        """The gateway's own share of this exchange's latency, in seconds (0 if not forwarded)."""
        if not self.t_sent or not self.t_relayed:
            return 0.0
        return (self.t_sent - self.t_start - self.t_waited) + (self.t_relayed - self.t_upstream)

    def __repr__(self) -> str:
        return f"<Exchange {self.method.decode()} {self.url[:64]!r} status={self.status} done={self.done}>"
