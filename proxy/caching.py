"""The cache step of the request path: decisions, never actions.

Per cacheable request (the policy and the key are `proxy.cache`'s):
1. `lookup` plans (HIT/MISS/BYPASS/REFRESH from the model's policy and the request's
   Cache-Control), keys the request and looks in L1, then says what to do: serve an entry,
   follow an identical request already in flight (its *leader*), lead (and capture the
   answer to store it), ask L2 first, or just go upstream.
2. A follower asking in the same mode as its leader follows *live*: it gets the leader's
   response bytes as they arrive, streams included, behind its own head (`follower_head`).
   Any other follower waits for the entry the leader stores.
3. The leader's answer is captured in the client's format (`capture`, bounded by
   `max_entry_bytes`) and, when `leader_finished` finds it complete and successful, stored in
   L1 and L2. It returns whom to finish, whom to serve and whom to send upstream on their own.

Nothing here writes to a client or touches a connection: the pipeline acts on the answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.cache import CacheEntry, Outcome, entry_from_json, entry_from_sse, key_hex, make_key
from proxy.cache.formats import ANTHROPIC_MESSAGES, OPENAI_CHAT, OPENAI_EMBEDDINGS
from proxy.wire import CONNECTION_CLOSE, CRLF, STATUS_LINE, dechunk

if TYPE_CHECKING:
    from proxy.exchange import Exchange
    from proxy.response_cache import Cache

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

_NOBODY: tuple[list[Exchange], list[tuple[Exchange, CacheEntry]], list[Exchange]] = ([], [], [])  # never changed

# What `lookup` decided.
UPSTREAM, SERVE, FOLLOW, LEAD, ASK_L2 = range(5)


def lookup(ex: Exchange, cache: Cache | None, now: float) -> int:
    """Plan, key and look up; the decision, with `ex.cache_entry` set for SERVE."""
    if cache is None:
        return UPSTREAM
    fmt = FORMATS[ex.endpoint]
    payload = ex.payload
    assert payload is not None
    plan = ex.gen.planner.plan(fmt, ex.model, payload, ex.cache_control or None, ex.cache_ttl or None)
    ex.cache_outcome = plan.outcome
    if plan.outcome is BYPASS:
        return UPSTREAM
    seed = ex.gen.settings.cache.key_seed  # [cache] key_seed_env: a secret, when tenants share a namespace
    key = make_key(fmt, ex.model, payload, ex.tenant, ex.anthropic_version, ex.anthropic_beta, seed)
    if key is None:
        ex.cache_outcome = BYPASS
        return UPSTREAM
    ex.cache_key = key
    ex.cache_plan = plan
    if plan.lookup:
        entry = cache.store.get(key, now, plan.max_age)
        if entry is not None and not entry.verify():
            cache.store.delete(key)  # stored unchecked, and not an answer to serve: a miss
            entry = None
        if entry is not None and entry.body(ex.stream, wants_usage(ex)) is not None:
            ex.cache_entry = entry
            return SERVE
        leader = cache.inflight.get(key)
        if leader is not None and not leader.done:
            _follow(ex, leader)
            cache.coalesced += 1
            return FOLLOW
    if plan.store:
        cache.inflight[key] = ex  # this request leads; identical ones will follow it
        ex.capture = []
        ex.followers = []
        if cache.l2 is not None and plan.lookup and cache.l2.available:
            return ASK_L2
        return LEAD
    return UPSTREAM


def answer(ex: Exchange, entry: CacheEntry, outcome: Outcome, date: bytes) -> tuple[bytes, ...] | None:
    """The whole response to `ex` from `entry`, as buffers for one writev; None if the entry
    cannot serve this mode. The stored body is never copied."""
    body = entry.body(ex.stream, wants_usage(ex))
    if body is None:
        return None
    ex.cache_outcome = outcome
    head = (_HIT_SSE if ex.stream else _HIT_JSON) if outcome is HIT else _hit_head(ex.stream, outcome)
    extra = CONNECTION_CLOSE if not ex.keep_alive else b""
    return head, b"content-length: %d\r\n" % len(body), extra, date, CRLF, body


def _hit_head(stream: bool, outcome: Outcome) -> bytes:
    return (_HIT_SSE if stream else _HIT_JSON).replace(X_CACHE_HIT, X_CACHE[outcome])


def wants_usage(ex: Exchange) -> bool:
    options = ex.payload.get("stream_options") if ex.payload is not None else None
    return isinstance(options, dict) and options.get("include_usage") is True


def _follow(ex: Exchange, leader: Exchange) -> None:
    ex.leader = leader
    ex.cache_outcome = HIT
    # Live only if the leader has not answered yet and its bytes fit this request as they are.
    ex.follows_live = not leader.head_sent and leader.stream == ex.stream and wants_usage(leader) == wants_usage(ex)
    assert leader.followers is not None
    leader.followers.append(ex)


# L2


def l2_key(ex: Exchange) -> bytes:
    assert ex.cache_key is not None
    return b"llm-edge:" + FORMATS[ex.endpoint] + b":" + key_hex(ex.cache_key)


def l2_answered(ex: Exchange, cache: Cache, value: bytes | None, now: float) -> bool:
    """L2 came back; True when it had an entry for `ex` (now in L1 and `ex.cache_entry`)."""
    entry = entry_from_json(FORMATS[ex.endpoint], 200, value) if value is not None else None
    if entry is None or ex.cache_plan is None or ex.cache_key is None:
        return False
    cache.l2_hits += 1
    cache.store.put(ex.cache_key, entry, now, ex.cache_plan.ttl)
    ex.cache_entry = entry
    return True


# the leader's answer, as it goes


def live_followers(ex: Exchange) -> list[Exchange]:
    """The followers reading the leader's bytes as they arrive."""
    return [f for f in ex.followers or () if f.follows_live and not f.done]


