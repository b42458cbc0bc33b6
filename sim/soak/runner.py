# sim/soak/runner.py: one soak run: start the stack, prime the cache, warm up, measure the gateway
# at rest, soak with every kind of client and the fault windows, measure again, stop the gateway
# (SIGTERM: it must drain and exit 0) and build the report.
#
# Rules: one event loop in this process carries every client (sim/soak/clients.py), the fault
# driver (which applies sim/soak/schedule.py over the mock's `POST /_mock/config` and records when
# each window really was on) and the sampler (RSS, fds and pools every SAMPLE_EVERY_S). The
# measuring points at rest are described in sim/soak/growth.py. Progress goes to `say` (lines) and
# to a ProgressBar with the time left (sim/progressbar.py).
from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from sim.loadgen import new_loop
from sim.progressbar import ProgressBar
from sim.soak import clients
from sim.soak.growth import Bounds, Gauges, Snapshot, count_fds, log_problems, read_rss_kb
from sim.soak.mix import (
    FAULTY,
    KINDS,
    PROVIDERS,
    ROUTER,
    TOKENS,
    Kind,
    cached_prompts,
    expected_text,
    fresh_prompt,
    request,
)  # fmt: skip
from sim.soak.report import build, verdict_of
from sim.soak.schedule import HEALTHY, WARMUP_S, Fault, Window, schedule, warmup_tour
from sim.soak.verdicts import Ledger, Result
from sim.stack import Stack

SETTLE_TIMEOUT_S = 5.0
SAMPLE_EVERY_S = 1.0
SAY_EVERY_S = 5.0


class SoakError(RuntimeError):
    """The soak could not be carried out (e.g. the gateway stopped answering its own /stats)."""


