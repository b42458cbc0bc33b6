"""The ledger: every key's spend, budget period and counters, and the keys made at run time, in SQLite.

Written off the request path: the request path only adds to in-memory counters (`KeyState`);
`flush(wall)`, called by the 1 Hz tick, writes what changed since the last flush in one
transaction, rolls budget periods, and reads back each budget's period total so that every
process sharing the file (`--workers N`) spends only its share of what is left (see
proxy/limits.py). A crash (SIGKILL, power cut aside) loses at most what was charged since the
last flush: one tick. WAL mode: a commit is an append to the log, not an fsync of the database
(`synchronous=NORMAL`), so a flush costs well under a millisecond for a few hundred keys.

Tables (one file per gateway, or shared by its workers):
    spend(name, period_start, spent_nusd, requests, tokens_in, tokens_out, refused_rpm,
          refused_tpm, refused_budget, refused_disabled, estimated)   -- one row per key per period
    keys(name, digest, rpm, tpm, budget_nusd, budget_period, gate, created, updated)
                                                                      -- keys made through /admin/
Rows are never deleted: a key removed from the config keeps its rows, and its spend returns
when it comes back. A deleted run-time key keeps its row with `gate = 2`.

`path=None` keeps the same tables in memory (no file): spend lasts for the life of the process.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from typing import Any

from proxy.limits import Accounts, KeyState, period_start

log = logging.getLogger("llm_edge.ledger")

LEASE_TTL_S = 10.0  # a budget lease not renewed for this long lapses (a process renews its own every tick)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    name TEXT NOT NULL, period_start INTEGER NOT NULL, spent_nusd INTEGER NOT NULL DEFAULT 0,
    requests INTEGER NOT NULL DEFAULT 0, tokens_in INTEGER NOT NULL DEFAULT 0, tokens_out INTEGER NOT NULL DEFAULT 0,
    refused_rpm INTEGER NOT NULL DEFAULT 0, refused_tpm INTEGER NOT NULL DEFAULT 0,
    refused_budget INTEGER NOT NULL DEFAULT 0, refused_disabled INTEGER NOT NULL DEFAULT 0,
    estimated INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (name, period_start)
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT NOT NULL, period_start INTEGER NOT NULL, owner TEXT NOT NULL, pid INTEGER NOT NULL,
    amount INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (name, period_start, owner)
);
CREATE TABLE IF NOT EXISTS keys (
    name TEXT PRIMARY KEY, digest BLOB NOT NULL, rpm INTEGER NOT NULL, tpm INTEGER NOT NULL,
    budget_nusd INTEGER NOT NULL, budget_period TEXT NOT NULL, gate INTEGER NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL
);
"""
_COUNTERS = ("charged", "tokens_in", "tokens_out", "refused_rpm", "refused_tpm", "refused_budget", "refused_disabled",
             "estimated")  # fmt: skip
_UPSERT = (
    "INSERT INTO spend (name, period_start, spent_nusd, requests, tokens_in, tokens_out, refused_rpm, refused_tpm,"
    " refused_budget, refused_disabled, estimated) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT (name, period_start) DO UPDATE SET spent_nusd = spent_nusd + excluded.spent_nusd,"
    " requests = requests + excluded.requests, tokens_in = tokens_in + excluded.tokens_in,"
    " tokens_out = tokens_out + excluded.tokens_out, refused_rpm = refused_rpm + excluded.refused_rpm,"
    " refused_tpm = refused_tpm + excluded.refused_tpm, refused_budget = refused_budget + excluded.refused_budget,"
    " refused_disabled = refused_disabled + excluded.refused_disabled, estimated = estimated + excluded.estimated"
)
_UPSERT_KEY = (
    "INSERT INTO keys (name, digest, rpm, tpm, budget_nusd, budget_period, gate, created, updated)"
    " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (name) DO UPDATE SET digest = excluded.digest, rpm = excluded.rpm,"
    " tpm = excluded.tpm, budget_nusd = excluded.budget_nusd, budget_period = excluded.budget_period,"
    " gate = excluded.gate, updated = excluded.updated"
)


class LedgerError(Exception):
    """The ledger file cannot be opened or is not a ledger. The message names the file."""


