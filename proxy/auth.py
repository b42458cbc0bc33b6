# proxy/auth.py: gateway keys: the `[[auth.keys]]` settings, finding the key a request
# presents, mapping it to a key index, and the errors a refused request is answered with.
#
# Rules for this file:
# 1. A key's value never leaves this module except as its SHA-256 digest: it is hashed at
#    config load and the plain text dropped; no repr, message or log line holds it. Error
#    messages name the key (`name`), never its value, nor any part of it.
# 2. Per-request work is one sha256 of the presented bytes and one dict probe; limits and
#    budgets live in proxy/limits.py, in arrays indexed by the key index returned here.
# 3. Nothing here does I/O or reads a clock.
#
# Place in the request path: the downstream `on_header` callback keeps the presented key
# (`presented_key`), then before routing: `authenticate` -> `admit`; at pick time: `may_use`
# (a key with a budget is never served by an unpriced route); after the response: `charge`,
# exactly once. The key's name is the cache namespace (`tenants`) and the access log's `key`.
# Keys made at run time (the admin API, proxy/keys_admin.py) live in `Accounts` next to the
# configured ones and are found by the same lookup.
"""Gateway keys and per-key limits.

Config (TOML)::

    [[auth.keys]]
    name = "team-a"                   # required, unique: [A-Za-z0-9][A-Za-z0-9._:@-]{0,63}
    key_env = "LLM_EDGE_KEY_TEAM_A"   # exactly one of key_env, key_sha256 (64 hex), key (tests)
    rpm = 600                         # optional: requests per minute
    tpm = 200000                      # optional: input + output tokens per minute
    budget_usd = 50.0                 # optional: spend budget per budget period
    budget_period = "monthly"         # optional: "1d", "7d", "30d" or "monthly"; none: for all time

With no `[[auth.keys]]` no key is required (`Keys.required` is False) and every request
has tenant b"". Clients send the key the way both SDKs do: `Authorization: Bearer <key>`
(OpenAI SDK, Anthropic SDK with auth_token) or `x-api-key: <key>` (Anthropic SDK);
`x-api-key` wins when both are present. See proxy/limits.py for what the limits mean,
including across several worker processes (each enforces its share).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import ConfigError, GatewayError
from proxy.limits import (
    BUDGET,
    DISABLED,
    GATE_DELETED,
    NANO,
    PERIODS,
    RPM,
    UNAVAILABLE,
    Accounts,
    KeyState,
    Limits,
    admit,
    charge,
    format_usd,
)

_sha256 = hashlib.sha256
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_KEY_FIELDS = ("name", "key_env", "key_sha256", "key", "rpm", "tpm", "budget_usd", "budget_period")
_MAX_RATE = 1_000_000_000

AUTHORIZATION = b"authorization"
X_API_KEY = b"x-api-key"
KEY_HEADERS = (AUTHORIZATION, X_API_KEY)  # register these names in the downstream header table


# -- settings (cold) -----------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class KeySettings:
    """One `[[auth.keys]]` entry. Holds the key's SHA-256 digest only, never the key."""

    name: str
    digest: bytes = field(repr=False)
    rpm: int = 0  # 0 = no limit
    tpm: int = 0
    budget_nusd: int = 0  # nano-dollars; 0 = no budget
    budget_period: str = ""  # "" (all time) or one of limits.PERIODS


@dataclass(slots=True, frozen=True)
class AuthSettings:
    """The `[auth]` table: the gateway keys, in file order (a key's index is its position).

    `workers` is not read from the table: it is how many processes share every limit (the
    `--workers` flag, set with `config.with_workers`), so each enforces its share.
    """

    keys: tuple[KeySettings, ...] = ()
    workers: int = 1
    managed: bool = False  # an admin key is set: keys are required even before the first is made at run time

    @property
    def required(self) -> bool:
        """True when requests must present a gateway key."""
        return bool(self.keys)

    @classmethod
    def from_table(cls, table: Mapping[str, Any] | None, env: Mapping[str, str], where: str = "auth") -> AuthSettings:
        """Validate the parsed `[auth]` table; `env` supplies `key_env` variables.

        Raises ConfigError naming the key ("auth.keys[0].rpm: ..."). Messages never contain
        a key's value, not even a malformed `key_sha256` (it may be a pasted key).
        """
        if table is None:
            return cls()
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where}: expected a table")
        for name in table:
            if name != "keys":
                raise ConfigError(f"{where}.{name}: unknown key (expected: keys)")
        entries = table.get("keys", [])
        if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
            raise ConfigError(f"{where}.keys: expected an array of tables ([[{where}.keys]])")
        keys: list[KeySettings] = []
        for i, entry in enumerate(entries):
            key = _key_settings(entry, env, f"{where}.keys[{i}]")
            for j, other in enumerate(keys):
                if other.name == key.name:
                    raise ConfigError(f"{where}.keys[{i}].name: duplicate key name {key.name!r}")
                if other.digest == key.digest:
                    raise ConfigError(f"{where}.keys[{i}]: the same key as {where}.keys[{j}] ({other.name!r})")
            keys.append(key)
        return cls(tuple(keys))


