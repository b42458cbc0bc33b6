# bench/compare.py: `python -m bench`, llm-edge side by side with a direct call, nginx and LiteLLM.
#
# Phases: parse options -> start the upstreams (nginx serving a fixed chat completion, our mock for
# SSE) on the load core -> start the targets, each pinned to the proxy core -> check each answers
# (and whether llm-edge serves cache hits yet) -> warm up -> R rounds; in each round every scenario
# runs on every target in turn (A B C, then B C A: interleaved, so slow drift on a shared machine
# hits every target alike) -> the streaming ladder -> optional py-spy profile -> stop everything by
# pid -> medians, ratios, the bar -> table on stdout, JSON + PNG (+ BENCHMARKS.md with --write-md).
# Exit status: 0 done, 1 a required target misbehaved (errors), 2 could not start, 130/143 interrupted.
from __future__ import annotations

import argparse
import http.client
import os
import secrets
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson

if __name__ == "__main__" and not __package__:  # `python bench/compare.py`: the checkout's packages, not bench/
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from bench import litellm_env, plot, procstat, pyspy, report, servers, streams, traffic, wrk
from sim import loadgen, procs
from sim.hist import Histogram

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Settings:
    """One comparison's options, after the command line is parsed."""

    rounds: int = 3
    duration: int = 2  # seconds per wrk run (wrk takes whole seconds)
    open_duration: float = 2.0  # seconds per open-loop and TTFB run
    rates: tuple[float, ...] = (500.0, 2000.0)
    body_bytes: int = 1024
    warmup: bool = True
    stream_levels: tuple[int, ...] = (500, 1000, 2000, 3000)
    stream_tokens: int = 10
    stream_delay_ms: float = 100.0
    stream_duration: float = 4.0
    stall_ms: float = 200.0
    proxy_cpu: int | None = None
    load_cpu: int | None = None
    loop: str = "uvloop"
    with_litellm: bool = False
    against: str | None = None
    profile_s: float = 0.0
    out: Path = ROOT / "bench" / "results"
    write_md: Path | None = None
    quick: bool = False


@dataclass(frozen=True)
class Scenario:
    """One kind of run: closed loop (wrk) or open loop / streaming (sim.loadgen)."""

    key: str
    title: str
    tool: str  # "wrk" or "loadgen"
    connections: int
    rate: float | None = None
    stream: bool = False


@dataclass
class Target:
    """Something the load is pointed at: a proxy process, or the upstream itself ("direct")."""

    name: str
    label: str
    json_addr: tuple[str, int]
    sse_addr: tuple[str, int]
    child: procs.Child | None = None
    hit: bool = False  # gets the repeated deterministic request (the cache-hit target)
    note: str = ""  # set when the target is n/a, saying why
    pids: list[tuple[int, str]] = field(default_factory=list)  # (pid, start time) of its process tree
    memory: tuple[int, int] = (0, 0)

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child is not None else None

    @property
    def available(self) -> bool:
        return not self.note


def scenarios(s: Settings) -> list[Scenario]:
    """The scenarios of every round, in order."""
    out = [Scenario("c1", "wrk, 1 connection", "wrk", 1), Scenario("c32", "wrk, 32 connections", "wrk", 32)]
    out += [Scenario(f"open{r:g}", f"open loop, {r:g} req/s", "loadgen", 64, rate=r) for r in s.rates]
    out.append(Scenario("ttfb", "SSE, 1 connection", "loadgen", 1, stream=True))
    return out


