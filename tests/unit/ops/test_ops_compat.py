"""proxy/compat.py: decoded model paths, statuses OpenAI clients know, rate-limit headers."""

from __future__ import annotations

import pytest

from proxy.compat import decode_model_path, duration, openai_status, ratelimit_headers


@pytest.mark.parametrize(
    "path,model",
    [
        (b"/v1/models/openai%2Fgpt-4o-mini", "openai/gpt-4o-mini"),
        (b"/v1/models/openai/gpt-4o-mini", "openai/gpt-4o-mini"),
        (b"/v1/models/fast", "fast"),
        (b"/v1/models/fast/", "fast"),
        (b"/v1/models/fast?x=1", "fast"),
        (b"openai%2Fgpt-4o", "openai/gpt-4o"),
        (b"/v1/models/bad%0d%0ainjected", "badinjected"),
        (b"/v1/models/%ff", "\ufffd"),
        (b"/v1/models/" + b"a" * 1000, "a" * 256),
    ],
)
def test_decode_model_path(path: bytes, model: str) -> None:
    assert decode_model_path(path) == model


def test_anthropic_529_is_a_503_for_openai_clients() -> None:
    assert openai_status(529) == 503
    assert [openai_status(s) for s in (400, 429, 500, 503)] == [400, 429, 500, 503]


def test_ratelimit_headers_from_bucket_state() -> None:
    head = ratelimit_headers(rpm=60, remaining_requests=59.7, tpm=10_000, remaining_tokens=2_500.0)
    assert head == (
        b"x-ratelimit-limit-requests: 60\r\nx-ratelimit-remaining-requests: 59\r\nx-ratelimit-reset-requests: 300ms\r\n"
        b"x-ratelimit-limit-tokens: 10000\r\nx-ratelimit-remaining-tokens: 2500\r\nx-ratelimit-reset-tokens: 45s\r\n"
    )
    assert ratelimit_headers(0, -1.0, 0, -1.0) == b""  # a key with no limits
    assert b"remaining-requests: 0\r\n" in ratelimit_headers(10, -3.0, 0, -1.0)


@pytest.mark.parametrize(
    "seconds,text", [(0.0, "0s"), (-1.0, "0s"), (0.12, "120ms"), (1.0, "1s"), (1.5, "1.5s"), (360.0, "6m0s"),
                     (3723.0, "1h2m3s")],
)  # fmt: skip
def test_durations_in_openais_format(seconds: float, text: str) -> None:
    assert duration(seconds) == text
