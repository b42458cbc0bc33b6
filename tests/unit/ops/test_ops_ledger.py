"""The SQLite ledger with real files: spend survives restarts and reloads, periods reset budgets, workers share."""

from __future__ import annotations

import calendar
import sqlite3
from pathlib import Path

import pytest

from proxy.auth import AuthSettings, Keys
from proxy.keys_admin import KeysAdmin
from proxy.ledger import Ledger, LedgerError
from proxy.limits import BUDGET, NANO, Accounts, period_end, period_start

T0 = calendar.timegm((2025, 3, 14, 12, 0, 0))  # a Friday, mid-month (UTC)
KEY = b"sk-team-a-0123456789"
DAY = 86_400


def auth(*, budget_usd: float = 1.0, period: str = "", rpm: int = 0, name: str = "team-a",
         workers: int = 1) -> AuthSettings:  # fmt: skip
    entry: dict[str, object] = {"name": name, "key": KEY.decode(), "budget_usd": budget_usd}
    if period:
        entry["budget_period"] = period
    if rpm:
        entry["rpm"] = rpm
    return AuthSettings.from_table({"keys": [entry]}, {}) if workers == 1 else AuthSettings(
        AuthSettings.from_table({"keys": [entry]}, {}).keys, workers=workers)


def start(path: Path | None, settings: AuthSettings, wall: float = T0) -> tuple[Ledger, Keys]:
    """What a gateway process does at start: accounts, the ledger's run-time keys, the keys, their spend."""
    accounts = Accounts(settings.workers)
    ledger = Ledger(str(path) if path else None, accounts)
    ledger.load(wall)
    keys = Keys(settings, accounts=accounts)
    ledger.load(wall)
    return ledger, keys


def spend(keys: Keys, nusd: int, n: int = 1) -> None:
    k = keys.authenticate(KEY)
    for _ in range(n):
        assert keys.admit(k, 0.0, 10)[0]
        keys.charge(k, 0.0, (10, 0, 0, 5, 0), nusd, 10, False)


def test_periods_are_utc_calendar_windows() -> None:
    assert period_start("", T0) == 0 and period_end("", 0) == 0
    assert period_start("1d", T0) == calendar.timegm((2025, 3, 14, 0, 0, 0))
    assert period_start("7d", T0) == calendar.timegm((2025, 3, 10, 0, 0, 0))  # Monday
    assert period_start("monthly", T0) == calendar.timegm((2025, 3, 1, 0, 0, 0))
    assert period_end("monthly", calendar.timegm((2025, 12, 1, 0, 0, 0))) == calendar.timegm((2026, 1, 1, 0, 0, 0))
    start30 = period_start("30d", T0)
    assert start30 <= T0 < period_end("30d", start30) and start30 % (30 * DAY) == 0
    with pytest.raises(ValueError):
        period_start("1w", T0)


