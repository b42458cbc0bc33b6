"""The cache step of the request path: answer from memory, and send identical requests upstream once.

Theory of operation, per cacheable request (the policy and the key are `proxy.cache`'s):
1. `lookup` plans (HIT/MISS/BYPASS/REFRESH from the model's policy and the request's
   Cache-Control), keys the request, and looks in L1. A hit is one write of prebuilt bytes.
2. On a miss, if an identical request is already in flight (its *leader*), this one becomes
   a *follower* instead of going upstream. A follower asking in the same mode joins live: it
   gets the leader's response bytes as they arrive, streams included. Any other follower waits
   and is served from the entry the leader stores. If the leader fails before its first byte,
   every follower makes its own attempt, by the router's rules; nobody is left hanging.
3. Otherwise the request leads. With a Redis tier, L2 is asked first, within its deadline.
4. The leader captures the response payload (client format, framing removed) and, when the
   answer is complete and successful, stores it in L1 (and L2). Errors and cut streams are
   never stored.

The module holds the gateway's `Cache`; the pipeline calls `lookup`, then the `on_leader_*`
hooks from its own phases.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from proxy.cache import CacheEntry, CacheSettings, Outcome, entry_from_json, entry_from_sse, key_hex, make_key
from proxy.cache.formats import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_EMBEDDINGS
from proxy.cache.entry import unverified_entry
from proxy.cache.store import new_store
from proxy.wire import CONNECTION_CLOSE, CRLF, STATUS_LINE, dechunk

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.redis_tier import RedisTier

log = logging.getLogger("llm_edge.cache")

HIT, MISS, BYPASS, REFRESH = Outcome.HIT, Outcome.MISS, Outcome.BYPASS, Outcome.REFRESH  # no EnumType.__getattr__ per request
X_CACHE = {outcome: b"x-cache: " + outcome.value + b"\r\n" for outcome in Outcome}
X_CACHE_HIT = X_CACHE[HIT]
FORMATS = {"/chat/completions": OPENAI_CHAT, "/messages": ANTHROPIC_MESSAGES, "/embeddings": OPENAI_EMBEDDINGS}
_FREE = b"x-llm-edge-cost: 0.000000\r\n"  # an answer from memory costs nothing upstream
_HIT_JSON = STATUS_LINE[200] + b"content-type: application/json\r\n" + X_CACHE_HIT + _FREE
_HIT_SSE = (
    STATUS_LINE[200] + b"content-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n" + X_CACHE_HIT
    + _FREE
)  # fmt: skip


class Cache:
    """The gateway's response cache: policy, L1 store, in-flight leaders, optional L2."""

    __slots__ = ("store", "inflight", "l2", "max_entry_bytes", "coalesced", "stored", "l2_hits")

    def __init__(self, settings: CacheSettings, loop: asyncio.AbstractEventLoop) -> None:
        self.store = new_store(settings.max_entries, settings.max_bytes)
        self.inflight: dict[bytes, Exchange] = {}
        self.max_entry_bytes = min(settings.max_bytes, 32 * 1024 * 1024)
        self.coalesced = 0
        self.stored = 0
        self.l2_hits = 0
        self.l2: RedisTier | None = None
        if settings.redis_url:
            from proxy.redis_tier import RedisTier

            self.l2 = RedisTier(settings.redis_url, settings.redis_timeout_ms, loop)

    def snapshot(self) -> dict[str, int]:
        """Counters for `GET /stats` and `/metrics`."""
        counters = self.store.counters()
        counters["coalesced"] = self.coalesced
        counters["stored"] = self.stored
        counters["in_flight_keys"] = len(self.inflight)
        if self.l2 is not None:
            counters["l2_hits"] = self.l2.hits
            counters["l2_misses"] = self.l2.misses
            counters["l2_errors"] = self.l2.errors
        return counters


# lookup


