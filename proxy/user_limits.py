"""Per-end-user rate limits under one gateway key (`per_user_rpm`, `per_user_tpm`). Pure.

The unit is the request's end user (proxy/tags.py `end_user`: OpenAI `user`, Anthropic
`metadata.user_id`). Each user seen gets two token buckets (requests and tokens per minute) in a
table of at most `max_users` entries; when it is full, the user seen least recently is forgotten
and starts again from a full bucket. That bounds memory whatever ids clients invent; the key's
own `rpm`/`tpm` still bound the key as a whole, so inventing ids gains a client nothing beyond it.
A request without an end user is not limited here.

Tokens are charged after the answer (`charge`), like the key's own `tpm`: a user over its
token budget is refused until the bucket is positive again.
"""

from __future__ import annotations

from collections import OrderedDict


class UserLimits:
    """Token buckets per end user, for one key. `now` is a monotonic clock in seconds."""

    __slots__ = ("max_users", "rpm", "tpm", "users")

    def __init__(self, rpm: int, tpm: int, max_users: int = 10_000) -> None:
        self.rpm = rpm  # 0: no request limit
        self.tpm = tpm  # 0: no token limit
        self.max_users = max_users
        # user -> [request tokens, token tokens, last refill]; most recently used last
        self.users: OrderedDict[str, list[float]] = OrderedDict()

    def admit(self, user: str | None, now: float) -> float:
        """0.0 and one request taken when `user` may go on; else the seconds until it may."""
        if user is None or (not self.rpm and not self.tpm):
            return 0.0
        b = self._bucket(user, now)
        wait = 0.0
        if self.rpm and b[0] < 1.0:
            wait = (1.0 - b[0]) * 60.0 / self.rpm
        if self.tpm and b[1] <= 0.0:
            wait = max(wait, (1.0 - b[1]) * 60.0 / self.tpm)
        if wait:
            return wait
        if self.rpm:
            b[0] -= 1.0
        return 0.0

    def charge(self, user: str | None, tokens: int, now: float) -> None:
        """Take the tokens a finished request used from `user`'s token bucket (it may go negative)."""
        if user is None or not self.tpm:
            return
        self._bucket(user, now)[1] -= tokens

    def remaining(self, user: str, now: float) -> tuple[int, int]:
        """(requests, tokens) `user` may still use now (for headers and tests)."""
        b = self._bucket(user, now)
        return int(b[0]), int(b[1])

    def _bucket(self, user: str, now: float) -> list[float]:
        users = self.users
        b = users.get(user)
        if b is None:
            if len(users) >= self.max_users:
                users.popitem(last=False)  # forget the least recently seen user
            b = users[user] = [float(self.rpm), float(self.tpm), now]
            return b
        users.move_to_end(user)
        dt = now - b[2]
        if dt > 0.0:
            b[2] = now
            b[0] = min(float(self.rpm), b[0] + dt * self.rpm / 60.0)
            b[1] = min(float(self.tpm), b[1] + dt * self.tpm / 60.0)
        return b
