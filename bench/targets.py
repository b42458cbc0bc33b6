# bench/targets.py: what is measured. The targets (a direct call to the upstream, llm-edge in its
# variants, nginx as a proxy, LiteLLM's proxy) and the upstreams they forward to, as processes.
#
# Rules: `Fleet` owns every process of one comparison, each pinned: upstreams (nginx serving a fixed
# chat completion, our mock for SSE) and the load on the load core, the targets on the proxy core.
# `close()` stops them all by pid, then any survivor of their process trees whose start time still
# matches (a pid reused by someone else is left alone). `preflight` checks each target answers; a
# broken optional target becomes n/a with a note instead of failing the comparison.
from __future__ import annotations

import http.client
import os
import secrets
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import litellm_env, procstat, servers, traffic
from bench.settings import ROOT, Settings
from sim import loadgen, procs

REQUIRED = ("direct", "llm-edge", "nginx")  # a comparison without one of these is no comparison


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


def start_time(pid: int) -> str:
    """A process's start time (field 22 of /proc/PID/stat): with the pid, who it is; "" when gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return text[text.rfind(")") + 2 :].split()[19]


def post(conn: http.client.HTTPConnection, body: bytes, auth: str) -> tuple[int, dict[str, str], bytes]:
    conn.request("POST", traffic.PATH, body, {"content-type": "application/json", "authorization": f"Bearer {auth}"})
    resp = conn.getresponse()
    return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()


class Fleet:
    """Every process of one comparison (see the module header)."""

    def __init__(self, s: Settings, say: Callable[[str], None] | None = None) -> None:
        self.s = s
        self.say = say or (lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True))
        self._tmp = tempfile.TemporaryDirectory(prefix="llm-edge-bench-")
        self.dir = Path(self._tmp.name)
        self.children: list[procs.Child] = []
        self.live: list[Any] = []  # wrk Popens, LoadProcesses and py-spy while they run
        self.targets: list[Target] = []
        self.upstream: Target | None = None  # nginx, the JSON upstream (measured too)
        self.mock: procs.Child | None = None
        self.mock_addr = ("", 0)
        self.auth = "sk-bench-client-" + secrets.token_hex(8)
        self.versions: dict[str, str] = {}
        self.nonce_seq = 0

    def nonce(self) -> str:
        """A fresh token for request bodies, so no two runs send the same prompts."""
        self.nonce_seq += 1
        return f"{secrets.token_hex(3)}{self.nonce_seq}"

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
            label = f"llm-edge ({loop})" if s.loop == "both" else "llm-edge"
            self.targets.append(self._gateway(name, label, cfg, loop))
        self.targets.append(self._gateway("llm-edge-hit", "llm-edge, cache hits", cfg, loops[0], hit=True))
        if s.against:
            tree = self._export(s.against)
            self.targets.append(self._gateway(f"llm-edge@{s.against}", f"llm-edge @{s.against}", cfg, loops[0],
                                              pythonpath=str(tree)))  # fmt: skip

        json_sock, sse_sock = servers.listen_socket(), servers.listen_socket()
        try:
            routes = [(json_sock.getsockname()[1], static[1], True),
                      (sse_sock.getsockname()[1], self.mock_addr[1], False)]
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
                t.pids = [(p, start_time(p)) for p in procstat.tree(t.child.pid)]

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
                if started and start_time(pid) == started:
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

    def preflight(self) -> None:
        """Three requests on one keep-alive connection per target (and an SSE one); a broken optional target is n/a."""
        for t in self.targets:
            if not t.available:
                continue
            step = "the first request"
            try:
                bodies = traffic.json_bodies(self.nonce(), self.s.body_bytes, 3, t.hit)
                conn = http.client.HTTPConnection(*t.json_addr, timeout=10)
                try:
                    for i, body in enumerate(bodies):
                        step = f"request {i + 1} on a keep-alive connection"
                        status, headers, _ = post(conn, body, self.auth)
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
                        status, _, data = post(conn, traffic.stream_bodies("pre", 200, 1)[0], self.auth)
                    finally:
                        conn.close()
                    if status != 200 or b"[DONE]" not in data:
                        raise RuntimeError(f"{step} answered {status} without data: [DONE]")
            except (OSError, RuntimeError, http.client.HTTPException) as exc:
                if t.name in REQUIRED:
                    raise procs.StartError(f"{t.name}: {step} failed: {exc!r}") from None
                t.note = f"n/a: {step} failed ({exc!r})"
            if t.note:
                self.say(f"{t.name}: {t.note}")

    def busy_pids(self) -> list[int]:
        """The process trees of every available target (to wait for them to go idle)."""
        return [p for t in self.targets if t.available and t.pid is not None for p in procstat.tree(t.pid)]
