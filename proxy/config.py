"""Settings: read the TOML file once, validate every key, and freeze the result.

Rules for this file:
1. Every configured value that goes on the wire is encoded to bytes here, at load time
   (the Host header, the provider's auth header, each route's upstream model name), so the
   request path never encodes a string.
2. An invalid file is refused as a whole, with a message that names the bad key. The gateway
   never starts half-configured.
3. Provider keys are held in fields excluded from every repr and never put in a message.
4. What is suspicious but usable (a key with a trailing newline, a base_url without its version
   prefix, no provider at all, a provider left unusable by `allow_missing_keys`) is corrected
   and described in `Settings.warnings`, which the command line logs at start and prints under
   `--check-config`. The messages name keys and variables, never a key's value.

Ids: providers are numbered 0..P-1 and routes 0..R-1 in file order; per-provider and
per-route state elsewhere lives in arrays indexed by these ids. Each provider also gets one
"direct" route, used when a client names `provider/model` instead of a configured model.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import MISSING, dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import orjson

from proxy.accesslog import AccessLogSettings
from proxy.auth import AdminSettings, AuthSettings
from proxy.cache import CacheSettings
from proxy.cache.policy import parse_mode
from proxy.errors import ConfigError
from proxy.limits import LedgerSettings, LimitsSettings
from proxy.prices import Prices, price_list, prices_from_table
from proxy.routing import ModelSpec, RouterSettings, RouteSpec
from proxy.routing.settings import unknown_key
from proxy.tracecontext import TracingSettings

PROVIDER_KINDS = ("openai", "anthropic", "local")
DEFAULT_LISTEN = "127.0.0.1:8080"
DEFAULT_BASE_URLS = {"openai": "https://api.openai.com/v1", "anthropic": "https://api.anthropic.com/v1"}
DEFAULT_ANTHROPIC_VERSION = "2023-06-01"


@dataclass(slots=True, frozen=True)
class ServerSettings:
    """The `[server]` table: where to listen and the bounds on what a client may send."""

    host: str = "127.0.0.1"
    port: int = 8080
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    max_uri_bytes: int = 8 * 1024
    max_body_bytes: int = 32 * 1024 * 1024
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    keepalive_timeout_s: float = 75.0
    max_pipelined: int = 16
    hold_answer_bytes: int = 4 * 1024 * 1024  # non-streamed answers up to this are held whole and checked
    shutdown_timeout_s: float = 30.0  # on SIGTERM, how long in-flight requests (streams too) may finish
    forward_headers: tuple[bytes, ...] = (b"openai-organization", b"openai-project", b"openai-beta", b"anthropic-beta")
    # TLS and HTTP/2 (proxy/tls.py, proxy/h2.py)
    tls_cert_file: str | None = None  # with tls_key_file: serve TLS, ALPN h2 and http/1.1
    tls_key_file: str | None = None
    h2_max_concurrent_streams: int = 100
    h2_max_header_list_size: int = 32 * 1024  # decoded header list, and the encoded block on the wire
    h2_stream_buffer_bytes: int = 64 * 1024  # output held past a stream's window before its upstream pauses
    h2_send_timeout_s: float = 60.0  # a stream whose output makes no progress this long is reset
    h2_reset_rate: float = 100.0  # client stream resets per second, sustained...
    h2_reset_burst: int = 200  # ...and in a burst, before GOAWAY (Rapid Reset)
    h2_control_rate: float = 500.0  # SETTINGS, PING, WINDOW_UPDATE, PRIORITY and empty DATA frames per second...
    h2_control_burst: int = 1000  # ...and in a burst, before GOAWAY
    # Operations (issue 17)
    allow_missing_keys: bool = False  # a provider whose key variable is unset is unusable instead of an error
    allow_request_overrides: bool = False  # honour the x-llm-edge-* control headers (proxy/overrides.py)
    max_request_tags: int = 8  # x-llm-edge-tags: pairs kept per request...
    max_tag_bytes: int = 64  # ...and the longest `name=value` pair kept
    event_interval_s: float = 10.0  # one event line per route and kind of event per this long (proxy/events.py)
    tag_series: int = 100  # distinct tag values counted in /metrics; the rest count as "other"


@dataclass(slots=True, frozen=True)
class ProviderSettings:
    """One `[[providers]]` entry, with its wire-ready bytes precomputed."""

    id: int
    name: str
    kind: str
    base_url: str
    tls: bool
    host: str
    port: int
    base_path: str  # e.g. "/v1", no trailing slash
    api_key: str | None = field(default=None, repr=False)
    api_key_env: str | None = None
    anthropic_version: str = DEFAULT_ANTHROPIC_VERSION
    default_max_tokens: int = 4096  # sent to an Anthropic provider when an OpenAI client gives none
    max_connections: int = 256
    pool_idle_timeout_s: float = 30.0
    connect_timeout_s: float = 10.0
    first_byte_timeout_s: float = 600.0  # a non-streamed reasoning answer sends nothing until it is done
    stream_idle_timeout_s: float = 120.0
    total_timeout_s: float = 1800.0
    ca_file: str | None = None
    max_in_flight: int = 0  # requests in flight to this provider at once; 0 = unlimited
    soonest_timeout_s: float = 120.0  # the shortest of the three response timeouts
    # `[providers.prices]`: upstream model -> prices, for `provider/model` requests (not part of the
    # provider's identity: a price change keeps the warm pool)
    prices: dict[str, Prices] = field(default_factory=dict, compare=False, hash=False)
    # Precomputed request-head fragment: host and auth lines, ready to send.
    fixed_headers: bytes = field(default=b"", repr=False)
    # Upstream models `GET /v1/models` lists as `provider/model` (with those of `prices`).
    models: tuple[str, ...] = field(default=(), compare=False, hash=False)

    def path(self, endpoint: str) -> bytes:
        """The upstream request target for an endpoint such as "/chat/completions"."""
        return (self.base_path + endpoint).encode("ascii")


@dataclass(slots=True, frozen=True)
class Route:
    """One way to serve a model: a provider, the upstream model name and its prices."""

    id: int  # route id, the index into every per-route array (the router's too)
    model_id: int  # the router's model id
    model: str  # the name clients send; for a direct route, "<provider>/*"
    provider: ProviderSettings
    upstream_model: str | None  # None on a direct route: the client's name after the slash
    upstream_model_json: bytes  # the name as a JSON string literal, spliced into bodies
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    weight: int = 1
    # The prices as integer pico-dollars per token: spend is exact integer arithmetic.
    input_pusd: int = 0
    output_pusd: int = 0
    # Every kind of token's price (proxy/prices.py); None: the route sets no price, so a key with a
    # budget is not served by it. A direct route's prices depend on the model: `prices.route_prices`.
    prices: Prices | None = None


@dataclass(slots=True, frozen=True)
class ModelSettings:
    """One `[[models]]` entry: a client-facing name, its routes and its router settings."""

    id: int
    name: str
    routes: tuple[Route, ...]
    router: RouterSettings
    cache: str | None = None  # "always" | "deterministic" | "never"; None: the [cache] policy


@dataclass(slots=True, frozen=True)
class Settings:
    """Everything the gateway was configured with."""

    server: ServerSettings
    providers: tuple[ProviderSettings, ...]
    models: dict[str, ModelSettings]
    routes: tuple[Route, ...]  # every route, indexed by route id
    direct_routes: dict[str, Route]  # provider name -> its direct route
    router: RouterSettings  # the [router] table: defaults for every model
    model_specs: tuple[ModelSpec, ...]  # what the router is built from, by model id
    cache: CacheSettings = CacheSettings()
    auth: AuthSettings = AuthSettings()
    log: AccessLogSettings = AccessLogSettings()
    source: str = "<defaults>"
    limits: LimitsSettings = LimitsSettings()
    ledger: LedgerSettings = LedgerSettings()
    admin: AdminSettings = AdminSettings()
    unusable: tuple[tuple[int, str], ...] = ()  # (provider id, why) for `Router.mark_unusable`
    warnings: tuple[str, ...] = ()  # what was corrected or is suspicious; see rule 4
    tracing: TracingSettings = TracingSettings()  # [tracing]: OpenTelemetry export, off by default

    @property
    def cache_modes(self) -> dict[str, str]:
        """Per-model cache policies that differ from the [cache] default."""
        return {name: m.cache for name, m in self.models.items() if m.cache is not None}

    def resolve(self, name: str) -> tuple[int, RouterSettings] | None:
        """(router model id, router settings) serving a requested model name: a configured model, or
        `provider/model` addressed directly; None when neither exists."""
        model = self.models.get(name)
        if model is not None:
            return model.id, model.router
        provider_name, slash, _ = name.partition("/")
        route = self.direct_routes.get(provider_name) if slash else None
        return (route.model_id, self.router) if route is not None else None

    def provider_by_name(self, name: str) -> ProviderSettings | None:
        for provider in self.providers:
            if provider.name == name:
                return provider
        return None


# Loading


def load(path: str | None, env: dict[str, str] | None = None) -> Settings:
    """Read and validate a config file; with no path, configure from the environment alone."""
    env = dict(os.environ) if env is None else env
    if path is None:
        return from_table(_env_only_table(env), env, source="<environment>")
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return from_table(table, env, source=path)


def _env_only_table(env: dict[str, str]) -> dict[str, Any]:
    providers = []
    if env.get("OPENAI_API_KEY"):
        providers.append({"name": "openai", "kind": "openai", "api_key_env": "OPENAI_API_KEY"})
    if env.get("ANTHROPIC_API_KEY"):
        providers.append({"name": "anthropic", "kind": "anthropic", "api_key_env": "ANTHROPIC_API_KEY"})
    return {"providers": providers}


def from_table(table: dict[str, Any], env: dict[str, str], source: str = "<table>") -> Settings:
    """Validate a parsed TOML document and build the frozen settings."""
    _check_keys(table, {"server", "router", "cache", "auth", "log", "providers", "models", "limits", "ledger", "admin",
                        "tracing"}, "")  # fmt: skip
    server = _server(_table(table, "server", ""))
    router = RouterSettings.from_table(_table(table, "router", ""), "router")
    cache = CacheSettings.from_table(_table(table, "cache", ""), env=env)
    auth = AuthSettings.from_table(_table(table, "auth", ""), env)
    log = AccessLogSettings.from_table(_table(table, "log", ""))
    limits = LimitsSettings.from_table(_table(table, "limits", ""))
    ledger = LedgerSettings.from_table(_table(table, "ledger", ""), None if source.startswith("<") else source)
    admin = AdminSettings.from_table(_table(table, "admin", ""), env)
    tracing = TracingSettings.from_table(_table(table, "tracing", ""))
    if admin.enabled:
        auth = replace(auth, managed=True)
        for key in auth.keys:
            if key.digest == admin.digest:
                raise ConfigError(f"admin.key_env: the admin key is the same as gateway key {key.name!r}")
    warnings: list[str] = []
    unusable: list[tuple[int, str]] = []
    providers = tuple(_provider(i, p, env, server.allow_missing_keys, warnings, unusable)
                      for i, p in enumerate(_array_of_tables(table, "providers", "")))  # fmt: skip
    if not providers:
        warnings.append("no providers are configured: every model request will fail "
                        "(add [[providers]], or set OPENAI_API_KEY or ANTHROPIC_API_KEY)")  # fmt: skip
    names = [p.name for p in providers]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"providers: duplicate provider name {name!r}")
    provider_ids = {p.name: p.id for p in providers}

    routes: list[Route] = []
    models: dict[str, ModelSettings] = {}
    specs: list[ModelSpec] = []
    for i, m in enumerate(_array_of_tables(table, "models", "")):
        where = f"models[{i}]"
        spec = ModelSpec.from_table(m, where, router, provider_ids)
        if spec.name in models:
            raise ConfigError(f"{where}.name: duplicate model name {spec.name!r}")
        raw_routes = m.get("routes") or []
        model_routes = tuple(
            _route(len(routes) + j, len(specs), spec.name, r, providers,
                   prices_from_table(raw_routes[j], f"{where}.routes[{j}]"))
            for j, r in enumerate(spec.routes)
        )  # fmt: skip
        routes.extend(model_routes)
        cache_mode = m.get("cache")
        if cache_mode is not None:
            parse_mode(cache_mode, f"{where}.cache")
        models[spec.name] = ModelSettings(len(specs), spec.name, model_routes, spec.settings, cache_mode)
        specs.append(spec)

    # Each provider also serves "provider/<any model>" through one direct route of its own.
    direct: dict[str, Route] = {}
    for p in providers:
        spec = ModelSpec(f"{p.name}/*", (RouteSpec(p.id, "*"),), router)
        route = Route(id=len(routes), model_id=len(specs), model=spec.name, provider=p, upstream_model=None,
                      upstream_model_json=b"")  # fmt: skip
        routes.append(route)
        specs.append(spec)
        direct[p.name] = route
    return Settings(server, providers, models, tuple(routes), direct, router, tuple(specs), cache, auth, log, source,
                    limits, ledger, admin, unusable=tuple(unusable), warnings=tuple(warnings),
                    tracing=tracing)  # fmt: skip


def _server(t: dict[str, Any]) -> ServerSettings:
    where = "server"
    defaults = ServerSettings()
    _check_keys(t, {"listen", *ServerSettings.__dataclass_fields__} - {"host", "port"}, where)
    host, port = parse_listen(_str(t, "listen", where) or DEFAULT_LISTEN, f"{where}.listen")
    return ServerSettings(
        host=host,
        port=port,
        max_header_bytes=_int(t, "max_header_bytes", where, defaults.max_header_bytes),
        max_headers=_int(t, "max_headers", where, defaults.max_headers),
        max_uri_bytes=_int(t, "max_uri_bytes", where, defaults.max_uri_bytes),
        max_body_bytes=_int(t, "max_body_bytes", where, defaults.max_body_bytes),
        header_timeout_s=_seconds(t, "header_timeout_s", where, defaults.header_timeout_s),
        body_timeout_s=_seconds(t, "body_timeout_s", where, defaults.body_timeout_s),
        keepalive_timeout_s=_seconds(t, "keepalive_timeout_s", where, defaults.keepalive_timeout_s),
        max_pipelined=_int(t, "max_pipelined", where, defaults.max_pipelined),
        hold_answer_bytes=_int(t, "hold_answer_bytes", where, defaults.hold_answer_bytes),
        shutdown_timeout_s=_seconds(t, "shutdown_timeout_s", where, defaults.shutdown_timeout_s),
        forward_headers=_header_names(t, "forward_headers", where, defaults.forward_headers),
        allow_missing_keys=_bool(t, "allow_missing_keys", where, defaults.allow_missing_keys),
        allow_request_overrides=_bool(t, "allow_request_overrides", where, defaults.allow_request_overrides),
        max_request_tags=_count(t, "max_request_tags", where, defaults.max_request_tags),
        max_tag_bytes=_int(t, "max_tag_bytes", where, defaults.max_tag_bytes),
        event_interval_s=_number(t, "event_interval_s", where, defaults.event_interval_s),
        tag_series=_count(t, "tag_series", where, defaults.tag_series),
        **_tls_and_h2(t, where, defaults),
    )


def _tls_and_h2(t: dict[str, Any], where: str, defaults: ServerSettings) -> dict[str, Any]:
    cert, key = _str(t, "tls_cert_file", where), _str(t, "tls_key_file", where)
    if (cert is None) != (key is None):
        raise ConfigError(f"{where}.tls_cert_file: tls_cert_file and tls_key_file go together")
    for name, path in (("tls_cert_file", cert), ("tls_key_file", key)):
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"{where}.{name}: no such file {path!r}")
    return {
        "tls_cert_file": cert,
        "tls_key_file": key,
        "h2_max_concurrent_streams": _int(t, "h2_max_concurrent_streams", where, defaults.h2_max_concurrent_streams),
        "h2_max_header_list_size": _int(t, "h2_max_header_list_size", where, defaults.h2_max_header_list_size),
        "h2_stream_buffer_bytes": _int(t, "h2_stream_buffer_bytes", where, defaults.h2_stream_buffer_bytes),
        "h2_send_timeout_s": _seconds(t, "h2_send_timeout_s", where, defaults.h2_send_timeout_s),
        "h2_reset_rate": _rate(t, "h2_reset_rate", where, defaults.h2_reset_rate),
        "h2_reset_burst": _int(t, "h2_reset_burst", where, defaults.h2_reset_burst),
        "h2_control_rate": _rate(t, "h2_control_rate", where, defaults.h2_control_rate),
        "h2_control_burst": _int(t, "h2_control_burst", where, defaults.h2_control_burst),
    }


_PROVIDER_KEYS = {
    "name", "kind", "base_url", "api_key_env", "api_key", "anthropic_version", "default_max_tokens",
    "max_connections", "max_in_flight",
    "pool_idle_timeout_s", "connect_timeout_s", "first_byte_timeout_s", "stream_idle_timeout_s",
    "total_timeout_s", "ca_file", "prices", "models",
}  # fmt: skip


def _provider(index: int, t: dict[str, Any], env: dict[str, str], allow_missing_keys: bool = False,
              warnings: list[str] | None = None, unusable: list[tuple[int, str]] | None = None) -> ProviderSettings:
    warnings = [] if warnings is None else warnings
    where = f"providers[{index}]"
    _check_keys(t, _PROVIDER_KEYS, where)
    name = _str(t, "name", where, required=True)
    assert name is not None
    if "/" in name or not name.strip():
        raise ConfigError(f"{where}.name: must be non-empty and contain no '/'")
    kind = _str(t, "kind", where, required=True)
    if kind not in PROVIDER_KINDS:
        raise ConfigError(f"{where}.kind: expected one of {', '.join(PROVIDER_KINDS)}, got {kind!r}")
    base_url = _str(t, "base_url", where) or DEFAULT_BASE_URLS.get(kind)
    if base_url is None:
        raise ConfigError(f"{where}.base_url: required for kind {kind!r}")
    tls, host, port, base_path = _parse_base_url(base_url, f"{where}.base_url")
    if kind in DEFAULT_BASE_URLS and not base_path:
        # Written the way the Anthropic SDK takes it (no /v1): every request would 404. Both APIs
        # live under /v1, so the fix is certain; say so rather than refuse.
        fixed = base_url.rstrip("/") + "/v1"
        warnings.append(f"{where}.base_url: {base_url!r} has no version prefix; using {fixed!r} "
                        f"(write it as the OpenAI SDK does, ending in /v1)")  # fmt: skip
        base_url, base_path = fixed, "/v1"

    key_env = _str(t, "api_key_env", where)
    api_key = _str(t, "api_key", where)
    if kind != "local" and api_key is None and key_env is None:
        raise ConfigError(f"{where}.api_key_env: required for kind {kind!r} (the environment variable holding its key)")
    if api_key is not None:
        api_key = _clean_key(api_key, f"{where}.api_key", "the key", warnings)
    elif key_env is not None:
        value = env.get(key_env, "")
        if value.strip():
            api_key = _clean_key(value, f"{where}.api_key_env", f"the value of {key_env}", warnings)
        elif allow_missing_keys:
            reason = f"its key variable {key_env} is unset or empty"
            warnings.append(f"{where}.api_key_env: provider {name!r} is unusable: {reason} (allow_missing_keys)")
            if unusable is not None:
                unusable.append((index, reason))
        else:
            raise ConfigError(f"{where}.api_key_env: the environment variable {key_env} is unset or empty "
                              f"(provider {name!r}); set it, or set [server] allow_missing_keys = true "
                              f"to start with this provider unusable")  # fmt: skip
    ca_file = _str(t, "ca_file", where)
    if ca_file is not None and not os.path.isfile(ca_file):
        raise ConfigError(f"{where}.ca_file: no such file: {ca_file}")
    version = _str(t, "anthropic_version", where) or DEFAULT_ANTHROPIC_VERSION

    d = _PROVIDER_DEFAULTS
    first_byte = _seconds(t, "first_byte_timeout_s", where, d["first_byte_timeout_s"])
    stream_idle = _seconds(t, "stream_idle_timeout_s", where, d["stream_idle_timeout_s"])
    total = _seconds(t, "total_timeout_s", where, d["total_timeout_s"])
    provider = ProviderSettings(
        id=index, name=name, kind=kind, base_url=base_url, tls=tls, host=host, port=port, base_path=base_path,
        api_key=api_key, api_key_env=key_env, anthropic_version=version,
        default_max_tokens=_int(t, "default_max_tokens", where, d["default_max_tokens"]),
        max_connections=_int(t, "max_connections", where, d["max_connections"]),
        pool_idle_timeout_s=_seconds(t, "pool_idle_timeout_s", where, d["pool_idle_timeout_s"]),
        connect_timeout_s=_seconds(t, "connect_timeout_s", where, d["connect_timeout_s"]),
        first_byte_timeout_s=first_byte,
        stream_idle_timeout_s=stream_idle,
        total_timeout_s=total,
        ca_file=ca_file,
        max_in_flight=_count(t, "max_in_flight", where, 0),
        soonest_timeout_s=min(first_byte, stream_idle, total),
        fixed_headers=_fixed_headers(kind, host, port, tls, api_key, version),
        prices=price_list(t.get("prices"), f"{where}.prices"),
        models=_names(t, "models", where),
    )  # fmt: skip
    return provider


def _clean_key(key: str, where: str, what: str, warnings: list[str]) -> str:
    """The key without surrounding whitespace (a warning says so); never a line break in a header."""
    trimmed = key.strip()
    if trimmed != key:
        warnings.append(f"{where}: {what} had surrounding whitespace or a line break; it was trimmed")
    if not trimmed or any(not " " < c <= "~" for c in trimmed):
        raise ConfigError(f"{where}: {what} must be printable ASCII with no space or control character")
    return trimmed


_PROVIDER_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in ProviderSettings.__dataclass_fields__.values() if not isinstance(f.default, type(MISSING))
}


def _fixed_headers(kind: str, host: str, port: int, tls: bool, api_key: str | None, version: str) -> bytes:
    default_port = 443 if tls else 80
    authority = host if port == default_port else f"{host}:{port}"
    if ":" in host:  # IPv6 literal
        authority = f"[{host}]" if port == default_port else f"[{host}]:{port}"
    lines = [f"host: {authority}\r\n"]
    if api_key:
        if kind == "anthropic":
            lines.append(f"x-api-key: {api_key}\r\n")
        else:
            lines.append(f"authorization: Bearer {api_key}\r\n")
    if kind == "anthropic":
        lines.append(f"anthropic-version: {version}\r\n")
    return "".join(lines).encode("latin-1")


def _route(route_id: int, model_id: int, model: str, spec: RouteSpec, providers: tuple[ProviderSettings, ...],
           prices: Prices | None = None) -> Route:  # fmt: skip
    return Route(
        id=route_id,
        model_id=model_id,
        model=model,
        provider=providers[spec.provider_id],
        upstream_model=spec.upstream_model,
        upstream_model_json=orjson.dumps(spec.upstream_model),
        input_per_mtok=spec.input_per_mtok,
        output_per_mtok=spec.output_per_mtok,
        weight=spec.weight,
        input_pusd=spec.input_pusd,
        output_pusd=spec.output_pusd,
        prices=prices,
    )


# Small parsers


def parse_listen(value: str, where: str = "--listen") -> tuple[str, int]:
    """Split "HOST:PORT" (or "[v6]:PORT") into its parts."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(f"{where}: expected HOST:PORT, got {value!r}")
    return host, int(port_text)