class Soak:
    """One soak run against a started stack (see the module header)."""

    def __init__(self, stack: Stack, minutes: float, say: Callable[[str], None], bounds: Bounds = Bounds(),
                 bar: ProgressBar | None = None) -> None:  # fmt: skip
        self.stack = stack
        self.minutes = minutes
        self.duration = minutes * 60.0
        self.say = say
        self.bar = bar or ProgressBar("soak", False)
        self.bounds = bounds
        self.host, self.port = stack.gateway_addr
        self.authority = f"{self.host}:{self.port}"
        assert stack.gateway is not None
        self.mocks = {p.name: addr for p, addr in zip(stack.providers, stack.mock_addrs)}
        self.kinds = {k.name: k for k in KINDS}
        self.ledger = Ledger(self.kinds, FAULTY.name)
        self.gauges = Gauges(stack.gateway.pid, peak_open={p.name: 0 for p in stack.providers})
        self.seq = 0
        self.rng = random.Random(7)
        self.cached_prompts = cached_prompts()
        self.phase = ""
        self.current_fault = ""
        self.dead = False

    # clients

    def _prompt(self, kind: Kind) -> str:
        if kind.cached:
            return self.rng.choice(self.cached_prompts)
        self.seq += 1
        return fresh_prompt(kind, self.seq)

    async def _one(self, kind: Kind, conn: clients.ClientConn) -> Result:
        prompt = self._prompt(kind)
        return await clients.one(self.host, self.port, kind, conn, request(kind, prompt, self.authority),
                                 expected_text(prompt), self.ledger.closed_after)  # fmt: skip

    async def _worker(self, kind: Kind, stop_at: float, phase_shift: float) -> None:
        interval = kind.conns / kind.rate
        conn = clients.ClientConn()
        next_t = time.monotonic() + phase_shift * interval
        n = 0
        try:
            while True:
                now = time.monotonic()
                if next_t >= stop_at or self.dead:
                    break
                if next_t > now:
                    await asyncio.sleep(next_t - now)
                if kind.name == "abort":
                    payload = request(kind, self._prompt(kind), self.authority)
                    r = await clients.abort(self.host, self.port, payload, n, self.rng)
                else:
                    r = await self._one(kind, conn)
                n += 1
                self.ledger.record(r)
                next_t = max(next_t + interval, time.monotonic() - interval)  # late: no burst to catch up
        finally:
            conn.close()

    async def _prime(self) -> None:
        """Put every cached prompt in the cache (non-streamed; hits then replay in both modes)."""
        conn = clients.ClientConn()
        kind = self.kinds["cached"]
        for prompt in self.cached_prompts:
            r = await clients.one(self.host, self.port, kind, conn, request(kind, prompt, self.authority),
                                  expected_text(prompt), self.ledger.closed_after)  # fmt: skip
            self.ledger.record(r)
        conn.close()

    # faults

    async def _mock_config(self, name: str, changes: dict[str, Any]) -> None:
        host, port = self.mocks[name]
        status, body = await clients.http_call(host, port, "POST", "/_mock/config", orjson.dumps(changes))
        if status != 200:
            raise RuntimeError(f"{name}: /_mock/config answered {status}: {body[:200]!r}")

    async def _faults(self, windows: Sequence[Window], t0: float) -> None:
        """Apply the windows on the faulty mock; record when each really was on (conservatively:
        from just before the change was sent to just after the recovery was confirmed)."""
        current: Window | None = None
        on = 0.0
        try:
            for w in windows:
                await asyncio.sleep(max(0.0, t0 + w.on - time.monotonic()))
                current, on = w, time.monotonic()
                self.current_fault = w.fault.name
                await self._mock_config(FAULTY.name, w.fault.changes)
                await asyncio.sleep(max(0.0, t0 + w.off - time.monotonic()))
                await self._mock_config(FAULTY.name, HEALTHY)
                self._window(w.fault, on, time.monotonic())
                current = None
        finally:
            if current is not None:  # stopped inside a window: record it, leave the provider healthy
                self._window(current.fault, on, time.monotonic() + 1.0)
                await asyncio.shield(self._mock_config(FAULTY.name, HEALTHY))

    def _window(self, fault: Fault, on: float, off: float) -> None:
        self.current_fault = ""
        self.ledger.window(self.phase, fault.name, fault.midstream, on, off)

    # measuring

    async def _stats(self) -> dict[str, Any]:
        status, body = await clients.http_call(self.host, self.port, "GET", "/stats")
        if status != 200:
            raise RuntimeError(f"GET /stats answered {status}")
        return orjson.loads(body)

    def _alive(self) -> bool:
        gw = self.stack.gateway
        if gw is None or not gw.alive():
            self.dead = True
        return not self.dead

    def _planned_s(self) -> float:
        return WARMUP_S + self.duration

    async def _sampler(self, stop_at: float) -> None:
        origin = self.ledger.origin
        last_say = time.monotonic()
        while time.monotonic() < stop_at and self._alive():
            await asyncio.sleep(SAMPLE_EVERY_S)
            try:
                pools = self.gauges.pools(await self._stats())
                s = self.gauges.sample(self.phase, time.monotonic() - origin, pools)
            except (TimeoutError, OSError, RuntimeError, ValueError):
                continue
            now = time.monotonic()
            fault = f"  fault: {self.current_fault}" if self.current_fault else ""
            self.bar.update((now - origin) / self._planned_s(), now - origin, f"{self.phase}{fault}")
            if now - last_say >= SAY_EVERY_S:
                last_say = now
                self.say(f"{now - origin:6.1f}s  {self.phase}: requests {self.ledger.sent()}  pending verdicts "
                         f"{len(self.ledger.pending)}  rss {s['rss_kb'] / 1024:.1f} MB  fds {s['fds']}  pools "
                         + " ".join(f"{k} {p['open']}/{p['idle']}" for k, p in pools.items()) + fault)  # fmt: skip

    async def _phase(self, name: str, duration: float, windows: Sequence[Window]) -> None:
        self.phase = name
        t0 = time.monotonic()
        stop_at = t0 + duration
        workers = [asyncio.ensure_future(self._worker(k, stop_at, i / k.conns))
                   for k in KINDS for i in range(k.conns)]  # fmt: skip
        faults = asyncio.ensure_future(self._faults(windows, t0))
        sampler = asyncio.ensure_future(self._sampler(stop_at))
        try:
            await asyncio.gather(*workers)
        finally:
            for task in (faults, sampler, *workers):
                task.cancel()
            await asyncio.gather(faults, sampler, *workers, return_exceptions=True)
        if faults.done() and not faults.cancelled() and faults.exception() is not None:
            raise faults.exception()  # type: ignore[misc]

    async def _settle(self) -> Snapshot:
        """Measure the gateway at rest (see sim/soak/growth.py)."""
        await asyncio.sleep(0.2)
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            pools = self.gauges.pools(await self._stats())
            settled = all(p["open"] == p["idle"] for p in pools.values())
            if settled or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        for host, port in self.mocks.values():
            await clients.http_call(host, port, "POST", "/_mock/close_idle")
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while True:
            drained = self.gauges.pools(await self._stats())
            if not any(p["open"] for p in drained.values()) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        return Snapshot(read_rss_kb(self.gauges.pid), await self._stable_fds(), pools, drained, settled)

    async def _stable_fds(self) -> int:
        """The gateway's fd count once two reads 0.1 s apart agree (our last request's connection
        may still be closing on its side)."""
        pid = self.gauges.pid
        fds = count_fds(pid)
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            again = count_fds(pid)
            if again == fds:
                break
            fds = again
        return fds

    async def run(self) -> dict[str, Any]:
        """Warm up, measure, soak, measure; return the report."""
        self.ledger.origin = time.monotonic()
        self.say(f"gateway pid {self.gauges.pid} at {self.authority}; faults on {FAULTY.name}; "
                 f"warm-up {WARMUP_S:g}s, then {self.duration:g}s of soak")  # fmt: skip
        await self._mock_config(FAULTY.name, HEALTHY)
        self.gauges.boot_fds = await self._stable_fds()  # nothing open yet, as at the measuring points
        self.phase = "prime"
        await self._prime()
        await self._phase("warm-up", WARMUP_S, warmup_tour())
        start = await self._settle()
        self.say(f"start: rss {start.rss_kb / 1024:.1f} MB, fds {start.fds}, pools {start.pools}")
        t_soak = time.monotonic()
        plan = schedule(self.duration)
        await self._phase("soak", self.duration, plan)
        soak_s = time.monotonic() - t_soak
        alive = self._alive()
        end = await self._settle() if alive else Snapshot(0, 0, {}, {}, False)
        self.bar.update(1.0, time.monotonic() - self.ledger.origin, "done")
        if alive:
            self.say(f"end: rss {end.rss_kb / 1024:.1f} MB, fds {end.fds}, pools {end.pools}")
        stats = await self._stats() if alive else {}
        return build(self.ledger, self.gauges, self.bounds, start, end, minutes=self.minutes, soak_s=soak_s,
                     plan=plan, stats=stats, alive=alive)  # fmt: skip


