"""sim.procs: readiness line, health polling and stopping of child processes."""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sim import procs
from sim.procs import Child, StartError
from tests.sim import tiny_server


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[[str], Child]]:
    """Start `python -c CODE` children; every one is stopped after the test, pass or fail."""
    kids: list[Child] = []

    def start(code: str) -> Child:
        kids.append(Child("kid", [sys.executable, "-c", code], tmp_path / "kid.log", procs.child_env()).start())
        return kids[-1]

    yield start
    for kid in kids:
        kid.stop(grace=0.5)


def test_first_line_then_stop_by_pid(spawn: Callable[[str], Child]) -> None:
    c = spawn("import sys, time\nprint('listening on 127.0.0.1:4242', flush=True)\n"
                        "sys.stdout.write('x' * 200000); sys.stdout.flush()\ntime.sleep(60)")
    line = c.wait_line(10)
    assert procs.parse_hostport(line) == ("127.0.0.1", 4242)
    assert c.alive()
    t = time.monotonic()
    assert c.stop() == -15  # SIGTERM, by pid; the 200 kB after the line did not block it
    assert time.monotonic() - t < 2
    assert not c.alive()
    assert c.stop() == -15  # idempotent


def test_stubborn_child_is_killed(spawn: Callable[[str], Child]) -> None:
    c = spawn("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                        "print('127.0.0.1:1', flush=True)\ntime.sleep(60)")
    c.wait_line(10)
    assert c.stop(grace=0.3) == -9


def test_child_that_dies_before_ready_shows_its_log(spawn: Callable[[str], Child]) -> None:
    c = spawn("import sys\nprint('config is broken', file=sys.stderr)\nsys.exit(3)")
    with pytest.raises(StartError, match=r"exited with 3(.|\n)*config is broken"):
        c.wait_line(10)
    c.stop()


def test_silent_child_times_out(spawn: Callable[[str], Child]) -> None:
    c = spawn("import time\ntime.sleep(60)")
    with pytest.raises(StartError, match="no address line"):
        c.wait_line(0.3)
    c.stop()


def test_parse_hostport() -> None:
    assert procs.parse_hostport("127.0.0.1:8080\n") == ("127.0.0.1", 8080)
    assert procs.parse_hostport("llm-edge listening on 127.0.0.1:9") == ("127.0.0.1", 9)
    for bad in ("nothing here", "host:port"):
        with pytest.raises(ValueError):
            procs.parse_hostport(bad)


def test_wait_healthy(spawn: Callable[[str], Child]) -> None:
    c = spawn("import time\nprint('127.0.0.1:1', flush=True)\ntime.sleep(60)")
    c.wait_line(10)
    try:
        with tiny_server.ThreadedServer() as srv:
            procs.wait_healthy(c, "127.0.0.1", srv.port, "/ok", timeout=5)
            with pytest.raises(StartError, match="not healthy"):
                procs.wait_healthy(c, "127.0.0.1", srv.port, "/status/503", timeout=0.2)
    finally:
        c.stop()
    with pytest.raises(StartError, match="exited while waiting"):
        procs.wait_healthy(c, "127.0.0.1", srv.port, "/ok", timeout=5)  # server gone, child gone
