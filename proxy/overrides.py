"""Per-request control headers, and whether a caller may use them. Pure.

| header                        | effect                                                             |
|-------------------------------|--------------------------------------------------------------------|
| `x-llm-edge-timeout`          | seconds; lowers the request's deadline (never raises it)          |
| `x-llm-edge-max-attempts`     | integer >= 1; lowers the routes tried (never raises)              |
| `x-llm-edge-provider`         | a configured provider's name; only its routes are tried          |
| `x-llm-edge-max-retry-after`  | seconds; a Retry-After longer than this becomes a 503 with this    |

They are ignored unless `[server] allow_request_overrides = true`, and then per gateway key:
`allow_overrides` on the key decides, and a key that does not say is allowed only when it is an
admin key. With no gateway keys at all (none required), the server switch alone decides.

A header that is present but malformed is a 400 naming the header (`OverrideError`): a caller
who asked for a 2 s deadline must not silently get 600 s. Absent headers cost nothing: the
request path keeps the shared `NO_OVERRIDES` object.

Also here: `request_id`, the client's `x-request-id` when it is sane (echoed and logged), else none.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from proxy.errors import ConfigError

TIMEOUT = b"x-llm-edge-timeout"
MAX_ATTEMPTS = b"x-llm-edge-max-attempts"
PROVIDER = b"x-llm-edge-provider"
MAX_RETRY_AFTER = b"x-llm-edge-max-retry-after"
HEADERS = (TIMEOUT, MAX_ATTEMPTS, PROVIDER, MAX_RETRY_AFTER)
REQUEST_ID = b"x-request-id"
MAX_REQUEST_ID_BYTES = 128
_MAX_SECONDS = 1e6
_MAX_ATTEMPTS = 100
# Printable ASCII without space, quote, backslash or comma: safe in a header, a log line and a span.
_ID_BYTES = frozenset(range(0x21, 0x7F)) - frozenset(b'"\\,')


class OverrideError(ValueError):
    """A control header the gateway cannot honour; the message names it (answer 400)."""


class Overrides:
    """What one request asked for; a field at its "unset" value changes nothing."""

    __slots__ = ("max_attempts", "max_retry_after_s", "provider_id", "timeout_s")

    def __init__(self, timeout_s: float = math.inf, max_attempts: int = 0, provider_id: int = -1,
                 max_retry_after_s: float = math.inf) -> None:  # fmt: skip
        self.timeout_s = timeout_s  # inf: unset
        self.max_attempts = max_attempts  # 0: unset
        self.provider_id = provider_id  # -1: unset
        self.max_retry_after_s = max_retry_after_s  # inf: unset

    def __repr__(self) -> str:
        return (f"Overrides(timeout_s={self.timeout_s}, max_attempts={self.max_attempts}, "
                f"provider_id={self.provider_id}, max_retry_after_s={self.max_retry_after_s})")  # fmt: skip

    def deadline_s(self, configured_s: float) -> float:
        """The request's deadline: the configured one, lowered by `x-llm-edge-timeout`."""
        return configured_s if configured_s <= self.timeout_s else self.timeout_s

    def attempts(self, configured: int) -> int:
        """The routes to try: the configured number, lowered by `x-llm-edge-max-attempts`."""
        return configured if not self.max_attempts or configured <= self.max_attempts else self.max_attempts

    def retry_after(self, status: int, retry_after_s: float) -> tuple[int, float]:
        """(status, Retry-After seconds) to answer with, given the ones the gateway would send.

        A Retry-After above the caller's cap becomes a 503 with the cap: the caller said it will
        not wait longer, so it gets an answer it may retry at once (or after the cap) instead.
        """
        if retry_after_s > self.max_retry_after_s:
            return 503, self.max_retry_after_s
        return status, retry_after_s


NO_OVERRIDES = Overrides()


