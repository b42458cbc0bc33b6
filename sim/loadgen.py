# sim/loadgen.py: the shared load generator's public API and its `python -m sim.loadgen` CLI.
#
# Rules: measurements run the load in a separate process (`run_process` / `LoadProcess`), so
# the generator never shares a GIL with the gateway or the caller; `run` and `run_async` are
# for tests and tools that already own a process. The hot path lives in `sim.engine`; this
# module only builds request bytes, moves specs and results across the process boundary and
# parses the command line.
#
# Use from bench (one process, pinned; several LoadProcess side by side plus merge() for more):
#     spec = LoadSpec("127.0.0.1", port, payloads, concurrency=64, duration=10)   # or rate=5000
#     r = run_process(spec, cpu=[1], progress=print)
#     r.rps, r.latency.percentile(99), r.to_dict(histograms=False)                # µs
#
# Child protocol (`--jsonl`): payloads arrive on stdin (`--payloads -`), framed by
# `encode_payloads`; stdout carries one JSON object per line, `{"progress": {...}}` about once
# per second and finally `{"results": {...}}` (Results.to_dict with histograms).
from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import orjson

from sim.engine import LoadgenError, LoadSpec, run_async
from sim.procs import terminate
from sim.results import ERROR_KINDS, Progress, Results, merge

__all__ = [
    "ERROR_KINDS",
    "LoadProcess",
    "LoadSpec",
    "LoadgenError",
    "Progress",
    "Results",
    "decode_payloads",
    "encode_payloads",
    "merge",
    "request_bytes",
    "run",
    "run_async",
    "run_process",
]

_ROOT = str(Path(__file__).resolve().parent.parent)  # the directory holding the `sim` package


