"""--workers N: sockets sharing one port, and the parent that relays signals and stops the rest
when a worker dies (real processes, stopped by pid)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import orjson

from proxy.workers import _listening_socket
from tests.harness import wait_for
from tests.unit.protocol_harness import GatewayProcess

CONFIG = """
[server]
listen = "127.0.0.1:0"
shutdown_timeout_s = 5

[[providers]]
name = "a"
kind = "local"
base_url = "http://127.0.0.1:9/v1"

[[models]]
name = "fast"
routes = [{ provider = "a", model = "m1" }]
"""


def test_sockets_share_one_port() -> None:
    first = _listening_socket("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        second = _listening_socket("127.0.0.1", port)  # SO_REUSEPORT: the same port, twice
        try:
            assert second.getsockname()[1] == port and not second.getblocking()
        finally:
            second.close()
    finally:
        first.close()


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def start(tmp_path: Path, workers: int) -> GatewayProcess:
    path = tmp_path / "llm-edge.toml"
    path.write_text(CONFIG)
    return GatewayProcess(["--config", str(path), "--workers", str(workers)])


def test_workers_serve_and_stop_on_sigterm(tmp_path: Path) -> None:
    gateway = start(tmp_path, 2)
    try:
        assert wait_for(lambda: len(children(gateway.proc.pid)) == 2, timeout=10)
        for _ in range(4):
            assert gateway.get("/healthz")[0] == 200
        stats = orjson.loads(gateway.get("/stats")[1])
        assert stats["worker"] in (0, 1)
        gateway.signal(signal.SIGTERM)
        assert gateway.wait() == 0
    finally:
        gateway.stop()


def test_a_dead_worker_stops_the_others(tmp_path: Path) -> None:
    gateway = start(tmp_path, 2)
    try:
        assert wait_for(lambda: len(children(gateway.proc.pid)) == 2, timeout=10)
        first, second = children(gateway.proc.pid)
        os.kill(first, signal.SIGKILL)  # a worker we started dies
        assert gateway.wait() != 0
        assert not os.path.exists(f"/proc/{second}")  # the parent stopped and reaped the other one first
    finally:
        gateway.stop()
