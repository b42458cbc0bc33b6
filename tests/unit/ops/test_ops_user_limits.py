"""proxy/user_limits.py: per-end-user buckets under one key, in a bounded table."""

from __future__ import annotations

import pytest

from proxy.user_limits import UserLimits


def test_requests_per_minute_per_user() -> None:
    limits = UserLimits(rpm=2, tpm=0)
    assert limits.admit("alice", 0.0) == 0.0
    assert limits.admit("alice", 0.0) == 0.0
    assert limits.admit("alice", 0.0) == pytest.approx(30.0)  # one request refills in 60/2 s
    assert limits.admit("bob", 0.0) == 0.0  # another user has their own bucket
    assert limits.admit("alice", 30.0) == 0.0


def test_tokens_are_charged_after_the_answer() -> None:
    limits = UserLimits(rpm=0, tpm=600)
    assert limits.admit("alice", 0.0) == 0.0
    limits.charge("alice", 900, 0.0)  # over budget: the bucket goes negative
    wait = limits.admit("alice", 0.0)
    assert wait == pytest.approx((1 + 300) * 60 / 600)
    assert limits.admit("alice", wait) == 0.0
    assert limits.remaining("bob", 0.0) == (0, 600)


def test_no_user_or_no_limit_is_not_limited() -> None:
    assert UserLimits(rpm=1, tpm=1).admit(None, 0.0) == 0.0
    unlimited = UserLimits(rpm=0, tpm=0)
    assert all(unlimited.admit("x", 0.0) == 0.0 for _ in range(100))
    assert not unlimited.users


def test_the_table_is_bounded_and_forgets_the_least_recent_user() -> None:
    limits = UserLimits(rpm=1, tpm=0, max_users=3)
    for user in ("a", "b", "c"):
        limits.admit(user, 0.0)
    assert limits.admit("a", 0.0) > 0.0  # "a" is now the most recent
    limits.admit("d", 0.0)  # evicts "b"
    assert list(limits.users) == ["c", "a", "d"]
    for i in range(10_000):
        limits.admit(f"u{i}", 1.0)
    assert len(limits.users) == 3
