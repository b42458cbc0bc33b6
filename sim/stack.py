# sim/stack.py: the system under test: mock providers plus one gateway, each its own process.
#
# Rules: everything runs on 127.0.0.1 with port 0; addresses are read back from each child's
# first stdout line. The gateway config is written to the stack's temp directory. `Stack` is a
# context manager and stops every child it started, whatever happens. Runtime knobs that the
# future scenarios need (`mock_config`, `stats`) go over HTTP on the cold path.
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim import procs

PROVIDER_KEY_ENV = "SIM_PROVIDER_KEY"


@dataclass(frozen=True)
class Provider:
    """One mock provider and the gateway route that points at it (prices per million tokens)."""

    name: str
    kind: str  # gateway provider kind: "local" or "openai" (both speak the OpenAI format)
    upstream_model: str
    ttft_ms: float
    token_delay_ms: float
    input_per_mtok: float
    output_per_mtok: float


DEFAULT_PROVIDERS = (
    Provider("local-fast", "local", "llama-3.1-8b-instruct", 2.0, 0.0, 0.10, 0.40),
    Provider("cloud-pricier", "openai", "gpt-4o-mini", 8.0, 0.0, 0.15, 0.60),
)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string for these values


def gateway_config(
    model: str, providers: Sequence[Provider], addrs: Sequence[tuple[str, int]],
    router: dict[str, Any] | None = None,
) -> str:  # fmt: skip
    """The gateway's TOML config: one model routed over every provider, in order.

    ``router`` adds router settings (keys of the gateway's ``[router]`` table) to the model.
    """
    out = ['[server]', 'listen = "127.0.0.1:0"', '']
    for p, (host, port) in zip(providers, addrs):
        out += ['[[providers]]', f'name = "{p.name}"', f'kind = "{p.kind}"', f'base_url = "http://{host}:{port}/v1"']
        if p.kind != "local":
            out.append(f'api_key_env = "{PROVIDER_KEY_ENV}"')
        out.append('')
    out += ['[[models]]', f'name = "{model}"']
    out += [f'{key} = {_toml(value)}' for key, value in (router or {}).items()]
    out += ['routes = [']
    out += [
        f'  {{ provider = "{p.name}", model = "{p.upstream_model}", '
        f'input_per_mtok = {p.input_per_mtok}, output_per_mtok = {p.output_per_mtok} }},'
        for p in providers
    ]
    out += [']', '']
    return "\n".join(out)


class Stack:
    """Mock providers + gateway. ``start()`` returns once all answer; ``close()`` stops them all."""

    def __init__(
        self,
        providers: Sequence[Provider] = DEFAULT_PROVIDERS,
        *,
        model: str = "sim-model",
        tokens: int = 16,
        router: dict[str, Any] | None = None,
        gateway_loop: str | None = None,
        gateway_cpus: Sequence[int] | None = None,
        start_timeout: float = 15.0,
    ) -> None:
        self.providers = tuple(providers)
        self.model = model
        self.tokens = tokens
        self.router = dict(router or {})  # per-model router settings written into the gateway config
        self.gateway_loop = gateway_loop  # the gateway's --loop (uvloop|asyncio); None: its default
        self.gateway_cpus = tuple(gateway_cpus or ())
        self.start_timeout = start_timeout
        self._tmp = tempfile.TemporaryDirectory(prefix="llm-edge-sim-")
        self.dir = Path(self._tmp.name)
        self.mocks: list[procs.Child] = []
        self.mock_addrs: list[tuple[str, int]] = []
        self.gateway: procs.Child | None = None
        self.gateway_addr: tuple[str, int] = ("", 0)

    def start(self) -> Stack:
        """Start the mocks (in parallel), then the gateway; wait for each to be ready."""
        for p in self.providers:
            args = ["--listen", "127.0.0.1:0", "--kind", "openai", "--ttft-ms", str(p.ttft_ms),
                    "--token-delay-ms", str(p.token_delay_ms), "--tokens", str(self.tokens)]
            self.mocks.append(procs.python_child(f"mock-{p.name}", "mocks", args, self.dir).start())
        self.mock_addrs = [procs.parse_hostport(m.wait_line(self.start_timeout)) for m in self.mocks]
        cfg = self.dir / "gateway.toml"
        cfg.write_text(gateway_config(self.model, self.providers, self.mock_addrs, self.router))
        args = ["--config", str(cfg), "--listen", "127.0.0.1:0"]
        if self.gateway_loop:
            args += ["--loop", self.gateway_loop]
        self.gateway = procs.python_child(
            "gateway", "proxy", args, self.dir, {PROVIDER_KEY_ENV: "sk-sim-provider-dummy"}
        ).start()
        if self.gateway_cpus:
            os.sched_setaffinity(self.gateway.pid, self.gateway_cpus)
        self.gateway_addr = procs.parse_hostport(self.gateway.wait_line(self.start_timeout))
        procs.wait_healthy(self.gateway, *self.gateway_addr, "/healthz", self.start_timeout)
        return self

    def stats(self) -> dict[str, Any]:
        """The gateway's GET /stats document."""
        status, body = procs.http_get(*self.gateway_addr, "/stats")
        if status != 200:
            raise RuntimeError(f"GET /stats answered {status}")
        return json.loads(body)

    def metrics_text(self) -> str:
        """The gateway's GET /metrics page (Prometheus text)."""
        status, body = procs.http_get(*self.gateway_addr, "/metrics")
        if status != 200:
            raise RuntimeError(f"GET /metrics answered {status}")
        return body.decode("utf-8", "replace")

    def mock_config(self, provider: str, **changes: Any) -> None:
        """Change a running mock's behaviour (POST /_mock/config), e.g. ``error_rate=1.0``."""
        host, port = self.mock_addrs[[p.name for p in self.providers].index(provider)]
        status, body = procs.http_request("POST", host, port, "/_mock/config", json.dumps(changes).encode())
        if status != 200:
            raise RuntimeError(f"{provider}: /_mock/config answered {status}: {body[:200]!r}")

    def children(self) -> list[procs.Child]:
        """Every child started so far."""
        return [*self.mocks, *([self.gateway] if self.gateway else [])]

    def close(self) -> dict[str, int | None]:
        """Stop the gateway first, then the mocks; return each child's exit code by name."""
        codes: dict[str, int | None] = {}
        for child in reversed(self.children()):
            codes[child.name] = child.stop()
        self._tmp.cleanup()
        return codes

    def __enter__(self) -> Stack:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
