# tests/sim/sim_testing.py: helpers shared by the simulator tests (no pytest-asyncio).
#
# `env(marker)`, `marked_pids` and `reap` find and kill children a run left behind.
# `arun(coro_fn, loop_kind)` runs a coroutine on a fresh loop of the given kind and fails the
# test if anything reached the loop's exception handler (uvloop `_testbase.py` style). A
# uniquely named module, and no conftest.py in tests/sim: other test directories do
# `from conftest import ...`, which breaks when a second package-less conftest.py is loaded.
# Test modules import the `loop_kind` fixture from here.
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from sim.loadgen import new_loop

T = TypeVar("T")

LOOPS = ("uvloop", "asyncio")
REPO = Path(__file__).resolve().parents[2]
MISSING = [m for m in ("proxy/__main__.py", "mocks/__main__.py") if not (REPO / m).exists()]


@pytest.fixture(params=LOOPS)
def loop_kind(request: pytest.FixtureRequest) -> str:
    """Every test that takes this runs on both event loops."""
    return str(request.param)


def arun(fn: Callable[[], Awaitable[T]], loop_kind: str = "uvloop") -> T:
    """Run ``fn()`` on a new loop; fail on unhandled loop exceptions."""
    errors: list[dict[str, Any]] = []
    with asyncio.Runner(loop_factory=lambda: new_loop(loop_kind)) as runner:
        runner.get_loop().set_exception_handler(lambda loop, ctx: errors.append(ctx))
        result = runner.run(fn())  # type: ignore[arg-type]
    assert not errors, f"unhandled loop exceptions: {errors}"
    return result


def marked_pids(marker: str) -> list[int]:
    """Pids of every process (but this one) whose environment carries ``marker`` (see `env`)."""
    needle = f"LLM_EDGE_SIM_TEST={marker}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def reap(marker: str) -> list[int]:
    """Kill (by pid) any process left over from the run carrying ``marker``; return their pids."""
    left = marked_pids(marker)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def env(marker: str) -> dict[str, str]:
    """This environment, marked so leftover children can be found in /proc, with the checkout on the path."""
    e = dict(os.environ)
    e["LLM_EDGE_SIM_TEST"] = marker
    e["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), e.get("PYTHONPATH", "")) if p)
    return e


def sim(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """`python -m sim ARGS` in a marked environment: (the finished process, seconds); no child may outlive it."""
    marker = uuid.uuid4().hex
    t = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "sim", *args], capture_output=True, text=True, timeout=60,
                              env=env(marker), cwd="/")
    finally:
        left = reap(marker)
    elapsed = time.monotonic() - t
    assert left == [], "child processes outlived python -m sim"
    return done, elapsed