@dataclass(slots=True, frozen=True)
class AdminSettings:
    """The `[admin]` table: the admin key (from `key_env`) guards `/admin/`, `/stats` and `/metrics`.

    Holds the key's SHA-256 only. No key: the admin API is off, and the info endpoints are open
    (unless gateway keys are required: then they are refused, never served openly).
    """

    key_env: str | None = None
    digest: bytes = field(default=b"", repr=False)

    @property
    def enabled(self) -> bool:
        return bool(self.digest)

    @classmethod
    def from_table(cls, t: Mapping[str, Any], env: Mapping[str, str]) -> AdminSettings:
        for name in t:
            if name != "key_env":
                raise ConfigError(f"admin.{name}: unknown key (expected: key_env)")
        name = t.get("key_env")
        if name is None:
            return cls()
        if type(name) is not str or not name:
            raise ConfigError("admin.key_env: expected the name of an environment variable")
        plain = env.get(name, "")
        if not plain:
            raise ConfigError(f"admin.key_env: the environment variable {name!r} is not set or empty")
        if plain != plain.strip() or len(plain) < 16:
            raise ConfigError("admin.key_env: the admin key must be at least 16 characters, with no surrounding spaces")
        return cls(name, digest_of(plain.encode("utf-8")))


def _key_settings(t: Mapping[str, Any], env: Mapping[str, str], where: str) -> KeySettings:
    for field_name in t:
        if field_name not in _KEY_FIELDS:
            raise ConfigError(f"{where}.{field_name}: unknown key (expected one of: {', '.join(_KEY_FIELDS)})")
    name = t.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(f"{where}.name: required; 1-64 characters: letters, digits and . _ : @ - (got {name!r})")
    sources = [s for s in ("key_env", "key_sha256", "key") if s in t]
    if len(sources) != 1:
        raise ConfigError(f"{where}: set exactly one of key_env, key_sha256 or key")
    source = sources[0]
    value = t[source]
    if not isinstance(value, str):
        raise ConfigError(f"{where}.{source}: expected a string")
    if source == "key_sha256":
        if not _HEX64.fullmatch(value):
            raise ConfigError(f"{where}.key_sha256: expected 64 hexadecimal characters (the SHA-256 of the key)")
        digest = bytes.fromhex(value)
    else:
        if source == "key_env":
            if not value:
                raise ConfigError(f"{where}.key_env: expected the name of an environment variable")
            plain = env.get(value, "")
            if not plain:
                raise ConfigError(f"{where}.key_env: the environment variable {value!r} is not set or empty")
        else:
            plain = value
            if not plain:
                raise ConfigError(f"{where}.key: must not be empty")
        if plain != plain.strip():
            raise ConfigError(f"{where}.{source}: the key must not start or end with whitespace")
        digest = digest_of(plain.encode("utf-8"))
    return KeySettings(
        name=name,
        digest=digest,
        rpm=_limit(t, "rpm", where),
        tpm=_limit(t, "tpm", where),
        budget_nusd=_budget(t, where),
        budget_period=_period(t, where),
    )


def key_limits(t: Mapping[str, Any], where: str) -> tuple[int, int, int, str]:
    """(rpm, tpm, budget_nusd, budget_period) from a table holding any of those keys; ConfigError names the bad one."""
    return _limit(t, "rpm", where), _limit(t, "tpm", where), _budget(t, where), _period(t, where)


