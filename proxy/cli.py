"""Command line: `llm-edge` and `python -m proxy`."""

from __future__ import annotations

import argparse
import logging
import sys

from proxy import __version__, config
from proxy.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the config, and serve."""
    parser = argparse.ArgumentParser(prog="llm-edge", description="A microsecond-overhead LLM gateway.")
    parser.add_argument("--config", metavar="PATH", help="TOML config file (default: providers from the environment)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on; overrides [server] listen")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop (default uvloop)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--version", action="version", version=f"llm-edge {__version__}")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        settings = config.load(args.config)
        if args.listen:
            settings = config.with_listen(settings, args.listen)
    except ConfigError as exc:
        print(f"llm-edge: invalid configuration: {exc}", file=sys.stderr)
        return 2
    if args.check_config:
        print(f"llm-edge: {settings.source}: ok ({len(settings.models)} models, {len(settings.providers)} providers)")
        return 0
    if args.workers > 1:
        from proxy import workers

        return workers.run(settings, args.workers, loop_kind=args.loop, config_path=args.config, listen=args.listen)

    from proxy import server  # imported here so --check-config stays fast

    def reload() -> config.Settings:
        fresh = config.load(args.config)
        return config.with_listen(fresh, args.listen) if args.listen else fresh

    return server.run(settings, loop_kind=args.loop, reload=reload)


if __name__ == "__main__":
    sys.exit(main())
