# sim/soak/schedule.py: the faults the soak injects into the faulty provider, and when.
#
# Rules: pure (no I/O, no clock). A fault is a set of the regular mocks' runtime settings
# (`POST /_mock/config`); HEALTHY undoes every one of them. The faults take turns in windows:
# on for FAULT_ON_SHARE of a slot, then healthy for the rest, so the router must fail over and
# then come back; the slot is run/16, between 1.5 s and 10 s; a phase always ends healthy. The
# warm-up tours every fault once in short slots (WARMUP_SLOT_S).
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sim.soak.mix import FAULTY


@dataclass(frozen=True)
class Fault:
    """A misbehaviour of the faulty provider, as mock runtime settings."""

    name: str
    changes: dict[str, Any]
    midstream: bool  # strikes after the head: streams it hits are "errored", not lost
    label: str


FAULTS = (
    Fault("errors_500", {"error_rate": 1.0, "error_status": 500}, False, "every request a 500"),
    Fault("stall", {"ttft_ms": 200.0}, False, "first byte after 200 ms (under the 0.5 s attempt deadline)"),
    Fault("errors_429", {"error_rate": 0.5, "error_status": 429, "retry_after": 0.5}, False,
          "half the requests a 429 with retry-after 0.5"),
    Fault("stream_abort", {"stream_abort_after": 3}, True, "streams cut (connection closed) after 3 tokens"),
    Fault("idle_close", {"keepalive_timeout_s": 0.02}, False, "pooled connections closed after 20 ms idle"),
    Fault("errors_503", {"error_rate": 0.3, "error_status": 503, "retry_after": 0.5}, False,
          "30% of the requests a 503 with retry-after 0.5"),
    Fault("stall_past_deadline", {"ttft_ms": 1200.0}, False,
          "first byte after 1.2 s (past the 0.5 s attempt deadline: fall back)"),
    Fault("stream_error", {"stream_error_after": 3}, True,
          "streams end with the provider's error event after 3 tokens"),
)  # fmt: skip
HEALTHY: dict[str, Any] = {
    "error_rate": 0.0, "error_status": 500, "retry_after": 1.0, "ttft_ms": FAULTY.ttft_ms,
    "stream_abort_after": -1, "stream_error_after": -1, "keepalive_timeout_s": 75.0,
}  # fmt: skip
FAULT_ON_SHARE = 0.6
WARMUP_S = 5.0
WARMUP_SLOT_S = 0.5


@dataclass(frozen=True)
class Window:
    """A planned fault window, in seconds from its phase's start."""

    fault: Fault
    on: float
    off: float


def schedule(duration: float, slot: float | None = None, faults: Sequence[Fault] = FAULTS) -> list[Window]:
    """The fault windows of a phase of `duration` seconds: each slot starts with a fault (on for
    FAULT_ON_SHARE of it) and ends healthy; faults take turns; the phase always ends healthy."""
    if slot is None:
        slot = min(10.0, max(1.5, duration / 16))
    out = []
    i = 0
    while (i + 1) * slot <= duration + 1e-9:
        out.append(Window(faults[i % len(faults)], i * slot, i * slot + slot * FAULT_ON_SHARE))
        i += 1
    return out


def warmup_tour(faults: Sequence[Fault] = FAULTS) -> list[Window]:
    """Every fault once, in WARMUP_SLOT_S slots: the warm-up meets each before the measuring starts."""
    return [Window(f, i * WARMUP_SLOT_S, i * WARMUP_SLOT_S + WARMUP_SLOT_S * FAULT_ON_SHARE)
            for i, f in enumerate(faults)]  # fmt: skip