def _parse_base_url(url: str, where: str) -> tuple[bool, str, int, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where}: expected an http:// or https:// URL, got {url!r}")
    if parts.query or parts.fragment or parts.username:
        raise ConfigError(f"{where}: must not carry credentials, a query or a fragment")
    tls = parts.scheme == "https"
    try:
        port = parts.port or (443 if tls else 80)
    except ValueError:
        raise ConfigError(f"{where}: invalid port in {url!r}") from None
    return tls, parts.hostname, port, parts.path.rstrip("/")


_NEVER_FORWARDED = {"authorization", "x-api-key", "host", "content-length", "transfer-encoding", "connection"}


def _header_names(t: dict[str, Any], key: str, where: str, default: tuple[bytes, ...]) -> tuple[bytes, ...]:
    value = t.get(key)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(f"{_join(where, key)}: expected an array of header names")
    for name in value:
        if name.lower() in _NEVER_FORWARDED:
            raise ConfigError(f"{_join(where, key)}: {name!r} is never forwarded")
    return tuple(name.lower().encode("latin-1") for name in value)


def _check_keys(t: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in t:
        if key not in allowed:
            raise ConfigError(unknown_key(_join(where, key), key, sorted(allowed)))


def _table(t: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = t.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{_join(where, key)}: expected a table")
    return value


def _array_of_tables(t: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = t.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{_join(where, key)}: expected an array of tables ([[{key}]])")
    return value


def _str(t: dict[str, Any], key: str, where: str, required: bool = False) -> str | None:
    value = t.get(key)
    if value is None:
        if required:
            raise ConfigError(f"{_join(where, key)}: required")
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{_join(where, key)}: expected a string")
    return value


def _names(t: dict[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = t.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v and v.isprintable() for v in value):
        raise ConfigError(f"{_join(where, key)}: expected an array of model names")
    return tuple(value)


def _bool(t: dict[str, Any], key: str, where: str, default: bool) -> bool:
    value = t.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{_join(where, key)}: expected true or false")
    return value


def _int(t: dict[str, Any], key: str, where: str, default: int) -> int:
    value = t.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{_join(where, key)}: expected a positive integer")
    return value


def _count(t: dict[str, Any], key: str, where: str, default: int) -> int:
    value = t.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{_join(where, key)}: expected an integer >= 0")
    return value


def _number(t: dict[str, Any], key: str, where: str, default: float) -> float:
    value = t.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ConfigError(f"{_join(where, key)}: expected a number >= 0")
    return float(value)


def _seconds(t: dict[str, Any], key: str, where: str, default: float) -> float:
    value = _number(t, key, where, default)
    if value <= 0:
        raise ConfigError(f"{_join(where, key)}: expected a number of seconds > 0")
    return value


def _rate(t: dict[str, Any], key: str, where: str, default: float) -> float:
    value = _number(t, key, where, default)
    if value <= 0:
        raise ConfigError(f"{_join(where, key)}: expected a rate per second > 0")
    return value


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def with_workers(settings: Settings, workers: int) -> Settings:
    """The same settings for one of `workers` processes: each key's limits are divided among them."""
    return replace(settings, auth=replace(settings.auth, workers=workers))


def with_listen(settings: Settings, listen: str) -> Settings:
    """The same settings listening elsewhere (the `--listen` flag wins over the file)."""
    host, port = parse_listen(listen)
    return replace(settings, server=replace(settings.server, host=host, port=port))
