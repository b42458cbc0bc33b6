"""Fleet limits against a real redis-server: leases, the GCRA bound across processes, budgets, Redis dying."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from proxy.auth import AuthSettings, Keys
from proxy.fleet import Fleet
from proxy.limits import BUDGET, NANO, RPM, UNAVAILABLE, Accounts, LimitsSettings
from tests.harness import wait_for

KEY = b"sk-fleet-key-0123456789"


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        self.sock = tmp / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.sock}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            ["redis-server", "--port", "0", "--unixsocket", str(self.sock), "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        assert wait_for(self.sock.exists, timeout=10)

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None
        if self.sock.exists():
            self.sock.unlink()


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        if os.environ.get("CI"):
            pytest.fail("redis-server is not installed (.ci/run installs it)")
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def refreshed(fleet: Fleet) -> None:
    """Refresh until Redis answers again (the first command on a dead pooled connection may fail: the
    next tick's succeeds)."""
    for _ in range(20):
        await fleet.refresh(time.time())
        if fleet.up:
            return
        await asyncio.sleep(0.05)
    pytest.fail("the fleet did not recover")


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def process(loop: asyncio.AbstractEventLoop, url: str, key: dict[str, object], **limits: object) -> tuple[Fleet, Keys]:
    """One gateway process's view: its accounts, its keys, its fleet client."""
    settings = AuthSettings.from_table({"keys": [{"name": "shared", "key": KEY.decode(), **key}]}, {})
    accounts = Accounts()
    keys = Keys(settings, accounts=accounts)
    fleet = Fleet(LimitsSettings.from_table({"redis_url": url, **limits}), accounts, loop)
    return fleet, keys


def test_four_processes_never_admit_more_than_the_fleet_limit(redis: RedisServer,
                                                               loop: asyncio.AbstractEventLoop) -> None:  # fmt: skip
    procs = [process(loop, redis.url, {"rpm": 60}, lease_fraction=0.2) for _ in range(4)]

    async def run() -> int:
        admitted = 0
        started = time.monotonic()
        rounds = 0
        while time.monotonic() - started < 3.0:
            for fleet, _ in procs:
                await fleet.refresh(time.time())
            for _, keys in procs:
                while keys.admit(0, 0.0, 0)[0]:
                    admitted += 1
                    keys.charge(0, 0.0, (1, 0, 0, 1, 0), 0, 0, False)
            rounds += 1
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        assert rounds > 5
        # the bound over the run: a minute's burst plus the refill, plus the leases held (README)
        assert admitted <= 60 + 60 * elapsed / 60 + 4 * 2 * 3
        for fleet, _ in procs:
            await fleet.close()
        return admitted

    admitted = loop.run_until_complete(run())
    assert admitted >= 55  # the burst was usable, leases given back in time (stranded capacity is small)
    assert all(keys.states[0].leased for _, keys in procs)
    assert all(keys.states[0].share == 4 for _, keys in procs)  # four live processes counted


def test_an_empty_lease_refuses_briefly_and_is_refilled_early(redis: RedisServer,
                                                              loop: asyncio.AbstractEventLoop) -> None:  # fmt: skip
    fleet, keys = process(loop, redis.url, {"rpm": 600}, lease_fraction=0.01)  # leases of 6

    async def run() -> None:
        await fleet.refresh(time.time())
        for _ in range(6):
            assert keys.admit(0, 0.0, 0)[0]
        ok, wait, why = keys.admit(0, 0.0, 0)
        assert (ok, why) == (False, RPM) and 0 < wait <= 1.0
        assert keys.states[0].starved
        # the fleet notices within its poll interval, without waiting for a tick
        for _ in range(50):
            await asyncio.sleep(0.02)
            if keys.admit(0, 0.0, 0)[0]:
                break
        else:
            pytest.fail("the starved lease was not refilled")
        await fleet.close()

    loop.run_until_complete(run())


def test_a_budget_is_shared_by_leases(redis: RedisServer, loop: asyncio.AbstractEventLoop) -> None:
    procs = [process(loop, redis.url, {"budget_usd": 0.00001}) for _ in range(3)]  # 10_000 nano-dollars

    async def run() -> int:
        total = 0
        for _ in range(15):
            for fleet, keys in procs:
                await fleet.refresh(time.time())
                while keys.admit(0, 0.0, 0)[0]:
                    keys.charge(0, 0.0, (1, 0, 0, 0, 0), 100, 0, False)
                    total += 100
        for fleet, _ in procs:
            await fleet.refresh(time.time())
            await fleet.close()
        return total

    total = loop.run_until_complete(run())
    assert 10_000 <= total <= 10_000 + 3 * 100  # at most each process's last request inside its lease
    assert all(keys.admit(0, 0.0, 0)[2] == BUDGET for _, keys in procs)
    assert all(keys.states[0].spent == total for _, keys in procs)


def test_redis_dying_falls_back_to_local_shares_and_recovers(redis: RedisServer, loop: asyncio.AbstractEventLoop,
                                                             caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    procs = [process(loop, redis.url, {"rpm": 60, "budget_usd": 1.0}, redis_timeout_ms=200) for _ in range(2)]
    caplog.set_level(logging.WARNING, "llm_edge.limits")

    async def run() -> None:
        for fleet, _ in procs:
            await fleet.refresh(time.time())
        for fleet, _ in procs:
            await fleet.refresh(time.time())  # both see two live processes
        redis.kill()
        for _ in range(3):
            for fleet, _ in procs:
                await fleet.refresh(time.time())
        for fleet, keys in procs:
            assert fleet.up is False
            state = keys.states[0]
            assert not state.leased and state.share == 2
            now = 1000.0
            admitted = 0
            while keys.admit(0, now, 0)[0]:  # the local bucket: limit / 2
                admitted += 1
            assert admitted == 30
        errors = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(errors) == 2  # once per process, not once per refresh
        redis.start()
        for fleet, _ in procs:
            await refreshed(fleet)
        assert any("answers again" in r.getMessage() for r in caplog.records)
        assert all(keys.states[0].leased for _, keys in procs)
        for fleet, _ in procs:
            await fleet.close()

    loop.run_until_complete(run())


def test_fail_closed_refuses_while_redis_is_unreachable(redis: RedisServer,
                                                         loop: asyncio.AbstractEventLoop) -> None:  # fmt: skip
    fleet, keys = process(loop, redis.url, {"rpm": 60}, fail_closed=True, redis_timeout_ms=200)

    async def run() -> None:
        await refreshed(fleet)
        assert keys.admit(0, 0.0, 0)[0]
        redis.kill()
        await fleet.refresh(time.time())
        assert keys.admit(0, 0.0, 0) == (False, 1.0, UNAVAILABLE)
        assert keys.refusal(0, UNAVAILABLE, 1.0).status == 503
        redis.start()
        await refreshed(fleet)
        assert keys.admit(0, 0.0, 0)[0]
        await fleet.close()

    loop.run_until_complete(run())


def test_no_limits_no_redis_traffic(redis: RedisServer, loop: asyncio.AbstractEventLoop) -> None:
    fleet, keys = process(loop, redis.url, {})

    async def run() -> None:
        await fleet.refresh(time.time())
        assert fleet.refreshes == 0 and fleet.up is True
        assert keys.admit(0, 0.0, 10**9)[0]
        await fleet.close()

    loop.run_until_complete(run())
    assert NANO == 10**9