def parse(headers: Mapping[bytes, bytes], providers: Mapping[str, int]) -> Overrides:
    """The overrides in `headers` (lower-case names to raw values); `providers` maps name -> id.

    Returns `NO_OVERRIDES` when none is present. Raises `OverrideError` for a malformed value
    or an unknown provider.
    """
    timeout = headers.get(TIMEOUT)
    attempts = headers.get(MAX_ATTEMPTS)
    provider = headers.get(PROVIDER)
    cap = headers.get(MAX_RETRY_AFTER)
    if timeout is None and attempts is None and provider is None and cap is None:
        return NO_OVERRIDES
    out = Overrides()
    if timeout is not None:
        out.timeout_s = _seconds(TIMEOUT, timeout, allow_zero=False)
    if attempts is not None:
        text = attempts.strip()
        if not text.isdigit() or not 1 <= int(text) <= _MAX_ATTEMPTS:
            raise OverrideError(f"{MAX_ATTEMPTS.decode()}: expected an integer from 1 to {_MAX_ATTEMPTS}")
        out.max_attempts = int(text)
    if provider is not None:
        name = provider.strip().decode("latin-1")
        if name not in providers:
            shown = name[:64].encode("ascii", "replace").decode()
            raise OverrideError(f"{PROVIDER.decode()}: no configured provider is named {shown!r}")
        out.provider_id = providers[name]
    if cap is not None:
        out.max_retry_after_s = _seconds(MAX_RETRY_AFTER, cap, allow_zero=True)
    return out


def _seconds(name: bytes, raw: bytes, allow_zero: bool) -> float:
    try:
        value = float(raw.strip().decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        value = math.nan
    if not (0.0 < value <= _MAX_SECONDS or (allow_zero and value == 0.0)):  # also refuses nan and inf
        lowest = ">= 0" if allow_zero else "> 0"
        raise OverrideError(f"{name.decode()}: expected a number of seconds {lowest} and <= {_MAX_SECONDS:g}")
    return value


def pinned_mask(routes: tuple[int, ...], provider_of: tuple[int, ...], provider_id: int) -> int:
    """A `tried_mask` for `Router.pick` that leaves only `provider_id`'s routes among `routes`.

    `provider_of[route_id]` is a route's provider id. Returns -1 when the model has no route on
    that provider (answer 400: the pin cannot be honoured).
    """
    mask = 0
    kept = False
    for r in routes:
        if provider_of[r] == provider_id:
            kept = True
        else:
            mask |= 1 << r
    return mask if kept else -1


def allowed(server_allows: bool, keys_required: bool, key_flag: bool | None, is_admin: bool) -> bool:
    """Whether this caller's control headers are honoured (see the module doc)."""
    if not server_allows:
        return False
    if not keys_required:
        return True
    return key_flag if key_flag is not None else is_admin


def request_id(raw: bytes | None) -> bytes | None:
    """The client's `x-request-id` if it is sane (1-128 printable bytes, no space, quote, backslash
    or comma), else None: the gateway then uses its own id."""
    if raw is None:
        return None
    value = raw.strip()
    if not value or len(value) > MAX_REQUEST_ID_BYTES or not _ID_BYTES.issuperset(value):
        return None
    return value


@dataclass(slots=True, frozen=True)
class KeyControls:
    """The operations fields of one `[[auth.keys]]` entry."""

    allow_overrides: bool | None = None  # None: allowed only for an admin key
    per_user_rpm: int = 0  # 0: no per-end-user limit (see proxy/user_limits.py)
    per_user_tpm: int = 0

    FIELDS = ("allow_overrides", "per_user_rpm", "per_user_tpm")

    @classmethod
    def from_key_table(cls, t: Mapping[str, Any], where: str) -> KeyControls:
        """Read the fields above from a key's table (other fields are the caller's to check)."""
        flag = t.get("allow_overrides")
        if flag is not None and not isinstance(flag, bool):
            raise ConfigError(f"{where}.allow_overrides: expected true or false")
        limits = []
        for name in ("per_user_rpm", "per_user_tpm"):
            value = t.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigError(f"{where}.{name}: expected an integer >= 0")
            limits.append(value)
        return cls(flag, limits[0], limits[1])