def follower_head(follower: Exchange, head: bytes, line_end: int) -> bytes:
    """A live follower's copy of the leader's head: marked as served by the cache."""
    extra = b"" if follower.keep_alive else CONNECTION_CLOSE
    return head[:line_end] + X_CACHE_HIT + extra + head[line_end:]


def stop_live_following(ex: Exchange) -> None:
    """The leader's answer will not be relayed as it is: followers wait for the stored entry."""
    for follower in ex.followers or ():
        if not follower.head_sent:
            follower.follows_live = False


def capture(ex: Exchange, data: bytes) -> None:
    """Keep a piece of the leader's answer for the store, within the entry bound."""
    kept = ex.capture
    if kept is None:
        return
    ex.capture_size += len(data)
    if ex.capture_size > ex.gateway.cache.max_entry_bytes:  # type: ignore[union-attr]
        ex.capture = None  # too big to keep: the answer still flows, it is just not stored
    else:
        kept.append(data)


def drop_follower(ex: Exchange) -> None:
    """A follower's client left."""
    leader = ex.leader
    ex.leader = None
    if leader is not None and leader.followers is not None and ex in leader.followers:
        leader.followers.remove(ex)


def leader_finished(
    ex: Exchange, cache: Cache, now: float, chunked: bool
) -> tuple[list[Exchange], list[tuple[Exchange, CacheEntry]], list[Exchange]]:
    """The leader is finished: store its answer if complete and storable. Returns
    (followers whose live answer is complete, followers to serve from the entry, followers to
    send upstream on their own)."""
    key = ex.cache_key
    if key is not None and cache.inflight.get(key) is ex:
        del cache.inflight[key]
    entry = ex.cache_entry
    kept, ex.capture = ex.capture, None
    if entry is None and ex.clean and kept is not None and ex.status == 200 and ex.cache_plan is not None:
        payload = kept[0] if len(kept) == 1 else b"".join(kept)
        if chunked:
            payload = dechunk(payload)
        fmt = FORMATS[ex.endpoint]
        if ex.stream:
            entry = entry_from_sse(fmt, 200, payload)
        elif payload[:1] == b"{":
            # Checked as a JSON object already; whether it is an answer worth serving is checked on its
            # first hit (`CacheEntry.verify`): most stored answers are never asked for again.
            entry = CacheEntry(fmt, payload, verified=False)
        else:
            entry = None
        if entry is not None and key is not None and cache.store.put(key, entry, now, ex.cache_plan.ttl):
            cache.stored += 1
            if cache.l2 is not None:
                cache.l2.put(b"llm-edge:" + fmt + b":" + key_hex(key), entry.json_body, ex.cache_plan.ttl)
    followers, ex.followers = ex.followers, None
    if not followers:
        return _NOBODY  # nobody followed: the usual case
    finished: list[Exchange] = []
    served: list[tuple[Exchange, CacheEntry]] = []
    retry: list[Exchange] = []
    for follower in followers:
        if follower.done:
            continue
        follower.leader = None
        if follower.follows_live and follower.head_sent:
            finished.append(follower)
        elif entry is not None and entry.verify() and entry.body(follower.stream, wants_usage(follower)) is not None:
            served.append((follower, entry))
        else:
            follower.cache_outcome = MISS
            follower.follows_live = False
            retry.append(follower)
    return finished, served, retry