class Bench:
    """Owns every process of one comparison; `close()` stops them all, by pid."""

    def __init__(self, s: Settings, say: Any = None) -> None:
        self.s = s
        self.say = say or (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
        self._tmp = tempfile.TemporaryDirectory(prefix="llm-edge-bench-")
        self.dir = Path(self._tmp.name)
        self.children: list[procs.Child] = []
        self.live: list[Any] = []  # wrk Popens and LoadProcesses while they run
        self.targets: list[Target] = []
        self.upstream: Target | None = None  # nginx, the JSON upstream (measured too)
        self.mock: procs.Child | None = None
        self.mock_addr = ("", 0)
        self.auth = "sk-bench-client-" + secrets.token_hex(8)
        self.runs: list[dict[str, Any]] = []
        self.versions: dict[str, str] = {}
        self.gateway_stats: dict[str, Any] = {}
        self.nonce_seq = 0

    # processes

    def _track(self, child: procs.Child) -> procs.Child:
        self.children.append(child)
        return child

    def start(self) -> None:
        """Start upstreams and targets; raise procs.StartError if a required one cannot start."""
        s = self.s
        up_sock = servers.listen_socket()
        static = ("127.0.0.1", up_sock.getsockname()[1])
        try:
            nginx_up = self._track(servers.start_nginx(
                "upstream-nginx", servers.nginx_upstream_conf(self.dir / "upstream", static[1]),
                self.dir / "upstream", [(up_sock, "/")], s.load_cpu,
            ))  # fmt: skip
        finally:
            up_sock.close()
        mock, self.mock_addr = servers.start_python(
            "mock", "mocks", ["--listen", "127.0.0.1:0", "--kind", "openai"],
            self.dir, s.load_cpu,
        )  # fmt: skip
        self.mock = self._track(mock)
        self.upstream = Target("upstream", "upstream (nginx)", static, self.mock_addr, nginx_up)
        self.targets.append(Target("direct", "direct", static, self.mock_addr))

        cfg = self.dir / "llm-edge.toml"
        cfg.write_text(servers.gateway_toml(static, self.mock_addr))
        loops = ["uvloop", "asyncio"] if s.loop == "both" else [s.loop]
        for loop in loops:
            name = "llm-edge" if loop == loops[0] else f"llm-edge-{loop}"
            self.targets.append(self._gateway(name, f"llm-edge ({loop})" if s.loop == "both" else "llm-edge", cfg, loop))
        self.targets.append(self._gateway("llm-edge-hit", "llm-edge, cache hits", cfg, loops[0], hit=True))
        if s.against:
            tree = self._export(s.against)
            self.targets.append(self._gateway(f"llm-edge@{s.against}", f"llm-edge @{s.against}", cfg, loops[0],
                                              pythonpath=str(tree)))  # fmt: skip

        json_sock, sse_sock = servers.listen_socket(), servers.listen_socket()
        try:
            routes = [(json_sock.getsockname()[1], static[1], True), (sse_sock.getsockname()[1], self.mock_addr[1], False)]
            proxy = self._track(servers.start_nginx(
                "nginx", servers.nginx_proxy_conf(self.dir / "nginx", routes), self.dir / "nginx",
                [(json_sock, "/"), (sse_sock, "/_mock/stats")], s.proxy_cpu,
            ))  # fmt: skip
            addrs = json_sock.getsockname()[:2], sse_sock.getsockname()[:2]
        finally:
            json_sock.close()
            sse_sock.close()
        self.targets.append(Target("nginx", "nginx (proxy)", addrs[0], addrs[1], proxy))

        if s.with_litellm:
            self.targets.append(self._litellm(static))
        for t in [self.upstream, *self.targets]:
            if t.child is not None:
                t.pids = [(p, _start_time(p)) for p in procstat.tree(t.child.pid)]

    def _gateway(self, name: str, label: str, cfg: Path, loop: str, hit: bool = False,
                 pythonpath: str | None = None) -> Target:  # fmt: skip
        args = ["--config", str(cfg), "--listen", "127.0.0.1:0", "--loop", loop]
        child, addr = servers.start_python(name, "proxy", args, self.dir, self.s.proxy_cpu, pythonpath=pythonpath)
        self._track(child)
        procs.wait_healthy(child, *addr, "/healthz", timeout=15.0)
        return Target(name, label, addr, addr, child, hit=hit)

    def _litellm(self, static: tuple[str, int]) -> Target:
        venv = litellm_env.venv_dir()
        target = Target("litellm", "LiteLLM proxy", ("", 0), ("", 0))
        try:
            exe = litellm_env.ensure(venv, self.dir / "litellm-pip.log", self.say)
            child, addr, key = litellm_env.start(exe, self.dir / "litellm", static, self.mock_addr, self.s.proxy_cpu)
        except (litellm_env.LiteLLMUnavailableError, procs.StartError) as exc:
            target.note = f"LiteLLM unavailable: {str(exc).splitlines()[0]}"
            self.say(target.note)
            return target
        self._track(child)
        self.auth = key  # every target gets the same authorization header: LiteLLM's master key
        self.versions["litellm"] = litellm_env.version(venv)
        target.json_addr = target.sse_addr = addr
        target.child = child
        return target

    def _export(self, rev: str) -> Path:
        """`git archive` of `rev` into the temp dir: an llm-edge to A/B against this checkout."""
        dest = self.dir / f"rev-{rev.replace('/', '_')}"
        dest.mkdir()
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], capture_output=True, check=False)
        if archive.returncode != 0:
            raise procs.StartError(f"git archive {rev} failed: {archive.stderr.decode()[-300:]}")
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        return dest

    def close(self) -> None:
        """Stop every load process and child (by pid), then any survivor of their process trees."""
        for item in list(self.live):
            try:
                if isinstance(item, loadgen.LoadProcess):
                    item.stop()
                elif item.poll() is None:
                    item.kill()
                    item.wait()
            except OSError:
                pass
        self.live.clear()
        for child in reversed(self.children):
            child.stop()
        for t in [*(self.targets), *([self.upstream] if self.upstream else [])]:
            for pid, started in t.pids:  # e.g. an nginx worker whose master was killed
                if started and _start_time(pid) == started:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
        self._tmp.cleanup()

    def pids(self) -> dict[str, list[int]]:
        """Every process tree started, by name (the smoke test checks none outlives us)."""
        out = {t.name: [p for p, _ in t.pids] for t in [*self.targets, *([self.upstream] if self.upstream else [])]}
        if self.mock is not None:
            out["mock"] = [self.mock.pid]
        return {k: v for k, v in out.items() if v}

    # checks

    def preflight(self) -> None:
        """Three requests on one keep-alive connection per target (and an SSE one); a broken optional target is n/a."""
        for t in self.targets:
            if not t.available:
                continue
            step = "the first request"
            try:
                bodies = traffic.json_bodies(self._nonce(), self.s.body_bytes, 3, t.hit)
                conn = http.client.HTTPConnection(*t.json_addr, timeout=10)
                try:
                    for i, body in enumerate(bodies):
                        step = f"request {i + 1} on a keep-alive connection"
                        status, headers, _ = _post(conn, body, self.auth)
                        if status != 200:
                            raise RuntimeError(f"{step} answered {status}")
                        if t.hit and i > 0 and headers.get("x-cache", "").upper() != "HIT":
                            t.note = "n/a: llm-edge does not answer from its cache yet (no `x-cache: HIT`)"
                            break
                finally:
                    conn.close()
                if not t.hit:
                    step = "a streamed request"
                    conn = http.client.HTTPConnection(*t.sse_addr, timeout=10)
                    try:
                        status, _, data = _post(conn, traffic.stream_bodies("pre", 200, 1)[0], self.auth)
                    finally:
                        conn.close()
                    if status != 200 or b"[DONE]" not in data:
                        raise RuntimeError(f"{step} answered {status} without data: [DONE]")
            except (OSError, RuntimeError, http.client.HTTPException) as exc:
                if t.name in ("direct", "llm-edge", "nginx"):
                    raise procs.StartError(f"{t.name}: {step} failed: {exc!r}") from None
                t.note = f"n/a: {step} failed ({exc!r})"
            if t.note:
                self.say(f"{t.name}: {t.note}")

    # runs

    def _nonce(self) -> str:
        self.nonce_seq += 1
        return f"{secrets.token_hex(3)}{self.nonce_seq}"

    def run_one(self, t: Target, sc: Scenario, round_no: int, duration: float | None = None) -> dict[str, Any]:
        """One measured run of scenario `sc` on target `t`."""
        s = self.s
        upstream_pid = self.mock.pid if (sc.stream and self.mock) else (self.upstream.pid if self.upstream else None)
        meter = procstat.Meter(t.pid, s.load_cpu)
        up_meter = procstat.Meter(upstream_pid, s.proxy_cpu)  # and the proxy core's busy share, all processes
        nonce = self._nonce()
        if sc.tool == "wrk":
            wrk_secs = int(duration or s.duration)
            host, port = t.json_addr
            body = traffic.hit_body(s.body_bytes) if t.hit else traffic.miss_template(nonce, s.body_bytes)
            script = self.dir / f"wrk-{t.name}-{nonce}.lua"
            script.write_text(wrk.script(f"{host}:{port}", traffic.PATH, body, not t.hit,
                                         [("authorization", f"Bearer {self.auth}")]))  # fmt: skip
            meter.start()
            up_meter.start()
            r = wrk.run(script, f"http://{host}:{port}{traffic.PATH}", sc.connections, wrk_secs, s.load_cpu, self.live)
            cpu, busy = meter.stop()
            up_cpu, core_busy = up_meter.stop()
            script.unlink()
            requests = r["requests"]
            out: dict[str, Any] = {
                "rps": r["rps"], "requests": requests, "ok": requests - r["errors"]["status"],
                "errors": sum(r["errors"].values()), "error_kinds": r["errors"],
                "latency_us": r["latency_us"], "percentiles": r["percentiles"],
            }  # fmt: skip
        else:
            secs = duration or s.open_duration
            host, port = t.sse_addr if sc.stream else t.json_addr
            count = int((sc.rate or 20000.0) * secs) + 16
            if sc.stream:
                bodies = traffic.stream_bodies(nonce, s.body_bytes, min(count, 20000))
            else:
                bodies = traffic.json_bodies(nonce, s.body_bytes, count, t.hit)
            spec = loadgen.LoadSpec(host, port, traffic.requests_for(host, port, bodies, self.auth),
                                    concurrency=sc.connections, duration=secs, rate=sc.rate, timeout=5.0)  # fmt: skip
            res = self.loadgen(spec, meter, up_meter)
            cpu, busy, up_cpu, core_busy = res.pop("_cpu")
            requests = res["requests"]
            out = res
        out.update({
            "round": round_no, "scenario": sc.key, "target": t.name,
            "cpu_s": round(cpu, 3),
            "cpu_us_per_req": round(cpu / requests * 1e6, 2) if requests and t.pid else None,
            "upstream_cpu_us_per_req": round(up_cpu / requests * 1e6, 2) if requests and upstream_pid else None,
            "load_core_busy": round(busy, 3),
            "proxy_core_busy": round(core_busy, 3),
            "proxy_own_busy": round(cpu / meter.elapsed, 3) if meter.elapsed and t.pid else 0.0,
        })  # fmt: skip
        return out

    def loadgen(self, spec: loadgen.LoadSpec, meter: procstat.Meter, up_meter: procstat.Meter) -> dict[str, Any]:
        """Run sim.loadgen in its own pinned process; results as a dict (latencies in µs)."""
        lp = loadgen.LoadProcess(spec, cpu=[self.s.load_cpu] if self.s.load_cpu is not None else None)
        self.live.append(lp)
        try:
            meter.start()  # after the child's start: its imports are not the target's work
            up_meter.start()
            r = lp.result()
            cpu, busy = meter.stop()
            up_cpu, core_busy = up_meter.stop()
        finally:
            lp.stop()
            self.live.remove(lp)
        return {
            "rps": r.rps, "requests": r.requests, "ok": r.ok, "errors": r.errors, "error_kinds": r.error_kinds,
            "latency_us": _summary(r.latency), "ttfb_us": _summary(r.ttfb), "send_lag_us": _summary(r.send_lag),
            "percentiles": [[p, r.latency.percentile(p)] for p in wrk.PERCENTILES],
            "histogram": r.latency.to_dict(),
            "_cpu": (cpu, busy, up_cpu, core_busy),
        }  # fmt: skip

    def warm_up(self) -> None:
        """A short unrecorded run of each scenario kind on each target (JIT-free, but caches and pools fill)."""
        for t in self.targets:
            if t.available:
                self.run_one(t, Scenario("warm", "", "wrk", 32), -1, duration=1)
                if not t.hit:
                    self.run_one(t, Scenario("warm", "", "loadgen", 1, stream=True), -1, duration=0.3)

    def rounds(self) -> None:
        """Every scenario on every target, interleaved, `rounds` times."""
        active = [t for t in self.targets if t.available]
        plan = scenarios(self.s)
        capacity: dict[str, float] = {}  # req/s at c=32 in the latest round
        for r in range(self.s.rounds):
            order = active[r % len(active):] + active[: r % len(active)]
            for sc in plan:
                for t in order:
                    if sc.stream and t.hit:
                        continue
                    if sc.rate is not None and capacity.get(t.name, sc.rate) < sc.rate:
                        # Past its capacity an open loop only measures a growing queue, and the target keeps
                        # working through it long after the run, on the core the next target needs.
                        note = f"over capacity ({capacity[t.name]:.0f} req/s at c=32)"
                        self.runs.append({"round": r, "scenario": sc.key, "target": t.name, "skipped": note})
                        self.say(f"round {r + 1}/{self.s.rounds} {sc.key:<9} {t.name:<14} skipped: {note}")
                        continue
                    self.settle()
                    res = self.run_one(t, sc, r)
                    self.runs.append(res)
                    if sc.key == "c32":
                        capacity[t.name] = res["rps"]
                    lat = res["latency_us"]
                    cpu = f"{res['cpu_us_per_req']:.1f} µs/req" if res["cpu_us_per_req"] else "-"
                    err = f"  ERRORS {res['errors']}" if res["errors"] else ""
                    self.say(f"round {r + 1}/{self.s.rounds} {sc.key:<9} {t.name:<14} {res['rps']:>9.0f} rps  "
                             f"p50 {lat['p50']:>7.0f}  p99 {lat['p99']:>7.0f} µs  cpu {cpu}{err}")  # fmt: skip
        for t in active:
            if t.child is not None:
                t.memory = procstat.memory_kib(procstat.tree(t.child.pid))
        for t in active:
            if t.name == "llm-edge":
                try:
                    status, body = procs.http_get(*t.json_addr, "/stats")
                    if status == 200:
                        self.gateway_stats = orjson.loads(body)
                except OSError:
                    pass

    def settle(self, limit_s: float = 30.0) -> float:
        """Wait until no proxy is still busy (e.g. draining a backlog); returns the seconds waited."""
        pids = [t.pid for t in self.targets if t.available and t.pid is not None]
        t0 = time.monotonic()
        while time.monotonic() - t0 < limit_s:
            before = procstat.cpu_seconds([p for pid in pids for p in procstat.tree(pid)])
            time.sleep(0.05)
            busy = procstat.cpu_seconds([p for pid in pids for p in procstat.tree(pid)]) - before
            if busy < 0.05 * 0.05:  # under 5% of a core
                break
        waited = time.monotonic() - t0
        if waited > 1.0:
            self.say(f"waited {waited:.1f}s for the proxies to go idle")
        return waited

    def profile(self) -> dict[str, Any]:
        """py-spy on llm-edge during a saturation run: where the miss path spends its time."""
        t = next((t for t in self.targets if t.name == "llm-edge"), None)
        if t is None or t.pid is None:
            return {}
        out = self.s.out / "profile-llm-edge.txt"
        try:
            spy = pyspy.start(t.pid, out, self.s.profile_s, self.s.load_cpu)
        except pyspy.ProfileError as exc:
            self.say(f"profile skipped: {exc}")
            return {"error": str(exc)}
        self.live.append(spy)
        try:
            self.run_one(t, Scenario("profile", "", "wrk", 32), -1, duration=max(1, int(self.s.profile_s)))
            spy.wait(timeout=self.s.profile_s + 30)
        finally:
            if spy.poll() is None:
                spy.kill()
                spy.wait()
            self.live.remove(spy)
        return pyspy.summarize(out)


