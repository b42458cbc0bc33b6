"""Fleet limits: rpm, tpm and budgets shared by every process of every gateway pointing at one Redis.

A request never waits on Redis. Redis holds each key's GCRA buckets (the whole fleet's limit)
and each budget period's spend; every process takes *leases* of capacity off the request
path and spends them locally (`limits._admit_leased`). One Lua script per key, run atomically
by Redis, does in one step what a refresh needs:

1. heartbeat this process in a sorted set, and count the live processes (seen in 5 s);
2. give back the unused part of the last lease and the token debt (real usage minus the
   estimates reserved), then grant a new lease of up to `want` units from the GCRA bucket;
3. add this process's spend since its last refresh to the period's total, and return it.

Refreshes run once a second (`tick`) and early, every `POLL_S`, for a key whose lease ran
out. Between two refreshes a process may spend its lease and, of a budget, its share of what
was left (`KeyState.allowance` = left / live processes), so together they stay within it.

Precision, worst case, with P live processes:
- rpm/tpm: capacity is counted in Redis when it is leased, but the bucket refills while a lease
  is held (for up to a second): over any t seconds at most L + L*t/60 (the GCRA bound) plus the
  leases held, each at most 2 * ceil(L * lease_fraction / P): in all about 2 * lease_fraction * L
  + 2P units (rpm = 60, the default 0.1, four processes: 16). A process whose lease is empty
  refuses (Retry-After <= 1 s) even if another one holds unused capacity, for at most one refresh.
  Token counts beyond the estimate are owed, and taken from the bucket at the next refresh: the
  bucket can overshoot by one refresh's worth of under-estimated tokens.
- budgets: each process holds a lease of the budget, its share of what neither the spend nor
  the other processes' live leases hold, so spend beyond the budget is at most each process's
  last request admitted inside its lease (and what was in flight when it ran out). A killed
  process's lease lapses after LEASE_TTL_S; until then it is not available to the others.
- a lost reply (timeout after Redis ran the script) counts that refresh's spend twice: errs
  on the side of refusing.

Redis unreachable: logged once; each process falls back to its local GCRA at limit / P (the
last P seen), and budgets to the last allowance, until Redis answers again (logged once more);
or, with `[limits] fail_closed = true`, the keys with limits are refused (503) until then.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import socket
from typing import Any

from proxy.limits import GATE_CLOSED, GATE_DELETED, LEASE_RETRY_S, OPEN, Accounts, KeyState, LimitsSettings, period_end

log = logging.getLogger("llm_edge.limits")

POLL_S = 0.1  # how often a starved lease is noticed and refilled early
PROCESS_TTL_S = 5  # a process not seen for this long no longer counts as live
LEASE_TTL_S = 10  # a budget lease not renewed for this long lapses (a killed gateway's, for instance)
PREFIX = "llm-edge:"

# KEYS: 1 = the key's buckets (hash), 2 = the period's spend (string), 3 = the live processes (zset),
#       4 = the period's budget leases (hash: process -> "amount:time")
# ARGV: 1 process id, 2 rpm, 3 tpm, 4 give_req, 5 give_tok, 6 want_req, 7 want_tok, 8 spend delta,
#       9 token debt, 10 spend TTL (0: none), 11 budget (nano-dollars, 0: none), 12 this gateway's workers
#       (the fewest live processes there can be: a first claimant does not take the whole budget)
LEASE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - %d)
redis.call('EXPIRE', KEYS[3], 60)
local live = redis.call('ZCARD', KEYS[3])
if live < tonumber(ARGV[12]) then live = tonumber(ARGV[12]) end
local function lease(field, limit, give, want, debt)
  if limit <= 0 then return 0, 0 end
  local rate = limit / 60.0
  local floor = now * rate
  local tat = tonumber(redis.call('HGET', KEYS[1], field) or '0')
  if tat < floor then tat = floor end
  tat = tat - give + debt
  if tat < floor then tat = floor end
  local grant = math.floor(math.min(want, limit - (tat - floor)))
  if grant < 0 then grant = 0 end
  tat = tat + grant
  redis.call('HSET', KEYS[1], field, string.format('%%.17g', tat))
  local wait = 0
  if grant < want then wait = (tat + 1 - floor - limit) / rate end
  if wait < 0 then wait = 0 end
  return grant, wait
end
local rpm, tpm = tonumber(ARGV[2]), tonumber(ARGV[3])
local greq, wreq = lease('req', rpm, tonumber(ARGV[4]), tonumber(ARGV[6]), 0)
local gtok, wtok = lease('tok', tpm, tonumber(ARGV[5]), tonumber(ARGV[7]), tonumber(ARGV[9]))
if rpm > 0 or tpm > 0 then redis.call('EXPIRE', KEYS[1], 120) end
local spent = redis.call('INCRBY', KEYS[2], ARGV[8])
if tonumber(ARGV[10]) > 0 then redis.call('EXPIRE', KEYS[2], ARGV[10]) end
local budget = tonumber(ARGV[11])
local blease = 0
if budget > 0 then
  redis.call('HDEL', KEYS[4], ARGV[1])
  local all = redis.call('HGETALL', KEYS[4])
  local others = 0
  for i = 1, #all, 2 do
    local v = all[i + 1]
    local sep = string.find(v, ':', 1, true)
    if sep == nil or tonumber(string.sub(v, sep + 1)) < now - %d then
      redis.call('HDEL', KEYS[4], all[i])
    else
      others = others + tonumber(string.sub(v, 1, sep - 1))
    end
  end
  local free = budget - spent - others
  if free > 0 then blease = math.ceil(free / live) end
  redis.call('HSET', KEYS[4], ARGV[1], string.format('%%.0f:%%.6f', blease, now))
  redis.call('EXPIRE', KEYS[4], 60)
end
return {greq, tostring(wreq), gtok, tostring(wtok), spent, live, string.format('%%.0f', blease)}
""" % (PROCESS_TTL_S, LEASE_TTL_S)


