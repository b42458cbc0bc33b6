# Settings of one mock provider: `MockConfig`, and the only place that validates them.
#
# The same field names are used everywhere: the CLI flags (`--ttft-ms` -> `ttft_ms`), the in-process
# API (`server.config.error_rate = 1.0`) and the HTTP control endpoint (`POST /_mock/config` with
# `{"error_rate": 1.0}`). The config object is mutable on purpose: tests and the simulator change it
# while the mock is serving, and the hot path reads it per request (plain attribute loads).
# Nothing here does I/O.

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

KINDS = ("openai", "anthropic")


@dataclass(slots=True)
class MockConfig:
    """Behaviour of a mock provider. Every field may be changed at runtime except `kind`.

    Delays are in milliseconds; `jitter_ms` adds a uniform random 0..jitter to every delay (the
    time to first token and each token gap). Negative `stream_abort_after`/`stream_error_after`
    disable those faults.
    """

    kind: str = "openai"
    ttft_ms: float = 0.0  # before the first token (streamed) or the whole answer (non-streamed)
    token_delay_ms: float = 0.0  # between streamed tokens
    jitter_ms: float = 0.0
    tokens: int = 16  # completion tokens per answer, before max_tokens capping
    error_rate: float = 0.0  # fraction of API requests answered with `error_status`
    error_status: int = 500
    retry_after: float = 1.0  # `retry-after` seconds sent with injected 429/503/529
    require_key: str | None = None  # 401 unless the request carries this key
    keepalive_timeout_s: float = 75.0  # idle keep-alive connections are closed after this; <= 0: no keep-alive
    seed: int | None = None  # RNG seed for jitter and error sampling
    stream_abort_after: int = -1  # close the connection after this many streamed tokens
    stream_error_after: int = -1  # send the provider's mid-stream error event after this many tokens

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict, keyed by field name."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def update(self, changes: Mapping[str, Any]) -> None:
        """Apply `changes` (field name -> value) atomically, after validating all of them.

        Raises `ValueError` naming the first bad key; on error nothing is changed.
        """
        coerced: dict[str, Any] = {}
        for name, value in changes.items():
            conv = _COERCE.get(name)
            if conv is None:
                raise ValueError(f"unknown mock setting: {name!r}")
            try:
                coerced[name] = conv(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"bad value for {name!r}: {exc}") from None
        for name, value in coerced.items():
            setattr(self, name, value)

    def validate(self) -> None:
        """Raise `ValueError` if any current value is out of range (used after construction)."""
        self.update(self.to_dict())


def _number(lo: float, hi: float = math.inf) -> Callable[[Any], float]:
    def conv(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise TypeError("expected a number")
        f = float(value)
        if not lo <= f <= hi:  # also rejects NaN
            raise ValueError(f"must be within [{lo}, {hi}]")
        return f

    return conv


def _integer(lo: int, hi: int | None = None) -> Callable[[Any], int]:
    def conv(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise TypeError("expected an integer")
        i = int(value)
        if i < lo or (hi is not None and i > hi):
            raise ValueError(f"must be within [{lo}, {hi if hi is not None else 'inf'}]")
        return i

    return conv


def _optional(conv: Callable[[Any], Any]) -> Callable[[Any], Any]:
    return lambda value: None if value is None else conv(value)


def _kind(value: Any) -> str:
    if value not in KINDS:
        raise ValueError(f"must be one of {KINDS}")
    return str(value)


def _key(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


_COERCE: dict[str, Callable[[Any], Any]] = {
    "kind": _kind,
    "ttft_ms": _number(0.0),
    "token_delay_ms": _number(0.0),
    "jitter_ms": _number(0.0),
    "tokens": _integer(0, 1_000_000),
    "error_rate": _number(0.0, 1.0),
    "error_status": _integer(400, 599),
    "retry_after": _number(0.0),
    "require_key": _optional(_key),
    "keepalive_timeout_s": _number(-math.inf),
    "seed": _optional(_integer(-(2**63))),
    "stream_abort_after": _integer(-1),
    "stream_error_after": _integer(-1),
}
