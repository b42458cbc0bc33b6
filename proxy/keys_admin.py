"""The `/admin/` API: gateway keys made, changed and removed at run time, and who may read the info pages.

Request -> response functions over the process's `Accounts`; no I/O: the ledger writes the
changes on its next flush (call `ledger.flush` right after a successful change, so a crash
cannot lose a key whose secret was already handed out). Guarded by the `[admin] key_env` key,
sent as `Authorization: Bearer <key>` or `x-api-key: <key>`, compared by SHA-256 digest in
constant time.

    POST   /admin/keys                   {"name", "rpm"?, "tpm"?, "budget_usd"?, "budget_period"?}
                                         -> 201, the key's record and its secret (`key`), shown once
    GET    /admin/keys                   -> every key (configured and run-time), no secrets, no digests
    GET    /admin/keys/{name}            -> one key
    PATCH  /admin/keys/{name}            {"rpm"?, "tpm"?, "budget_usd"?, "budget_period"?, "disabled"?}
                                         -> the key as changed (null removes a limit)
    POST   /admin/keys/{name}/disable    -> the key, disabled (403 `key_disabled` for its requests)
    POST   /admin/keys/{name}/enable     -> the key, enabled again
    DELETE /admin/keys/{name}            -> {"name", "deleted": true}; its spend rows stay in the ledger
    GET    /admin/keys/{name}/spend      -> this period's spend and counters, and every period's row

Keys from the config file are listed and their spend read, but are changed in the file (409).
Errors are OpenAI-shaped: `{"error": {"message", "type", "code"}}`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import orjson

from proxy.auth import digest_of, key_limits, valid_name
from proxy.errors import ConfigError
from proxy.limits import GATE_DELETED, GATE_DISABLED, OPEN, Accounts, KeyState, format_usd, period_start

SECRET_PREFIX = "sk-edge-"
MAX_BODY = 64 * 1024
_LIMIT_FIELDS = ("rpm", "tpm", "budget_usd", "budget_period")


def admin_allowed(settings: Any, presented_key: bytes) -> bool:
    """May a request presenting `presented_key` read `/stats`, `/metrics`, `/dashboard` and `/admin/`?

    `settings` is the `config.Settings`. With `[admin] key_env` set only that key may; without
    one these pages stay open, as before (`/healthz` is always open: do not call this for it).
    """
    digest = settings.admin.digest
    if not digest:
        return True
    return bool(presented_key) and hmac.compare_digest(hashlib.sha256(presented_key).digest(), digest)


class KeysAdmin:
    """The admin API of one process. `history(name)` reads a key's ledger rows (`Ledger.history`)."""

    def __init__(self, accounts: Accounts, history: Callable[[str], list[dict[str, Any]]] | None = None) -> None:
        self.accounts = accounts
        self.history = history

    def handle(self, settings: Any, method: bytes, path: bytes, body: bytes, presented_key: bytes,
               wall: float) -> tuple[int, bytes]:  # fmt: skip
        """Answer one `/admin/...` request: (HTTP status, JSON body). Never raises for bad input."""
        if not settings.admin.enabled:
            return _error(404, "the admin API is off: set [admin] key_env to the environment variable of an admin key",
                          "not_found_error", "admin_disabled")  # fmt: skip
        if not admin_allowed(settings, presented_key):
            return _error(401, "missing or invalid admin key", "invalid_request_error", "invalid_api_key")
        query = path.find(b"?")
        parts = [unquote(p.decode("utf-8", "replace")) for p in (path[:query] if query >= 0 else path).split(b"/") if p]
        # parts[0] == "admin"
        try:
            return self._route(settings, method.upper(), parts[1:], body, wall)
        except ConfigError as exc:  # a bad field in the body: the message names it
            return _error(400, str(exc), "invalid_request_error", "invalid_value")

    def _route(self, settings: Any, method: bytes, parts: list[str], body: bytes, wall: float) -> tuple[int, bytes]:
        if not parts:
            if method != b"GET":
                return _method(method, "GET")
            return 200, orjson.dumps({"endpoints": ["/admin/keys", "/admin/keys/{name}", "/admin/keys/{name}/spend"]})
        if parts[0] != "keys" or len(parts) > 3:
            return _error(404, "unknown admin path", "not_found_error", "not_found")
        if len(parts) == 1:
            if method == b"GET":
                return 200, orjson.dumps({"object": "list", "data": [_record(s) for s in self._listed(settings)]})
            if method == b"POST":
                return self._create(settings, body, wall)
            return _method(method, "GET, POST")
        name = parts[1]
        state = self.accounts.by_name.get(name)
        gone = state is None or state.gate == GATE_DELETED
        if gone or (state.origin == "config" and not _configured(settings, name)):
            return _error(404, f"no gateway key named {name[:64]!r}", "not_found_error", "key_not_found")
        assert state is not None
        if len(parts) == 3:
            action = parts[2]
            if action == "spend":
                return (200, self._spend(state)) if method == b"GET" else _method(method, "GET")
            if action in ("disable", "enable"):
                if method != b"POST":
                    return _method(method, "POST")
                return self._change(state, {"disabled": action == "disable"})
            return _error(404, "unknown admin path", "not_found_error", "not_found")
        if method == b"GET":
            return 200, orjson.dumps(_record(state))
        if method == b"PATCH":
            fields = _json_object(body)
            if isinstance(fields, tuple):
                return fields
            return self._change(state, fields)
        if method == b"DELETE":
            if state.origin == "config":
                return _config_key(name)
            state.gate = GATE_DELETED
            self.accounts.version += 1
            return 200, orjson.dumps({"name": name, "deleted": True})
        return _method(method, "GET, PATCH, DELETE")

    def _listed(self, settings: Any) -> list[KeyState]:
        configured = [self.accounts.by_name[k.name] for k in settings.auth.keys if k.name in self.accounts.by_name]
        names = {s.name for s in configured}
        return configured + [s for s in self.accounts.runtime() if s.name not in names]

    def _create(self, settings: Any, body: bytes, wall: float) -> tuple[int, bytes]:
        fields = _json_object(body)
        if isinstance(fields, tuple):
            return fields
        unknown = sorted(set(fields) - {"name", *_LIMIT_FIELDS})
        if unknown:
            return _error(400, f"unknown field {unknown[0]!r} (expected: name, {', '.join(_LIMIT_FIELDS)})",
                          "invalid_request_error", "unknown_parameter")  # fmt: skip
        name = fields.get("name")
        if not valid_name(name):
            return _error(400, "name: required; 1-64 characters: letters, digits and . _ : @ -",
                          "invalid_request_error", "invalid_value")  # fmt: skip
        assert isinstance(name, str)
        existing = self.accounts.by_name.get(name)
        if _configured(settings, name) or (existing is not None and existing.gate != GATE_DELETED):
            return _error(409, f"a gateway key named {name!r} already exists", "invalid_request_error", "key_exists")
        rpm, tpm, budget, period = key_limits(_without_nulls(fields), "body")
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)  # 256 random bits
        state = self.accounts.get(name, digest_of(secret.encode("ascii")), "admin")
        state.created = wall
        state.gate = OPEN
        state.configure(rpm, tpm, budget, period, self.accounts.workers)
        if existing is None:  # a deleted key's name made again keeps its spend rows, and so its spend
            state.start_period(period_start(period, wall))
        self.accounts.version += 1
        record = _record(state)
        record["key"] = secret  # the only time it is shown
        return 201, orjson.dumps(record)

    def _change(self, state: KeyState, fields: dict[str, Any]) -> tuple[int, bytes]:
        if state.origin == "config":
            return _config_key(state.name)
        unknown = sorted(set(fields) - {*_LIMIT_FIELDS, "disabled"})
        if unknown:
            return _error(400, f"unknown field {unknown[0]!r} (expected: {', '.join(_LIMIT_FIELDS)}, disabled)",
                          "invalid_request_error", "unknown_parameter")  # fmt: skip
        disabled = fields.get("disabled", state.gate == GATE_DISABLED)
        if type(disabled) is not bool:
            return _error(400, "disabled: expected true or false", "invalid_request_error", "invalid_value")
        table: dict[str, Any] = {"rpm": state.rpm or None, "tpm": state.tpm or None,
                                 "budget_period": state.period or None}  # fmt: skip
        table.update({k: v for k, v in fields.items() if k in _LIMIT_FIELDS})
        keep_budget = "budget_usd" not in fields and state.budget
        if keep_budget:
            table["budget_usd"] = 1.0  # a stand-in, so the period is validated; the exact budget stays below
        rpm, tpm, budget, period = key_limits(_without_nulls(table), "body")
        if keep_budget:
            budget = state.budget
        state.configure(rpm, tpm, budget, period, state.share)
        state.gate = GATE_DISABLED if disabled else OPEN
        self.accounts.version += 1
        return 200, orjson.dumps(_record(state))

    def _spend(self, state: KeyState) -> bytes:
        out: dict[str, Any] = {"name": state.name, "budget_period": state.period, "period_start": state.period_start,
                               "budget_usd": _usd(state.budget) if state.budget else None,
                               "spent_usd": _usd(state.spent), "spent_nusd": state.spent}  # fmt: skip
        if state.budget:
            out["remaining_usd"] = _usd(max(state.budget - state.spent, 0))
        out["history"] = self.history(state.name) if self.history is not None else []
        return orjson.dumps(out)


