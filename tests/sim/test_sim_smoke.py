"""`python -m sim` end to end: real mocks, real gateway, a load process; and no orphans after.

Every run carries a unique environment marker that its children inherit, so the tests can
find leftover processes in /proc whatever their parent has become.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import uuid
from dataclasses import replace
from pathlib import Path

import orjson
import pytest

from sim import loadgen, report, workload
from sim.procs import StartError
from sim.stack import DEFAULT_PROVIDERS, Stack
from tests.sim.sim_testing import MISSING, env, marked_pids, reap, sim

pytestmark = pytest.mark.skipif(
    bool(MISSING), reason=f"needs the real gateway and mock providers; not written yet: {', '.join(MISSING)}"
)


LABELS = [
    r"Total Requests: 200", r"Success: 200", r"Errors: 0", r"Total Time: \d+\.\d\ds", r"RPS: \d+",
    r"Latency p50: [\d.]+ µs", r"Latency p90: [\d.]+ µs", r"Latency p99: [\d.]+ µs",
    r"Overhead p50: [\d.]+ µs", r"Overhead p99: [\d.]+ µs",
    r"Provider local-fast: \d+ requests \([\d.]+%\), \d+ errors, \$[\d.]+",
    r"Provider cloud-pricier: \d+ requests \([\d.]+%\), \d+ errors, \$[\d.]+",
]


@pytest.mark.timeout(90)
def test_sim_prints_the_labelled_report() -> None:
    done, _ = sim("--requests", "200")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    for label in LABELS:
        assert any(re.fullmatch(label, line) for line in lines), (label, done.stdout)
    per_provider = [int(m.group(1)) for m in re.finditer(r"^Provider \S+: (\d+) requests", done.stdout, re.M)]
    assert sum(per_provider) == 200


@pytest.mark.timeout(90)
def test_sim_streams_and_prints_json() -> None:
    done, _ = sim("--stream", "--requests", "200", "--concurrency", "8", "--json", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    rep = orjson.loads(done.stdout)
    assert (rep["total_requests"], rep["success"], rep["errors"]) == (200, 200, 0)
    assert rep["run"]["stream"] is True and rep["run"]["concurrency"] == 8
    assert rep["overhead_us"]["p50"] > 0
    assert sum(p["requests"] for p in rep["providers"]) == 200
    assert done.stderr == ""


@pytest.mark.timeout(90)
def test_sim_open_loop() -> None:
    done, _ = sim("--rate", "400", "--requests", "200", "--json", "--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    rep = orjson.loads(done.stdout)
    assert rep["total_requests"] == 200 and rep["run"]["mode"] == "open"
    assert 0.49 <= rep["total_time_s"] < 3.0
    assert rep["send_lag_us"]["max"] >= 0


@pytest.mark.timeout(90)
def test_sim_exits_nonzero_when_requests_fail() -> None:
    done, _ = sim("--requests", "50", "--timeout", "0.001", "--quiet")  # below the mocks' 2 ms TTFT
    assert done.returncode == 1, done.stdout + done.stderr
    errors = int(re.search(r"^Errors: (\d+)$", done.stdout, re.M).group(1))  # type: ignore[union-attr]
    assert errors > 0
    assert "Error timeout:" in done.stdout


@pytest.mark.timeout(90)
def test_default_run_is_quick() -> None:
    done, elapsed = sim("--quiet")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Total Requests: 5000" in done.stdout.splitlines()
    assert elapsed < 15, f"default run took {elapsed:.1f}s"


@pytest.mark.timeout(90)
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 128 + signal.SIGTERM)])
def test_interrupt_stops_every_child(sig: signal.Signals, code: int) -> None:
    marker = uuid.uuid4().hex
    proc = subprocess.Popen([sys.executable, "-m", "sim", "--duration", "60"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env(marker), cwd="/")
    try:
        for line in proc.stderr:  # type: ignore[union-attr]
            if "done" in line:  # the first progress line: the load is running
                break
        assert len(marked_pids(marker)) >= 5  # 2 mocks, gateway, load process (+ sim itself)
        proc.send_signal(sig)
        assert proc.wait(20) == code
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
        left = reap(marker)
    assert left == []


@pytest.mark.timeout(60)
def test_stack_runtime_knobs_and_stats() -> None:
    with Stack() as stack:
        pids = [c.pid for c in stack.children()]
        assert len(pids) == 3 and all(c.alive() for c in stack.children())
        for name in ("local-fast", "cloud-pricier"):  # both, whatever the router picks
            stack.mock_config(name, ttft_ms=20.0)
        with pytest.raises(RuntimeError, match="400"):
            stack.mock_config("cloud-pricier", no_such_setting=1)
        host, port = stack.gateway_addr
        spec = loadgen.LoadSpec(host, port, workload.build(workload.Workload(unique=20), f"{host}:{port}"),
                                requests=20, concurrency=2)
        r = loadgen.run_process(spec)
        assert (r.requests, r.ok) == (20, 20)
        assert r.latency.min >= 15_000  # the new TTFT is in force (timers may fire ~1 ms early)
        stats = stack.stats()
        assert stats["overhead_us"]["count"] >= 20
        assert sum(p["requests"] for p in report.providers_from_stats(stats)) == 20
    assert not any(c.alive() for c in stack.children())
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists()


@pytest.mark.timeout(60)
def test_stack_start_failure_shows_the_gateway_log_and_stops_the_mocks() -> None:
    bad = [replace(DEFAULT_PROVIDERS[0], kind="no-such-kind")]
    stack = Stack(bad)
    with pytest.raises(StartError, match=r"gateway exited with \d+ before it was ready(.|\n)*\|"):
        with stack:
            pass
    assert stack.mocks and not any(c.alive() for c in stack.children())
