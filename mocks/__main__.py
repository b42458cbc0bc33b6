# `python -m mocks`: run one mock provider until SIGTERM/SIGINT, then exit 0.
#
# The first stdout line is the bound address, exactly `HOST:PORT` (flushed), so a parent process can
# start us with `--listen 127.0.0.1:0` and read the port. Nothing else is printed to stdout.
# Flags map one-to-one onto MockConfig fields (`--ttft-ms` -> `ttft_ms`); the same settings can be
# changed at runtime with `POST /_mock/config`.

from __future__ import annotations

import argparse
import asyncio
import signal
import ssl
import sys
from collections.abc import Callable, Sequence

from .config import KINDS, MockConfig
from .server import start_mock


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (or `[V6]:PORT`) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def build_parser() -> argparse.ArgumentParser:
    """The CLI's argument parser."""
    d = MockConfig()
    p = argparse.ArgumentParser(prog="python -m mocks", description="Run a mock OpenAI or Anthropic provider.")
    p.add_argument("--kind", choices=KINDS, default=d.kind, help="API to mock (default: %(default)s)")
    p.add_argument(
        "--listen",
        type=parse_listen,
        default=("127.0.0.1", 0),
        metavar="HOST:PORT",
        help="address to bind (default: 127.0.0.1:0, an ephemeral port)",
    )
    p.add_argument(
        "--ttft-ms",
        type=float,
        default=d.ttft_ms,
        help="time to first token; for non-streamed answers, time to the response",
    )
    p.add_argument("--token-delay-ms", type=float, default=d.token_delay_ms, help="gap between streamed tokens")
    p.add_argument("--jitter-ms", type=float, default=d.jitter_ms, help="uniform random 0..J added to every delay")
    p.add_argument("--tokens", type=int, default=d.tokens, help="completion tokens per answer (default: %(default)s)")
    p.add_argument("--error-rate", type=float, default=d.error_rate, help="fraction of requests failing (0..1)")
    p.add_argument("--error-status", type=int, default=d.error_status, help="status of injected errors")
    p.add_argument("--retry-after", type=float, default=d.retry_after, help="retry-after seconds on 429/503/529")
    p.add_argument("--require-key", default=d.require_key, metavar="KEY", help="answer 401 unless this key is sent")
    p.add_argument(
        "--keepalive-timeout-s",
        type=float,
        default=d.keepalive_timeout_s,
        help="close idle keep-alive connections after S seconds; <= 0 disables keep-alive",
    )
    p.add_argument("--tls-cert", metavar="FILE", help="PEM certificate chain: serve HTTPS")
    p.add_argument("--tls-key", metavar="FILE", help="PEM private key for --tls-cert")
    p.add_argument("--seed", type=int, default=d.seed, help="RNG seed for jitter and error sampling")
    p.add_argument(
        "--stream-abort-after",
        type=int,
        default=d.stream_abort_after,
        metavar="N",
        help="close the connection after N streamed tokens (fault injection)",
    )
    p.add_argument(
        "--stream-error-after",
        type=int,
        default=d.stream_error_after,
        metavar="N",
        help="send the provider's mid-stream error event after N streamed tokens",
    )
    p.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop implementation")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, serve until SIGTERM/SIGINT, return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = MockConfig(
        kind=args.kind,
        ttft_ms=args.ttft_ms,
        token_delay_ms=args.token_delay_ms,
        jitter_ms=args.jitter_ms,
        tokens=args.tokens,
        error_rate=args.error_rate,
        error_status=args.error_status,
        retry_after=args.retry_after,
        require_key=args.require_key,
        keepalive_timeout_s=args.keepalive_timeout_s,
        seed=args.seed,
        stream_abort_after=args.stream_abort_after,
        stream_error_after=args.stream_error_after,
    )
    try:
        config.validate()
    except ValueError as exc:
        parser.error(str(exc))
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    ssl_ctx = None
    if args.tls_cert is not None:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(args.tls_cert, args.tls_key)
    loop_factory: Callable[[], asyncio.AbstractEventLoop]
    if args.loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    else:
        loop_factory = asyncio.new_event_loop
    host, port = args.listen
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(_serve(config, host, port, ssl_ctx))
    return 0


async def _serve(config: MockConfig, host: str, port: int, ssl_ctx: ssl.SSLContext | None) -> None:
    loop = asyncio.get_running_loop()
    server = await start_mock(config, host, port, ssl_ctx)
    stop: asyncio.Future[None] = loop.create_future()

    def on_signal() -> None:
        if not stop.done():
            stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    sys.stdout.write(server.address + "\n")
    sys.stdout.flush()
    try:
        await stop
    finally:
        await server.close()


if __name__ == "__main__":
    sys.exit(main())
