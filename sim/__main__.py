# sim/__main__.py: `python -m sim`, the gateway simulator's command line.
#
# Phases, in order: parse options → start the stack (two mock providers + the gateway, each a
# process) → prebuild the workload → flood the gateway from a load process → read the
# gateway's /stats → print the report. Every child is stopped by pid on the way out, also on
# Ctrl-C, SIGTERM or an error. Exit status: 0 when every request succeeded, 1 when some
# failed, 2 when the stack or the load could not start, 130/143 when interrupted.
#
# `--scenario` (sim/scenario.py) degrades one mock mid-run: its `Driver` runs from
# `Monitor.tick` in this thread (the load process then reports every 0.1 s) and changes the
# mock over HTTP; the gateway gets router settings that react within seconds. Every run tracks
# each response's x-llm-edge-provider and x-cache headers, so the report shows who answered
# over time and the cache hit rate. `--repeat-ratio` makes that share of the requests repeat
# earlier ones (temperature 0, so they are cacheable). A failover run with any client error
# exits 1 like any other run with errors: fallback must hide the failing provider completely.
#
# `--soak MINUTES` (sim/soak/) runs the bounded soak test instead: a mixed load with client
# aborts and provider faults, the gateway's RSS, fds and pools measured at the start and the
# end. Exit status 0 when nothing was lost and nothing grew past its bound, else 1.
#
# `--plot FILE.png` (sim/plot.py, matplotlib from the `plot` extra) draws the run: latency and
# overhead distributions, provider shares over time and cost per provider. A run without
# --scenario then also runs the failover and slowdown scenarios (SCENARIO_DURATION each, on their
# own fresh stacks, reported on stderr only) so the plot shows traffic switching away and back.
# `--progress` draws a progress bar with the time left on stderr (it is on by default when stderr
# is a terminal); stdout stays the one report.
from __future__ import annotations

import argparse
import signal
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

from sim import loadgen, plotting, report, scenario, workload
from sim.procs import StartError
from sim.progressbar import ProgressBar, wanted
from sim.stack import Stack

DEFAULT_REQUESTS = 5000
DEFAULT_CONCURRENCY = 32
# A scenario needs time for the router to react: by default an open loop at a steady rate.
SCENARIO_DURATION = 6.0
SCENARIO_RATE = 500.0


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
    scenario: str | None = None
    repeat_ratio: float = 0.0
    soak: float | None = None  # minutes of soak test (sim/soak/) instead of a throughput run
    plot: Path | None = None  # draw the run (and the scenario runs) into this PNG
    progress: bool = False  # a progress bar even when stderr is not a terminal

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
    work.add_argument("--repeat-ratio", type=float, default=0.0, metavar="R",
                      help="share of requests (0 <= R < 1) that repeat an earlier prompt, at temperature 0, "
                           "to measure the gateway's response cache")
    scen = p.add_argument_group("scenario")
    scen.add_argument("--scenario", choices=scenario.NAMES,
                      help="degrade the preferred mock mid-run: failover (500s from 1/3 to 2/3 of the run), "
                           "slowdown (TTFT above the SLA from 1/3 to 2/3) or steady (no change); default load "
                           f"{SCENARIO_RATE:g} req/s for {SCENARIO_DURATION:g}s")
    soak_group = p.add_argument_group("soak")
    soak_group.add_argument("--soak", type=float, metavar="MINUTES",
                            help="soak test for MINUTES (e.g. 10, or 1 in CI): streams, cache hits, client aborts "
                                 "and provider faults; fails if a request is lost or the gateway's RSS, fds or "
                                 "pools grow past their bounds (see sim/soak/)")
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the report as one JSON object")
    out.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    out.add_argument("--progress", action="store_true",
                     help="a progress bar with the time left on stderr, even when it is not a terminal")
    out.add_argument("--plot", type=Path, metavar="FILE.png",
                     help="draw latency and overhead distributions, provider shares over time (this run, and "
                          "failover and slowdown runs unless --scenario picks one) and cost per provider; "
                          f"needs matplotlib: {plotting.INSTALL}")
    a = p.parse_args(argv)
    if a.soak is not None:
        if not a.soak > 0:
            p.error("--soak must be > 0 minutes")
        given = [name for name, default in (("requests", None), ("duration", None), ("rate", None),
                                            ("connections", None), ("scenario", None), ("stream", False),
                                            ("repeat_ratio", 0.0)) if getattr(a, name) != default]  # fmt: skip
        if a.plot is not None:
            given.append("plot")
        if given:
            flags = ", ".join("--" + g.replace("_", "-") for g in given)
            p.error(f"--soak runs its own mixed load; it does not take {flags}")
    if a.plot is not None and not plotting.available():
        p.error(f"--plot needs matplotlib: {plotting.INSTALL}")
    if a.scenario and a.requests is None and a.duration is None and a.rate is None:
        a.duration, a.rate = SCENARIO_DURATION, SCENARIO_RATE
        a.connections = a.connections or 64
    if a.requests is None and a.duration is None:
        a.requests = DEFAULT_REQUESTS
    if not 0.0 <= a.repeat_ratio < 1.0:
        p.error("--repeat-ratio must be >= 0 and < 1")
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
        gateway_loop=a.gateway_loop, json=a.json, quiet=a.quiet, scenario=a.scenario, repeat_ratio=a.repeat_ratio,
        soak=a.soak, plot=a.plot, progress=a.progress,
    )


