"""apis: the API formats as small distinct integers, the index every per-API table uses."""

from __future__ import annotations

from proxy import apis


def test_api_constants_are_distinct_small_integers() -> None:
    assert sorted((apis.OPENAI, apis.ANTHROPIC)) == [0, 1]
