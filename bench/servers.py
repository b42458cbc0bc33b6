# bench/servers.py: the processes a comparison runs, each pinned to one core, each stopped by pid.
#
# Rules: every listening port is bound by the server itself or by us immediately before handing the
# socket over, never "find a free port, close it, hope": Python servers print the address they bound
# on port 0 (sim.procs reads it), and nginx inherits a socket we bound and listen()ed, through its
# documented binary-upgrade variable `NGINX="fd;fd;"`, so there is no window for another process to
# take the port. Pinning is `taskset -c CPU` in front of the command: the pid is the program's own
# (taskset execs it) and nginx's worker inherits the mask from its master. Readiness is a signal,
# never a sleep: the first stdout line for our Python servers, a 200 from a probe for nginx.
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from sim import procs

# What the upstream answers to every chat request: a complete, ordinary chat.completion.
STATIC_BODY = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-upstream",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"Hello! How can I help you today?"},'
    '"logprobs":null,"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":19,"completion_tokens":9,"total_tokens":28}}'
)
UPSTREAM_MODEL = "bench-upstream"


def taskset(cpu: int | None, argv: Sequence[str]) -> list[str]:
    """`argv` prefixed with `taskset -c CPU` (unchanged when `cpu` is None)."""
    return list(argv) if cpu is None else ["taskset", "-c", str(cpu), *argv]


class LoggedChild(procs.Child):
    """A `sim.procs.Child` for programs that announce nothing on stdout (nginx, LiteLLM).

    stdout goes to the log with stderr, so nothing has to drain a pipe, and `pass_fds` (listening
    sockets) stay open in the child.
    """

    __slots__ = ("pass_fds",)

    def __init__(
        self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None,
        pass_fds: Sequence[int] = (),
    ) -> None:  # fmt: skip
        super().__init__(name, argv, log_path, env)
        self.pass_fds = tuple(pass_fds)

    def start(self) -> LoggedChild:
        """Launch the child (returns at once)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True, pass_fds=self.pass_fds,
            )  # fmt: skip
        return self


def listen_socket(host: str = "127.0.0.1") -> socket.socket:
    """A TCP socket bound to an ephemeral port and listening, ready to hand to a child."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    sock.listen(4096)
    sock.setblocking(False)  # nginx trusts an inherited socket to be non-blocking; a blocking one hangs its accept loop
    return sock


# nginx


def nginx_binary() -> str | None:
    """The nginx executable (PATH, then the usual sbin directories), or None."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx")
         if os.access(p, os.X_OK)),
        None,
    )


def nginx_version() -> str:
    """`nginx/1.22.1`, or "" when absent."""
    binary = nginx_binary()
    if binary is None:
        return ""
    out = subprocess.run([binary, "-v"], capture_output=True, text=True, check=False)
    return (out.stderr or out.stdout).strip().rpartition(": ")[2]


def _nginx_main(prefix: Path, body: str) -> str:
    temp = "\n".join(f"    {kind}_temp_path {prefix}/tmp_{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return f"""# written by bench/servers.py
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{
    worker_connections 16384;
    multi_accept on;
}}
http {{
    access_log off;
    server_tokens off;
    keepalive_requests 10000000;
    keepalive_timeout 300s;
{temp}
{body}
}}
"""


def nginx_upstream_conf(prefix: Path, port: int) -> str:
    """nginx answering every request with the fixed chat completion (the shared upstream)."""
    return _nginx_main(
        prefix,
        f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            default_type application/json;
            return 200 '{STATIC_BODY}';
        }}
    }}""",
    )


def nginx_proxy_conf(prefix: Path, routes: Sequence[tuple[int, int, bool]]) -> str:
    """nginx as a keep-alive reverse proxy: one server per (listen port, upstream port, buffering)."""
    blocks = []
    for i, (listen, upstream, buffering) in enumerate(routes):
        blocks.append(f"""    upstream backend{i} {{
        server 127.0.0.1:{upstream};
        keepalive 8192;
        keepalive_requests 10000000;
        keepalive_timeout 300s;
    }}
    server {{
        listen 127.0.0.1:{listen} backlog=4096;
        client_max_body_size 32m;
        client_body_buffer_size 64k;
        location / {{
            proxy_pass http://backend{i};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering {"on" if buffering else "off"};
            proxy_read_timeout 600s;
        }}
    }}""")
    return _nginx_main(prefix, "\n".join(blocks))


def start_nginx(
    name: str, conf: str, prefix: Path, socks: Sequence[tuple[socket.socket, str]], cpu: int | None
) -> LoggedChild:
    """Start nginx on `conf`, inheriting the listening sockets; returns once each answers 200 on its probe path."""
    binary = nginx_binary()
    if binary is None:
        raise procs.StartError("nginx is not installed")
    prefix.mkdir(parents=True, exist_ok=True)
    conf_path = prefix / "nginx.conf"
    conf_path.write_text(conf)
    fds = [s.fileno() for s, _ in socks]
    env = dict(os.environ, NGINX="".join(f"{fd};" for fd in fds))  # nginx adopts these instead of binding
    argv = taskset(cpu, [binary, "-p", str(prefix), "-c", str(conf_path), "-e", str(prefix / "error.log")])
    child = LoggedChild(name, argv, prefix / "output.log", env, fds).start()
    try:
        for sock, probe in socks:
            host, port = sock.getsockname()[:2]
            procs.wait_healthy(child, host, port, probe, timeout=10.0)
    except BaseException:
        child.stop()
        raise
    return child


# our own Python processes


def start_python(
    name: str, module: str, args: Sequence[str], log_dir: Path, cpu: int | None,
    env: Mapping[str, str] | None = None, python: str | None = None, pythonpath: str | None = None,
) -> tuple[procs.Child, tuple[str, int]]:  # fmt: skip
    """Start `python -m module args` pinned to `cpu`; return it and the HOST:PORT it printed first."""
    child_env = procs.child_env(env)
    if pythonpath is not None:  # another checkout (an A/B against a commit) comes first
        child_env["PYTHONPATH"] = os.pathsep.join((pythonpath, child_env["PYTHONPATH"]))
    argv = taskset(cpu, [python or sys.executable, "-m", module, *args])
    child = procs.Child(name, argv, log_dir / f"{name}.log", child_env).start()
    try:
        addr = procs.parse_hostport(child.wait_line(20.0))
    except BaseException:
        child.stop()
        raise
    return child, addr


def gateway_toml(static: tuple[str, int], sse: tuple[str, int]) -> str:
    """llm-edge's config for the comparison: the defaults, two local providers, one model on each.

    `max_connections` is raised from its default (256) so the streaming test is not capped by the pool:
    nginx's upstream pool has no such cap either.
    """
    out = ['[server]', 'listen = "127.0.0.1:0"', '']
    for name, (host, port) in (("static", static), ("sse", sse)):
        out += ['[[providers]]', f'name = "{name}"', 'kind = "local"', f'base_url = "http://{host}:{port}/v1"',
                'max_connections = 16384', '']  # fmt: skip
    out += ['[[models]]', 'name = "bench"', f'routes = [{{ provider = "static", model = "{UPSTREAM_MODEL}" }}]', '']
    out += ['[[models]]', 'name = "bench-stream"', f'routes = [{{ provider = "sse", model = "{UPSTREAM_MODEL}" }}]', '']
    return "\n".join(out)
