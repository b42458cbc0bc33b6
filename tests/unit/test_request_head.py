"""request_head: which request headers the gateway acts on, in every spelling clients use."""

from __future__ import annotations

import pytest

from proxy import request_head as rh

FORWARDED = (b"openai-organization", b"openai-project", b"openai-beta", b"anthropic-beta")


@pytest.mark.parametrize(
    "name,action",
    [
        (b"content-length", rh.CONTENT_LENGTH), (b"Content-Length", rh.CONTENT_LENGTH),
        (b"CONTENT-LENGTH", rh.CONTENT_LENGTH), (b"host", rh.HOST), (b"Host", rh.HOST), (b"expect", rh.EXPECT),
        (b"connection", rh.CONNECTION), (b"cache-control", rh.CACHE_CONTROL),
        (b"anthropic-version", rh.ANTHROPIC_VERSION), (b"x-llm-edge-cache-ttl", rh.CACHE_TTL),
        (b"transfer-encoding", rh.TRANSFER_ENCODING), (b"upgrade", rh.UPGRADE),
        (b"authorization", rh.CLIENT_KEY), (b"Authorization", rh.CLIENT_KEY), (b"x-api-key", rh.CLIENT_KEY),
        (b"X-Api-Key", rh.CLIENT_KEY), (b"openai-organization", rh.FORWARD), (b"Openai-Organization", rh.FORWARD),
        (b"anthropic-beta", rh.ANTHROPIC_BETA), (b"Anthropic-Beta", rh.ANTHROPIC_BETA),
    ],
)  # fmt: skip
def test_header_actions(name: bytes, action: int) -> None:
    assert rh.header_actions(FORWARDED)[name] == action


@pytest.mark.parametrize("name", [b"Accept", b"user-agent", b"X-Stainless-Lang", b"x-stainless-retry-count"])
def test_headers_the_sdks_send_are_known_and_ignored(name: bytes) -> None:
    actions = rh.header_actions(FORWARDED)
    assert name in actions and actions[name] is None


def test_unknown_headers_are_not_in_the_table() -> None:
    actions = rh.header_actions(FORWARDED)
    assert b"x-custom" not in actions
    assert actions.get(b"x-custom", rh.UNSEEN) == rh.UNSEEN


def test_the_client_key_is_never_forwarded_even_when_listed() -> None:
    actions = rh.header_actions((b"authorization", b"x-api-key"))
    assert actions[b"authorization"] == rh.CLIENT_KEY and actions[b"x-api-key"] == rh.CLIENT_KEY


def test_nothing_is_forwarded_when_nothing_is_listed() -> None:
    assert rh.FORWARD not in rh.header_actions(()).values()


def test_the_actions_are_distinct() -> None:
    actions = (rh.FORWARD, rh.CONTENT_LENGTH, rh.HOST, rh.EXPECT, rh.CONNECTION, rh.CACHE_CONTROL,
               rh.ANTHROPIC_VERSION, rh.ANTHROPIC_BETA, rh.CACHE_TTL, rh.CLIENT_KEY, rh.TRANSFER_ENCODING, rh.UPGRADE)
    assert len(set(actions)) == len(actions) and rh.UNSEEN not in actions
