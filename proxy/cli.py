"""Command line: `llm-edge` and `python -m proxy`."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import orjson

from proxy import __version__, config
from proxy.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, load the config, and serve (or, for `llm-edge keys ...`, manage keys)."""
    args_list = sys.argv[1:] if argv is None else argv
    if args_list[:1] == ["keys"]:
        return keys_main(args_list[1:])
    parser = argparse.ArgumentParser(prog="llm-edge", description="A microsecond-overhead LLM gateway.")
    parser.add_argument("--config", metavar="PATH", help="TOML config file (default: providers from the environment)")
    parser.add_argument("--listen", metavar="HOST:PORT", help="address to listen on; overrides [server] listen")
    parser.add_argument("--check-config", action="store_true", help="validate the config and exit")
    parser.add_argument("--probe", action="store_true",
                        help="with --check-config: call each provider's model list once and print a table")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="processes sharing the port (SO_REUSEPORT)")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop", help="event loop (default uvloop)")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--version", action="version", version=f"llm-edge {__version__}")
    args = parser.parse_args(args_list)

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
        for warning in settings.warnings:
            print(f"llm-edge: warning: {warning}", file=sys.stderr)
        print(f"llm-edge: {settings.source}: ok ({len(settings.models)} models, {len(settings.providers)} providers)")
        if args.probe:
            from proxy import probe

            results = probe.probe_all(settings)
            print(probe.table(results))
            return 0 if all(r.ok for r in results) else 1
        return 0
    if args.probe:
        parser.error("--probe goes with --check-config")
    for warning in settings.warnings:
        logging.getLogger("llm_edge.config").warning("%s", warning)
    if args.workers > 1:
        from proxy import workers

        settings = config.with_workers(settings, args.workers)  # each worker enforces its share of every limit
        return workers.run(settings, args.workers, loop_kind=args.loop, config_path=args.config, listen=args.listen)

    from proxy import server  # imported here so --check-config stays fast

    def reload() -> config.Settings:
        fresh = config.load(args.config)
        return config.with_listen(fresh, args.listen) if args.listen else fresh

    return server.run(settings, loop_kind=args.loop, reload=reload)


# -- llm-edge keys ... : the admin API from the command line ----------------------------------------------


def keys_main(argv: list[str]) -> int:
    """`llm-edge keys create|list|get|update|disable|enable|delete|spend` against a running gateway."""
    parser = argparse.ArgumentParser(prog="llm-edge keys", description="Manage gateway keys on a running gateway.")
    parser.add_argument("--url", default="http://127.0.0.1:8080", help="the gateway (default http://127.0.0.1:8080)")
    parser.add_argument("--admin-key-env", default="LLM_EDGE_ADMIN_KEY", metavar="VAR",
                        help="environment variable holding the admin key (default LLM_EDGE_ADMIN_KEY)")  # fmt: skip
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the gateway")
    commands = parser.add_subparsers(dest="command", required=True)
    limits_help = {"rpm": "requests per minute", "tpm": "tokens per minute", "budget-usd": "spend budget in USD",
                   "budget-period": "1d, 7d, 30d or monthly"}  # fmt: skip

    def with_limits(sub: argparse.ArgumentParser, clearable: bool) -> None:
        for flag, text in limits_help.items():
            suffix = " ('none' removes it)" if clearable else ""
            sub.add_argument(f"--{flag}", metavar="VALUE", help=text + suffix)

    create = commands.add_parser("create", help="make a key; prints its secret, once")
    create.add_argument("name")
    with_limits(create, clearable=False)
    commands.add_parser("list", help="every key, with its limits and spend")
    for name, text in (("get", "one key"), ("disable", "refuse the key's requests"), ("enable", "accept them again"),
                       ("delete", "remove the key (its spend stays in the ledger)"),
                       ("spend", "the key's spend, this period and before")):  # fmt: skip
        commands.add_parser(name, help=text).add_argument("name")
    update = commands.add_parser("update", help="change a key's limits")
    update.add_argument("name")
    with_limits(update, clearable=True)
    args = parser.parse_args(argv)

    admin_key = os.environ.get(args.admin_key_env, "")
    if not admin_key:
        print(f"llm-edge keys: set {args.admin_key_env} to the admin key", file=sys.stderr)
        return 2
    base = args.url.rstrip("/") + "/admin/keys"
    quoted = urllib.parse.quote(getattr(args, "name", "") or "", safe="")
    try:
        body = _limits_body(args) if args.command in ("create", "update") else None
    except ValueError as exc:
        print(f"llm-edge keys: {exc}", file=sys.stderr)
        return 2
    method, url = {
        "create": ("POST", base), "list": ("GET", base), "get": ("GET", f"{base}/{quoted}"),
        "update": ("PATCH", f"{base}/{quoted}"), "disable": ("POST", f"{base}/{quoted}/disable"),
        "enable": ("POST", f"{base}/{quoted}/enable"), "delete": ("DELETE", f"{base}/{quoted}"),
        "spend": ("GET", f"{base}/{quoted}/spend"),
    }[args.command]  # fmt: skip
    if args.command == "create":
        assert body is not None
        body["name"] = args.name
    status, answer = _call(method, url, admin_key, body, args.timeout)
    if status == 0:
        print(f"llm-edge keys: cannot reach {args.url}: {answer.decode(errors='replace')}", file=sys.stderr)
        return 1
    try:
        shown = orjson.dumps(orjson.loads(answer), option=orjson.OPT_INDENT_2).decode()
    except orjson.JSONDecodeError:
        shown = answer.decode("utf-8", "replace")
    if 200 <= status < 300:
        print(shown)
        return 0
    print(f"llm-edge keys: {status}: {shown}", file=sys.stderr)
    return 1


def _limits_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for flag, field, kind in (("rpm", "rpm", int), ("tpm", "tpm", int), ("budget_usd", "budget_usd", float),
                              ("budget_period", "budget_period", str)):  # fmt: skip
        value = getattr(args, flag, None)
        if value is None:
            continue
        if value == "none":
            body[field] = None
            continue
        try:
            body[field] = kind(value)
        except ValueError:
            raise ValueError(f"--{flag.replace('_', '-')}: expected {'an integer' if kind is int else 'a number'}, "
                             f"got {value!r}") from None  # fmt: skip
    return body


def _call(method: str, url: str, admin_key: str, body: dict[str, Any] | None, timeout: float) -> tuple[int, bytes]:
    """(status, body) of one admin request; status 0 when the gateway cannot be reached."""
    data = orjson.dumps(body) if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("authorization", f"Bearer {admin_key}")
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(getattr(exc, "reason", exc)).encode()


if __name__ == "__main__":
    sys.exit(main())
