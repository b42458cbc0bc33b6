# bench/workers.py: `python -m bench.workers`, throughput with `--workers 2` against `--workers 1`.
#
# Same upstream (nginx serving a fixed chat completion), same load (wrk, closed loop), same config
# (the comparison's: routing, stats and the cache on, every request a miss); the only difference
# is the number of gateway processes sharing the port. Runs alternate 1, 2, 1, 2... and medians
# are reported. Nothing is pinned: two workers need both cores, so wrk and the upstream share them
# too; on a machine with more cores, pin the load elsewhere (--load-cpu) for a cleaner figure.
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from bench import servers, traffic, wrk
from sim import procs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.workers", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--load-cpu", type=int, default=None, help="pin wrk and the upstream to this core")
    args = parser.parse_args(argv)
    if wrk.wrk_binary() is None or servers.nginx_binary() is None:
        print("bench.workers needs nginx and wrk (apt-get install nginx wrk)", file=sys.stderr)
        return 2
    results: dict[int, list[float]] = {1: [], 2: []}
    live: list = []  # type: ignore[type-arg]
    with tempfile.TemporaryDirectory(prefix="llm-edge-workers-") as tmp:
        tmpdir = Path(tmp)
        up_sock = servers.listen_socket()
        static = ("127.0.0.1", up_sock.getsockname()[1])
        try:
            upstream = servers.start_nginx("upstream-nginx", servers.nginx_upstream_conf(tmpdir / "up", static[1]),
                                           tmpdir / "up", [(up_sock, "/")], args.load_cpu)  # fmt: skip
        finally:
            up_sock.close()
        try:
            cfg = tmpdir / "llm-edge.toml"
            cfg.write_text(servers.gateway_toml(static, static))
            for _ in range(args.rounds):
                for workers in (1, 2):
                    gateway, (host, port) = servers.start_python(
                        f"llm-edge-{workers}", "proxy",
                        ["--config", str(cfg), "--listen", "127.0.0.1:0", "--workers", str(workers)], tmpdir, None,
                    )  # fmt: skip
                    try:
                        procs.wait_healthy(gateway, host, port, "/healthz", timeout=10.0)
                        script = tmpdir / "wrk.lua"
                        body = traffic.miss_template(f"w{workers}", 1024)
                        script.write_text(wrk.script(f"{host}:{port}", traffic.PATH, body, True))
                        run = wrk.run(script, f"http://{host}:{port}{traffic.PATH}", args.connections, args.duration,
                                      args.load_cpu, live)  # fmt: skip
                        results[workers].append(run["rps"])
                        print(f"workers={workers}: {run['rps']:,.0f} req/s", file=sys.stderr)
                    finally:
                        gateway.stop()
        finally:
            upstream.stop()
    one, two = statistics.median(results[1]), statistics.median(results[2])
    print(f"llm-edge --workers 1: {one:,.0f} req/s (median of {len(results[1])})")
    print(f"llm-edge --workers 2: {two:,.0f} req/s (median of {len(results[2])})")
    print(f"2 workers / 1 worker: {two / one:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
