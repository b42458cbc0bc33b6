# sim/__main__.py: `python -m sim`, the gateway simulator's command line.
#
# Phases, in order: parse options → start the stack (two mock providers + the gateway, each a
# process) → prebuild the workload → flood the gateway from a load process → read the
# gateway's /stats → print the report. Every child is stopped by pid on the way out, also on
# Ctrl-C, SIGTERM or an error. Exit status: 0 when every request succeeded, 1 when some
# failed, 2 when the stack or the load could not start, 130/143 when interrupted.
#
# Later options slot in here: `--scenario` becomes an object driven by `Monitor.tick` (it
# already runs once per second in this thread, next to `Stack.mock_config` and
# `Stack.stats`), `--repeat-ratio` a field of `workload.Workload`, `--soak` a long
# `--duration` with periodic reports (the load generator's memory use is constant).
from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any

import orjson

from sim import loadgen, report, workload
from sim.procs import StartError
from sim.stack import Stack

DEFAULT_REQUESTS = 5000
DEFAULT_CONCURRENCY = 32


@dataclass(frozen=True)
class Settings:
    """Everything one simulator run needs, after the command line is parsed."""

    requests: int | None
    duration: float | None
    concurrency: int
    rate: float | None
    connections: int | None
    stream: bool
    tokens: int
    timeout: float
    loadgen_cpu: str | None
    gateway_cpu: str | None
    gateway_loop: str | None
    json: bool
    quiet: bool

    def mode(self) -> str:
        """"open" with a fixed arrival rate, else "closed"."""
        return "open" if self.rate is not None else "closed"


def parse_args(argv: list[str] | None = None) -> Settings:
    """Parse and check the command line."""
    p = argparse.ArgumentParser(
        prog="python -m sim",
        description="Start two mock providers and the llm-edge gateway, flood it, report throughput and overhead.",
    )
    load = p.add_argument_group("load")
    load.add_argument("--requests", type=int, help=f"total requests (default {DEFAULT_REQUESTS} unless --duration)")
    load.add_argument("--duration", type=float, help="run for this many seconds")
    load.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="closed loop: requests in flight")
    load.add_argument("--rate", type=float, help="open loop: requests per second on a fixed schedule")
    load.add_argument("--connections", type=int, help="open loop: max connections (default: --concurrency)")
    load.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds (default 10)")
    load.add_argument("--loadgen-cpu", metavar="CPUS", help="pin the load process (e.g. 1 or 2-3)")
    gw = p.add_argument_group("gateway")
    gw.add_argument("--gateway-cpu", metavar="CPUS", help="pin the gateway process (e.g. 0)")
    gw.add_argument("--gateway-loop", choices=("uvloop", "asyncio"), help="the gateway's event loop (A/B runs)")
    work = p.add_argument_group("workload")
    work.add_argument("--stream", action="store_true", help="streamed requests (SSE, with include_usage)")
    work.add_argument("--tokens", type=int, default=16, help="completion tokens per mock answer (default 16)")
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the report as one JSON object")
    out.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    a = p.parse_args(argv)
    if a.requests is None and a.duration is None:
        a.requests = DEFAULT_REQUESTS
    for name in ("requests", "concurrency", "connections", "tokens"):
        value = getattr(a, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be >= 1")
    for name in ("duration", "rate", "timeout"):
        value = getattr(a, name)
        if value is not None and value <= 0:
            p.error(f"--{name} must be > 0")
    return Settings(
        requests=a.requests, duration=a.duration, concurrency=a.concurrency, rate=a.rate, connections=a.connections,
        stream=a.stream, tokens=a.tokens, timeout=a.timeout, loadgen_cpu=a.loadgen_cpu, gateway_cpu=a.gateway_cpu,
        gateway_loop=a.gateway_loop, json=a.json, quiet=a.quiet,
    )


class Monitor:
    """Receives the load process's progress once per second (in this thread)."""

    __slots__ = ("quiet",)

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def tick(self, p: loadgen.Progress) -> None:
        """Show live progress on stderr."""
        if not self.quiet:
            print(f"[sim] {p.elapsed_s:5.1f}s  done {p.done}  ok {p.ok}  errors {p.errors}  "
                  f"in-flight {p.in_flight}  rps {p.rps:.0f}", file=sys.stderr, flush=True)


def load_spec(s: Settings, host: str, port: int) -> loadgen.LoadSpec:
    """The load generator's spec for this run, with its prebuilt workload."""
    planned = s.requests if s.rate is None or s.duration is None else int(s.rate * s.duration)
    unique = min(planned or workload.MAX_UNIQUE, workload.MAX_UNIQUE)
    payloads = workload.build(workload.Workload(stream=s.stream, unique=unique), f"{host}:{port}")
    return loadgen.LoadSpec(
        host=host, port=port, payloads=payloads, concurrency=s.concurrency, requests=s.requests,
        duration=s.duration, rate=s.rate, connections=s.connections, timeout=s.timeout,
    )


def simulate(s: Settings) -> dict[str, Any]:
    """Run the whole simulation and return the report dict (raises StartError/LoadgenError)."""
    gateway_cpus = loadgen.parse_cpus(s.gateway_cpu) if s.gateway_cpu else None
    with Stack(tokens=s.tokens, gateway_loop=s.gateway_loop, gateway_cpus=gateway_cpus) as stack:
        host, port = stack.gateway_addr
        if not s.quiet:
            mocks = ", ".join(f"{p.name} {h}:{pt} (ttft {p.ttft_ms:g} ms)"
                              for p, (h, pt) in zip(stack.providers, stack.mock_addrs))
            print(f"[sim] gateway {host}:{port}; mocks {mocks}", file=sys.stderr, flush=True)
        spec = load_spec(s, host, port)
        cpus = loadgen.parse_cpus(s.loadgen_cpu) if s.loadgen_cpu else None
        results = loadgen.run_process(spec, cpu=cpus, progress=Monitor(s.quiet).tick)
        if results.errors and not s.quiet and stack.gateway is not None:
            print(f"[sim] {results.errors} requests failed; gateway log tail:\n{stack.gateway.log_tail(15)}",
                  file=sys.stderr)
        try:
            stats = stack.stats()
        except (OSError, RuntimeError, ValueError) as exc:
            print(f"[sim] could not read gateway /stats: {exc}", file=sys.stderr)
            if stack.gateway is not None and not stack.gateway.alive():
                print(f"[sim] the gateway died:\n{stack.gateway.log_tail()}", file=sys.stderr)
            stats = None
    run = asdict(s)
    run.update(mode=s.mode(), connections=spec.slots())
    for key in ("json", "quiet", "loadgen_cpu", "gateway_cpu"):
        del run[key]
    return report.build(results, stats, run)


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (see module header)."""
    settings = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    try:
        rep = simulate(settings)
    except (StartError, loadgen.LoadgenError) as exc:
        print(f"sim: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sim: interrupted", file=sys.stderr)
        return 130
    if settings.json:
        sys.stdout.buffer.write(orjson.dumps(rep) + b"\n")
    else:
        print(report.format_text(rep))
    sys.stdout.flush()
    return 0 if rep["errors"] == 0 and rep["total_requests"] > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
