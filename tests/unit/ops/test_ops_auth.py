"""Gateway keys: settings validation, header extraction, lookup, refusals, and that a key never leaks."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from proxy.accesslog import AccessLog, AccessLogSettings
from proxy.auth import (
    KEY_HEADERS,
    AuthSettings,
    BudgetExhaustedError,
    InvalidKeyError,
    KeyRateLimitedError,
    Keys,
    KeySettings,
    digest_of,
    key_from_headers,
    presented_key,
    retry_after_headers,
)
from proxy.errors import ConfigError, GatewayError
from proxy.limits import BUDGET, NANO, RPM, TPM
from proxy.metrics import render
from proxy.wire import error_response

FAKE_KEY = "sk-edge-CANARY-93fd0a61be"  # recognisable: must never show up anywhere
OTHER_KEY = "sk-edge-second-key-0123456789"
ENV = {"LLM_EDGE_KEY_TEAM_A": FAKE_KEY}


def settings(*entries: dict[str, object], env: dict[str, str] | None = None) -> AuthSettings:
    return AuthSettings.from_table({"keys": list(entries)}, ENV if env is None else env)


def config_error(table: object, env: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        AuthSettings.from_table(table, ENV if env is None else env)  # type: ignore[arg-type]
    return str(info.value)


# -- settings --------------------------------------------------------------------------------------


def test_no_keys_means_no_key_required() -> None:
    tables: tuple[dict[str, list[object]] | None, ...] = (None, {}, {"keys": []})
    for table in tables:
        s = AuthSettings.from_table(table, {})
        assert not s.required and s.keys == ()
    keys = Keys(AuthSettings())
    assert not keys.required and keys.tenants[-1] == b"" and keys.names[-1] == ""


def test_the_three_ways_to_give_a_key() -> None:
    s = settings(
        {"name": "team-a", "key_env": "LLM_EDGE_KEY_TEAM_A", "rpm": 600, "tpm": 200_000, "budget_usd": 50.0},
        {"name": "team-b", "key_sha256": hashlib.sha256(OTHER_KEY.encode()).hexdigest().upper()},
        {"name": "ci.bot@x:1", "key": "plain-test-key"},
    )
    assert s.required
    a, b, c = s.keys
    assert a == KeySettings("team-a", digest_of(FAKE_KEY.encode()), 600, 200_000, 50 * NANO)
    assert b.digest == digest_of(OTHER_KEY.encode()) and (b.rpm, b.tpm, b.budget_nusd) == (0, 0, 0)
    assert c.digest == hashlib.sha256(b"plain-test-key").digest()


def test_budget_is_converted_to_exact_nano_dollars() -> None:
    s = settings({"name": "a", "key": "k1", "budget_usd": 0.1}, {"name": "b", "key": "k2", "budget_usd": 3})
    assert [k.budget_nusd for k in s.keys] == [100_000_000, 3 * NANO]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "a", "key": "k", "rpm": 0}, "auth.keys[0].rpm: expected an integer from 1 to"),
        ({"name": "a", "key": "k", "rpm": True}, "auth.keys[0].rpm: expected an integer"),
        ({"name": "a", "key": "k", "rpm": 1.5}, "auth.keys[0].rpm: expected an integer"),
        ({"name": "a", "key": "k", "tpm": -1}, "auth.keys[0].tpm: expected an integer"),
        ({"name": "a", "key": "k", "budget_usd": 0}, "auth.keys[0].budget_usd: expected a number of USD > 0"),
        ({"name": "a", "key": "k", "budget_usd": float("inf")}, "auth.keys[0].budget_usd:"),
        ({"name": "a", "key": "k", "budget_usd": "5"}, "auth.keys[0].budget_usd:"),
        ({"name": "a", "key": "k", "budget_usd": 1e-12}, "auth.keys[0].budget_usd: must be at least"),
        ({"name": "a", "key": "k", "limit": 3}, "auth.keys[0].limit: unknown key"),
        ({"key": "k"}, "auth.keys[0].name: required"),
        ({"name": "has space", "key": "k"}, "auth.keys[0].name:"),
        ({"name": "a"}, "auth.keys[0]: set exactly one of key_env, key_sha256 or key"),
        ({"name": "a", "key": "k", "key_env": "X"}, "auth.keys[0]: set exactly one of"),
        ({"name": "a", "key_env": "MISSING"}, "auth.keys[0].key_env: the environment variable 'MISSING' is not set"),
        ({"name": "a", "key_env": ""}, "auth.keys[0].key_env: expected the name"),
        ({"name": "a", "key": ""}, "auth.keys[0].key: must not be empty"),
        ({"name": "a", "key": 42}, "auth.keys[0].key: expected a string"),
        ({"name": "a", "key_sha256": "abc"}, "auth.keys[0].key_sha256: expected 64 hexadecimal characters"),
    ],
)
def test_errors_name_the_key(entry: dict[str, object], message: str) -> None:
    assert config_error({"keys": [entry]}).startswith(message)


def test_table_level_errors() -> None:
    assert config_error([]).startswith("auth: expected a table")
    assert config_error({"key": []}).startswith("auth.key: unknown key")
    assert config_error({"keys": {"name": "a"}}).startswith("auth.keys: expected an array of tables")
    two = [{"name": "a", "key": "k1"}, {"name": "a", "key": "k2"}]
    assert config_error({"keys": two}) == "auth.keys[1].name: duplicate key name 'a'"
    same = [{"name": "a", "key": "k1"}, {"name": "b", "key": "k1"}]
    assert config_error({"keys": same}) == "auth.keys[1]: the same key as auth.keys[0] ('a')"


# -- the key never leaks ---------------------------------------------------------------------------


def assert_clean(text: str | bytes) -> None:
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    assert FAKE_KEY not in text
    assert FAKE_KEY[-10:] not in text and FAKE_KEY[:14] not in text  # nor a recognisable part of it


def test_config_errors_never_contain_the_key() -> None:
    cases = [
        {"keys": [{"name": "a", "key": FAKE_KEY}, {"name": "b", "key": FAKE_KEY}]},  # duplicate key
        {"keys": [{"name": "a", "key": FAKE_KEY + " "}]},  # whitespace
        {"keys": [{"name": "a", "key_sha256": FAKE_KEY}]},  # a key pasted where its hash belongs
        {"keys": [{"name": "a", "key": FAKE_KEY, "rpm": "many"}]},
    ]
    for table in cases:
        assert_clean(config_error(table))
    env = {"LLM_EDGE_KEY_TEAM_A": " " + FAKE_KEY}
    assert_clean(config_error({"keys": [{"name": "a", "key_env": "LLM_EDGE_KEY_TEAM_A"}]}, env=env))


def test_reprs_snapshots_errors_metrics_and_logs_never_contain_the_key() -> None:
    s = settings({"name": "team-a", "key_env": "LLM_EDGE_KEY_TEAM_A", "rpm": 1, "tpm": 10, "budget_usd": 1e-6})
    keys = Keys(s)
    assert_clean(repr(s))
    assert_clean(repr(s.keys[0]))
    assert_clean(repr(keys))
    assert_clean(repr(keys.limits))
    k = keys.authenticate(FAKE_KEY.encode())
    assert k == 0
    assert keys.admit(k, 0.0, 5)[0]
    keys.charge(k, 0.0, 5, 5, 2_000)
    refusals = [keys.refusal(k, why, wait) for why, wait in ((RPM, 1.0), (TPM, 2.0), (BUDGET, 0.0))]
    refusals += [keys.rejection(b""), keys.rejection(FAKE_KEY.encode() + b"x")]
    for exc in refusals:
        assert_clean(str(exc))
        assert_clean(exc.headers())
        assert_clean(error_response(exc.status, exc.message, exc.type, exc.code, extra=exc.headers()))
    assert_clean(orjson.dumps(keys.snapshot(0.0)))
    assert_clean(render(keys=keys))
    lines: list[bytes] = []
    log = AccessLog(AccessLogSettings("-"), sink=lines.append)
    log.append((1.0, "r1", "/v1/messages", "m", "anthropic", 0, 200, False, 0.1, 1e-5, 0.0, 5, 5, 2_000, "", 1,
                keys.names[k]))  # fmt: skip
    log.flush(100.0, 1.0)
    assert_clean(b"".join(lines))
    assert b'"key":"team-a"' in lines[0]


# -- presented key -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        (b"authorization", b"Bearer sk-1", b"sk-1"),
        (b"authorization", b"bearer sk-1", b"sk-1"),
        (b"authorization", b"BEARER   sk-1  ", b"sk-1"),
        (b"authorization", b"  Bearer sk-1", b"sk-1"),
        (b"authorization", b"Basic dXNlcjpwYXNz", b""),
        (b"authorization", b"Bearer", b""),
        (b"authorization", b"Bearer ", b""),
        (b"authorization", b"sk-1", b""),
        (b"x-api-key", b"sk-ant-1", b"sk-ant-1"),
        (b"x-api-key", b"  sk-ant-1 ", b"sk-ant-1"),
        (b"x-api-key", b"", b""),
        (b"api-key", b"sk-1", b""),
        (b"content-type", b"Bearer x", b""),
    ],
)
def test_presented_key(name: bytes, value: bytes, expected: bytes) -> None:
    assert presented_key(name, value) == expected
    assert (name in KEY_HEADERS) == (name in (b"authorization", b"x-api-key"))


def test_key_from_headers_as_each_sdk_sends_it() -> None:
    openai_sdk = [(b"host", b"gw"), (b"authorization", b"Bearer sk-oa"), (b"content-type", b"application/json")]
    anthropic_sdk = [(b"x-api-key", b"sk-an"), (b"anthropic-version", b"2023-06-01")]
    both = [(b"authorization", b"Bearer sk-token"), (b"x-api-key", b"sk-an")]
    assert key_from_headers(openai_sdk) == b"sk-oa"
    assert key_from_headers(anthropic_sdk) == b"sk-an"
    assert key_from_headers(both) == b"sk-an"  # x-api-key wins, whatever the order
    assert key_from_headers(list(reversed(both))) == b"sk-an"
    assert key_from_headers([(b"x-api-key", b""), (b"authorization", b"Bearer sk-t")]) == b"sk-t"
    assert key_from_headers([(b"authorization", b"Basic x")]) == b""
    assert key_from_headers([]) == b""


# -- runtime -----------------------------------------------------------------------------------------


def test_authenticate_is_a_digest_lookup() -> None:
    keys = Keys(settings({"name": "team-a", "key_env": "LLM_EDGE_KEY_TEAM_A"}, {"name": "team-b", "key": OTHER_KEY}))
    assert keys.authenticate(FAKE_KEY.encode()) == 0
    assert keys.authenticate(OTHER_KEY.encode()) == 1
    assert keys.authenticate(FAKE_KEY.encode()[:-1]) == -1
    assert keys.authenticate(FAKE_KEY.encode() + b" ") == -1  # presented_key strips; authenticate does not
    assert keys.authenticate(b"") == -1
    assert (keys.missing, keys.invalid) == (1, 2)
    assert keys.tenants == [b"team-a", b"team-b", b""]
    assert keys.names[1] == "team-b" and keys.names[-1] == ""


def test_request_path_end_to_end() -> None:
    keys = Keys(settings({"name": "team-a", "key": FAKE_KEY, "rpm": 2, "tpm": 1000, "budget_usd": 0.00001}))
    headers = [(b"authorization", b"Bearer " + FAKE_KEY.encode())]
    k = keys.authenticate(key_from_headers(headers))
    assert keys.tenants[k] == b"team-a"
    assert keys.admit(k, 0.0, 100) == (True, 0.0, "")
    keys.charge(k, 0.0, 100, 50, 6_000, 100)
    assert keys.admit(k, 0.0, 100)[0]
    ok, wait, why = keys.admit(k, 0.0, 100)
    assert (ok, why) == (False, RPM) and wait == pytest.approx(30.0)
    keys.charge(k, 1.0, 10, 10, 6_000, 100)  # budget now used up (12,000 of 10,000 nano-dollars)
    assert keys.admit(k, 100.0, 1) == (False, 0.0, BUDGET)
    rows = keys.snapshot(100.0)
    assert rows[0]["key"] == "team-a" and rows[0]["spent_nusd"] == 12_000 and rows[0]["refused_budget"] == 1


def test_refusals_have_the_right_status_type_and_retry_headers() -> None:
    keys = Keys(settings({"name": "team-a", "key": FAKE_KEY, "rpm": 600, "tpm": 200_000, "budget_usd": 50}))
    rpm = keys.refusal(0, RPM, 0.25)
    assert isinstance(rpm, KeyRateLimitedError) and isinstance(rpm, GatewayError)
    assert (rpm.status, rpm.type, rpm.code) == (429, "requests", "rate_limit_exceeded")
    assert rpm.headers() == b"retry-after: 1\r\nretry-after-ms: 250\r\n"
    assert "team-a" in rpm.message and "600" in rpm.message
    tpm = keys.refusal(0, TPM, 2.5)
    assert (tpm.status, tpm.type) == (429, "tokens") and b"retry-after: 3\r\n" in tpm.headers()
    budget = keys.refusal(0, BUDGET, 0.0)
    assert isinstance(budget, BudgetExhaustedError)
    assert (budget.status, budget.type, budget.code) == (429, "insufficient_quota", "insufficient_quota")
    assert budget.headers() == b"x-should-retry: false\r\n"
    assert "50 USD" in budget.message
    missing, invalid = keys.rejection(b""), keys.rejection(b"nope")
    assert isinstance(missing, InvalidKeyError) and (missing.status, missing.code) == (401, "invalid_api_key")
    assert "Authorization: Bearer" in missing.message and invalid.message == "invalid gateway key"
    body = orjson.loads(error_response(401, invalid.message, invalid.type, invalid.code).split(b"\r\n\r\n", 1)[1])
    assert body == {"error": {"message": "invalid gateway key", "type": "invalid_request_error", "param": None,
                              "code": "invalid_api_key"}}  # fmt: skip


def test_retry_after_is_capped_for_every_sdk() -> None:
    assert retry_after_headers(0.0001) == b"retry-after: 1\r\nretry-after-ms: 1\r\n"
    assert retry_after_headers(1.0) == b"retry-after: 1\r\nretry-after-ms: 1000\r\n"
    assert retry_after_headers(1.001) == b"retry-after: 2\r\nretry-after-ms: 1001\r\n"
    assert retry_after_headers(600.0) == b"retry-after: 60\r\nretry-after-ms: 60000\r\n"


def test_workers_share_the_limits() -> None:
    keys = Keys(settings({"name": "a", "key": "k1", "rpm": 8}), workers=4)
    assert [keys.admit(0, 0.0, 0)[0] for _ in range(3)] == [True, True, False]