def request_bytes(
    method: str, path: str, host: str, headers: Iterable[tuple[str, str]] = (), body: bytes = b""
) -> bytes:
    """Build one complete HTTP/1.1 request (keep-alive, content-length framed) as bytes."""
    lines = [f"{method} {path} HTTP/1.1", f"host: {host}"]
    lines.extend(f"{k}: {v}" for k, v in headers)
    if body or method not in ("GET", "HEAD"):
        lines.append(f"content-length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def encode_payloads(payloads: Iterable[bytes]) -> bytes:
    """Frame payloads as 4-byte big-endian length + bytes, for `--payloads FILE|-`."""
    return b"".join(len(p).to_bytes(4, "big") + p for p in payloads)


def decode_payloads(data: bytes) -> list[bytes]:
    """Inverse of :func:`encode_payloads`; raises :class:`LoadgenError` on a truncated frame."""
    out, i, n = [], 0, len(data)
    while i < n:
        if i + 4 > n:
            raise LoadgenError("truncated payload frame")
        size = int.from_bytes(data[i:i + 4], "big")
        i += 4
        if i + size > n:
            raise LoadgenError("truncated payload frame")
        out.append(data[i:i + size])
        i += size
    return out


def new_loop(kind: str = "uvloop") -> asyncio.AbstractEventLoop:
    """Create an event loop of the given kind ("uvloop" falls back to asyncio if missing)."""
    if kind == "uvloop":
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a hard dependency
            return asyncio.new_event_loop()
        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(spec: LoadSpec, progress: Callable[[Progress], None] | None = None) -> Results:
    """Run the load in *this* process on a fresh loop of kind ``spec.loop``; return results."""
    spec.validate()
    with asyncio.Runner(loop_factory=lambda: new_loop(spec.loop)) as runner:
        return runner.run(run_async(spec, progress))


def spec_argv(spec: LoadSpec) -> list[str]:
    """Command-line arguments (without payloads) that reproduce ``spec`` in a child."""
    argv = [
        "--target", f"{spec.host}:{spec.port}",
        "--concurrency", str(spec.concurrency),
        "--timeout", repr(spec.timeout),
        "--connect-timeout", repr(spec.connect_timeout),
        "--terminator=" + spec.terminator.decode("latin-1"),  # "=" form: the value may start with "-"
        "--progress-interval", repr(spec.progress_interval),
        "--loop", spec.loop,
    ]
    if spec.track:
        argv.append("--track")
    for flag, value in (("--requests", spec.requests), ("--duration", spec.duration),
                        ("--rate", spec.rate), ("--connections", spec.connections)):
        if value is not None:
            argv += [flag, repr(value)]
    return argv


class LoadProcess:
    """A load run in a child process (``python -m sim.loadgen --jsonl``), started at once.

    Several can run side by side (merge their results with :func:`merge`). ``progress`` is
    called in the caller's thread from inside :meth:`result`. Use as a context manager, or
    call :meth:`stop` in a ``finally``: it ends the child by pid.
    """

    __slots__ = ("spec", "progress", "proc", "_stderr")

    def __init__(
        self,
        spec: LoadSpec,
        *,
        cpu: Sequence[int] | None = None,
        progress: Callable[[Progress], None] | None = None,
        python: str | None = None,
    ) -> None:
        spec.validate()
        self.spec = spec
        self.progress = progress
        argv = [python or sys.executable, "-m", "sim.loadgen", *spec_argv(spec), "--payloads", "-", "--jsonl"]
        if cpu:
            argv += ["--cpu", ",".join(str(c) for c in cpu)]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)  # import this checkout
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                env=env, start_new_session=True,  # Ctrl-C reaches only the parent, which stops us by pid
            )
        except BaseException:
            self._stderr.close()
            raise
        try:
            self.proc.stdin.write(encode_payloads(spec.payloads))  # type: ignore[union-attr]
            self.proc.stdin.close()  # type: ignore[union-attr]
        except BrokenPipeError:
            pass  # the child died early; result() reports why

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    def result(self) -> Results:
        """Wait for the run to end, relaying progress; return its results.

        Raises :class:`LoadgenError` (with the child's stderr) if the child produced none.
        """
        results: dict[str, Any] | None = None
        for line in self.proc.stdout:  # type: ignore[union-attr]
            msg = orjson.loads(line)
            if "progress" in msg:
                if self.progress is not None:
                    self.progress(Progress.from_dict(msg["progress"]))
            elif "results" in msg:
                results = msg["results"]
        code = self.proc.wait()
        if results is None:
            self._stderr.seek(0)
            err = self._stderr.read().decode("utf-8", "replace").strip()
            raise LoadgenError(f"load process exited with {code}: {err[-2000:] or 'no output'}")
        return Results.from_dict(results)

    def stop(self, grace: float = 2.0) -> None:
        """End the child (SIGTERM, then SIGKILL after ``grace`` seconds) and release pipes."""
        proc = self.proc
        terminate(proc, grace)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        self._stderr.close()

    def __enter__(self) -> LoadProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_process(
    spec: LoadSpec,
    *,
    cpu: Sequence[int] | None = None,
    progress: Callable[[Progress], None] | None = None,
    python: str | None = None,
) -> Results:
    """Run the load in a child process (optionally pinned to ``cpu``) and return its results."""
    with LoadProcess(spec, cpu=cpu, progress=progress, python=python) as lp:
        return lp.result()


# command line