class Monitor:
    """Receives the load process's progress (in this thread): drives the scenario, shows progress."""

    __slots__ = ("bar", "driver", "duration", "last_done", "last_print", "quiet", "requests")

    def __init__(self, quiet: bool, driver: scenario.Driver | None = None, bar: ProgressBar | None = None,
                 duration: float | None = None, requests: int | None = None) -> None:  # fmt: skip
        self.quiet = quiet
        self.driver = driver
        self.bar = bar or ProgressBar("[sim]", False)
        self.duration = duration  # the run's length when the clock bounds it
        self.requests = requests  # else its request count
        self.last_print = 0.0
        self.last_done = 0

    def share(self, p: loadgen.Progress) -> float:
        """How much of the run is done, 0..1."""
        if self.duration:
            return p.elapsed_s / self.duration
        return p.done / self.requests if self.requests else 0.0

    def tick(self, p: loadgen.Progress) -> None:
        """Fire due scenario events; show live progress on stderr about once per second."""
        fired = self.driver.tick(p) if self.driver is not None else []
        self.bar.update(self.share(p), p.elapsed_s, f"done {p.done}  errors {p.errors}")  # off when quiet
        if self.quiet:
            return
        for e in fired:
            self.bar.say(f"[sim] {e['at_s']:5.1f}s  scenario: {e['provider']} {e['label']}")
        if p.elapsed_s - self.last_print >= 0.95 or self.driver is None:
            interval = p.elapsed_s - self.last_print
            rps = (p.done - self.last_done) / interval if interval > 0 else p.rps
            self.last_print, self.last_done = p.elapsed_s, p.done
            self.bar.say(f"[sim] {p.elapsed_s:5.1f}s  done {p.done}  ok {p.ok}  errors {p.errors}  "
                         f"in-flight {p.in_flight}  rps {rps:.0f}")  # fmt: skip


def load_spec(s: Settings, host: str, port: int) -> loadgen.LoadSpec:
    """The load generator's spec for this run, with its prebuilt workload."""
    planned = s.requests if s.rate is None or s.duration is None else int(s.rate * s.duration)
    unique = min(planned or workload.MAX_UNIQUE, workload.MAX_UNIQUE)
    gap = max(64, 2 * max(s.concurrency, s.connections or 0))  # repeats come after their original was answered
    w = workload.Workload(stream=s.stream, unique=unique, repeat_ratio=s.repeat_ratio, repeat_gap=gap)
    payloads = workload.build(w, f"{host}:{port}")
    return loadgen.LoadSpec(
        host=host, port=port, payloads=payloads, concurrency=s.concurrency, requests=s.requests,
        duration=s.duration, rate=s.rate, connections=s.connections, timeout=s.timeout, track=True,
        progress_interval=scenario.PROGRESS_INTERVAL_S if s.scenario else 1.0,
    )


@dataclass
class Outcome:
    """One simulator run: its report, the load's raw results, and the gateway's /metrics page at the end."""

    report: dict[str, Any]
    results: loadgen.Results
    metrics: str = ""
    prices: dict[str, tuple[float, float]] | None = None  # provider -> (input, output) USD per Mtok