class Fleet:
    """This process's side of the fleet limits, over its `Accounts`.

    Entry points (cold, on the event loop):
        fleet = Fleet(settings.limits, accounts, loop)   # when settings.limits.redis_url is set
        fleet.tick(time.time())                          # from the 1 Hz tick
        await fleet.close()                              # on shutdown
    The ledger must then leave budgets to the fleet: `Ledger(..., sync_budgets=False)`.
    """

    def __init__(self, settings: LimitsSettings, accounts: Accounts, loop: asyncio.AbstractEventLoop) -> None:
        import redis.asyncio as redis  # imported only when fleet limits are configured

        assert settings.redis_url is not None
        self.settings = settings
        self.accounts = accounts
        self.loop = loop
        self.timeout = settings.redis_timeout_ms / 1000.0
        self.client = redis.Redis.from_url(settings.redis_url, socket_timeout=self.timeout,
                                           socket_connect_timeout=self.timeout)  # fmt: skip
        self.script = self.client.register_script(LEASE_LUA)
        self.process = f"{socket.gethostname()}:{os.getpid()}:{os.urandom(4).hex()}"
        self.live = accounts.workers  # processes sharing the limits, as last seen (the fallback's N)
        self.up: bool | None = None  # None until the first answer or failure
        self.refreshes = self.failures = 0
        self.wall = 0.0
        self._marks: dict[str, tuple[int, int]] = {}  # key -> (period_start, spent_here) last reported
        self._usage: dict[str, tuple[int, int]] = {}  # key -> (requests, tokens) as of its last refresh
        self._task: asyncio.Task[None] | None = None
        self._poll_handle: asyncio.TimerHandle | None = loop.call_later(POLL_S, self._poll)

    def __repr__(self) -> str:
        return f"<Fleet up={self.up} live={self.live} refreshes={self.refreshes} failures={self.failures}>"

    def tick(self, wall: float) -> None:
        """Refresh every key's leases and budget, in the background (never waited for)."""
        self.wall = wall
        if self._task is None:
            self._task = self.loop.create_task(self._refresh())

    async def refresh(self, wall: float) -> None:
        """One refresh, awaited (start-up, tests); a refresh already running is awaited instead."""
        self.wall = wall
        if self._task is None:
            self._task = self.loop.create_task(self._refresh())
        await asyncio.shield(self._task)

    async def close(self) -> None:
        if self._poll_handle is not None:
            self._poll_handle.cancel()
            self._poll_handle = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self.client.aclose()

    def _poll(self) -> None:
        self._poll_handle = self.loop.call_later(POLL_S, self._poll)
        if self._task is None and self.up and any(s.starved for s in self.accounts.by_name.values()):
            self._task = self.loop.create_task(self._refresh())

    def _limited(self) -> list[KeyState]:
        return [s for s in self.accounts.by_name.values() if (s.rpm or s.tpm or s.budget) and s.gate != GATE_DELETED]

    async def _refresh(self) -> None:
        try:
            states = self._limited()
            if states:
                await asyncio.wait_for(self._lease(states), self.timeout * 2)
            self._recovered()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any Redis trouble: the fallback, never a failed request
            self._lost(exc)
        finally:
            self._task = None

    async def _lease(self, states: list[KeyState]) -> None:
        pipe = self.client.pipeline(transaction=False)
        sent = []
        for s in states:
            live = max(self.live, 1)
            # A lease: this process's part of `lease_fraction` of the limit, or what it used since its last
            # refresh when that is more (a busy process refreshes less often), never above twice that part.
            used_req, used_tok = self._used(s)
            want_req = self._want(s.rpm, live, used_req)
            want_tok = self._want(s.tpm, live, used_tok)
            give_req = max(int(s.lease_req), 0) if s.leased else 0
            give_tok = max(int(s.lease_tok), 0) if s.leased else 0
            debt = s.tok_debt
            period, mark = self._marks.get(s.name, (s.period_start, 0))
            spent_here = s.spent_here
            delta = spent_here - mark if period == s.period_start else spent_here
            end = period_end(s.period, s.period_start)
            ttl = max(int(end - self.wall) + 86_400, 60) if end else 0  # a day past the period's end
            keys = [f"{PREFIX}limit:{s.name}", f"{PREFIX}spend:{s.name}:{s.period_start}", f"{PREFIX}processes",
                    f"{PREFIX}lease:{s.name}:{s.period_start}"]  # fmt: skip
            args = [self.process, s.rpm, s.tpm, give_req, give_tok, want_req, want_tok, delta, debt, ttl, s.budget,
                    self.accounts.workers]  # fmt: skip
            await self.script(keys=keys, args=args, client=pipe)
            sent.append((s, give_req, give_tok, debt, spent_here, want_tok))
        replies = await pipe.execute()
        self.refreshes += 1
        for (s, give_req, give_tok, debt, spent_here, want_tok), reply in zip(sent, replies):
            grant_req, wait_req, grant_tok, wait_tok, total, live, budget_lease = reply
            self.live = int(live)
            # what was given back is gone from the local lease; what was spent meanwhile stays spent
            s.lease_req = s.lease_req - give_req + int(grant_req) if s.leased else float(grant_req)
            s.lease_tok = s.lease_tok - give_tok + int(grant_tok) if s.leased else float(grant_tok)
            s.lease_tok_max = float(want_tok)
            s.tok_debt -= debt
            s.retry_req = max(float(wait_req), LEASE_RETRY_S)
            s.retry_tok = max(float(wait_tok), LEASE_RETRY_S)
            s.starved = False
            self._marks[s.name] = (s.period_start, spent_here)
            if s.share != self.live:
                s.set_share(self.live)
            if s.budget:
                s.lease(int(total), spent_here, int(budget_lease))
            s.leased = True
            if s.gate == GATE_CLOSED:
                s.gate = OPEN

    def _used(self, s: KeyState) -> tuple[int, int]:
        admitted, tokens = self._usage.get(s.name, (s.admitted, s.tokens_in + s.tokens_out))
        self._usage[s.name] = (s.admitted, s.tokens_in + s.tokens_out)
        return s.admitted - admitted, s.tokens_in + s.tokens_out - tokens

    def _want(self, limit: int, live: int, used: int) -> int:
        if not limit:
            return 0
        base = max(1, math.ceil(limit * self.settings.lease_fraction / live))
        return min(max(base, used), 2 * base)  # a busy process gets up to twice its share: the overshoot bound

    def _recovered(self) -> None:
        if self.up is False:
            log.warning("fleet limits: Redis answers again; %d process(es) share the limits", self.live)
        self.up = True

    def _lost(self, exc: BaseException) -> None:
        self.failures += 1
        if self.up is not False:
            how = "refusing requests of keys with limits (fail_closed)" if self.settings.fail_closed else (
                f"each process enforces limit / {self.live} locally")
            log.error("fleet limits: Redis unreachable (%s); %s until it answers", type(exc).__name__, how)
        self.up = False
        for s in self._limited():
            if s.leased:
                s.leased = False
                s.set_share(self.live)
                s.req_tat = s.tok_tat = 0.0  # the local buckets start full: leases already spent are not known here
            if self.settings.fail_closed and s.gate == OPEN:
                s.gate = GATE_CLOSED

    def snapshot(self) -> dict[str, Any]:
        """For /stats: whether Redis answers, how many processes share the limits."""
        return {"up": self.up, "live_processes": self.live, "refreshes": self.refreshes, "failures": self.failures}
