# tests/sim/sim_testing.py: helpers shared by the simulator tests (no pytest-asyncio).
#
# `arun(coro_fn, loop_kind)` runs a coroutine on a fresh loop of the given kind and fails the
# test if anything reached the loop's exception handler (uvloop `_testbase.py` style). A
# uniquely named module, and no conftest.py in tests/sim: other test directories do
# `from conftest import ...`, which breaks when a second package-less conftest.py is loaded.
# Test modules import the `loop_kind` fixture from here.
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest

from sim.loadgen import new_loop

T = TypeVar("T")

LOOPS = ("uvloop", "asyncio")


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