def test_spend_survives_a_restart_to_the_last_flush(tmp_path: Path) -> None:
    path = tmp_path / "gw.ledger.sqlite"
    ledger, keys = start(path, auth())
    spend(keys, NANO // 10, n=3)
    assert ledger.flush(T0 + 1)
    spend(keys, NANO // 10)  # charged after the last flush: what a SIGKILL loses
    ledger.db.close()  # no last flush: as if killed

    ledger2, keys2 = start(path, auth())
    state = keys2.states[0]
    assert state.spent == 3 * NANO // 10
    row = keys2.snapshot(0.0)[0]
    assert row["remaining_nusd"] == NANO - 3 * NANO // 10
    spend(keys2, NANO // 2)
    spend(keys2, NANO // 2)  # the one that crosses the budget is charged...
    assert keys2.admit(0, 0.0, 0) == (False, 0.0, BUDGET)  # ...and the next refused
    ledger2.close(T0 + 2)
    _, keys3 = start(path, auth())
    assert keys3.states[0].spent == 3 * NANO // 10 + NANO
    assert keys3.admit(0, 0.0, 0)[2] == BUDGET


def test_a_reload_carries_every_key_over_and_a_removed_key_keeps_its_spend(tmp_path: Path) -> None:
    ledger, keys = start(tmp_path / "l.sqlite", auth(rpm=2))
    spend(keys, 1234, n=2)
    assert not keys.admit(0, 0.0, 0)[0]  # rpm spent
    reloaded = Keys(auth(rpm=2), accounts=keys.accounts)  # SIGHUP, same key
    assert reloaded.states[0] is keys.states[0] and reloaded.states[0].spent == 2468
    assert not reloaded.admit(0, 0.0, 0)[0]  # the bucket carried over, not refilled
    keys.charge(0, 0.0, (1, 0, 0, 0, 0), 1, 0, False)  # a request in flight on the old generation still counts
    assert reloaded.states[0].spent == 2469
    other = AuthSettings.from_table({"keys": [{"name": "team-b", "key": "sk-other-0123456789"}]}, {})
    without = Keys(other, accounts=keys.accounts)  # SIGHUP: team-a removed
    ledger.flush(T0 + 1)
    assert without.authenticate(KEY) == -1
    back = Keys(auth(rpm=2), accounts=keys.accounts)  # and back
    ledger.flush(T0 + 2)
    assert back.states[0].spent == 2469
    ledger.close(T0 + 3)
    _, restarted = start(tmp_path / "l.sqlite", auth(rpm=2))
    assert restarted.states[0].spent == 2469


def test_a_period_resets_the_budget_and_keeps_the_old_row(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite"
    ledger, keys = start(path, auth(budget_usd=0.000001, period="1d"))
    spend(keys, 1000)
    assert keys.admit(0, 0.0, 0)[2] == BUDGET
    ledger.flush(T0 + 10)
    assert keys.admit(0, 0.0, 0)[2] == BUDGET
    tomorrow = period_start("1d", T0) + DAY + 5
    ledger.flush(tomorrow)
    assert keys.states[0].period_start == period_start("1d", tomorrow) and keys.states[0].spent == 0
    assert keys.admit(0, 0.0, 0)[0]
    keys.charge(0, 0.0, (1, 0, 0, 0, 0), 400, 0, True)
    ledger.flush(tomorrow + 1)
    history = ledger.history("team-a")
    assert [(r["period_start"], r["spent_nusd"]) for r in history] == [
        (period_start("1d", tomorrow), 400), (period_start("1d", T0), 1000)
    ]  # fmt: skip
    assert history[0]["estimated"] == 1 and history[1]["refused_budget"] == 2
    ledger.close(tomorrow + 2)
    _, restarted = start(path, auth(budget_usd=0.000001, period="1d"), wall=tomorrow + 3)
    assert restarted.states[0].spent == 400


def test_workers_sharing_one_file_stay_within_the_budget_together(tmp_path: Path) -> None:
    path = tmp_path / "w.sqlite"
    settings = auth(budget_usd=0.00001, workers=2)  # 10_000 nano-dollars between two workers
    workers = [start(path, settings) for _ in range(2)]
    total = 0
    for rnd in range(20):
        for ledger, keys in workers:
            k = keys.authenticate(KEY)
            while keys.admit(k, 0.0, 0)[0]:
                keys.charge(k, 0.0, (1, 0, 0, 0, 0), 100, 0, False)
                total += 100
            ledger.flush(T0 + rnd)
    # Each spends only its lease: its share of what neither spend nor the other's lease holds. All of the
    # budget gets spent, and beyond it at most the last request each worker admitted inside its lease.
    assert 10_000 <= total <= 10_000 + 2 * 100
    for ledger, _ in workers:
        ledger.flush(T0 + 30)
    assert all(keys.states[0].spent == total for _, keys in workers)


def test_run_time_keys_live_in_the_ledger(tmp_path: Path) -> None:
    path = tmp_path / "rt.sqlite"
    settings = AuthSettings(managed=True)
    ledger, keys = start(path, settings)
    admin = KeysAdmin(keys.accounts, ledger.history)

    class S:  # the two settings tables the admin API reads
        admin = type("A", (), {"enabled": True, "digest": __import__("hashlib").sha256(b"adminadminadmin!").digest()})
        auth = settings

    status, body = admin.handle(S, b"POST", b"/admin/keys", b'{"name":"ci","budget_usd":2,"budget_period":"monthly"}',
                                b"adminadminadmin!", T0)  # fmt: skip
    assert status == 201
    secret = __import__("orjson").loads(body)["key"].encode()
    k = keys.authenticate(secret)
    assert k >= 0 and keys.names[k] == "ci"
    keys.charge(k, 0.0, (1, 0, 0, 1, 0), 777, 0, False)
    ledger.flush(T0 + 1)
    stored = sqlite3.connect(path).execute("SELECT name, digest, budget_period FROM keys").fetchall()
    assert stored == [("ci", __import__("hashlib").sha256(secret).digest(), "monthly")]  # the digest, never the secret
    assert secret not in path.read_bytes() and secret not in (tmp_path / "rt.sqlite-wal").read_bytes()
    ledger.db.close()
    ledger2, keys2 = start(path, settings)  # restart
    k2 = keys2.authenticate(secret)
    assert k2 >= 0 and keys2.states[k2].spent == 777 and keys2.states[k2].budget == 2 * NANO


def test_a_bad_ledger_file_is_refused_with_its_name(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.sqlite"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(LedgerError, match="not-a-db.sqlite"):
        Ledger(str(bad), Accounts())
    with pytest.raises(LedgerError, match="no-such-dir"):
        Ledger(str(tmp_path / "no-such-dir" / "x.sqlite"), Accounts())


def test_a_locked_file_keeps_the_changes_for_the_next_flush(tmp_path: Path) -> None:
    path = tmp_path / "lock.sqlite"
    ledger, keys = start(path, auth())
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    spend(keys, 500)
    assert not ledger.flush(T0 + 1)
    blocker.execute("ROLLBACK")
    assert ledger.flush(T0 + 2)
    assert ledger.history("team-a")[0]["spent_nusd"] == 500
    assert ledger.failures == 1


def test_memory_only_ledger() -> None:
    ledger, keys = start(None, auth(period="7d"))
    spend(keys, 42)
    assert ledger.flush(T0 + 1)
    assert ledger.history("team-a")[0]["spent_nusd"] == 42
