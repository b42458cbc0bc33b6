"""Test doubles for protocol unit tests: a transport that records, a loop with a hand-driven clock.

Only unit tests of protocol classes use these; everything else runs on real sockets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class FakeTimer:
    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when_ = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def when(self) -> float:
        return self.when_



class FakeLoop:
    """Records timers and callbacks; `advance(dt)` moves the clock and fires what is due."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.timers: list[FakeTimer] = []
        self.ready: list[tuple[Callable[..., Any], tuple[Any, ...]]] = []
        self.tasks: list[Any] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        timer = FakeTimer(when, callback, args)
        self.timers.append(timer)
        return timer

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> FakeTimer:
        return self.call_at(self.now + delay, callback, *args)

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        self.ready.append((callback, args))

    def create_task(self, coro: Any) -> Any:
        coro.close()  # protocol unit tests never connect for real
        task = _FakeTask()
        self.tasks.append(task)
        return task

    def run_ready(self) -> None:
        while self.ready:
            callback, args = self.ready.pop(0)
            callback(*args)

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.run_ready()
        due = sorted((t for t in self.timers if not t.cancelled and t.when_ <= self.now), key=lambda t: t.when_)
        for timer in due:
            self.timers.remove(timer)
            if not timer.cancelled:
                timer.callback(*timer.args)
        self.run_ready()

    @property
    def pending_timers(self) -> list[FakeTimer]:
        return [t for t in self.timers if not t.cancelled]


class _FakeTask:
    def add_done_callback(self, fn: Callable[..., Any]) -> None:
        pass

    def cancel(self) -> None:
        pass


class FakeTransport:
    """Collects writes; closing schedules `connection_lost` on the loop, as a real transport does."""

    def __init__(self, loop: FakeLoop, protocol: Any = None) -> None:
        self.loop = loop
        self.protocol = protocol
        self.buffer = bytearray()
        self.writes: list[bytes] = []
        self.closed = False
        self.read_paused = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.writes.append(bytes(data))
        self.buffer += data

    def writelines(self, items: Any) -> None:
        self.write(b"".join(items))

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.protocol is not None:
                self.loop.call_soon(self.protocol.connection_lost, None)

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0  # every write "reached" the peer

    def abort(self) -> None:
        self.close()

    def pause_reading(self) -> None:
        self.read_paused = True

    def resume_reading(self) -> None:
        self.read_paused = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def take(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data