def lookup(ex: Exchange, proceed: Callable[[Exchange], None]) -> bool:
    """Plan, key and look up; True when the exchange was answered or parked (follower, L2 fetch)."""
    cache = ex.gateway.cache
    if cache is None:
        return False
    fmt = FORMATS[ex.endpoint]
    payload = ex.payload
    assert payload is not None
    plan = ex.gen.planner.plan(fmt, ex.model, payload, ex.cache_control or None, ex.cache_ttl or None)
    ex.cache_outcome = plan.outcome
    if plan.outcome is BYPASS:
        return False
    key = make_key(fmt, ex.model, payload, ex.tenant, ex.anthropic_version, ex.anthropic_beta)
    if key is None:
        ex.cache_outcome = BYPASS
        return False
    ex.cache_key = key
    ex.cache_plan = plan
    if plan.lookup:
        entry = cache.store.get(key, ex.gateway.loop.time(), plan.max_age)
        if entry is not None and not entry.verify():
            cache.store.delete(key)  # stored unchecked, and not an answer to serve: a miss
            entry = None
        if entry is not None and serve(ex, entry):
            _finish(ex)
            return True
        leader = cache.inflight.get(key)
        if leader is not None and not leader.done:
            _follow(ex, leader)
            cache.coalesced += 1
            return True
    if plan.store:
        cache.inflight[key] = ex  # this request leads; identical ones will follow it
        ex.capture = []
        ex.followers = []
        if cache.l2 is not None and plan.lookup and cache.l2.available:
            _ask_l2(ex, cache, fmt, proceed)
            return True
    return False


def serve(ex: Exchange, entry: CacheEntry, outcome: Outcome = HIT) -> bool:
    """Answer from a cached entry in one write; False if the entry cannot serve this mode."""
    body = entry.body(ex.stream, _wants_usage(ex))
    if body is None:
        return False
    head = (_HIT_SSE if ex.stream else _HIT_JSON) if outcome is HIT else _hit_head(ex, outcome)
    extra = CONNECTION_CLOSE if not ex.keep_alive else b""
    ex.cache_outcome = outcome
    ex.status = 200
    ex.head_sent = True
    ex.close_after = not ex.keep_alive
    # Head and body in one writev: one syscall, and the stored body is never copied.
    ex.downstream.writelines((head, b"content-length: %d\r\n" % len(body), extra, ex.gateway.date_header, CRLF, body))
    return True


def _finish(ex: Exchange) -> None:
    from proxy import pipeline  # the pipeline imports this module; the reverse is needed only here

    pipeline.finish(ex)


def _hit_head(ex: Exchange, outcome: Outcome) -> bytes:
    ctype = _HIT_SSE if ex.stream else _HIT_JSON
    return ctype.replace(X_CACHE_HIT, X_CACHE[outcome])


def _wants_usage(ex: Exchange) -> bool:
    options = ex.payload.get("stream_options") if ex.payload is not None else None
    return isinstance(options, dict) and options.get("include_usage") is True


def _follow(ex: Exchange, leader: Exchange) -> None:
    ex.leader = leader
    ex.cache_outcome = HIT
    # Live only if the leader has not answered yet and its bytes fit this request as they are.
    ex.follows_live = (
        not leader.head_sent and leader.stream == ex.stream and _wants_usage(leader) == _wants_usage(ex)
    )
    assert leader.followers is not None
    leader.followers.append(ex)


def _ask_l2(ex: Exchange, cache: Cache, fmt: bytes, proceed: Callable[[Exchange], None]) -> None:
    assert cache.l2 is not None and ex.cache_key is not None
    redis_key = b"llm-edge:" + fmt + b":" + key_hex(ex.cache_key)

    def done(value: bytes | None) -> None:
        if ex.done:
            return
        entry = entry_from_json(fmt, 200, value) if value is not None else None
        if entry is not None and ex.cache_plan is not None:
            cache.l2_hits += 1
            cache.store.put(ex.cache_key, entry, ex.gateway.loop.time(), ex.cache_plan.ttl)  # type: ignore[arg-type]
            ex.cache_entry = entry
            if serve(ex, entry):
                _finish(ex)  # which serves the followers from the same entry
                return
        proceed(ex)

    cache.l2.get(redis_key, done)


# the leader's response, as it goes