def valid_name(name: object) -> bool:
    """Whether `name` may name a gateway key (1-64 of letters, digits and . _ : @ -)."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def _period(t: Mapping[str, Any], where: str) -> str:
    value = t.get("budget_period", "")
    if value != "" and value not in PERIODS:
        raise ConfigError(f"{where}.budget_period: expected one of {', '.join(PERIODS)} (got {value!r})")
    if value and "budget_usd" not in t:
        raise ConfigError(f"{where}.budget_period: set budget_usd too (a period resets a budget)")
    return value


def _limit(t: Mapping[str, Any], key: str, where: str) -> int:
    if key not in t:
        return 0
    value = t[key]
    if type(value) is not int or not 0 < value <= _MAX_RATE:  # `type() is` so that true/false are refused
        raise ConfigError(f"{where}.{key}: expected an integer from 1 to {_MAX_RATE} (got {value!r})")
    return value


def _budget(t: Mapping[str, Any], where: str) -> int:
    if "budget_usd" not in t:
        return 0
    value = t["budget_usd"]
    if type(value) not in (int, float) or not math.isfinite(value) or not 0 < value <= 1e9:
        raise ConfigError(f"{where}.budget_usd: expected a number of USD > 0 (got {value!r})")
    nusd = round(value * NANO)
    if nusd <= 0:
        raise ConfigError(f"{where}.budget_usd: must be at least 0.000000001 (got {value!r})")
    return nusd


def _usd(nusd: int) -> str:
    return format_usd(nusd, 9).rstrip("0").rstrip(".")


def digest_of(key: bytes) -> bytes:
    """SHA-256 digest of a key: what `key_sha256` holds, in hex (`digest_of(k).hex()`)."""
    return _sha256(key).digest()


# -- finding the presented key (hot) -------------------------------------------------------


def presented_key(name: bytes, value: bytes) -> bytes:
    """The gateway key carried by one request header, or b"" if it carries none.

    `name` is lowercased. `authorization: Bearer <key>` (scheme case-insensitive) and
    `x-api-key: <key>` count; anything else (another header, `Basic ...`) gives b"".
    """
    if name == X_API_KEY:
        return value.strip()
    if name == AUTHORIZATION:
        value = value.strip()
        if value[:7].lower() == b"bearer ":
            return value[7:].strip()
    return b""


def key_from_headers(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """The gateway key of a request from its `(lowercased name, value)` header list, or b"".

    `x-api-key` wins over `Authorization` (the Anthropic SDK sends both when given both an
    api_key and an auth_token). In `on_header`, the same rule is: keep the first non-empty
    `presented_key`, but let an `x-api-key` one replace a bearer one.
    """
    bearer = b""
    for name, value in headers:
        if name == X_API_KEY:
            found = value.strip()
            if found:
                return found
        elif name == AUTHORIZATION and not bearer:
            bearer = presented_key(name, value)
    return bearer


# -- runtime ---------------------------------------------------------------------------------


class Keys:
    """The gateway keys of one configuration generation: lookup, limits and per-key counters.

    Hot path, per request when `required`:
        k = keys.authenticate(presented)             # -1: answer keys.rejection(presented)
        ok, wait, why = keys.admit(k, now, estimate) # not ok: answer keys.refusal(k, why, wait)
        ... keys.tenants[k] is the cache namespace, keys.names[k] the access log's key ...
        keys.may_use(k, prices)                      # at pick time; False: keys.unpriced(k, model)
        keys.charge(k, now, usage, cost_nusd, estimate, estimated)   # exactly once
    `now` is monotonic seconds (loop.time()); `usage` the five counts of proxy/prices.py.
    `tenants[-1]` and `names[-1]` are empty, so an unauthenticated request (k == -1, or no
    keys configured) indexes them safely.

    The keys' states live in `accounts` (one per process, shared by every generation): a
    reload carries each key's spend, buckets and counters over, and keys made at run time
    are appended here when first presented (indexes never move within a generation).
    """

    __slots__ = (
        "_by_digest",
        "_configured",
        "_version",
        "accounts",
        "invalid",
        "missing",
        "names",
        "required",
        "settings",
        "states",
        "tenants",
        "workers",
    )  # fmt: skip

    def __init__(self, settings: AuthSettings, workers: int | None = None, accounts: Accounts | None = None) -> None:
        # config
        self.settings = settings
        self.workers = workers = settings.workers if workers is None else max(workers, 1)
        self.accounts = accounts = Accounts(workers) if accounts is None else accounts
        states: list[KeyState] = []
        for k in settings.keys:
            state = accounts.get(k.name, k.digest, "config")
            state.gate = 0
            state.configure(k.rpm, k.tpm, k.budget_nusd, k.budget_period, workers)
            states.append(state)
        self._configured = frozenset(k.name for k in settings.keys)
        self.states = states
        # A trailing empty entry, so index -1 (no key) reads "" without a branch.
        self.names: list[str] = [*(st.name for st in states), ""]
        self.tenants: list[bytes] = [*(st.name.encode("utf-8") for st in states), b""]
        self._by_digest: dict[bytes, int] = {}
        self._version = -1
        self._refresh()
        self.required = settings.required or settings.managed
        # counters
        self.missing = 0  # requests with no key while one is required
        self.invalid = 0  # requests with a key that matches none

    def __repr__(self) -> str:
        return f"<Keys keys={len(self.states)} required={self.required} missing={self.missing} invalid={self.invalid}>"

    def _refresh(self) -> None:
        """Take in the run-time keys made (or deleted) since the last look. Cold: admin changes only."""
        self._version = self.accounts.version
        known = {id(st) for st in self.states}
        for state in self.accounts.runtime():
            if id(state) not in known and state.name not in self._configured:
                self.states.append(state)
                self.names.insert(len(self.names) - 1, state.name)
                self.tenants.insert(len(self.tenants) - 1, state.name.encode("utf-8"))
        self._by_digest = {st.digest: i for i, st in enumerate(self.states) if st.gate != GATE_DELETED and st.digest}
        if self.states:
            self.required = True

    def authenticate(self, presented: bytes) -> int:
        """The index of the key `presented` (from `presented_key`), or -1 if it matches none.

        O(1): one SHA-256 of the presented bytes and one dict probe on the digest. No
        constant-time compare is needed: what the probe's timing can reveal is about the
        digest of the attacker's own guess, and digests of guesses say nothing usable about
        a key (preimage resistance); there is no byte-by-byte comparison of the secret.
        """
        if not presented:
            self.missing += 1
            return -1
        digest = _sha256(presented).digest()
        index = self._by_digest.get(digest, -1)
        if index < 0 and self._version != self.accounts.version:  # a key made at run time since
            self._refresh()
            index = self._by_digest.get(digest, -1)
        if index < 0 or self.states[index].gate == GATE_DELETED:
            self.invalid += 1
            return -1
        return index

    def admit(self, key: int, now: float, estimated_tokens: int = 0) -> tuple[bool, float, str]:
        """May key `key` start a request now? `(ok, retry_after_s, reason)`: see `limits.admit`."""
        return admit(self.states[key], now, estimated_tokens)

    def admit_request(self, presented: bytes, now: float, estimated_tokens: int) -> int:
        """The key a request presents, admitted within its limits; raises the 401/403/429 that says
        why not. Before any upstream contact."""
        key = self.authenticate(presented)
        if key < 0:
            raise self.rejection(presented)
        allowed, wait, why = self.admit(key, now, estimated_tokens)
        if not allowed:
            raise self.refusal(key, why, wait)
        return key

    def charge(self, key: int, now: float, usage: Any, cost_nusd: int, reserved: int = 0,
               estimated: Any = False) -> None:  # fmt: skip
        """Settle one admitted request: `usage` is the five counts of proxy/prices.py, `cost_nusd` its
        cost, `reserved` the estimate given to `admit`, `estimated` True when the usage is the
        gateway's own estimate (the provider sent none). Exactly once per admitted request."""
        state = self.states[key]
        if type(usage) is int:  # transitional: the old call, charge(k, now, tokens_in, tokens_out, cost, reserved)
            charge(state, now, usage, cost_nusd, reserved, int(estimated))
            return
        charge(state, now, usage[0] + usage[1] + usage[2], usage[3] + usage[4], cost_nusd, reserved, bool(estimated))

    def may_use(self, key: int, prices: object) -> bool:
        """May key `key` be served by a route with these prices (None: unpriced)? A key with a budget may not."""
        return prices is not None or key < 0 or not self.states[key].budget

    def unpriced(self, key: int, model: str) -> GatewayError:
        """The 403 for a key with a budget whose request only an unpriced route could serve."""
        return UnpricedRouteError(
            f"gateway key {self.names[key]!r} has a budget, and no price is configured for {model!r}: set the "
            "route's input_per_mtok and output_per_mtok (or the provider's [providers.prices] entry)"
        )

    def rejection(self, presented: bytes) -> GatewayError:
        """The 401 for a request whose key is missing (`presented` empty) or matches none."""
        if not presented:
            return InvalidKeyError("missing gateway key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        return InvalidKeyError("invalid gateway key")

    def refusal(self, key: int, reason: str, retry_after_s: float) -> GatewayError:
        """The 4xx/503 for a request `admit` refused (`reason`, `retry_after_s` from `admit`)."""
        k = self.states[key]
        if reason == BUDGET and k.share > 1 and k.spent < k.budget:  # this process's lease ran out, not the budget
            return KeyRateLimitedError(
                f"gateway key {k.name!r}: this gateway's share of the budget is spent until its next sync",
                1.0, type_="requests",
            )  # fmt: skip
        if reason == BUDGET:
            period = f" for this period ({k.period})" if k.period else ""
            return BudgetExhaustedError(f"gateway key {k.name!r} has used its budget of {_usd(k.budget)} USD{period}")
        if reason == DISABLED:
            return KeyDisabledError(f"gateway key {k.name!r} is disabled")
        if reason == UNAVAILABLE:
            return LimitsUnavailableError(
                f"the limits of gateway key {k.name!r} cannot be checked: the shared limit store is unreachable"
            )
        if reason == RPM:
            return KeyRateLimitedError(
                f"rate limit reached for gateway key {k.name!r} on requests per minute: limit {k.rpm}",
                retry_after_s, type_="requests",
            )  # fmt: skip
        return KeyRateLimitedError(
            f"rate limit reached for gateway key {k.name!r} on tokens per minute: limit {k.tpm}",
            retry_after_s, type_="tokens",
        )  # fmt: skip

    @property
    def limits(self) -> Limits:
        """The states as a `Limits` (by index)."""
        return Limits(self.states)

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """Per key: name, limits, counters and what remains, JSON-ready (for /stats and /metrics)."""
        if self._version != self.accounts.version:
            self._refresh()
        return [st.snapshot(now) for st in self.states if st.gate != GATE_DELETED]


# -- errors ----------------------------------------------------------------------------------


class InvalidKeyError(GatewayError):
    """401: no gateway key, or one that matches none (OpenAI's `invalid_api_key`)."""

    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class KeyRateLimitedError(GatewayError):
    """429 with Retry-After: the key is over its requests- or tokens-per-minute limit."""

    status = 429
    type = "requests"  # OpenAI's own types for rate limits: "requests" or "tokens"
    code = "rate_limit_exceeded"

    def __init__(self, message: str, retry_after_s: float, type_: str = "requests") -> None:
        super().__init__(message)
        self.type = type_
        self.retry_after_s = retry_after_s

    def headers(self) -> bytes:
        """`retry-after` (whole seconds, 1-60: every SDK version honours it) and `retry-after-ms`."""
        return retry_after_headers(self.retry_after_s)


class KeyDisabledError(GatewayError):
    """403: the key was disabled through the admin API."""

    status = 403
    type = "permission_error"
    code = "key_disabled"


class UnpricedRouteError(GatewayError):
    """403: a key with a budget asked for a model only an unpriced route serves."""

    status = 403
    type = "invalid_request_error"
    code = "unpriced_model"
    param = "model"


class LimitsUnavailableError(GatewayError):
    """503: fleet limits are fail-closed and Redis is unreachable."""

    status = 503
    type = "server_error"
    code = "limits_unavailable"

    def headers(self) -> bytes:
        return retry_after_headers(1.0)


class BudgetExhaustedError(GatewayError):
    """429 that SDKs must not retry: the key's spend budget is used up."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"

    def headers(self) -> bytes:
        return b"x-should-retry: false\r\n"


def retry_after_headers(seconds: float) -> bytes:
    """Retry hints for a wait of `seconds`, capped at 60 s (API-FORMATS §4.5-4.6).

    `retry-after-ms` (preferred by both SDKs) carries the exact wait, `retry-after` its
    ceiling in whole seconds for everyone else; both at least 1 ms / 1 s.
    """
    ms = min(max(math.ceil(seconds * 1000.0), 1), 60_000)
    return b"retry-after: %d\r\nretry-after-ms: %d\r\n" % (min(max(math.ceil(seconds), 1), 60), ms)
