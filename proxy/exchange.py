"""The per-request context: one `Exchange` per request/response pair, slotted.

It is filled by the downstream parser callbacks, carried through every phase of
`pipeline`, and read by `stats` at the end. It holds plain values only; it does no I/O.

Timestamps are `time.perf_counter()` seconds. The gateway's own overhead is
    (sent - start - waited) + (relayed - upstream_first)
that is, the time from having the whole request to having written it upstream, less any
time spent waiting for a new upstream connection, plus the time from the first upstream
response byte arriving to its first byte being written to the client.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from proxy.adapt import Translation
    from proxy.cache import CacheEntry, Outcome, Plan
    from proxy.config import Route
    from proxy.downstream import DownstreamProtocol
    from proxy.errors import GatewayError
    from proxy.server import Gateway
    from proxy.upstream import UpstreamProtocol


class Exchange:
    """Everything known about one request while the gateway answers it."""

    __slots__ = (
        # request, from the downstream parser
        "gateway", "gen", "downstream", "method", "url", "keep_alive", "forward_headers", "body_parts", "body_size", "body",
        "content_length", "chunked", "upgrade", "header_bytes", "header_count", "host_count", "expect_continue",
        "cache_control", "cache_ttl", "anthropic_version", "anthropic_beta", "client_key", "key_index", "tenant",
        "reserved_tokens", "error",
        # request, after parsing the body
        "api", "payload", "model", "stream", "endpoint",
        # routing and upstream
        "model_id", "route", "attempts", "attempts_left", "attempt_deadline_s", "tried", "outcomes", "upstream", "t_attempt",
        "hedge_after_s", "hedge_timer", "hedge", "hedge_route", "t_hedge",
        # cache
        "cache_outcome", "cache_key", "cache_plan", "cache_entry", "capture", "capture_size", "capture_chunked",
        "followers", "leader", "follows_live",
        # response
        "clean", "status", "tokens_in", "tokens_out", "cost_nusd", "head_sent", "close_delimited", "first_body", "tail", "tail_prev", "translation", "chunked_out", "close_after", "done", "aborted",
        # timing
        "t_start", "t_sent", "t_waited", "t_upstream", "t_relayed", "t_end",
    )  # fmt: skip

    def __init__(self, gateway: Gateway, downstream: DownstreamProtocol) -> None:
        self.gateway = gateway
        self.gen = gateway.gen  # the config this request started on: it finishes on it too
        self.downstream = downstream
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
        self.key_index = -1  # which configured gateway key it is
        self.tenant = b""  # that key's name: part of the cache key
        self.reserved_tokens = 0  # what admission reserved against the key's tokens-per-minute
        self.error: GatewayError | None = None

        self.api = 0  # adapt.OPENAI or adapt.ANTHROPIC: the client's API, for errors and framing
        self.payload: dict[str, Any] | None = None
        self.model = ""
        self.stream = False
        self.endpoint = ""

        self.model_id = -1
        self.route: Route | None = None  # the main attempt's route
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

        self.cache_outcome: Outcome | None = None  # None: not a cacheable endpoint
        self.cache_key: bytes | None = None
        self.cache_plan: Plan | None = None
        self.cache_entry: CacheEntry | None = None
        self.capture: list[bytes] | None = None  # the answer's payload, kept to be stored
        self.capture_size = 0
        self.capture_chunked = False
        self.followers: list[Exchange] | None = None  # a cache leader's coalesced followers
        self.leader: Exchange | None = None  # a follower's leader
        self.follows_live = False

        self.clean = False  # the upstream response completed normally
        self.tokens_in = 0
        self.tokens_out = 0
        self.cost_nusd = 0  # usage × the route's prices, in nano-dollars
        self.status = 0
        self.head_sent = False
        self.close_delimited = False
        self.first_body = b""  # the first piece of the response body (Anthropic streams start with usage)
        self.tail = b""  # the latest piece of the response body, and the one before it
        self.tail_prev = b""
        self.translation: Translation | None = None  # when the provider's API differs from the client's
        self.chunked_out = False
        self.close_after = False
        self.done = False
        self.aborted = False

        self.t_start = 0.0
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