def on_leader_head(ex: Exchange, head: bytes, line_end: int, rest: bytes) -> None:
    """The leader relays its head: live followers get the same, marked as served by the cache."""
    followers = ex.followers
    assert followers is not None
    if ex.status != 200:  # an error is the leader's own: each follower gets the router's treatment instead
        stop_live_following(ex)
        ex.capture = None
        return
    if rest and ex.capture is not None:
        ex.capture.append(rest)
        ex.capture_size += len(rest)
    for follower in followers:
        if follower.follows_live and not follower.done:
            extra = b"" if follower.keep_alive else CONNECTION_CLOSE
            follower.downstream.write(head[:line_end] + X_CACHE_HIT + extra + head[line_end:] + rest)
            follower.head_sent = True
            follower.status = ex.status
            follower.close_after = not follower.keep_alive or ex.close_delimited


def on_leader_data(ex: Exchange, data: bytes) -> None:
    """More of the leader's body: to live followers, and into the capture."""
    for follower in ex.followers or ():
        if follower.follows_live and not follower.done:
            follower.downstream.write(data)
    capture = ex.capture
    if capture is not None:
        ex.capture_size += len(data)
        if ex.capture_size > ex.gateway.cache.max_entry_bytes:  # type: ignore[union-attr]
            ex.capture = None  # too big to keep: the answer still flows, it is just not stored
        else:
            capture.append(data)


def on_leader_finished(ex: Exchange) -> None:
    """The leader is finished: store its answer if complete and storable, then serve or release followers."""
    cache = ex.gateway.cache
    assert cache is not None
    key = ex.cache_key
    if key is not None and cache.inflight.get(key) is ex:
        del cache.inflight[key]
    entry = ex.cache_entry
    if entry is None and ex.clean and ex.capture is not None and ex.status == 200 and ex.cache_plan is not None:
        payload = b"".join(ex.capture)
        if ex.capture_chunked:
            payload = dechunk(payload)
        fmt = FORMATS[ex.endpoint]
        entry = entry_from_sse(fmt, 200, payload) if ex.stream else unverified_entry(fmt, 200, payload)
        if entry is not None and key is not None:
            plan = ex.cache_plan
            if cache.store.put(key, entry, ex.gateway.loop.time(), plan.ttl):
                cache.stored += 1
                if cache.l2 is not None:
                    cache.l2.put(b"llm-edge:" + fmt + b":" + key_hex(key), entry.json_body, plan.ttl)
    ex.capture = None
    _release_followers(ex, entry)


def drop_follower(ex: Exchange) -> None:
    """A follower's client left."""
    leader = ex.leader
    if leader is not None and leader.followers is not None and ex in leader.followers:
        leader.followers.remove(ex)


def relay_head(ex: Exchange, head: bytes, ours: bytes) -> None:
    """A rebuilt stream starts (translated, or usage stripped): the leader and its live followers get it."""
    ex.downstream.write(head + ours + CRLF)
    for follower in ex.followers or ():
        if follower.follows_live and not follower.done:
            extra = b"" if follower.keep_alive else CONNECTION_CLOSE
            follower.downstream.write(head + X_CACHE_HIT + extra + CRLF)
            follower.head_sent = True
            follower.status = 200
            follower.close_after = not follower.keep_alive


def relay(ex: Exchange, data: bytes) -> None:
    """A piece of a rebuilt stream, to the leader and its live followers."""
    ex.downstream.write(data)
    for follower in ex.followers or ():
        if follower.follows_live and not follower.done:
            follower.downstream.write(data)


def stop_live_following(ex: Exchange) -> None:
    """The leader's answer will be rebuilt, not relayed: followers wait for the stored entry."""
    for follower in ex.followers or ():
        follower.follows_live = False


def _release_followers(ex: Exchange, entry: CacheEntry | None) -> None:
    from proxy import pipeline  # the pipeline imports this module; the reverse is needed only here

    followers, ex.followers = ex.followers or [], None
    for follower in followers:
        if follower.done:
            continue
        follower.leader = None
        if follower.follows_live and follower.head_sent:
            if not (ex.clean and ex.status == 200):
                follower.close_after = True  # the leader's stream broke after bytes went out: so did this one
            pipeline.finish(follower)
        elif entry is not None and entry.verify() and serve(follower, entry):
            pipeline.finish(follower)
        else:
            follower.cache_outcome = MISS
            pipeline.proceed(follower)  # its own attempt, by the router's rules