def simulate(s: Settings, bar: ProgressBar | None = None) -> Outcome:
    """Run the whole simulation (raises StartError/LoadgenError)."""
    gateway_cpus = loadgen.parse_cpus(s.gateway_cpu) if s.gateway_cpu else None
    router = scenario.ROUTER if s.scenario else None
    bar = bar or ProgressBar("[sim]", False)
    say = (lambda line: None) if s.quiet else bar.say
    with Stack(tokens=s.tokens, gateway_loop=s.gateway_loop, gateway_cpus=gateway_cpus, router=router) as stack:
        host, port = stack.gateway_addr
        mocks = ", ".join(f"{p.name} {h}:{pt} (ttft {p.ttft_ms:g} ms, ${p.input_per_mtok:g} in / "
                          f"${p.output_per_mtok:g} out per Mtok)"
                          for p, (h, pt) in zip(stack.providers, stack.mock_addrs))  # fmt: skip
        say(f"[sim] gateway {host}:{port}; mocks {mocks}")
        spec = load_spec(s, host, port)
        driver = None
        clock = s.duration if s.rate is not None or s.requests is None else None
        if s.scenario:
            driver = scenario.Driver(s.scenario, scenario.events(s.scenario, stack.providers),
                                     lambda name, changes: stack.mock_config(name, **changes),
                                     duration=clock, requests=spec.planned())  # fmt: skip
            for e in driver.events:
                say(f"[sim] scenario {s.scenario}: {e.provider} {e.label} at {e.at:.0%} of the run")
        cpus = loadgen.parse_cpus(s.loadgen_cpu) if s.loadgen_cpu else None
        monitor = Monitor(s.quiet, driver, bar, duration=clock, requests=spec.planned())
        results = loadgen.run_process(spec, cpu=cpus, progress=monitor.tick)
        bar.close()
        if results.errors and stack.gateway is not None:
            say(f"[sim] {results.errors} requests failed; gateway log tail:\n{stack.gateway.log_tail(15)}")
        metrics = ""
        try:
            stats = stack.stats()
            if s.plot is not None:
                metrics = stack.metrics_text()
        except (OSError, RuntimeError, ValueError) as exc:
            print(f"[sim] could not read gateway /stats: {exc}", file=sys.stderr)
            if stack.gateway is not None and not stack.gateway.alive():
                print(f"[sim] the gateway died:\n{stack.gateway.log_tail()}", file=sys.stderr)
            stats = None
        prices = {p.name: (p.input_per_mtok, p.output_per_mtok) for p in stack.providers}
    run = asdict(s)
    run.update(mode=s.mode(), connections=spec.slots(), track=True)
    for key in ("json", "quiet", "loadgen_cpu", "gateway_cpu", "plot", "progress"):
        del run[key]
    rep = report.build(results, stats, run)
    if driver is not None:
        rep["scenario"] = driver.describe()
        rep["scenario"]["router"] = dict(scenario.ROUTER)
    return Outcome(rep, results, metrics, prices)


def scenario_settings(s: Settings, name: str) -> Settings:
    """The settings of a scenario run drawn next to the run `s` (its default load, quiet)."""
    return replace(s, scenario=name, requests=None, duration=SCENARIO_DURATION, rate=SCENARIO_RATE,
                   connections=s.connections or 64, repeat_ratio=0.0, json=False, quiet=True)  # fmt: skip


def draw(s: Settings, main: Outcome) -> list[Outcome]:
    """Write the plot of `main` to s.plot, running the scenario runs it needs first; returns those runs."""
    from sim import plot  # only here: matplotlib is an optional extra

    assert s.plot is not None
    extra: list[Outcome] = []
    if s.scenario is None:
        for name in ("failover", "slowdown"):
            if not s.quiet:
                print(f"[sim] plot: a {SCENARIO_DURATION:g}s {name} run at {SCENARIO_RATE:g} req/s for panel (c)",
                      file=sys.stderr, flush=True)  # fmt: skip
            label = f"[sim {name}]"
            extra.append(simulate(scenario_settings(s, name), ProgressBar(label, wanted(s.progress, s.quiet))))
    runs = [plot.PlotRun("this run" if s.scenario is None else s.scenario, o.report, o.results,
                         plot.overhead_buckets(o.metrics), o.prices or {}) for o in (main, *extra)]  # fmt: skip
    for o, run in zip(extra, runs[1:]):
        run.name = f"{run.report['scenario']['name']} scenario ({o.report['errors']} errors)"
    plotting.save(plot.figure(runs[0], runs[1:]), s.plot)
    if not s.quiet:
        print(f"[sim] wrote {s.plot}", file=sys.stderr, flush=True)
    return extra


def _raise_exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status (see module header)."""
    settings = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_exit)
    signal.signal(signal.SIGHUP, _raise_exit)
    if settings.soak is not None:
        return soak_main(settings)
    try:
        outcome = simulate(settings, ProgressBar("[sim]", wanted(settings.progress, settings.quiet)))
        rep = outcome.report
        if settings.plot is not None:
            draw(settings, outcome)
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


def soak_main(s: Settings) -> int:
    """`--soak`: run the soak test, print its report; 0 when it passed, 1 when not."""
    from sim import soak  # only here: the throughput runs do not need it

    cpus = loadgen.parse_cpus(s.gateway_cpu) if s.gateway_cpu else None
    try:
        rep = soak.run(s.soak or 0.0, quiet=s.quiet, gateway_loop=s.gateway_loop, gateway_cpus=cpus,
                       progress=wanted(s.progress, s.quiet))
    except StartError as exc:
        print(f"sim: {exc}", file=sys.stderr)
        return 2
    except soak.SoakError as exc:
        print(f"sim: soak failed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sim: interrupted", file=sys.stderr)
        return 130
    if s.json:
        sys.stdout.buffer.write(orjson.dumps(rep) + b"\n")
    else:
        print(soak.format_text(rep))
    sys.stdout.flush()
    return 0 if rep["verdict"] == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main())