def run(minutes: float, *, quiet: bool = False, gateway_loop: str | None = None,
        gateway_cpus: Sequence[int] | None = None, progress: bool = False) -> dict[str, Any]:  # fmt: skip
    """Start the stack, soak it for `minutes`, stop it (SIGTERM: it must drain and exit 0); return the
    report. Raises StartError when the stack does not start, SoakError when the run cannot go on.
    `progress`: draw a bar with the time left on stderr."""
    bar = ProgressBar("[soak]", progress)

    def say(line: str) -> None:
        if not quiet:
            bar.say(f"[soak] {line}")

    try:
        with Stack(PROVIDERS, tokens=TOKENS, router=ROUTER, gateway_loop=gateway_loop,
                   gateway_cpus=gateway_cpus) as stack:  # fmt: skip
            gw = stack.gateway
            assert gw is not None
            soak = Soak(stack, minutes, say, bar=bar)
            try:
                with asyncio.Runner(loop_factory=lambda: new_loop("uvloop")) as runner:
                    rep = runner.run(soak.run())
            except (TimeoutError, OSError, RuntimeError, ValueError) as exc:
                state = "running" if gw.alive() else f"exited with {gw.proc.poll() if gw.proc else None}"
                raise SoakError(f"the soak could not go on ({exc!r}); the gateway is {state}; its log:\n"
                                f"{gw.log_tail(20)}") from exc  # fmt: skip
            code = gw.stop()  # SIGTERM: it drains and exits (the mocks stop with the stack)
            tail = gw.log_tail(20)
            problems = log_problems(gw.log_path.read_text("utf-8", "replace") if gw.log_path.exists() else "")
    finally:
        bar.close()
    rep["gateway"]["exit_code"] = code
    rep["gateway"]["log_problems"] = problems[:10]
    rep["checks"] += [
        {"name": "gateway_exit", "ok": code == 0, "detail": f"the gateway exited with {code} on SIGTERM"},
        {"name": "gateway_log", "ok": not problems,
         "detail": "no ERROR line or traceback in the gateway's log" if not problems
         else f"{len(problems)} ERROR lines or tracebacks in the gateway's log, first: {problems[0][:200]}"},
    ]  # fmt: skip
    rep["verdict"] = verdict_of(rep["checks"])
    if rep["verdict"] != "PASS":
        say(f"gateway log tail:\n{tail}")
    return rep