def _start_time(pid: int) -> str:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return text[text.rfind(")") + 2 :].split()[19]  # field 22, starttime


def _summary(h: Histogram) -> dict[str, float]:
    d = h.summary((50.0, 90.0, 99.0, 99.9))
    return {k: float(v) for k, v in d.items()}


def _post(conn: http.client.HTTPConnection, body: bytes, auth: str) -> tuple[int, dict[str, str], bytes]:
    conn.request("POST", traffic.PATH, body, {"content-type": "application/json", "authorization": f"Bearer {auth}"})
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


# command line


def parse_args(argv: list[str] | None = None) -> Settings:
    """Parse and check the command line."""
    d = Settings()
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Start llm-edge, nginx and a direct path to one upstream, load them in turn, compare.",
    )
    p.add_argument("--quick", action="store_true", help="a few seconds in total: one short round (smoke test)")
    p.add_argument("--rounds", type=int, default=d.rounds, help="interleaved repetitions (default %(default)s)")
    p.add_argument("--duration", type=int, default=d.duration, help="seconds per wrk run (default %(default)s)")
    p.add_argument("--open-duration", type=float, default=d.open_duration, help="seconds per open-loop/TTFB run")
    p.add_argument("--rates", default=",".join(f"{r:g}" for r in d.rates), help="open-loop rates, req/s")
    p.add_argument("--body-bytes", type=int, default=d.body_bytes, help="request body size (default %(default)s)")
    p.add_argument("--no-warmup", action="store_true", help="skip the unrecorded warm-up runs")
    p.add_argument("--stream-levels", default=",".join(map(str, d.stream_levels)),
                   help="concurrent SSE streams to try, ascending; '' skips the ladder")  # fmt: skip
    p.add_argument("--stream-tokens", type=int, default=d.stream_tokens, help="tokens per stream")
    p.add_argument("--stream-delay-ms", type=float, default=d.stream_delay_ms, help="delay between tokens")
    p.add_argument("--stream-duration", type=float, default=d.stream_duration, help="seconds per ladder step")
    p.add_argument("--stall-ms", type=float, default=d.stall_ms,
                   help="a level is held when p99 stream time is within this of direct's (default %(default)s)")  # fmt: skip
    p.add_argument("--proxy-cpu", type=int, help="core for the proxies (default: the first allowed)")
    p.add_argument("--load-cpu", type=int, help="core for load generator + upstreams (default: the second)")
    p.add_argument("--loop", choices=("uvloop", "asyncio", "both"), default=d.loop, help="llm-edge's event loop")
    p.add_argument("--with-litellm", action="store_true", help="also run LiteLLM's proxy (own virtualenv)")
    p.add_argument("--against", metavar="REV", help="also run llm-edge as of this git revision (A/B)")
    p.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                   help="py-spy llm-edge under saturation for this long, and summarise")  # fmt: skip
    p.add_argument("--out", type=Path, default=d.out, help="directory for JSON, PNG and logs (default %(default)s)")
    p.add_argument("--write-md", type=Path, metavar="BENCHMARKS.md", help="replace the results section of this file")
    a = p.parse_args(argv)
    allowed = sorted(os.sched_getaffinity(0))
    proxy_cpu = a.proxy_cpu if a.proxy_cpu is not None else allowed[0]
    load_cpu = a.load_cpu if a.load_cpu is not None else (allowed[1] if len(allowed) > 1 else allowed[0])
    common: dict[str, Any] = {
        "proxy_cpu": proxy_cpu, "load_cpu": load_cpu, "loop": a.loop, "with_litellm": a.with_litellm,
        "against": a.against, "out": a.out, "write_md": a.write_md, "body_bytes": a.body_bytes,
        "stall_ms": a.stall_ms, "profile_s": a.profile,
    }  # fmt: skip
    if a.quick:
        return Settings(rounds=1, duration=1, open_duration=0.4, rates=(200.0,), warmup=False, stream_levels=(20,),
                        stream_tokens=5, stream_delay_ms=20.0, stream_duration=0.5, quick=True, **common)  # fmt: skip
    levels = tuple(int(x) for x in a.stream_levels.split(",") if x.strip())
    rates = tuple(float(x) for x in a.rates.split(",") if x.strip())
    return Settings(rounds=a.rounds, duration=a.duration, open_duration=a.open_duration, rates=rates,
                    warmup=not a.no_warmup, stream_levels=levels, stream_tokens=a.stream_tokens,
                    stream_delay_ms=a.stream_delay_ms, stream_duration=a.stream_duration, **common)  # fmt: skip