def parse_cpus(text: str) -> list[int]:
    """Parse a CPU list like ``3``, ``0,2`` or ``0-3`` (taskset -c syntax)."""
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m sim.loadgen", description="HTTP/1.1 keep-alive load generator")
    p.add_argument("--target", required=True, help="HOST:PORT to load")
    src = p.add_argument_group("what to send (either --payloads, or one request built from the rest)")
    src.add_argument("--payloads", help="file of framed requests (see encode_payloads); '-' reads stdin")
    src.add_argument("--method", default="GET")
    src.add_argument("--path", default="/")
    src.add_argument("--header", action="append", default=[], metavar="'NAME: VALUE'")
    src.add_argument("--body", help="request body (string)")
    src.add_argument("--body-file", help="request body (file)")
    how = p.add_argument_group("how hard")
    how.add_argument("--requests", type=int, help="total requests (default: 1000 unless --duration)")
    how.add_argument("--duration", type=float, help="seconds to run")
    how.add_argument("--concurrency", type=int, default=32, help="closed loop: requests in flight")
    how.add_argument("--rate", type=float, help="open loop: requests per second on a fixed schedule")
    how.add_argument("--connections", type=int, help="open loop: max connections (default: --concurrency)")
    how.add_argument("--timeout", type=float, default=10.0, help="per-request timeout, seconds")
    how.add_argument("--connect-timeout", type=float, default=5.0, help="per-connect timeout, seconds")
    how.add_argument("--terminator", default="data: [DONE]", help="an event stream succeeds only if it contains this")
    how.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    how.add_argument("--cpu", help="pin this process to CPUs (e.g. 1 or 0,2 or 2-3)")
    how.add_argument("--track", action="store_true",
                     help="count x-llm-edge-provider and x-cache per response (timeline, cache hit rate)")
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print the results as one JSON object")
    out.add_argument("--jsonl", action="store_true", help="machine protocol: progress and results as JSON lines")
    out.add_argument("--progress-interval", type=float, default=1.0)
    out.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _payloads_from_args(args: argparse.Namespace) -> list[bytes]:
    if args.payloads:
        if args.payloads == "-":
            return decode_payloads(sys.stdin.buffer.read())
        return decode_payloads(Path(args.payloads).read_bytes())
    body = b""
    if args.body_file:
        body = Path(args.body_file).read_bytes()
    elif args.body is not None:
        body = args.body.encode()
    headers = [tuple(h.split(":", 1)) for h in args.header]
    return [request_bytes(args.method, args.path, args.target, [(k.strip(), v.strip()) for k, v in headers], body)]


def _print_text(r: Results) -> None:
    d = r.to_dict(histograms=False)
    print(f"requests {r.requests}  ok {r.ok}  errors {r.errors}  elapsed {r.elapsed_s:.3f}s  rps {r.rps:.1f}")
    for key in ("latency_us", "ttfb_us") + (("send_lag_us",) if r.mode == "open" else ()):
        s = d[key]
        print(f"{key:<12} p50 {s['p50']:.0f}  p90 {s['p90']:.0f}  p99 {s['p99']:.0f}  max {s['max']:.0f}")
    print("status " + "  ".join(f"{k}: {v}" for k, v in sorted(r.status.items())))
    if r.error_kinds:
        print("errors " + "  ".join(f"{k}: {v}" for k, v in r.error_kinds.items()))


def main(argv: list[str] | None = None) -> int:
    """CLI entry: exit 0 if every request succeeded, 1 if some failed, 2 if the run could not start."""
    args = _parser().parse_args(argv)
    if args.cpu:
        os.sched_setaffinity(0, parse_cpus(args.cpu))
    host, _, port = args.target.rpartition(":")
    try:
        payloads = _payloads_from_args(args)
        requests = args.requests
        if requests is None and args.duration is None:
            requests = 1000 if not args.payloads else len(payloads)
        spec = LoadSpec(
            host=host, port=int(port), payloads=payloads, concurrency=args.concurrency, requests=requests,
            duration=args.duration, rate=args.rate, connections=args.connections, timeout=args.timeout,
            connect_timeout=args.connect_timeout,
            terminator=args.terminator.encode("latin-1"), progress_interval=args.progress_interval, loop=args.loop,
            track=args.track,
        )
        progress: Callable[[Progress], None] | None = None
        if args.jsonl:
            def progress(p: Progress) -> None:
                sys.stdout.buffer.write(orjson.dumps({"progress": p.to_dict()}) + b"\n")
                sys.stdout.flush()
        elif not args.quiet:
            def progress(p: Progress) -> None:
                print(f"[loadgen] {p.elapsed_s:6.1f}s done {p.done} ok {p.ok} errors {p.errors} "
                      f"in-flight {p.in_flight} rps {p.rps:.0f}", file=sys.stderr, flush=True)
        results = run(spec, progress)
    except LoadgenError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    if args.jsonl:
        sys.stdout.buffer.write(orjson.dumps({"results": results.to_dict()}) + b"\n")
    elif args.json:
        sys.stdout.buffer.write(orjson.dumps(results.to_dict()) + b"\n")
    else:
        _print_text(results)
    sys.stdout.flush()
    return 0 if results.errors == 0 and results.requests > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
