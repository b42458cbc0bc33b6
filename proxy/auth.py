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
# (`presented_key`), then before routing: `authenticate` -> `admit`; after the response:
# `charge`. The key's name is the cache namespace (`tenants`) and the access log's `key`.
"""Gateway keys and per-key limits.

Config (TOML)::

    [[auth.keys]]
    name = "team-a"                   # required, unique: [A-Za-z0-9][A-Za-z0-9._:@-]{0,63}
    key_env = "LLM_EDGE_KEY_TEAM_A"   # exactly one of key_env, key_sha256 (64 hex), key (tests)
    rpm = 600                         # optional: requests per minute
    tpm = 200000                      # optional: input + output tokens per minute
    budget_usd = 50.0                 # optional: spend budget for the life of the process

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
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from proxy.errors import ConfigError, GatewayError
from proxy.limits import BUDGET, NANO, RPM, Limits, format_usd

_sha256 = hashlib.sha256
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
_KEY_FIELDS = ("name", "key_env", "key_sha256", "key", "rpm", "tpm", "budget_usd")
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


@dataclass(slots=True, frozen=True)
class AuthSettings:
    """The `[auth]` table: the gateway keys, in file order (a key's index is its position)."""

    keys: tuple[KeySettings, ...] = ()

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
    )


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
    """The configured gateway keys at run time: lookup, limits and per-key counters.

    Hot path, per request when `required`:
        k = keys.authenticate(presented)             # -1: answer keys.rejection(presented)
        ok, wait, why = keys.admit(k, now, estimate) # not ok: answer keys.refusal(k, why, wait)
        ... keys.tenants[k] is the cache namespace, keys.names[k] the access log's key ...
        keys.charge(k, now, tokens_in, tokens_out, cost_nusd, estimate)   # exactly once
    `now` is monotonic seconds (loop.time()). `tenants[-1]` and `names[-1]` are empty,
    so an unauthenticated request (k == -1, or no keys configured) indexes them safely.
    """

    __slots__ = (
        "_by_digest",
        "admit",
        "charge",
        "invalid",
        "limits",
        "missing",
        "names",
        "required",
        "settings",
        "tenants",
    )  # fmt: skip

    def __init__(self, settings: AuthSettings, workers: int = 1) -> None:
        # config
        self.settings = settings
        self.required = settings.required
        # A trailing empty entry, so index -1 (no key) reads "" without a branch.
        self.names: tuple[str, ...] = (*(k.name for k in settings.keys), "")
        self.tenants: tuple[bytes, ...] = (*(k.name.encode("utf-8") for k in settings.keys), b"")
        self._by_digest = {k.digest: i for i, k in enumerate(settings.keys)}
        self.limits = limits = Limits(
            [k.rpm for k in settings.keys], [k.tpm for k in settings.keys], [k.budget_nusd for k in settings.keys],
            workers,
        )  # fmt: skip
        # The bound methods, so `keys.admit(...)` costs no extra call frame.
        self.admit: Callable[[int, float, int], tuple[bool, float, str]] = limits.admit
        self.charge: Callable[..., None] = limits.charge
        # counters
        self.missing = 0  # requests with no key while one is required
        self.invalid = 0  # requests with a key that matches none

    def __repr__(self) -> str:
        return (
            f"<Keys keys={len(self.names) - 1} required={self.required} missing={self.missing} invalid={self.invalid}>"
        )

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
        index = self._by_digest.get(_sha256(presented).digest(), -1)
        if index < 0:
            self.invalid += 1
        return index

    def rejection(self, presented: bytes) -> GatewayError:
        """The 401 for a request whose key is missing (`presented` empty) or matches none."""
        if not presented:
            return InvalidKeyError("missing gateway key: send it as 'Authorization: Bearer <key>' or 'x-api-key: <key>'")
        return InvalidKeyError("invalid gateway key")

    def refusal(self, key: int, reason: str, retry_after_s: float) -> GatewayError:
        """The 429 for a request `admit` refused (`reason`, `retry_after_s` from `admit`)."""
        k = self.settings.keys[key]
        if reason == BUDGET:
            return BudgetExhaustedError(f"gateway key {k.name!r} has used its budget of {_usd(k.budget_nusd)} USD")
        if reason == RPM:
            return KeyRateLimitedError(
                f"rate limit reached for gateway key {k.name!r} on requests per minute: limit {k.rpm}",
                retry_after_s, type_="requests",
            )  # fmt: skip
        return KeyRateLimitedError(
            f"rate limit reached for gateway key {k.name!r} on tokens per minute: limit {k.tpm}",
            retry_after_s, type_="tokens",
        )  # fmt: skip

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """Per key: name, limits, counters and what remains, JSON-ready (for /stats and /metrics)."""
        rows = self.limits.snapshot(now)
        for row, name in zip(rows, self.names):
            row["key"] = name
        return rows


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
