"""proxy/overrides.py: control headers lower limits, never raise them; who may use them; request ids."""

from __future__ import annotations

import math

import pytest

from proxy.errors import ConfigError
from proxy.overrides import (
    MAX_ATTEMPTS,
    MAX_RETRY_AFTER,
    NO_OVERRIDES,
    PROVIDER,
    TIMEOUT,
    KeyControls,
    OverrideError,
    allowed,
    parse,
    pinned_mask,
    request_id,
)

PROVIDERS = {"openai": 0, "anthropic": 1}


def test_no_header_is_the_shared_empty_object() -> None:
    assert parse({b"content-type": b"application/json"}, PROVIDERS) is NO_OVERRIDES
    assert NO_OVERRIDES.deadline_s(600.0) == 600.0 and NO_OVERRIDES.attempts(3) == 3
    assert NO_OVERRIDES.retry_after(429, 30.0) == (429, 30.0)


def test_timeout_lowers_the_deadline_and_never_raises_it() -> None:
    o = parse({TIMEOUT: b" 2.5 "}, PROVIDERS)
    assert o.deadline_s(600.0) == 2.5
    assert parse({TIMEOUT: b"9000"}, PROVIDERS).deadline_s(600.0) == 600.0


def test_max_attempts_lowers_and_never_raises() -> None:
    assert parse({MAX_ATTEMPTS: b"1"}, PROVIDERS).attempts(3) == 1
    assert parse({MAX_ATTEMPTS: b"10"}, PROVIDERS).attempts(3) == 3


def test_provider_pins_a_configured_provider() -> None:
    o = parse({PROVIDER: b"anthropic"}, PROVIDERS)
    assert o.provider_id == 1
    with pytest.raises(OverrideError, match="x-llm-edge-provider: no configured provider is named 'azure'"):
        parse({PROVIDER: b"azure"}, PROVIDERS)


def test_a_pin_becomes_a_tried_mask_over_the_models_routes() -> None:
    provider_of = (0, 1, 0, 1)  # route id -> provider id
    assert pinned_mask((0, 1), provider_of, 1) == 0b01  # route 0 marked tried: only route 1 is left
    assert pinned_mask((2, 3), provider_of, 0) == 0b1000
    assert pinned_mask((0, 2), provider_of, 1) == -1  # the model has no route on that provider


def test_max_retry_after_turns_a_long_wait_into_a_503_with_the_cap() -> None:
    o = parse({MAX_RETRY_AFTER: b"5"}, PROVIDERS)
    assert o.retry_after(429, 30.0) == (503, 5.0)
    assert o.retry_after(429, 3.0) == (429, 3.0)
    assert parse({MAX_RETRY_AFTER: b"0"}, PROVIDERS).retry_after(503, 1.0) == (503, 0.0)


@pytest.mark.parametrize(
    "name,value",
    [
        (TIMEOUT, b"0"), (TIMEOUT, b"-1"), (TIMEOUT, b"nan"), (TIMEOUT, b"inf"), (TIMEOUT, b"soon"),
        (TIMEOUT, b"\xff"), (MAX_ATTEMPTS, b"0"), (MAX_ATTEMPTS, b"2.5"), (MAX_ATTEMPTS, b"101"),
        (MAX_ATTEMPTS, b"-3"), (MAX_RETRY_AFTER, b"-1"), (MAX_RETRY_AFTER, b""),
    ],
)  # fmt: skip
def test_a_malformed_value_is_an_error_naming_the_header(name: bytes, value: bytes) -> None:
    with pytest.raises(OverrideError) as info:
        parse({name: value}, PROVIDERS)
    assert str(info.value).startswith(name.decode() + ":")


def test_who_may_use_them() -> None:
    assert not allowed(server_allows=False, keys_required=False, key_flag=True, is_admin=True)
    assert allowed(server_allows=True, keys_required=False, key_flag=None, is_admin=False)  # an open gateway
    assert allowed(server_allows=True, keys_required=True, key_flag=None, is_admin=True)
    assert not allowed(server_allows=True, keys_required=True, key_flag=None, is_admin=False)
    assert allowed(server_allows=True, keys_required=True, key_flag=True, is_admin=False)
    assert not allowed(server_allows=True, keys_required=True, key_flag=False, is_admin=True)


@pytest.mark.parametrize(
    "raw,kept",
    [
        (b"7b0d6c1e-1234", b"7b0d6c1e-1234"), (b"  abc  ", b"abc"), (None, None), (b"", None),
        (b"a" * 129, None), (b"has space", None), (b'quote"', None), (b"new\r\nline", None), (b"caf\xc3\xa9", None),
    ],
)  # fmt: skip
def test_a_client_request_id_is_kept_only_when_sane(raw: bytes | None, kept: bytes | None) -> None:
    assert request_id(raw) == kept


def test_key_controls_from_a_key_table() -> None:
    assert KeyControls.from_key_table({}, "auth.keys[0]") == KeyControls(None, 0, 0)
    controls = KeyControls.from_key_table({"allow_overrides": True, "per_user_rpm": 30, "per_user_tpm": 9000}, "k")
    assert controls == KeyControls(True, 30, 9000)
    for bad in ({"allow_overrides": "yes"}, {"per_user_rpm": -1}, {"per_user_tpm": 1.5}, {"per_user_rpm": True}):
        with pytest.raises(ConfigError, match=r"auth\.keys\[2\]\."):
            KeyControls.from_key_table(bad, "auth.keys[2]")
    assert set(KeyControls.FIELDS) == {"allow_overrides", "per_user_rpm", "per_user_tpm"}
    assert math.isinf(NO_OVERRIDES.timeout_s)