def preflight_tools() -> str | None:
    """Why the comparison cannot run here, or None."""
    missing = [name for name, ok in (("nginx", servers.nginx_binary()), ("wrk", wrk.wrk_binary()),
                                      ("taskset", _which("taskset"))) if not ok]  # fmt: skip
    return f"missing: {', '.join(missing)} (apt-get install nginx wrk util-linux)" if missing else None


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


def main(argv: list[str] | None = None) -> int:
    """Run the comparison; see the module header for the exit status."""
    s = parse_args(argv)
    problem = preflight_tools()
    if problem:
        print(f"bench: {problem}", file=sys.stderr)
        return 2
    s.out.mkdir(parents=True, exist_ok=True)
    if s.load_cpu is not None:
        os.sched_setaffinity(0, {s.load_cpu})  # this process never competes with the proxies
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    command = "python -m bench" + "".join(" " + shlex.quote(x) for x in (sys.argv[1:] if argv is None else argv))
    started = time.time()
    bench = Bench(s)
    meta: dict[str, Any] = {"command": command, "settings": _jsonable(asdict(s)), "machine": report.machine(),
                            "started": time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(started))}  # fmt: skip
    status = 0
    try:
        try:
            bench.start()
            bench.say("started: " + ", ".join(f"{k}={v}" for k, v in bench.pids().items()))
            bench.preflight()
        except procs.StartError as exc:
            print(f"bench: could not start: {exc}", file=sys.stderr)
            return 2
        if s.warmup:
            bench.warm_up()
        bench.rounds()
        ladder = streams.ladder(bench) if s.stream_levels else {}
        prof = bench.profile() if s.profile_s > 0 else {}
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    finally:
        meta["pids"] = bench.pids()
        bench.close()
    meta["elapsed_s"] = round(time.time() - started, 1)
    meta["versions"] = report.versions(bench.versions)
    doc = report.build(meta, bench.targets, bench.runs, ladder, prof, bench.gateway_stats)
    (s.out / "compare.json").write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    plot.render(doc, s.out / "compare.png")
    text = report.text(doc)
    print(text)
    md = report.markdown(doc, "compare.png")
    (s.out / "compare.md").write_text(md)
    if s.write_md is not None:
        report.write_md(s.write_md, doc, s.out / "compare.png")
    print(f"\nwrote {s.out / 'compare.json'}, {s.out / 'compare.png'}, {s.out / 'compare.md'}")
    if any(r["errors"] for r in bench.runs if r["target"] in ("direct", "llm-edge", "nginx")):
        status = 1
    return status


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items()}


if __name__ == "__main__":  # `python bench/compare.py` as well as `python -m bench`
    raise SystemExit(main())