def _configured(settings: Any, name: str) -> bool:
    return any(k.name == name for k in settings.auth.keys)


def _record(s: KeyState) -> dict[str, Any]:
    """A key as the admin API shows it: never its secret, nor its digest."""
    return {
        "name": s.name, "origin": s.origin, "disabled": s.gate == GATE_DISABLED, "rpm": s.rpm or None,
        "tpm": s.tpm or None, "budget_usd": _usd(s.budget) if s.budget else None, "budget_period": s.period or None,
        "period_start": s.period_start, "spent_usd": _usd(s.spent), "created": s.created or None,
    }  # fmt: skip


def _usd(nusd: int) -> str:
    return format_usd(nusd, 9)


def _without_nulls(fields: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None and k != "name"}


def _json_object(body: bytes) -> dict[str, Any] | tuple[int, bytes]:
    if len(body) > MAX_BODY:
        return _error(413, f"the body is over {MAX_BODY} bytes", "invalid_request_error", "request_too_large")
    try:
        value = orjson.loads(body or b"{}")
    except orjson.JSONDecodeError:
        return _error(400, "the body is not valid JSON", "invalid_request_error", "invalid_json")
    if not isinstance(value, dict):
        return _error(400, "the body must be a JSON object", "invalid_request_error", "invalid_json")
    return value


def _config_key(name: str) -> tuple[int, bytes]:
    return _error(409, f"gateway key {name!r} is configured in the file: change it there (and send SIGHUP)",
                  "invalid_request_error", "configured_key")  # fmt: skip


def _method(method: bytes, allowed: str) -> tuple[int, bytes]:
    return _error(405, f"{method.decode('latin-1')[:16]} is not allowed here; use {allowed}", "invalid_request_error",
                  "method_not_allowed")  # fmt: skip


def _error(status: int, message: str, type_: str, code: str) -> tuple[int, bytes]:
    return status, orjson.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}})