class Ledger:
    """The SQLite ledger of one process, over that process's `Accounts`.

    Entry points (all cold, on the event loop's thread):
        ledger = Ledger(settings.ledger.path, accounts)   # at start; raises LedgerError
        ledger.load(time.time())                          # run-time keys, then every known key's period
        ledger.flush(time.time())                         # from the 1 Hz tick, after a reload, after /admin/ changes
        ledger.close(time.time())                         # on shutdown: a last flush
    `sync_budgets=False` when a fleet (Redis) is what divides budgets among processes.
    """

    def __init__(self, path: str | None, accounts: Accounts, sync_budgets: bool = True) -> None:
        self.path = path
        self.accounts = accounts
        self.sync_budgets = sync_budgets
        self.flushes = self.failures = 0
        self._failing = False
        # per key: (period_start, spent_here, *counters) as of the last flush; spend is per period, counters not
        self._marks: dict[str, list[int]] = {}
        self._loaded: dict[str, int] = {}  # key name -> the period whose row was read into its state
        self._keys_version = accounts.version  # run-time keys as last written
        self._data_version = -1  # PRAGMA data_version as last read: another connection wrote when it changes
        self.pid = os.getpid()  # a lease whose process is gone lapses at once
        self.owner = f"{self.pid}:{os.urandom(4).hex()}"  # whose budget leases are whose (workers share the file)
        try:
            self.db = sqlite3.connect(path or ":memory:", timeout=0.1, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot open the ledger {path}: {exc}") from None

    def __repr__(self) -> str:
        return f"<Ledger {self.path or ':memory:'} flushes={self.flushes} failures={self.failures}>"

    # -- start ---------------------------------------------------------------------------------

    def load(self, wall: float) -> None:
        """Read the run-time keys into `accounts`, then each known key's spend in its current period."""
        try:
            self._flush(wall)
        except sqlite3.Error as exc:
            raise LedgerError(f"cannot read the ledger {self.path}: {exc}") from None

    # -- the tick --------------------------------------------------------------------------------

    def flush(self, wall: float) -> bool:
        """Write what changed since the last flush, roll periods, lease budgets. False if SQLite failed.

        On failure nothing is lost: the same changes are written by the next flush that succeeds.
        """
        try:
            self._flush(wall)
        except sqlite3.Error as exc:
            self.failures += 1
            if not self._failing:
                self._failing = True
                log.error("ledger %s: cannot write (%s); keeping the changes for the next tick", self.path, exc)
            return False
        if self._failing:
            self._failing = False
            log.warning("ledger %s: writing again", self.path)
        self.flushes += 1
        return True

    def _flush(self, wall: float) -> None:
        """One transaction: changes in, run-time keys both ways, each key's period and budget lease out.

        The state is only touched once the commit is done (a failed flush leaves it as it was). The
        whole flush runs on the loop's thread, so nothing is charged between the write and the apply.
        """
        accounts, db = self.accounts, self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            if accounts.version != self._keys_version:
                self._push_keys(wall)
            marks = self._write(wall)
            self._pull_keys()
            plan = []
            for state in list(accounts.by_name.values()):
                start = period_start(state.period, wall)
                attach = self._loaded.get(state.name) != start or state.period_start != start
                leasing = self.sync_budgets and state.budget > 0
                total = self._total(state.name, start) if attach or leasing else 0
                lease = self._claim(state, start, total, wall) if leasing else -1
                plan.append((state, start, attach, total, lease))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        for name, mark in marks:
            self._marks[name] = mark
        for state, start, attach, total, lease in plan:
            if attach:  # a start, a new key, a new period: the file's total is the whole story
                state.start_period(start, total)
                self._marks[state.name] = [start, 0, *(getattr(state, f) for f in _COUNTERS)]
                self._loaded[state.name] = start
            if lease >= 0:
                state.lease(total, state.spent_here, lease)

    def _claim(self, state: KeyState, start: int, total: int, wall: float) -> int:
        """This process's new lease of the key's budget: its share of what neither spend nor the other
        processes' live leases hold. Leases of processes that are gone (or silent for LEASE_TTL_S) lapse.
        One process alone (no `--workers`) owns the file: its lease is all that is left, exactly."""
        share = self.accounts.workers
        if share <= 1:
            return max(state.budget - total, 0)
        db = self.db
        others = 0
        for owner, pid, amount, updated in db.execute(
            "SELECT owner, pid, amount, updated FROM leases WHERE name = ? AND period_start = ?", (state.name, start)
        ).fetchall():
            if owner == self.owner:
                continue
            if updated < wall - LEASE_TTL_S or not _alive(pid):
                db.execute("DELETE FROM leases WHERE name = ? AND period_start = ? AND owner = ?",
                           (state.name, start, owner))  # fmt: skip
                continue
            others += amount
        free = state.budget - total - others
        amount = -(-free // share) if free > 0 else 0  # rounded up: < `share` nano-dollars over, at most
        db.execute("INSERT OR REPLACE INTO leases (name, period_start, owner, pid, amount, updated)"
                   " VALUES (?,?,?,?,?,?)", (state.name, start, self.owner, self.pid, amount, wall))  # fmt: skip
        return amount

    def close(self, wall: float) -> None:
        """A last flush, give this process's budget leases back, then close the file."""
        self.flush(wall)
        try:
            self.db.execute("DELETE FROM leases WHERE owner = ?", (self.owner,))
        except sqlite3.Error:
            pass  # they lapse by themselves
        self.db.close()

    # -- reads for /admin/ -----------------------------------------------------------------------

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every period's row of key `name`, newest first, as flushed (not counting the last tick)."""
        rows = self.db.execute(
            "SELECT period_start, spent_nusd, requests, tokens_in, tokens_out, refused_rpm, refused_tpm,"
            " refused_budget, refused_disabled, estimated FROM spend WHERE name = ? ORDER BY period_start DESC",
            (name,),
        ).fetchall()
        fields = ("period_start", "spent_nusd", "requests", "tokens_in", "tokens_out", "refused_rpm", "refused_tpm",
                  "refused_budget", "refused_disabled", "estimated")  # fmt: skip
        return [dict(zip(fields, row)) for row in rows]

    # -- internals ---------------------------------------------------------------------------------

    def _write(self, wall: float) -> list[tuple[str, list[int]]]:
        """Insert each key's changes since its mark; returns the new marks (kept once the commit is done)."""
        new_marks = []
        rows = []
        for state in self.accounts.by_name.values():
            now = [state.period_start, state.spent_here, *(getattr(state, f) for f in _COUNTERS)]
            mark = self._marks.get(state.name)
            if mark is None:
                mark = [state.period_start, 0, *([0] * len(_COUNTERS))]
            if mark[0] != state.period_start:
                mark = [state.period_start, 0, *mark[2:]]  # a new period: spend starts again, counters do not
            delta = [b - a for a, b in zip(mark[1:], now[1:])]
            if any(delta):
                spent, charged, t_in, t_out, r_rpm, r_tpm, r_budget, r_disabled, estimated = delta
                # a key not attached yet (new since the last flush) is charged to the period it is in now
                start = state.period_start if state.name in self._loaded else period_start(state.period, wall)
                rows.append((state.name, start, spent, charged, t_in, t_out, r_rpm, r_tpm, r_budget,
                             r_disabled, estimated))  # fmt: skip
            new_marks.append((state.name, now))
        if rows:
            self.db.executemany(_UPSERT, rows)
        return new_marks

    def _total(self, name: str, start: int) -> int:
        row = self.db.execute("SELECT spent_nusd FROM spend WHERE name = ? AND period_start = ?", (name, start))
        found = row.fetchone()
        return found[0] if found else 0

    def _push_keys(self, wall: float) -> None:
        """Write every run-time key (deleted ones too: their row stays, marked)."""
        rows = [
            (s.name, s.digest, s.rpm, s.tpm, s.budget, s.period, s.gate, s.created, wall)
            for s in self.accounts.by_name.values() if s.origin == "admin"
        ]  # fmt: skip
        self.db.executemany(_UPSERT_KEY, rows)
        self._keys_version = self.accounts.version

    def _pull_keys(self) -> None:
        """Take in run-time keys another process (or an earlier run) wrote."""
        version = self.db.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version:
            return
        self._data_version = version
        accounts = self.accounts
        changed = False
        for name, digest, rpm, tpm, budget, period, gate, created, _updated in self.db.execute(
            "SELECT name, digest, rpm, tpm, budget_nusd, budget_period, gate, created, updated FROM keys"
        ):
            state = accounts.by_name.get(name)
            if state is not None and state.origin == "config":
                continue  # a configured key of the same name shadows it
            if state is None:
                state = accounts.get(name, bytes(digest), "admin")
                changed = True
            elif (state.digest, state.rpm, state.tpm, state.budget, state.period, state.gate) != (
                bytes(digest), rpm, tpm, budget, period, gate
            ):
                changed = True
            state.digest = bytes(digest)
            state.created = created
            state.gate = gate
            state.configure(rpm, tpm, budget, period, accounts.workers)
        if changed:  # deleted keys stay in `accounts` with their gate; `Keys` drops them from its lookup
            accounts.version += 1
            self._keys_version = accounts.version


def _alive(pid: int) -> bool:
    """Whether process `pid` (on this machine: the file is local) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
